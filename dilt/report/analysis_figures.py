"""Figures 1-3 of Experiment 2 from :func:`dilt.analysis.run_analysis` results.

``analyses`` is a list of result dicts (one per seed, same model / data / partition) or a dict
``setting label -> list`` to draw several partition schemes side by side. Each figure is written
as PDF and PNG next to ``out_stem`` (a path without extension). Colours come from perceptually
uniform colormaps and every cluster / quantity also has its own hatching, so the figures read in
grayscale.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dilt.io import atomic_path  # noqa: E402

HATCHES = ["", "//", "..", "xx", "\\\\", "oo", "--", "++", "**", "||"]


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
            fig.savefig(tmp, format=ext, dpi=200, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _mean_matrix(runs: list[dict], key: str = "G") -> tuple[np.ndarray, int]:
    mats = [np.array(a[key], dtype=float) for a in runs if a.get(key) is not None]
    same = [m for m in mats if m.shape == mats[0].shape]
    return np.nanmean(np.stack(same), axis=0), len(same)


def _short(name: str) -> str:
    return name.replace(".weight", "")


def write_fig1(analyses, out_stem) -> list[str]:
    """Figure 1: heatmap of G (rows: network 1's layers, columns: network 2's), mean over seeds."""
    groups = _groups(analyses)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.6), squeeze=False)
    for ax, (label, runs) in zip(axes[0], groups):
        G, n = _mean_matrix(runs)
        names = [_short(x) for x in runs[0]["layer_names"]]
        im = ax.imshow(G, cmap="cividis", interpolation="nearest")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("layer of $F_2$")
        ax.set_ylabel("layer of $F_1$")
        ax.set_title(f"{label}\nGW distance $G_{{ij}}$ (mean of {n} seed{'s' * (n > 1)})",
                     fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return _save(fig, out_stem)


def _stage_bounds(names: list[str]) -> list[int]:
    prefix = [n.split(".")[0] for n in names]
    return [i for i in range(1, len(names)) if prefix[i] != prefix[i - 1]]


def write_fig2(analyses, out_stem) -> list[str]:
    """Figure 2: the layers in order as boxes, coloured and hatched by cluster, for network 1 and
    network 2 (first seed of each setting); dashed lines mark stage boundaries (name prefix)."""
    groups = _groups(analyses)
    L = max(len(runs[0]["layer_names"]) for _, runs in groups)
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(6, 0.45 * L + 2), 1.9 * len(groups)),
                             squeeze=False)
    for ax, (label, runs) in zip(axes[:, 0], groups):
        a = runs[0]
        names = [_short(x) for x in a["layer_names"]]
        k = int(a.get("k") or 1)
        cmap = plt.get_cmap("viridis", max(k, 2))
        for row, net in enumerate(("net1", "net2")):
            labels = (a.get("labels") or {}).get(net) or [0] * len(names)
            for i, c in enumerate(labels):
                y = 1 - row
                ax.add_patch(plt.Rectangle((i, y), 0.9, 0.8, facecolor=cmap(c % cmap.N),
                                           hatch=HATCHES[c % len(HATCHES)], edgecolor="black",
                                           linewidth=0.6))
                ax.text(i + 0.45, y + 0.4, str(c), ha="center", va="center", fontsize=7,
                        color="white" if c < k / 2 else "black",
                        bbox=dict(boxstyle="round,pad=0.1", fc="none", ec="none"))
        for b in _stage_bounds(names):
            ax.axvline(b - 0.05, color="gray", linestyle="--", linewidth=0.8)
        ax.set_xlim(-0.2, len(names))
        ax.set_ylim(-0.1, 1.9)
        ax.set_yticks([1.4, 0.4], ["$F_1$", "$F_2$"])
        ax.set_xticks(np.arange(len(names)) + 0.45, names, rotation=90, fontsize=7)
        ari = a.get("ari")
        ari_s = f", ARI={ari:.2f}" if ari is not None else ""
        ax.set_title(f"{label}: spectral clusters of layers (k={k}{ari_s}, first seed)", fontsize=9)
        for s in ("top", "right", "left"):
            ax.spines[s].set_visible(False)
    fig.tight_layout()
    return _save(fig, out_stem)


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
    """Mean rho over seeds and the range of permutation p-values for correlation ``key``."""
    rs = [(_num(c.get("rho")), _num(c.get("p"))) for a in runs
          if (c := (a.get("correlations") or {}).get(key))]
    rho = np.array([r for r, _ in rs])
    p = np.array([q for _, q in rs])
    rho, p = rho[np.isfinite(rho)], p[np.isfinite(p)]
    return {"rho": float(rho.mean()) if rho.size else float("nan"),
            "rho_sd": float(rho.std(ddof=1)) if rho.size > 1 else 0.0,
            "p_min": float(p.min()) if p.size else float("nan"),
            "p_max": float(p.max()) if p.size else float("nan"), "n_seeds": len(rs)}


def _corr_text(c: dict, name: str) -> str:
    if not np.isfinite(c["rho"]):
        return f"{name}: n/a"
    if not np.isfinite(c["p_min"]):
        return f"{name} $\\rho$={c['rho']:.2f}, p n/a (< 3 points)"
    p = (f"p={c['p_min']:.3g}" if c["p_min"] == c["p_max"]
         else f"p in [{c['p_min']:.3g}, {c['p_max']:.3g}]")
    return f"{name} $\\rho$={c['rho']:.2f}, perm. {p}"


def write_fig3(analyses, out_stem) -> list[str]:
    """Figure 3: per block, mean Jaccard(m_1, m_2) (chance level marked) and mean G_ii side by
    side, error bars = std over seeds; the layer-level Spearman rho and permutation p in the
    title."""
    groups = _groups(analyses)
    fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups), 3.8), squeeze=False)
    colors = plt.get_cmap("cividis")([0.25, 0.8])
    for ax, (label, runs) in zip(axes[0], groups):
        blocks = block_summary(runs)
        x = np.arange(len(blocks))
        w = 0.38
        jac = [b["jaccard_mu"] for b in blocks]
        ax.bar(x - w / 2, jac, w, yerr=[b["jaccard_sd"] for b in blocks], capsize=3,
               color=colors[1], hatch="//", edgecolor="black", label="Jaccard$(m_1, m_2)$")
        ax.scatter(x - w / 2, [b["chance_jaccard_mu"] for b in blocks], marker="D", s=28,
                   facecolor="white", edgecolor="black", zorder=4, label="chance Jaccard")
        ax.set_ylabel("mask overlap (Jaccard)")
        ax2 = ax.twinx()
        ax2.bar(x + w / 2, [b["gw_ii_mean_mu"] for b in blocks], w,
                yerr=[b["gw_ii_mean_sd"] for b in blocks], capsize=3, color=colors[0],
                hatch="..", edgecolor="black", label="mean $G_{ii}$")
        ax2.set_ylabel("mean $G_{ii}$ (GW distance)")
        ax.set_xticks(x, [f"block {b['block']}\n({len(b['layers'])} layers)" for b in blocks],
                      fontsize=8)
        layer_c = correlation_summary(runs, "layer_gw_vs_jaccard")
        block_c = correlation_summary(runs, "block_gw_vs_jaccard")
        ax.set_title(f"{label} ({len(runs)} seed{'s' * (len(runs) > 1)})\n"
                     f"{_corr_text(layer_c, 'layers')}; {_corr_text(block_c, 'blocks')}",
                     fontsize=8)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", ncol=3,
                  bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    return _save(fig, out_stem)
