"""Figures 1-3 of Experiment 2 from :func:`dilt.analysis.run_analysis` results.

``analyses`` is a list of result dicts (one per seed, same model / data / partition) or a dict
``setting label -> list`` to draw several partition schemes side by side. Each figure is written
as PDF and PNG next to ``out_stem`` (a path without extension). Panels are sized for the paper's
column width (about 3.4 in each, two per row, so a figure is at most 6.9 in wide).

* Figure 1 (:func:`fig1`) shows the GW distances of the body with the head (the last layer) set
  apart by a white gap, on a robust colour range: the 2nd-98th percentile of the entries that do
  not involve the head (:data:`FIG1_NOTE`, also printed in the figure). Deep models get one tick
  per block or stage (:func:`architecture_grid`), not one per layer.
* Figure 2 (:func:`fig2`) draws the architecture as a grid, one row per block (ResNet bottleneck
  block, ViT block, MobileNet block) and one column per layer kind in a block (conv1, conv2,
  conv3, downsample; qkv, proj, fc1, fc2); layers outside blocks (stem, patch embedding, head,
  the layers of a plain CNN / MLP) get a row of their own. Each box is coloured by its cluster
  on a sequential palette (clusters are numbered by depth) and carries the cluster number, so the
  figure reads in grayscale.
* Figure 3 (:func:`fig3`) shows per block Jaccard and mean G_ii as bars.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from dilt.io import atomic_path  # noqa: E402
from dilt.report.analysis_tables import MIN_POINTS  # noqa: E402

PANEL_W = 3.4  # inches: one panel per column of a two-column paper, two per full width
MAX_COLS = 16  # Figure 2 never draws more box columns than this per network
PCT = (2.0, 98.0)  # Figure 1's robust colour range, percentiles of the off-head entries
FIG1_NOTE = ("Colour range, shared by the panels: from the lowest 2nd to the highest 98th "
             "percentile of the panels' entries that do not involve the head; the head's row and "
             "column are set apart (white gap), values beyond the range saturate (colour-bar "
             "arrows).")
CMAP_G = "cividis"
CMAP_CLUSTER = "viridis"


def _groups(analyses) -> list[tuple[str, list[dict]]]:
    if isinstance(analyses, Mapping):
        return [(str(k), list(v)) for k, v in analyses.items() if v]
    groups: dict[str, list[dict]] = {}
    for a in analyses:
        groups.setdefault(str((a.get("settings") or {}).get("label", "")), []).append(a)
    return list(groups.items())


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _save(fig, out_stem) -> list[str]:
    paths = []
    for ext in ("pdf", "png"):
        path = f"{os.fspath(out_stem)}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=200, bbox_inches="tight", pad_inches=0.03)
        paths.append(path)
    plt.close(fig)
    return paths


def _mean_matrix(runs: list[dict], key: str = "G") -> tuple[np.ndarray, int]:
    mats = [np.array(a[key], dtype=float) for a in runs if a.get(key) is not None]
    same = [m for m in mats if m.shape == mats[0].shape]
    return np.nanmean(np.stack(same), axis=0), len(same)


def _short(name: str) -> str:
    return name.replace(".weight", "")


def _empty(what: str):
    """A placeholder figure when there is no analysis result to draw."""
    fig = plt.figure(figsize=(PANEL_W, 0.6))
    fig.text(0.5, 0.5, f"{what}: no analysis results", ha="center", va="center", fontsize=8)
    return fig


def _panel_grid(n: int) -> tuple[int, int]:
    """(rows, columns) of panels: at most two side by side."""
    cols = 1 if n <= 1 else 2
    return (n + cols - 1) // cols, cols


# --------------------------------------------------------------------------------------------
# Architecture: blocks and layer kinds from the layer names


def _split_unit(name: str) -> tuple[str | None, str]:
    """(block, kind) of a layer name: the block is the name up to its last numeric part that is
    followed by a word (``layer3.4``.conv2, ``blocks.7``.attn.qkv, ``blocks.1.0``.conv_pw,
    ``layer1.0``.downsample.0); layers without one (conv1, fc, head, patch_embed.proj,
    features.3.0, hidden.1) have no block."""
    t = name.split(".")
    cut = [i for i in range(len(t) - 1) if t[i].isdigit() and not t[i + 1].isdigit()]
    if not cut:
        return None, name
    rest = t[cut[-1] + 1:]
    while len(rest) > 1 and rest[-1].isdigit():
        rest = rest[:-1]
    return ".".join(t[:cut[-1] + 1]), ".".join(rest)


def _stage(unit: str) -> str:
    t = unit.split(".")
    return ".".join(t[:-1]) if len(t) > 1 and t[-1].isdigit() else unit


def _kind_labels(kinds: list[str]) -> list[str]:
    """Short column headers: the last word of each kind when those are unique, a common prefix
    (``conv_`` of conv_pw / conv_dw) dropped, long words abbreviated."""
    last = [k.split(".")[-1] for k in kinds]
    out = last if len(set(last)) == len(last) else list(kinds)
    prefix = os.path.commonprefix(out) if len(out) > 1 else ""
    if prefix and all(len(x) > len(prefix) for x in out):
        out = [x[len(prefix):] for x in out]
    abbrev = {"downsample": "down", "shortcut": "short"}
    return [abbrev.get(x, x if len(x) <= 6 else x[:5] + ".") for x in out]


def architecture_grid(layer_names) -> dict:
    """The network as a grid: ``rows`` (one per block, or per layer outside blocks) with
    ``label``, ``stage``, ``unit`` (the block, None for a lone layer) and ``cells`` as
    (layer index, column, column span); ``kinds`` / ``columns`` name the columns (layer kinds in
    a block, ordered by their mean position in the blocks). A lone layer spans all columns.
    More than :data:`MAX_COLS` kinds fall back to one row per layer."""
    names = [_short(n) for n in layer_names]
    parsed = [_split_unit(n) for n in names]
    members: dict[str, list[str]] = {}
    for i, (unit, kind) in enumerate(parsed):
        if unit is None:
            continue
        seen = members.setdefault(unit, [])
        if kind in seen:  # two layers of one kind in a block: keep the full name part
            kind = names[i][len(unit) + 1:]
            while kind in seen:
                kind += "'"
            parsed[i] = (unit, kind)
        seen.append(kind)
    where: dict[str, list[int]] = {}
    for kinds in members.values():
        for j, kind in enumerate(kinds):
            where.setdefault(kind, []).append(j)
    first: dict[str, int] = {}
    for i, (unit, kind) in enumerate(parsed):
        if unit is not None:
            first.setdefault(kind, i)
    kinds = sorted(where, key=lambda k: (float(np.mean(where[k])), first[k]))
    if len(kinds) > MAX_COLS:
        parsed = [(None, n) for n in names]
        kinds = []
    col = {k: c for c, k in enumerate(kinds)}
    ncols = max(1, len(kinds))
    rows: list[dict] = []
    for i, (unit, kind) in enumerate(parsed):
        if unit is None:
            rows.append({"label": names[i], "stage": names[i].split(".")[0], "unit": None,
                         "cells": [(i, 0, ncols)]})
        elif rows and rows[-1]["unit"] == unit:
            rows[-1]["cells"].append((i, col[kind], 1))
        else:
            rows.append({"label": unit, "stage": _stage(unit), "unit": unit,
                         "cells": [(i, col[kind], 1)]})
    return {"kinds": kinds, "columns": _kind_labels(kinds) if kinds else [""], "ncols": ncols,
            "rows": rows, "names": names}


def _row_offsets(rows: list[dict], gap: float) -> list[float]:
    """Vertical position of each row (top = 0), with ``gap`` between stages."""
    y, out = 0.0, []
    for r, row in enumerate(rows):
        if r and row["stage"] != rows[r - 1]["stage"]:
            y += gap
        out.append(y)
        y += 1
    return out


def _compact(label: str, unit: str | None) -> str:
    """Tick text of a block: its numbers (layer3.4 -> 3.4, blocks.7 -> 7)."""
    if unit is None:
        word = label.split(".")[0] if len(label) > 8 else label
        return word.split("_")[-1] if len(word) > 8 and "_" in word else word
    return re.sub(r"^[A-Za-z_]+\.?", "", unit) or unit


def _layer_ticks(names: list[str], max_layers: int = 20):
    """Tick groups of Figure 1 as (label, first layer, last layer, inside a block), the stage
    boundaries (index of the first layer of a new stage) and the granularity ('layer' when
    there are at most ``max_layers`` layers, else 'block')."""
    grid = architecture_grid(names)
    rows = grid["rows"]
    bounds = [min(c[0] for c in row["cells"]) for r, row in enumerate(rows)
              if r and row["stage"] != rows[r - 1]["stage"]]
    if len(names) <= max_layers:
        groups = []
        for row in rows:
            for i, c, _ in sorted(row["cells"]):
                lab = (_compact(row["label"], row["unit"]) + "." + grid["columns"][c]
                       if row["unit"] else row["label"] if len(row["label"]) <= 12
                       else _compact(row["label"], None))
                groups.append((lab, i, i, row["unit"] is not None))
        return groups, bounds, "layer"
    groups = [(_compact(row["label"], row["unit"]), min(c[0] for c in row["cells"]),
               max(c[0] for c in row["cells"]), row["unit"] is not None) for row in rows]
    return groups, bounds, "block"


def _overlapping(boxes, pad: float = 0.0) -> bool:
    boxes = sorted(boxes, key=lambda b: (b.x0, b.y0))
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            p, q = boxes[a], boxes[b]
            if (p.x0 < q.x1 + pad and q.x0 < p.x1 + pad and p.y0 < q.y1 + pad
                    and q.y0 < p.y1 + pad):
                return True
    return False


def _declutter(fig, ax, axis: str, first: list[int] | None = None) -> None:
    """Keep a subset of the tick labels of ``axis`` whose boxes do not overlap: greedily, the
    indices in ``first`` (e.g. the blocks) before the rest, each in axis order."""
    renderer = fig.canvas.get_renderer()
    ticks = list(ax.get_xticks() if axis == "x" else ax.get_yticks())
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    texts = [t.get_text() for t in labels]
    boxes = [t.get_window_extent(renderer) for t in labels]
    first = list(first if first is not None else range(len(ticks)))
    order = first + [i for i in range(len(ticks)) if i not in set(first)]
    kept: list[int] = []
    for i in order:
        if not _overlapping([boxes[j] for j in kept] + [boxes[i]], pad=0.5):
            kept.append(i)
    kept.sort()
    if len(kept) < len(ticks):
        (ax.set_xticks if axis == "x" else ax.set_yticks)(
            [ticks[i] for i in kept], [texts[i] for i in kept])


# --------------------------------------------------------------------------------------------
# Figure 1


def robust_range(G, head: int | None = -1, pct: tuple[float, float] = PCT) -> tuple[float, float]:
    """Colour limits of Figure 1: the ``pct`` percentiles of the finite entries of ``G`` outside
    the head's row and column (``head``: its index, None to use every entry)."""
    G = np.asarray(G, dtype=float)
    keep = np.ones(G.shape, dtype=bool)
    if head is not None and G.shape[0] > 2:
        h = head % G.shape[0]
        keep[h, :] = False
        keep[:, h] = False
    vals = G[keep & np.isfinite(G)]
    if not vals.size:
        vals = G[np.isfinite(G)]
    if not vals.size:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, pct)
    if not hi > lo:
        lo, hi = float(vals.min()), float(vals.max())
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


def fig1_caption() -> str:
    """The sentence a caption of Figure 1 should carry about its colour scale."""
    return FIG1_NOTE


def fig1(analyses):
    """Figure 1 as a matplotlib figure: per setting, the mean over seeds of G (rows: network 1's
    layers, columns: network 2's), the head set apart, robust colour range (:data:`FIG1_NOTE`)."""
    groups = _groups(analyses)
    if not groups:
        return _empty("Figure 1")
    nr, nc = _panel_grid(len(groups))
    fig = plt.figure(figsize=(PANEL_W * nc, 3.35 * nr + 0.3), layout="constrained")
    sub = fig.subfigures(nr, nc, squeeze=False) if len(groups) > 1 else np.array([[fig]])
    means = [_mean_matrix(runs) for _, runs in groups]
    heads = [len(runs[0]["layer_names"]) - 1 if len(runs[0]["layer_names"]) >= 3 else None
             for _, runs in groups]
    # one colour range for every panel, so experts and siblings are read on the same scale
    ranges = [robust_range(G, h) for (G, _), h in zip(means, heads)]
    vmin, vmax = min(r[0] for r in ranges), max(r[1] for r in ranges)
    for p, (label, runs) in enumerate(groups):
        sf = sub[p // nc, p % nc]
        ax = sf.add_subplot(1, 1, 1)
        G, n = means[p]
        names = [_short(x) for x in runs[0]["layer_names"]]
        L = len(names)
        head = heads[p]
        pos = np.arange(L, dtype=float)  # centre of each layer's cell
        edges = np.arange(L + 1, dtype=float) - 0.5
        M = G
        if head is not None:  # a gap of about 0.07 in before the head's row and column
            gap = max(0.35, 0.028 * L)
            pos[head] += gap
            edges = np.concatenate([edges[:L], [L - 1.5 + gap, L - 0.5 + gap]])
            M = np.full((L + 1, L + 1), np.nan)
            keep = [*range(L - 1), L]
            M[np.ix_(keep, keep)] = G
        cmap = plt.get_cmap(CMAP_G).with_extremes(bad="white")
        im = ax.pcolormesh(edges, edges, np.ma.masked_invalid(M), cmap=cmap, vmin=vmin,
                           vmax=vmax, rasterized=True)
        ax.set_aspect("equal")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(edges[-1], edges[0])
        finite = G[np.isfinite(G)]
        extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
                  (True, True): "both"}[(bool((finite < vmin).any()), bool((finite > vmax).any()))]
        groups_t, bounds, level = _layer_ticks(names)
        centres = [(pos[a] + pos[b]) / 2 for _, a, b, _ in groups_t]
        texts = [g[0] for g in groups_t]
        blocks_first = [j for j, g in enumerate(groups_t) if g[3]]
        fs = 6
        ax.set_xticks(centres, texts, rotation=90, fontsize=fs)
        ax.set_yticks(centres, texts, fontsize=fs)
        if level == "block":
            edges = sorted({pos[a] - 0.5 for _, a, _, _ in groups_t})
            ax.set_xticks(edges, minor=True)
            ax.set_yticks(edges, minor=True)
            ax.tick_params(which="minor", length=2, width=0.5)
        ax.tick_params(which="major", length=0 if level == "block" else 2, pad=1.5)
        ax.tick_params(axis="x", which="major", pad=3)  # clear of the head's y label
        for b in bounds:
            ax.axhline(pos[b] - 0.5, color="white", linewidth=0.6)
            ax.axvline(pos[b] - 0.5, color="white", linewidth=0.6)
        what = "block" if level == "block" else "layer"
        ax.set_xlabel(f"{what} of $F_2$", fontsize=7, labelpad=2)
        ax.set_ylabel(f"{what} of $F_1$", fontsize=7, labelpad=2)
        for s in ax.spines.values():
            s.set_visible(False)
        ax.set_title(f"{label}\nGW distance $G_{{ij}}$, mean of {n} seed{'s' * (n > 1)}",
                     fontsize=7)
        cb = sf.colorbar(im, ax=ax, fraction=0.05, pad=0.02, extend=extend, shrink=0.85)
        cb.ax.tick_params(labelsize=6, length=2)
        cb.set_label(f"$G_{{ij}}$ ({PCT[0]:g}-{PCT[1]:g}th pct. w/o head)" if head is not None
                     else "$G_{ij}$", fontsize=6)
        fig.canvas.draw()
        _declutter(fig, ax, "x", blocks_first)
        _declutter(fig, ax, "y", blocks_first)
    fig.text(0.5, 0.0, textwrap.fill(FIG1_NOTE, 80 * nc), ha="center", va="top", fontsize=6)
    return fig


def write_fig1(analyses, out_stem) -> list[str]:
    """Figure 1 (:func:`fig1`) as PDF and PNG at ``out_stem``."""
    return _save(fig1(analyses), out_stem)


# --------------------------------------------------------------------------------------------
# Figure 2


def cluster_colors(k: int) -> list[tuple]:
    """Sequential palette for clusters 0..k-1 (numbered by depth), light to dark in grayscale."""
    k = max(int(k), 1)
    return [tuple(c) for c in plt.get_cmap(CMAP_CLUSTER)(np.linspace(0.95, 0.05, k) if k > 1
                                                           else [0.6])]


def _ink(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


ROW_H = 0.155  # inches per row of Figure 2
STAGE_GAP = 0.45  # rows between stages
NET_GAP = 0.7  # columns between the grids of F_1 and F_2


def fig2(analyses):
    """Figure 2 as a matplotlib figure: per setting (first seed), the architecture grid
    (:func:`architecture_grid`) of network 1 and network 2 side by side, each box coloured by its
    spectral cluster and labelled with the cluster number."""
    groups = _groups(analyses)
    if not groups:
        return _empty("Figure 2")
    nr, nc = _panel_grid(len(groups))
    grids = [architecture_grid(runs[0]["layer_names"]) for _, runs in groups]
    fs = 6
    label_w = max(0.25, max(len(r["label"]) for g in grids for r in g["rows"]) * fs * 0.55 / 72)
    ncols = max(g["ncols"] for g in grids)
    cell_w = float(np.clip((PANEL_W - label_w - 0.15) / (2 * ncols + NET_GAP), 0.14, 0.42))
    heights = [len(g["rows"]) + STAGE_GAP * sum(
        1 for r in range(1, len(g["rows"])) if g["rows"][r]["stage"] != g["rows"][r - 1]["stage"])
        for g in grids]
    head_h = 0.55  # inches above the grid: title (2 lines), network names, column headers
    legend_h = 0.4  # below it: the cluster legend
    panel_h = max(heights) * ROW_H + head_h + legend_h
    grid_w = (2 * ncols + NET_GAP) * cell_w
    panel_w = label_w + grid_w + 0.12
    fig = plt.figure(figsize=(panel_w * nc, panel_h * nr))
    W, H = fig.get_size_inches()
    for p, ((label, runs), grid) in enumerate(zip(groups, grids)):
        a = runs[0]
        k = int(a.get("k") or 1)
        k_pal = max([k] + [int(x) + 1 for lab in (a.get("labels") or {}).values()
                           for x in (lab or [])])
        colors = cluster_colors(k_pal)
        nrow = heights[p]
        x0 = (p % nc) * panel_w + label_w + 0.06
        y_top = H - (p // nc) * panel_h - head_h
        ax = fig.add_axes([x0 / W, (y_top - nrow * ROW_H) / H, (2 * grid["ncols"] + NET_GAP)
                           * cell_w / W, nrow * ROW_H / H])
        ax.set_xlim(0, 2 * grid["ncols"] + NET_GAP)
        ax.set_ylim(nrow, 0)
        ax.set_axis_off()
        ys = _row_offsets(grid["rows"], STAGE_GAP)
        for r, row in enumerate(grid["rows"]):
            ax.text(-0.15, ys[r] + 0.5, row["label"], ha="right", va="center", fontsize=fs)
        for net_i, net in enumerate(("net1", "net2")):
            labels = (a.get("labels") or {}).get(net) or [0] * len(grid["names"])
            xo = net_i * (grid["ncols"] + NET_GAP)
            ax.text(xo + grid["ncols"] / 2, -1.3, f"$F_{net_i + 1}$", ha="center",
                    va="bottom", fontsize=7)
            if grid["kinds"]:
                for c, name in enumerate(grid["columns"]):
                    ax.text(xo + c + 0.5, -0.2, name, ha="center", va="bottom", fontsize=fs - 0.5)
            for r, row in enumerate(grid["rows"]):
                for i, c, span in row["cells"]:
                    lab = int(labels[i])
                    col = colors[lab % len(colors)]
                    ax.add_patch(Rectangle((xo + c + 0.06, ys[r] + 0.08), span - 0.12, 0.84,
                                           facecolor=col, edgecolor="black", linewidth=0.4,
                                           gid=f"layer:{net}:{i}:{lab}"))
                    ax.text(xo + c + span / 2, ys[r] + 0.52, str(lab), ha="center",
                            va="center", fontsize=fs - 0.5, color=_ink(col))
        ari = a.get("ari")
        ari_s = f", ARI={ari:.2f}" if ari is not None else ""
        ax.text((2 * grid["ncols"] + NET_GAP) / 2, -2.4,
                f"{label}\nk={k} clusters{ari_s} (seed 1 of {len(runs)})", ha="center",
                va="bottom", fontsize=7)
        handles = [Patch(facecolor=c, edgecolor="black", linewidth=0.4, label=str(j))
                   for j, c in enumerate(colors)]
        ax.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=fs,
                  title="cluster, numbered by depth", title_fontsize=fs, frameon=False,
                  handlelength=1.2, handleheight=0.9, columnspacing=0.7, handletextpad=0.3,
                  borderaxespad=0.0, bbox_to_anchor=(0.5, -0.1 * ROW_H / (nrow * ROW_H)))
    return fig


def write_fig2(analyses, out_stem) -> list[str]:
    """Figure 2 (:func:`fig2`) as PDF and PNG at ``out_stem``."""
    return _save(fig2(analyses), out_stem)


# --------------------------------------------------------------------------------------------
# Figure 3


def block_summary(runs: list[dict]) -> list[dict]:
    """Per block index (clusters are numbered by depth in every seed): mean and std over the
    seeds that have the block of mean G_ii, Jaccard, chance Jaccard, ratio, params, layers."""
    by_block: dict[int, list[dict]] = {}
    for a in runs:
        for b in a.get("blocks") or []:
            by_block.setdefault(int(b["block"]), []).append(b)
    out = []
    for blk in sorted(by_block):
        rows = by_block[blk]
        rec = {"block": blk, "n_seeds": len(rows), "layers": rows[0].get("layers", []),
               "params": rows[0].get("params")}
        for key in ("gw_ii_mean", "jaccard", "chance_jaccard", "ratio"):
            vals = np.array([_num(r.get(key)) for r in rows])
            rec[key] = [float(v) for v in vals]
            ok = vals[np.isfinite(vals)]
            rec[key + "_mu"] = float(ok.mean()) if ok.size else float("nan")
            rec[key + "_sd"] = float(ok.std(ddof=1)) if ok.size > 1 else 0.0
        out.append(rec)
    return out


def correlation_summary(runs: list[dict], key: str) -> dict:
    """Mean rho over seeds and the range of permutation p-values for correlation ``key``, over
    the seeds where it rests on at least :data:`MIN_POINTS` points (the others are not
    testable, as in the tables and verdicts)."""
    rs = [(_num(c.get("rho")), _num(c.get("p"))) for a in runs
          if (c := (a.get("correlations") or {}).get(key)) and (c.get("n") or 0) >= MIN_POINTS]
    rho = np.array([r for r, _ in rs])
    p = np.array([q for _, q in rs])
    rho, p = rho[np.isfinite(rho)], p[np.isfinite(p)]
    return {"rho": float(rho.mean()) if rho.size else float("nan"),
            "rho_sd": float(rho.std(ddof=1)) if rho.size > 1 else 0.0,
            "p_min": float(p.min()) if p.size else float("nan"),
            "p_max": float(p.max()) if p.size else float("nan"), "n_seeds": len(rs)}


def _corr_text(c: dict, name: str) -> str:
    if not np.isfinite(c["rho"]):
        return f"{name}: not testable (< {MIN_POINTS} points)"
    p = (f"p={c['p_min']:.3g}" if c["p_min"] == c["p_max"]
         else f"p in [{c['p_min']:.3g}, {c['p_max']:.3g}]")
    return f"{name} $\\rho$={c['rho']:.2f}, perm. {p}"


def fig3(analyses):
    """Figure 3 as a matplotlib figure: per block (cluster, by depth), mean Jaccard(m_1, m_2) with
    its chance level and mean G_ii side by side, error bars = std over seeds, each axis on one
    range for all panels; the layer- and block-level Spearman rho and permutation p under the
    title (not testable below :data:`MIN_POINTS` points)."""
    groups = _groups(analyses)
    if not groups:
        return _empty("Figure 3")
    nr, nc = _panel_grid(len(groups))
    fig, axes = plt.subplots(nr, nc, figsize=(PANEL_W * nc, 2.5 * nr), squeeze=False,
                             layout="constrained")
    colors = plt.get_cmap(CMAP_G)([0.25, 0.8])
    summaries = [block_summary(runs) for _, runs in groups]

    def top(key: str) -> float:
        """The highest bar plus error over every panel: one axis range for all of them."""
        v = [b[key + "_mu"] + b[key + "_sd"] for bs in summaries for b in bs]
        v = [x for x in v if np.isfinite(x)]
        return 1.1 * max(v) if v and max(v) > 0 else 1.0

    jac_top, gw_top = max(top("jaccard"), top("chance_jaccard")), top("gw_ii_mean")
    for p, (label, runs) in enumerate(groups):
        ax = axes[p // nc, p % nc]
        blocks = summaries[p]
        x = np.arange(len(blocks))
        w = 0.38
        jac = [b["jaccard_mu"] for b in blocks]
        ax.bar(x - w / 2, jac, w, yerr=[b["jaccard_sd"] for b in blocks], capsize=1.5,
               color=colors[1], hatch="//", edgecolor="black", linewidth=0.4,
               error_kw={"elinewidth": 0.6}, label="Jaccard$(m_1, m_2)$")
        ax.scatter(x - w / 2, [b["chance_jaccard_mu"] for b in blocks], marker="D", s=10,
                   facecolor="white", edgecolor="black", linewidths=0.5, zorder=4,
                   label="chance Jaccard")
        ax.set_ylabel("Jaccard$(m_1, m_2)$", fontsize=7)
        ax2 = ax.twinx()
        ax2.bar(x + w / 2, [b["gw_ii_mean_mu"] for b in blocks], w,
                yerr=[b["gw_ii_mean_sd"] for b in blocks], capsize=1.5, color=colors[0],
                hatch="..", edgecolor="black", linewidth=0.4, error_kw={"elinewidth": 0.6},
                label="mean $G_{ii}$")
        ax2.set_ylabel("mean $G_{ii}$ (GW distance)", fontsize=7)
        ax.set_ylim(0, jac_top)
        ax2.set_ylim(0, gw_top)
        ax.set_xticks(x, [f"{b['block']}\n({len(b['layers'])})" for b in blocks], fontsize=6)
        ax.set_xlim(-0.6, len(blocks) - 0.4)
        ax.set_xlabel("block = cluster, by depth (number of layers)", fontsize=7)
        for a_ in (ax, ax2):
            a_.tick_params(axis="y", labelsize=6, length=2, pad=1)
        ax.tick_params(axis="x", length=0, pad=2)
        layer_c = correlation_summary(runs, "layer_gw_vs_jaccard")
        block_c = correlation_summary(runs, "block_gw_vs_jaccard")
        ax.set_title(f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})\n"
                     f"{_corr_text(layer_c, 'layers')}\n{_corr_text(block_c, 'blocks')}",
                     fontsize=6.5)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=6, loc="upper center", ncol=3,
                  bbox_to_anchor=(0.5, -0.3), frameon=False, handlelength=1.5,
                  columnspacing=1.0)
    for q in range(len(groups), nr * nc):
        axes[q // nc, q % nc].set_axis_off()
    return fig


def write_fig3(analyses, out_stem) -> list[str]:
    """Figure 3 (:func:`fig3`) as PDF and PNG at ``out_stem``."""
    return _save(fig3(analyses), out_stem)
