"""ERK / uniform per-layer densities and counts, and the two random-mask baselines."""

import math

import pytest
import torch
import yaml
from conftest import tiny_config

from dilt.masks import Mask
from dilt.prune.erk import apportion, erk_counts, erk_densities, uniform_counts
from dilt.prune.magnitude import keep_count

# raw ERK densities (sum / prod): a 0.75, b 18/288, c 150/5000, d 110/1000
SHAPES = {"a": (4, 2), "b": (8, 4, 3, 3), "c": (100, 50), "d": (10, 100)}
NUMEL = {n: math.prod(s) for n, s in SHAPES.items()}
TOTAL = sum(NUMEL.values())  # 6296


def test_erk_densities_closed_form_with_two_layers_made_dense():
    # At density 0.5 the first solve gives eps = 3148 / 284 ~ 11.08: 'a' would get 8.3 > 1, so it
    # is made dense; the re-solve gives eps = 3140 / 278 ~ 11.29: 'd' would get 1.24 > 1, dense
    # too; the final eps solves  eps * (18 + 150) = 0.5 * 6296 - 8 - 1000.
    eps = (0.5 * TOTAL - NUMEL["a"] - NUMEL["d"]) / (18 + 150)
    want = {"a": 1.0, "b": eps * 18 / 288, "c": eps * 150 / 5000, "d": 1.0}
    got = erk_densities(SHAPES, 0.5)
    assert got.keys() == want.keys()
    for n in want:
        assert got[n] == pytest.approx(want[n], rel=1e-12), n
    assert 3148 / 284 * 0.75 > 1 and 3140 / 278 * 0.11 > 1  # both re-solves were needed
    assert sum(got[n] * NUMEL[n] for n in SHAPES) == pytest.approx(0.5 * TOTAL, rel=1e-12)


def test_erk_without_dense_layers_is_proportional_to_raw_density():
    got = erk_densities(SHAPES, 0.05)
    raw = {n: sum(s) / math.prod(s) for n, s in SHAPES.items()}
    eps = 0.05 * TOTAL / sum(raw[n] * NUMEL[n] for n in SHAPES)
    assert all(eps * raw[n] < 1 for n in SHAPES)
    for n in SHAPES:
        assert got[n] == pytest.approx(eps * raw[n], rel=1e-12)


def test_erdos_renyi_drops_the_kernel_terms_and_given_dense_layers_count_toward_the_budget():
    with pytest.raises(ValueError, match="below what the dense layers"):
        erk_densities(SHAPES, 0.1, dense={"c"})  # c alone keeps 5000 > 0.1 * 6296
    got = erk_densities(SHAPES, 0.86, dense={"c"}, erdos_renyi_kernel=False)
    budget = 0.86 * TOTAL - NUMEL["c"]
    # ER raw densities (n_in + n_out) / (n_in n_out): a 6/8, b 12/32, d 110/1000 ('c' is given
    # dense). 'a' gets 0.75 eps > 1 and is made dense; then eps = (budget - 8) / (0.375 * 288 + 110)
    eps = (budget - 8) / (12 / 32 * 288 + 0.11 * 1000)
    assert budget / (6 + 108 + 110) * 0.75 > 1 and eps * 0.375 <= 1 and eps * 0.11 <= 1
    want = {"a": 1.0, "b": eps * 0.375, "c": 1.0, "d": eps * 0.11}
    for n in want:
        assert got[n] == pytest.approx(want[n], rel=1e-12), n


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_counts_are_exact_and_within_one_of_the_quota(sparsity):
    density = 1.0 - sparsity
    for counts_of, dens in ((erk_counts, erk_densities(SHAPES, density)),
                            (uniform_counts, {n: density for n in SHAPES})):
        counts = counts_of(SHAPES, density)
        assert sum(counts.values()) == keep_count(TOTAL, sparsity)
        for n in SHAPES:
            assert 0 <= counts[n] <= NUMEL[n]
            assert abs(counts[n] - dens[n] * NUMEL[n]) < 1, (n, counts[n], dens[n] * NUMEL[n])


def test_apportion_is_largest_remainder():
    quotas = {"x": 2.7, "y": 1.2, "z": 3.1}   # floors 2, 1, 3 (sum 6); 7 - 6 = 1 more for x
    assert apportion(quotas, {"x": 10, "y": 10, "z": 10}, 7) == {"x": 3, "y": 1, "z": 3}
    assert apportion(quotas, {"x": 10, "y": 10, "z": 10}, 8) == {"x": 3, "y": 2, "z": 3}
    assert apportion(quotas, {"x": 2, "y": 10, "z": 10}, 7) == {"x": 2, "y": 2, "z": 3}  # x is full


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="density must lie"):
        erk_densities(SHAPES, 1.5)
    with pytest.raises(ValueError, match="'zz' is not one of the given layers"):
        erk_densities(SHAPES, 0.5, dense={"zz"})


# -- the random baselines, end to end through MaskJob ---------------------------------------------
def _job(tmp_path, method, seed=0):
    from dilt import config, jobs
    from dilt.methods.job import MaskJob

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    suite = config.load(path)
    theta0 = tmp_path / "theta0.safetensors"
    if not theta0.exists():
        jobs.init(suite, "mlp", "digits", 0, str(theta0))
    out = tmp_path / f"{method}_{seed}"
    out.mkdir()
    return MaskJob(suite=suite, method=method, model="mlp", dataset="digits", seed=seed,
                   out_dir=out, theta0=theta0)


@pytest.mark.parametrize("method", ["random_uniform", "random_erk"])
def test_random_masks_have_exact_counts_and_are_reproducible(tmp_path, method):
    from dilt.methods import get_method
    from dilt.methods.job import read_manifest

    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        (tmp_path / name).mkdir()
        job = _job(tmp_path / name, method, seed)
        get_method(method).find(job)
        manifest = read_manifest(job.out_dir)
        assert [e["target_sparsity"] for e in manifest["masks"]] == [0.5, 0.8]
        assert all(e["epochs"] == 0 for e in manifest["masks"])
        runs[name] = {e["target_sparsity"]: Mask.load(job.out_dir / e["file"]) for e in manifest["masks"]}
    shapes = runs["a"][0.5].shapes
    assert list(shapes) == ["hidden.0.weight", "hidden.1.weight"]  # tiny suite: prune_first
    total = sum(math.prod(s) for s in shapes.values())
    for t, mask in runs["a"].items():
        want = (uniform_counts if method == "random_uniform" else erk_counts)(shapes, 1.0 - t)
        assert {n: int(m.sum()) for n, m in mask.items()} == want
        assert mask.kept == keep_count(total, t)
        if method == "random_uniform":
            for m in mask.values():
                assert abs(int(m.sum()) - (1 - t) * m.numel()) < 1
        assert mask == runs["b"][t]          # same seed and target: the same mask
        assert mask != runs["c"][t]          # another seed: another draw
    assert not runs["a"][0.8] <= runs["a"][0.5]  # targets are independent draws, not nested
    if method == "random_erk":               # ERK: 300x64 (raw 364/19200) denser than 100x300 (400/30000)
        d = runs["a"][0.8].layer_density()
        assert d["hidden.0.weight"] > d["hidden.1.weight"]
    torch.testing.assert_close(torch.tensor(runs["a"][0.5].density), torch.tensor(0.5))
