"""Mask algebra laws for N = 2 and N = 3, statistics and persistence."""

import pytest
import torch

from dilt.masks import Mask, MaskError, chance_jaccard, intersection, jaccard, random_like, specialist, tickets, union

SHAPES = {"a.weight": (20, 10), "b.weight": (7, 5, 3)}


def random_mask(seed: int, density: float = 0.4) -> Mask:
    g = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(s, generator=g) < density for n, s in SHAPES.items()})


@pytest.mark.parametrize("n", [2, 3])
def test_ticket_laws(n):
    masks = [random_mask(s) for s in range(n)]
    t = tickets(masks)
    assert set(t) == {"core", "union", *(f"spec{k + 1}" for k in range(n))}
    for k, m in enumerate(masks):
        assert t["core"] <= m                      # core is in every m_k
        assert m <= t["union"]                     # every m_k is in the union
        assert t[f"spec{k + 1}"] <= m
        for j, other in enumerate(masks):
            if j != k:                             # spec_k is disjoint from every other m_j
                assert t[f"spec{k + 1}"].isdisjoint(other)
    # the union is the disjoint union of core, the specialists and the partial overlaps
    assert t["union"].kept >= t["core"].kept + sum(t[f"spec{k + 1}"].kept for k in range(n))
    if n == 2:  # for two masks the three parts tile the union exactly
        assert t["union"].kept == t["core"].kept + t["spec1"].kept + t["spec2"].kept
    assert t["core"].sparsity >= max(m.sparsity for m in masks) >= min(m.sparsity for m in masks) >= t["union"].sparsity


def test_algebra_matches_elementwise_logic():
    a, b, c = (random_mask(s) for s in (3, 4, 5))
    for n in SHAPES:
        assert torch.equal(intersection([a, b, c])[n], a[n] & b[n] & c[n])
        assert torch.equal(union([a, b, c])[n], a[n] | b[n] | c[n])
        assert torch.equal(specialist([a, b, c], 1)[n], b[n] & ~a[n] & ~c[n])


def test_sparsity_density_and_empty_layers():
    m = Mask({"a.weight": torch.tensor([[True, False], [False, False]]), "b.weight": torch.zeros(3, dtype=torch.bool)})
    assert m.numel == 7 and m.kept == 1
    assert m.sparsity == pytest.approx(6 / 7)
    assert m.layer_density() == {"a.weight": 0.25, "b.weight": 0.0}
    assert m.empty_layers() == ["b.weight"]


def test_jaccard_and_chance_level():
    a, b = random_mask(1, 0.3), random_mask(2, 0.6)
    assert jaccard(a, a) == 1.0
    inter = (a & b).kept
    assert jaccard(a, b) == pytest.approx(inter / (a | b).kept)
    # two independent random masks of density d overlap with Jaccard d / (2 - d)
    d = 0.3
    big = {"w": (400, 400)}
    g = torch.Generator().manual_seed(0)
    x = Mask({n: torch.rand(s, generator=g) < d for n, s in big.items()})
    y = Mask({n: torch.rand(s, generator=g) < d for n, s in big.items()})
    assert chance_jaccard(x, y) == pytest.approx(d / (2 - d), rel=0.02)
    assert jaccard(x, y) == pytest.approx(chance_jaccard(x, y), rel=0.03)


def test_random_like_keeps_layer_counts():
    m = random_mask(7, 0.2)
    r = random_like(m, torch.Generator().manual_seed(1))
    assert {n: int(t.sum()) for n, t in r.items()} == {n: int(t.sum()) for n, t in m.items()}
    assert r != m


def test_incompatible_masks_are_refused():
    a = random_mask(0)
    b = Mask({"a.weight": torch.ones(20, 10, dtype=torch.bool)})
    with pytest.raises(MaskError, match="b.weight"):
        a & b


def test_save_load_roundtrip_and_checks(tmp_path):
    m = random_mask(3)
    p = tmp_path / "m.safetensors"
    m.save(p, model="cnn", theta0="abc")
    assert Mask.load(p, expect={"model": "cnn", "theta0": "abc"}, shapes=SHAPES) == m
    assert list(Mask.load(p)) == list(SHAPES)  # order preserved
    with pytest.raises(MaskError, match="theta0"):
        Mask.load(p, expect={"theta0": "other"})
    with pytest.raises(MaskError, match="b.weight"):
        Mask.load(p, shapes={"a.weight": (20, 10), "b.weight": (7, 5, 4)})


def test_apply_zeroes_pruned_weights():
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    m = Mask({"0.weight": torch.rand(3, 4) < 0.5, "1.weight": torch.ones(2, 3, dtype=torch.bool)})
    m.apply_(net)
    assert torch.all(net[0].weight[~m["0.weight"]] == 0)
    assert torch.all(net[0].weight[m["0.weight"]] != 0)
