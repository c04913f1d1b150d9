"""Figures 1-3 of Experiment 2 stay readable for deep models (DeiT-S: 50 layers, ResNet-50: 54)
at the paper's widths: sizes in inches, tick labels and boxes that do not overlap, Figure 2 as an
architecture grid, Figure 1's colour range set by the body, not the head."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from dilt.report import analysis_figures as af

DPI = 200  # the dpi _save writes PNGs at


def deit_s_layers() -> list[str]:
    kinds = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
    return (["patch_embed.proj"] + [f"blocks.{b}.{k}" for b in range(12) for k in kinds]
            + ["head"])


def resnet50_layers() -> list[str]:
    names = ["conv1"]
    for stage, n in enumerate((3, 4, 6, 3), start=1):
        for b in range(n):
            names += [f"layer{stage}.{b}.conv{c}" for c in (1, 2, 3)]
            if b == 0:
                names.append(f"layer{stage}.{b}.downsample.0")
    return names + ["fc"]


def resnet18_layers() -> list[str]:
    names = ["conv1"]
    for stage in range(1, 5):
        for b in range(2):
            names += [f"layer{stage}.{b}.conv1", f"layer{stage}.{b}.conv2"]
            if b == 0 and stage > 1:
                names.append(f"layer{stage}.{b}.downsample.0")
    return names + ["fc"]


def cnn_layers() -> list[str]:
    return [f"features.{i}.0" for i in (0, 1, 2, 4, 5, 6, 8, 9)] + ["fc", "head"]


def synthetic(names: list[str], seed: int, k: int = 4, head_scale: float = 10.0) -> dict:
    """An analysis dict like run_analysis's: G with a diagonal that rises with depth, noise and an
    outlier head row / column; cluster labels by depth with a few random flips."""
    rng = np.random.default_rng(seed)
    L = len(names)
    depth = np.arange(L) / (L - 1)
    G = 0.2 + 0.3 * np.abs(depth[:, None] - depth[None, :]) + 0.2 * depth[None, :]
    G += 0.05 * rng.random((L, L))
    G[-1, :] *= head_scale
    G[:, -1] *= head_scale
    labels = [min(k - 1, int(i * k / L)) for i in range(L)]
    lab2 = [int(x) if rng.random() > 0.1 else int(rng.integers(k)) for x in labels]
    blocks = []
    for c in range(k):
        idx = [i for i in range(L) if labels[i] == c]
        jac = 0.6 - 0.4 * c / max(k - 1, 1) + 0.02 * rng.random()
        blocks.append({"block": c, "layers": [names[i] for i in idx], "n_layers": len(idx),
                       "params": 1000 * len(idx), "gw_ii_mean": float(np.mean(G[idx, idx])),
                       "jaccard": jac, "chance_jaccard": 0.1, "ratio": jac / 0.1})
    return {"layer_names": names, "G": G.tolist(), "k": k, "ari": 0.7,
            "labels": {"net1": labels, "net2": lab2}, "blocks": blocks,
            "correlations": {"layer_gw_vs_jaccard": {"rho": -0.61, "p": 0.001 * (seed + 1)},
                             "block_gw_vs_jaccard": {"rho": -0.9, "p": 0.02}}}


def two_settings(names, k=4, **kw) -> dict[str, list[dict]]:
    return {"deep / imagenet / contiguous2": [synthetic(names, s, k, **kw) for s in (0, 1, 2)],
            "deep / imagenet / iid2": [synthetic(names, s + 7, k, **kw) for s in (0, 1, 2)]}


def _text_boxes(fig, axes=None):
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    out = []
    for ax in axes if axes is not None else fig.get_axes():
        ticks = ax.get_xticklabels() + ax.get_yticklabels() if ax.axison else []
        texts = [t for t in ticks + list(ax.texts) if t.get_visible() and t.get_text()]
        out.append([(t.get_text(), t.get_window_extent(r)) for t in texts])
    return out


def _overlaps(items):
    bad = []
    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            (ta, p), (tb, q) = items[a], items[b]
            if p.x0 < q.x1 and q.x0 < p.x1 and p.y0 < q.y1 and q.y0 < p.y1:
                bad.append((ta, tb))
    return bad


def _heat(fig):
    return [ax for ax in fig.get_axes() if ax.get_label() != "<colorbar>"
            and any(isinstance(c, QuadMesh) for c in ax.collections)]


def _png_inches(path) -> tuple[float, float]:
    h, w = imread(path).shape[:2]
    return w / DPI, h / DPI


# ---------------------------------------------------------------------------------------------
# the architecture grid


def test_grid_resnet50_is_stages_of_bottleneck_blocks():
    g = af.architecture_grid([f"{n}.weight" for n in resnet50_layers()])
    assert g["kinds"] == ["conv1", "conv2", "conv3", "downsample"]
    assert g["columns"] == ["conv1", "conv2", "conv3", "down"]
    labels = [r["label"] for r in g["rows"]]
    assert labels[0] == "conv1" and labels[-1] == "fc" and len(labels) == 1 + 16 + 1
    assert labels[1:5] == ["layer1.0", "layer1.1", "layer1.2", "layer2.0"]
    assert [r["stage"] for r in g["rows"]].count("layer3") == 6
    first = g["rows"][1]["cells"]
    assert [(c, s) for _, c, s in first] == [(0, 1), (1, 1), (2, 1), (3, 1)]
    assert g["rows"][0]["cells"] == [(0, 0, 4)]  # the stem spans the grid
    cells = [i for r in g["rows"] for i, _, _ in r["cells"]]
    assert sorted(cells) == list(range(54))


def test_grid_deit_s_is_blocks_by_qkv_proj_fc1_fc2():
    g = af.architecture_grid(deit_s_layers())
    assert g["columns"] == ["qkv", "proj", "fc1", "fc2"]
    assert [r["label"] for r in g["rows"]] == (["patch_embed.proj"]
                                               + [f"blocks.{b}" for b in range(12)] + ["head"])
    assert all(len(r["cells"]) == 4 for r in g["rows"][1:-1])


def test_grid_small_models_and_mobilenet():
    g = af.architecture_grid(resnet18_layers())
    assert g["columns"] == ["conv1", "conv2", "down"] and len(g["rows"]) == 10
    g = af.architecture_grid(cnn_layers())  # a plain chain: one row per layer
    assert g["ncols"] == 1 and len(g["rows"]) == 10
    g = af.architecture_grid(["hidden.0", "hidden.1", "head"])
    assert [r["label"] for r in g["rows"]] == ["hidden.0", "hidden.1", "head"]
    mb = (["conv_stem", "blocks.0.0.conv_dw", "blocks.0.0.conv_pw"]
          + [f"blocks.{s}.{b}.{k}" for s in (1, 2) for b in (0, 1)
             for k in ("conv_pw", "conv_dw", "conv_pwl")] + ["conv_head", "classifier"])
    g = af.architecture_grid(mb)
    assert g["columns"] == ["pw", "dw", "pwl"]
    assert g["rows"][1]["cells"] == [(1, 1, 1), (2, 0, 1)]


# ---------------------------------------------------------------------------------------------
# Figure 1


@pytest.mark.parametrize("names", [deit_s_layers(), resnet50_layers()], ids=["deit_s", "r50"])
def test_fig1_ticks_per_block_no_overlap_and_body_colour_range(names, tmp_path):
    runs = two_settings(names)
    fig = af.fig1(runs)
    G = np.mean([np.array(a["G"]) for a in runs["deep / imagenet / contiguous2"]], axis=0)
    heat = _heat(fig)
    assert len(heat) == 2
    im = heat[0].collections[0]
    lo, hi = im.get_clim()
    body = G[:-1, :-1]
    head = np.concatenate([G[-1, :], G[:, -1]])
    G2 = np.mean([np.array(a["G"]) for a in runs["deep / imagenet / iid2"]], axis=0)
    (a0, a1), (b0, b1) = af.robust_range(G), af.robust_range(G2)
    assert (lo, hi) == pytest.approx((min(a0, b0), max(a1, b1)))   # one range for both panels
    assert heat[1].collections[0].get_clim() == (lo, hi)
    both = np.concatenate([body.ravel(), G2[:-1, :-1].ravel()])
    assert both.min() <= lo < hi <= both.max()  # the bodies fill the colour range
    assert hi < head.min()  # the outlier head does not stretch it
    xs = im.get_coordinates()[0, :, 0]  # cell edges along x
    assert len(xs) == len(names) + 2 and im.get_array().mask.reshape(len(xs) - 1, -1)[:, -2].all()
    assert xs[-2] - xs[-3] >= 0.35  # an empty (masked) gap sets the head column apart
    assert xs[-1] - xs[-2] == pytest.approx(1) and np.allclose(np.diff(xs[:-2]), 1)
    for ax in heat:
        nx = len([t for t in ax.get_xticklabels() if t.get_text()])
        ny = len([t for t in ax.get_yticklabels() if t.get_text()])
        assert 5 <= nx <= 20 and 5 <= ny <= 20  # per block / stage, not one per layer
    for items in _text_boxes(fig, heat):
        assert not _overlaps(items)
    paths = af._save(fig, tmp_path / "f1")
    w, h = _png_inches(paths[1])
    assert 6.0 <= w <= 7.0 and h <= 4.5
    one = af.fig1({"only": runs["deep / imagenet / iid2"]})
    w1, _ = _png_inches(af._save(one, tmp_path / "f1one")[1])
    assert w1 <= 3.6  # a single setting fits one column


def test_fig1_small_model_ticks_per_layer():
    fig = af.fig1({"cnn": [synthetic(cnn_layers(), 0, 3)]})
    ax = _heat(fig)[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == cnn_layers()  # one per layer
    for items in _text_boxes(fig, [ax]):
        assert not _overlaps(items)


def test_robust_range_uses_body_percentiles():
    G = np.arange(16.0).reshape(4, 4)
    G[-1, :] = G[:, -1] = 1000
    lo, hi = af.robust_range(G)
    body = G[:3, :3].ravel()
    assert lo == pytest.approx(np.percentile(body, 2))
    assert hi == pytest.approx(np.percentile(body, 98))
    assert af.robust_range(np.ones((3, 3))) == (0.5, 1.5)  # a constant matrix still has a range
    assert "shared by the panels" in af.fig1_caption() and "98th" in af.fig1_caption()


# ---------------------------------------------------------------------------------------------
# Figure 2


def _boxes(fig):
    return [p for ax in fig.get_axes() for p in ax.patches
            if isinstance(p, Rectangle) and (p.get_gid() or "").startswith("layer:")]


@pytest.mark.parametrize("names,nrows", [(deit_s_layers(), 14), (resnet50_layers(), 18)],
                         ids=["deit_s", "r50"])
def test_fig2_is_an_architecture_grid_readable_at_column_width(names, nrows, tmp_path):
    runs = two_settings(names, k=4)
    fig = af.fig2(runs)
    boxes = _boxes(fig)
    assert len(boxes) == 2 * 2 * len(names)  # every layer of both networks in both settings
    for ax in fig.get_axes():
        mine = [p for p in ax.patches if (p.get_gid() or "").startswith("layer:net1")]
        if not mine:
            continue
        xs = {round(p.get_x(), 6) for p in mine}
        ys = {round(p.get_y(), 6) for p in mine}
        assert len(xs) <= 16 and len(ys) == nrows  # rows = blocks, columns = layer kinds
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        ext = [p.get_window_extent(r) for p in ax.patches]
        assert not _overlaps([("", e) for e in ext])
        cell = min(e.width for e in ext) / fig.dpi
        assert cell >= 0.12 and min(e.height for e in ext) / fig.dpi >= 0.12  # inches
    # colour = cluster, from one sequential palette, the number printed in the box
    colors = af.cluster_colors(4)
    grids = [ax for ax in fig.get_axes() if ax.patches]
    for ax, runs_ in zip(grids, runs.values(), strict=True):
        a = runs_[0]
        numbers = [t.get_text() for t in ax.texts if t.get_text().isdigit()]
        assert sorted(numbers) == sorted(str(x) for x in a["labels"]["net1"] + a["labels"]["net2"])
        for p in ax.patches:
            _, net, i, lab = p.get_gid().split(":")
            assert int(lab) == a["labels"][net][int(i)]
            assert tuple(p.get_facecolor()) == pytest.approx(colors[int(lab)])
    lum = [0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] for c in colors]
    assert all(np.diff(lum) < 0)  # monotone in grayscale
    for items in _text_boxes(fig):
        assert not _overlaps(items)
    w, h = _png_inches(af._save(fig, tmp_path / "f2")[1])
    assert w <= 7.0 and h <= 5.0
    one = af.fig2({"one": runs["deep / imagenet / iid2"]})
    w1, _ = _png_inches(af._save(one, tmp_path / "f2one")[1])
    assert w1 <= 3.6


def test_fig2_small_models_and_ten_clusters(tmp_path):
    runs = {"cnn": [synthetic(cnn_layers(), 0, 3)],
            "mlp": [synthetic(["hidden.0", "hidden.1", "head"], 1, 2)],
            "r18": [synthetic(resnet18_layers(), 2, 10)]}
    fig = af.fig2(runs)
    assert len(_boxes(fig)) == 2 * (10 + 3 + len(resnet18_layers()))
    for items in _text_boxes(fig):
        assert not _overlaps(items)
    w, _ = _png_inches(af._save(fig, tmp_path / "f2s")[1])
    assert w <= 7.0


# ---------------------------------------------------------------------------------------------
# Figure 3


def test_fig3_readable_with_ten_clusters(tmp_path):
    runs = two_settings(deit_s_layers(), k=10)
    fig = af.fig3(runs)
    axes = [ax for ax in fig.get_axes() if ax.get_xticklabels() and ax.patches]
    for ax in axes[:2]:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert len(labels) == 10
    for items in _text_boxes(fig):
        assert not _overlaps(items)
    w, h = _png_inches(af._save(fig, tmp_path / "f3")[1])
    assert w <= 7.0 and h <= 3.6


def test_write_functions_return_pdf_and_png(tmp_path):
    runs = {"r50": [synthetic(resnet50_layers(), 0)]}
    for write, stem in ((af.write_fig1, "a"), (af.write_fig2, "b"), (af.write_fig3, "c")):
        paths = write(runs, tmp_path / stem)
        assert [p[-3:] for p in paths] == ["pdf", "png"]


def test_degenerate_inputs_still_draw(tmp_path):
    tiny = {"two layers": [synthetic(["a.0", "head"], 0, 2)]}
    nan = synthetic(cnn_layers(), 0, 3)
    nan["G"] = np.full((10, 10), np.nan).tolist()
    for write in (af.write_fig1, af.write_fig2, af.write_fig3):
        for runs in ({}, tiny, {"nan": [nan]}):
            assert [p[-3:] for p in write(runs, tmp_path / "x")] == ["pdf", "png"]
