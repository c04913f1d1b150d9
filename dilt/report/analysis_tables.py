"""LaTeX table of Experiment 2: per-block GW and mask overlap, plus the correlation rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dilt.io import write_text
from dilt.report.analysis_figures import block_summary, correlation_summary
from dilt.report.latex import booktabs_table, empty_table, escape, mean_std

CORRELATIONS = [("layer_gw_vs_jaccard", "G_ii vs Jaccard, layers"),
                ("layer_gw_vs_jaccard_partial_depth", "G_ii vs Jaccard given depth (partial), layers"),
                ("block_gw_vs_jaccard", "G_ii vs Jaccard, blocks"),
                ("layer_cka_vs_gw", "CKA vs G_ii, layers")]


def _p(c: dict) -> str:
    if not math.isfinite(c["p_min"]):
        return "--"
    if c["p_min"] == c["p_max"]:
        return f"{c['p_min']:.3g}"
    return f"{c['p_min']:.3g}--{c['p_max']:.3g}"


def _rho(c: dict) -> str:
    if not math.isfinite(c["rho"]):
        return "--"
    if c["n_seeds"] > 1:
        return f"{c['rho']:.2f} $\\pm$ {c['rho_sd']:.2f}"
    return f"{c['rho']:.2f}"


def write_exp2_blocks(analyses_by_setting: dict[str, list[dict]], out_path) -> str:
    """Write the block table (per setting and block: layers, parameters, mean G_ii, Jaccard,
    chance Jaccard and their ratio, mean +- std over seeds) and the correlation table (Spearman
    rho with permutation p over layers, partial rho given depth, over blocks, CKA vs GW) to
    ``out_path``; returns the LaTeX text."""
    settings = {k: v for k, v in analyses_by_setting.items() if v}
    if not settings:
        text = empty_table("Functional blocks: GW distance and mask overlap.", "tab:exp2-blocks",
                           "No analysis results were available.")
        write_text(out_path, text)
        return text

    rows = []
    for setting, runs in settings.items():
        for b in block_summary(runs):
            layers = b["layers"]
            span = f"{layers[0]} .. {layers[-1]}" if len(layers) > 1 else (layers[0] if layers else "")
            rows.append({
                "Setting": escape(setting), "Block": str(b["block"]),
                "Layers": f"{len(layers)} ({escape(span)})",
                "Params": f"{b['params']:,}" if b.get("params") else "--",
                "mean G_ii": mean_std(b["gw_ii_mean"], scale=1, digits=4),
                "Jaccard %": mean_std(b["jaccard"], scale=100, digits=1),
                "Chance %": mean_std(b["chance_jaccard"], scale=100, digits=1),
                "Ratio": mean_std(b["ratio"], scale=1, digits=2),
                "Seeds": str(b["n_seeds"]),
            })
    df = pd.DataFrame(rows)
    seeds = sorted({len(r) for r in settings.values()})
    text = booktabs_table(
        df, caption="Functional blocks found by spectral clustering of the joint GW matrix: "
                    "mean $G_{ii}$ and the Jaccard overlap of the two partition masks over the "
                    "block's prunable weights, against the chance overlap of random masks with "
                    "the same per-layer counts (mean $\\pm$ std over seeds).",
        label="tab:exp2-blocks", column_format="lllrrrrrr", raw_columns=list(df.columns),
        notes="Blocks are the clusters of network 1's layers, numbered by depth; a block "
              "index may be missing in some seeds when k differs (column Seeds). Layers "
              "without a mask entry (dense first layer, head) count in mean $G_{ii}$ but not "
              f"in the Jaccard. Seeds per setting: {', '.join(map(str, seeds))}.")

    crow = []
    for setting, runs in settings.items():
        for key, name in CORRELATIONS:
            c = correlation_summary(runs, key)
            crow.append({"Setting": setting, "Spearman correlation": name, "rho": _rho(c),
                         "permutation p": _p(c), "Seeds": str(c["n_seeds"])})
        aris = [float(a["ari"]) for a in runs if a.get("ari") is not None]
        ks = [str(a["k"]) for a in runs if a.get("k") is not None]
        crow.append({"Setting": setting,
                     "Spearman correlation": f"ARI of F1 vs F2 layer clusters (k = {', '.join(ks)})",
                     "rho": mean_std(aris, scale=1, digits=2), "permutation p": "--",
                     "Seeds": str(len(aris))})
    cdf = pd.DataFrame(crow)
    text += "\n" + booktabs_table(
        cdf, caption="Spearman correlation between $G_{ii}$ and the layer / block Jaccard "
                     "overlap, the partial correlation given depth (layer index), and linear CKA "
                     "of matched layers against $G_{ii}$ (mean $\\pm$ std of $\\rho$ over seeds; "
                     "range of two-sided permutation $p$-values over seeds).",
        label="tab:exp2-correlations", column_format="llrrr", raw_columns=["rho", "permutation p"],
        notes="Layers without a mask entry are left out of the Jaccard correlations. ARI "
              "compares network 1's and network 2's layer clusters; k is the number of clusters "
              "per seed.")
    write_text(out_path, text)
    return text


__all__ = ["write_exp2_blocks"]


def exp2_findings(analyses_by_setting: dict[str, list[dict]], alpha: float = 0.05) -> str:
    """LaTeX paragraph for the experiment-2 hypothesis (layers with a lower G_ii have a higher
    mask overlap), one line per setting, with a fixed rule: it *holds* for a setting when the
    mean Spearman rho over seeds is negative and the permutation p-value is below ``alpha`` in
    a majority of seeds; the same rule is applied with depth partialled out."""
    if not analyses_by_setting:
        return ""
    lines = ["", "%% H5", r"\paragraph{H5: layers that stay functionally similar (low $G_{ii}$) "
             r"keep more shared weights (high Jaccard).}",
             f"Rule: holds when the mean Spearman $\\rho$ over seeds is negative and its "
             f"permutation $p < {alpha}$ in a majority of seeds; the test is repeated with depth "
             r"(layer index) partialled out, and the iid sibling control is listed beside the "
             r"class-disjoint experts.", r"\begin{itemize}"]
    for setting, runs in analyses_by_setting.items():
        parts = []
        for key, name in (("layer_gw_vs_jaccard", "raw"),
                          ("layer_gw_vs_jaccard_partial_depth", "given depth")):
            cs = [r.get("correlations", {}).get(key) or {} for r in runs]
            rhos = [c["rho"] for c in cs if c.get("rho") is not None]
            ps = [c["p"] for c in cs if c.get("p") is not None]
            if not rhos or not ps:
                parts.append(f"{name}: not testable (too few layers with a mask)")
                continue
            rho = float(np.mean(rhos))
            sig = sum(p < alpha for p in ps)
            verdict = "holds" if rho < 0 and sig * 2 > len(runs) else "does not hold"
            parts.append(f"{name}: $\\rho = {rho:+.2f}$, $p < {alpha}$ in {sig} of {len(runs)} "
                         f"seeds: {verdict}")
        lines.append(rf"\item {escape(setting)}: " + "; ".join(parts) + ".")
    lines.append(r"\end{itemize}")
    return "\n".join(lines) + "\n"
