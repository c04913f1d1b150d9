"""Statistics, block tables, feature extraction and run_analysis end to end."""

import json

import numpy as np
import pytest
import torch

from dilt.analysis.blocks import block_table, layer_table
from dilt.analysis.features import extract_features, probe_indices
from dilt.analysis.stats import linear_cka, partial_spearman_perm, spearman_perm
from dilt.masks import Mask, chance_jaccard, jaccard
from dilt.models import build_model, prunable_names, weight_layers


def test_permutation_p_value_large_on_independent_and_small_on_monotone_data():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(30), rng.standard_normal(30)
    assert spearman_perm(x, y, 2000, 0)["p"] > 0.05
    shuffled = spearman_perm(x, rng.permutation(x), 2000, 1)
    assert shuffled["p"] > 0.05
    mono = spearman_perm(x, np.exp(x) + 0.01 * y, 2000, 0)
    assert mono["rho"] > 0.95 and mono["p"] < 0.01
    anti = spearman_perm(x, -x**3, 2000, 0)
    assert anti["rho"] == pytest.approx(-1.0) and anti["p"] < 0.01


def test_spearman_drops_nan_pairs():
    x = np.array([1.0, 2, 3, 4, 5, np.nan])
    y = np.array([2.0, 4, 6, 8, 10, 0])
    r = spearman_perm(x, y, 500, 0)
    assert r["n"] == 5 and r["rho"] == pytest.approx(1.0)


def test_partial_spearman_removes_a_shared_depth_trend():
    rng = np.random.default_rng(1)
    depth = np.arange(40, dtype=float)
    x = depth + rng.standard_normal(40) * 2
    y = depth + rng.standard_normal(40) * 2
    assert spearman_perm(x, y, 2000, 0)["rho"] > 0.8
    part = partial_spearman_perm(x, y, depth, 2000, 0)
    assert abs(part["rho"]) < 0.35 and part["p"] > 0.05
    z = rng.standard_normal(40)
    strong = partial_spearman_perm(depth + 5 * z, depth + 5 * z + 0.1 * x, depth, 2000, 0)
    assert strong["rho"] > 0.9 and strong["p"] < 0.01


def test_linear_cka_properties():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((100, 6))
    Q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    assert linear_cka(x, 3 * x @ Q + 1) == pytest.approx(1.0)
    assert linear_cka(x, rng.standard_normal((100, 6))) < 0.3
    wide = rng.standard_normal((20, 50))  # Gram-matrix branch
    assert linear_cka(wide, wide * 2) == pytest.approx(1.0)


def test_probe_indices_are_stratified_and_fixed():
    targets = np.repeat(np.arange(10), [50] * 5 + [150] * 5)
    idx = probe_indices(targets, 100, seed=3)
    assert len(idx) == 100 and len(np.unique(idx)) == 100
    counts = np.bincount(targets[idx], minlength=10)
    assert list(counts) == [5] * 5 + [15] * 5
    assert np.array_equal(idx, probe_indices(targets, 100, seed=3))
    assert not np.array_equal(idx, probe_indices(targets, 100, seed=4))
    small = probe_indices(targets, 7, seed=0)
    assert len(small) == 7 and len(np.unique(targets[small])) == 7


def test_probe_leftover_of_a_balanced_split_is_not_given_by_class_number():
    """1000 balanced classes, 2048 probe points: 48 classes get a third example. They are drawn
    at random (seeded), not classes 0-47, which under a contiguous split all sit in partition 1."""
    targets = np.repeat(np.arange(1000), 50)
    extra = {}
    for seed in (0, 1):
        counts = np.bincount(targets[probe_indices(targets, 2048, seed=seed)], minlength=1000)
        assert sorted(set(counts)) == [2, 3] and counts.sum() == 2048
        extra[seed] = np.flatnonzero(counts == 3)
        assert len(extra[seed]) == 48
        assert 10 < (extra[seed] < 500).sum() < 38  # both halves of the classes get some
    assert not np.array_equal(extra[0], extra[1])
    # unequal remainders still go first: the classes of 150 examples take the leftover
    targets = np.repeat(np.arange(10), [50] * 5 + [150] * 5)
    counts = np.bincount(targets[probe_indices(targets, 104, seed=0)], minlength=10)
    assert list(counts[:5]) == [5] * 5 and sum(counts[5:]) == 79 and set(counts[5:]) <= {15, 16}


def test_extract_features_cnn_gap_flatten_projection_and_cache(tmp_path):
    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 8, 8))
    model.train()
    layers = weight_layers(model)
    x = torch.randn(20, 1, 8, 8)
    feats = extract_features(model, x, layers, "gap", batch_size=7)
    assert list(feats) == layers
    widths = {n: m.out_channels if hasattr(m, "out_channels") else m.out_features
              for n, m in model.named_modules() if n in layers}
    for n in layers:
        assert feats[n].dtype == np.float64 and feats[n].shape == (20, widths[n])
    assert model.training  # training flag restored
    # gap of the first conv equals the mean of its output map
    with torch.no_grad():
        model.eval()
        ref = model.features[0][0](x).mean(dim=(2, 3)).double().numpy()
    assert np.allclose(feats["features.0.0"], ref, atol=1e-6)
    flat = extract_features(model, x, ["features.0.0"], "flatten")
    assert flat["features.0.0"].shape == (20, 16 * 8 * 8)
    proj = extract_features(model, x, ["features.0.0", "head"], "random_projection", proj_dim=32)
    assert proj["features.0.0"].shape == (20, 32) and proj["head"].shape == (20, 10)
    cache = tmp_path / "f.npz"
    a = extract_features(model, x, layers, cache=cache)
    assert cache.exists()
    b = extract_features(model, x, layers, cache=cache)
    assert all(np.array_equal(a[n], b[n]) for n in layers)
    seen = []
    hook = model.get_submodule(layers[0]).register_forward_hook(
        lambda *_: seen.append(torch.is_grad_enabled()))
    extract_features(model, x, layers[:1])
    hook.remove()
    assert seen == [False]  # no activations kept for a backward pass that never comes
    other = torch.randn(20, 1, 8, 8)  # another probe of the same size: the cache is stale
    c = extract_features(model, other, layers, cache=cache)
    assert all(np.array_equal(c[n], extract_features(model, other, [n])[n]) for n in layers)
    assert not np.array_equal(c[layers[0]], a[layers[0]])


def _masks(models, density=0.5):
    out = []
    for s, m in enumerate(models):
        g = torch.Generator().manual_seed(100 + s)
        params = dict(m.named_parameters())
        out.append(Mask({n: torch.rand(params[n].shape, generator=g) < density
                         for n in prunable_names(m)}))
    return out


def test_layer_and_block_tables():
    torch.manual_seed(0)
    model = build_model("cnn", 10, (1, 8, 8))
    layers = weight_layers(model)
    m1, m2 = _masks([model, model])
    G = np.diag(np.arange(len(layers), dtype=float))
    labels = np.array([0] * 4 + [1] * (len(layers) - 4))
    rows = layer_table(layers, G, m1, m2, labels, labels)
    assert np.isnan(rows[0]["jaccard"]) and np.isnan(rows[-1]["jaccard"])  # dense first, head
    assert rows[1]["jaccard"] == pytest.approx(jaccard(m1, m2, ["features.1.0.weight"]))
    blocks = block_table(layers, G, labels, m1, m2)
    names0 = [f"{n}.weight" for n in layers[1:4]]
    assert blocks[0]["jaccard"] == pytest.approx(jaccard(m1, m2, names0))
    assert blocks[0]["chance_jaccard"] == pytest.approx(chance_jaccard(m1, m2, names0))
    # mean G_ii over the layers the Jaccard describes (1-3; layer 0 is the dense first layer)
    assert blocks[0]["gw_ii_mean"] == pytest.approx(2.0)
    assert blocks[0]["gw_ii_mean_all"] == pytest.approx(1.5)
    assert blocks[1]["gw_ii_mean"] == pytest.approx(np.mean(np.arange(4, len(layers) - 1)))
    assert blocks[0]["params"] == sum(m1[n].numel() for n in names0)


def test_run_analysis_end_to_end_on_two_small_cnns():
    from dilt.analysis import RESULT_KEYS, run_analysis

    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(build_model("cnn", 10, (1, 8, 8)))
    masks = _masks(models)
    layers = weight_layers(models[0])
    x = torch.randn(128, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = run_analysis(models, masks, x, layers, {"permutations": 500, "n_jobs": 2})
    assert set(out) == set(RESULT_KEYS)
    json.dumps(out, allow_nan=False)
    L = len(layers)
    J = np.array(out["joint_matrix"])
    assert J.shape == (2 * L, 2 * L)
    assert np.allclose(J, J.T) and np.all(np.abs(np.diag(J)) < 1e-12)
    assert np.allclose(np.array(out["G"]), J[:L, L:])
    assert np.all(J[~np.eye(2 * L, dtype=bool)] > 0)
    assert out["layer_names"] == layers and out["n_probe"] == 128
    assert len(out["labels"]["net1"]) == L and len(out["labels"]["net2"]) == L
    assert 2 <= out["k"] <= 10 and -1 <= out["ari"] <= 1
    assert out["excluded_layers"] == [layers[0], layers[-1]]
    assert out["layers"][0]["jaccard"] is None  # NaN -> None in JSON
    assert out["correlations"]["layer_gw_vs_jaccard"]["n"] == L - 2
    assert out["correlations"]["layer_cka_vs_gw"]["n"] == L
    assert sum(b["n_layers"] for b in out["blocks"]) == L
    assert sum(out["start_counts"].values()) == L * (2 * L - 1)


def _fake_analysis(seed: int, label: str) -> dict:
    rng = np.random.default_rng(seed)
    L = 4
    G = rng.random((L, L)) * 0.1
    return {"layer_names": ["features.0", "features.1", "fc", "head"], "G": G.tolist(),
            "settings": {"label": label}, "k": 2, "ari": 1.0,
            "labels": {"net1": [0, 0, 1, 1], "net2": [0, 0, 1, 1]},
            "blocks": [{"block": b, "layers": ["a", "b"], "params": 100 * (b + 1),
                        "gw_ii_mean": float(G[b, b]), "jaccard": 0.5 - 0.1 * b,
                        "chance_jaccard": 0.25, "ratio": (0.5 - 0.1 * b) / 0.25}
                       for b in (0, 1)],
            "correlations": {"layer_gw_vs_jaccard": {"rho": -0.8, "p": 0.01 * (seed + 1), "n": 8}}}


def test_figures_and_table_are_written_and_degrade_gracefully(tmp_path):
    from dilt.report.analysis_figures import write_fig1, write_fig2, write_fig3
    from dilt.report.analysis_tables import write_exp2_blocks

    runs = {"cnn / digits / contiguous2": [_fake_analysis(s, "c") for s in (0, 1)],
            "cnn / digits / iid2": [_fake_analysis(s + 5, "i") for s in (0, 1)]}
    for write, stem in ((write_fig1, "f1"), (write_fig2, "f2"), (write_fig3, "f3")):
        paths = write(runs, tmp_path / stem)
        assert [p[-3:] for p in paths] == ["pdf", "png"]
        assert all((tmp_path / f"{stem}.{e}").stat().st_size > 1000 for e in ("pdf", "png"))
    text = write_exp2_blocks(runs, tmp_path / "t.tex")
    assert (tmp_path / "t.tex").read_text() == text
    assert text.count(r"\begin{table}") == 2
    assert "cnn / digits / iid2 & 1 (a .. b) & 2/2 & 200/200" in text
    assert "-0.80 $\\pm$ 0.00 & 0.01--0.02" in text  # layer rho over seeds, p range
    assert "CKA vs G\\_ii, layers & -- & --" in text  # missing part shown as a dash
    assert "ARI" in text
    empty = write_exp2_blocks({}, tmp_path / "e.tex")
    assert "No analysis results" in empty
