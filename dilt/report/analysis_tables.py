"""LaTeX tables of Experiment 2: functional blocks aligned across seeds, and the correlations.

Spectral clustering numbers a seed's blocks by depth, but block ``b`` of one seed need not hold
the same layers as block ``b`` of another. Blocks are therefore aligned across seeds by their
layer membership: the first seed's blocks are the reference, and every other seed's blocks are
assigned to them by the Hungarian method on the Jaccard similarity of the layer sets (a block
sharing no layer with any reference block opens a new aligned block). Each seed's own layer and
parameter counts are reported beside the pooled statistics.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from dilt.io import write_text
from dilt.report.latex import booktabs_table, empty_table, escape, mean_std

MIN_POINTS = 4
CORRELATIONS = [("layer_gw_vs_jaccard", "G_ii vs Jaccard, layers"),
                ("layer_gw_vs_jaccard_partial_depth", "G_ii vs Jaccard given depth (partial), layers"),
                ("block_gw_vs_jaccard", "G_ii vs Jaccard, blocks"),
                ("layer_cka_vs_gw", "CKA vs G_ii, layers")]


def _seed(a: dict, i: int):
    return (a.get("meta") or {}).get("seed", a.get("seed", i))


def _jac(x: set, y: set) -> float:
    return len(x & y) / len(x | y) if x | y else 0.0


def align_blocks(runs: list[dict]) -> list[dict]:
    """Blocks of every seed aligned by layer membership (see the module docstring).

    Returns one dict per aligned block, ordered by the reference layers' depth: ``layers`` (the
    reference layer set, in order), ``members`` {seed: that seed's block dict} and
    ``agreement`` {seed: Jaccard of its layer set with the reference set}."""
    order = sorted(range(len(runs)), key=lambda i: (str(_seed(runs[i], i)), i))
    aligned: list[dict] = []
    for i in order:
        a, seed = runs[i], _seed(runs[i], i)
        blocks = list(a.get("blocks") or [])
        if not blocks:
            continue
        sets = [set(b.get("layers") or []) for b in blocks]
        if aligned:
            sim = np.array([[_jac(s, set(r["layers"])) for r in aligned] for s in sets])
            rows, cols = linear_sum_assignment(-sim)
            hit = {r: c for r, c in zip(rows, cols) if sim[r, c] > 0}
        else:
            hit = {}
        for bi, b in enumerate(blocks):
            if bi in hit:
                target = aligned[hit[bi]]
            else:
                target = {"layers": list(b.get("layers") or []), "members": {}, "agreement": {}}
                aligned.append(target)
            target["members"][seed] = b
            target["agreement"][seed] = _jac(sets[bi], set(target["layers"]))
    depth = {n: k for a in runs for k, n in enumerate(a.get("layer_names") or [])}
    aligned.sort(key=lambda r: min((depth.get(n, math.inf) for n in r["layers"]),
                                   default=math.inf))
    return aligned


def _counts(values) -> str:
    return "/".join(values)


def _params(v) -> str:
    if not v:
        return "0"
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else str(int(v))


def correlation_cell(runs: list[dict], key: str) -> dict:
    """Mean (and std) of the per-seed rho of correlation ``key`` over the seeds where it rests
    on at least :data:`MIN_POINTS` points; ``testable`` False (never a value) when none does."""
    cs = [(a.get("correlations") or {}).get(key) or {} for a in runs]
    ok = [c for c in cs if c.get("rho") is not None and (c.get("n") or 0) >= MIN_POINTS
          and math.isfinite(float(c["rho"]))]
    ns = [int(c.get("n") or 0) for c in cs if c]
    rhos = [float(c["rho"]) for c in ok]
    ps = [float(c["p"]) for c in ok if c.get("p") is not None]
    return {"testable": bool(ok), "rhos": rhos, "ps": ps, "n_seeds": len(ok),
            "n_total": len(runs), "n_points": ns}


def write_exp2_blocks(analyses_by_setting: dict[str, list[dict]], out_path) -> str:
    """Write the block table (blocks aligned across seeds by layer membership; each seed's layer
    and parameter counts; mean G_ii, Jaccard, chance Jaccard and their ratio, mean +- std over
    the seeds that have the block) and the correlation table (per-seed Spearman rho over at
    least four points, else "not testable") to ``out_path``; returns the LaTeX text."""
    settings = {k: v for k, v in analyses_by_setting.items() if v}
    if not settings:
        text = empty_table("Functional blocks: GW distance and mask overlap.", "tab:exp2-blocks",
                           "No analysis results were available.")
        write_text(out_path, text)
        return text

    rows = []
    for setting, runs in settings.items():
        seeds = sorted({_seed(a, i) for i, a in enumerate(runs)}, key=str)
        for k, blk in enumerate(align_blocks(runs)):
            mem = blk["members"]
            get = (lambda key, mem=mem, seeds=seeds: [mem[s].get(key) if mem[s].get(key) is not None
                                                      else math.nan for s in seeds if s in mem])
            layers = blk["layers"]
            span = f"{layers[0]} .. {layers[-1]}" if len(layers) > 1 else (layers[0] if layers else "")
            rows.append({
                "Setting": escape(setting), "Block": f"{k} ({escape(span)})",
                "Layers": _counts([str(len(mem[s].get("layers") or [])) if s in mem else "--"
                                   for s in seeds]),
                "Params": _counts([_params(mem[s].get("params")) if s in mem else "--"
                                   for s in seeds]),
                "Agree": f"{np.mean(list(blk['agreement'].values())):.2f}",
                "mean G_ii": mean_std(get("gw_ii_mean"), scale=1, digits=4),
                "Jaccard %": mean_std(get("jaccard"), scale=100, digits=1),
                "Chance %": mean_std(get("chance_jaccard"), scale=100, digits=1),
                "Ratio": mean_std(get("ratio"), scale=1, digits=2),
                "Seeds": f"{len(mem)}/{len(seeds)}",
            })
    df = pd.DataFrame(rows)
    text = booktabs_table(
        df, caption="Functional blocks found by spectral clustering of the joint GW matrix, "
                    "aligned across seeds by layer membership: mean $G_{ii}$ and the Jaccard "
                    "overlap of the two partition masks over the block's prunable weights, "
                    "against the chance overlap of random masks with the same per-layer counts "
                    "(mean $\\pm$ std over the seeds that have the block).",
        label="tab:exp2-blocks", column_format="p{0.16\\linewidth}p{0.16\\linewidth}llrrrrrr",
        raw_columns=list(df.columns),
        notes="Alignment: the first seed's blocks are the reference; each other seed's blocks "
              "are matched to them by the Hungarian method on the Jaccard similarity of their "
              "layer sets, and a block sharing no layer with any reference block starts a new "
              "row. Block: the reference block's first and last layer. Layers, Params: each "
              "seed's own counts (seeds in order, -- where a seed has no such block). Agree: mean "
              "Jaccard of the seeds' layer sets with the reference set. Layers without a mask "
              "entry (dense first layer, head) count in mean $G_{ii}$ but not in the Jaccard.")
    text = text.replace(r"\begin{tabular}", r"\resizebox{\ifdim\width>\linewidth\linewidth"
                        r"\else\width\fi}{!}{\begin{tabular}", 1).replace(
        r"\end{tabular}", r"\end{tabular}}", 1)

    crow = []
    for setting, runs in settings.items():
        for key, name in CORRELATIONS:
            c = correlation_cell(runs, key)
            pts = sorted(set(c["n_points"]))
            pts_text = (f"{pts[0]}" if len(pts) == 1 else f"{pts[0]}--{pts[-1]}") if pts else "--"
            if not pts:
                rho, p = "--", "--"
            elif not c["testable"]:
                rho, p = f"not testable ($n$ = {pts_text} $<$ {MIN_POINTS})", "--"
            else:
                rho = mean_std(c["rhos"], scale=1, digits=2)
                p = (f"{min(c['ps']):.3g}" if len(set(c["ps"])) == 1 else
                     f"{min(c['ps']):.3g}--{max(c['ps']):.3g}") if c["ps"] else "--"
            crow.append({"Setting": escape(setting), "Spearman correlation": escape(name),
                         "rho": rho, "permutation p": p, "Points": pts_text,
                         "Seeds": f"{c['n_seeds']}/{c['n_total']}"})
        aris = [float(a["ari"]) for a in runs if a.get("ari") is not None]
        ks = [str(a["k"]) for a in runs if a.get("k") is not None]
        crow.append({"Setting": escape(setting),
                     "Spearman correlation": f"ARI of F1 vs F2 layer clusters (k = {', '.join(ks)})",
                     "rho": mean_std(aris, scale=1, digits=2), "permutation p": "--",
                     "Points": "--", "Seeds": f"{len(aris)}/{len(runs)}"})
    cdf = pd.DataFrame(crow)
    text += "\n" + booktabs_table(
        cdf, caption="Spearman correlation between $G_{ii}$ and the layer / block Jaccard "
                     "overlap, the partial correlation given depth (layer index), and linear CKA "
                     "of matched layers against $G_{ii}$ (mean $\\pm$ std of the per-seed $\\rho$; "
                     "range of two-sided permutation $p$-values over seeds).",
        label="tab:exp2-correlations", column_format="llrrrr", raw_columns=list(cdf.columns),
        notes=f"A seed's correlation enters only when it rests on at least {MIN_POINTS} points "
              "(Points: per-seed counts; Seeds: seeds that enter / all); otherwise the cell reads "
              "not testable. Layers without a mask entry are left out of the Jaccard "
              "correlations. ARI compares network 1's and network 2's layer clusters; k is the "
              "number of clusters per seed. The claims about these correlations (Jaccard over "
              "its chance level, partialled on depth and density) are tested in "
              "Table~\\ref{tab:claims}.")
    write_text(out_path, text)
    return text


__all__ = ["write_exp2_blocks"]


def exp2_findings(analyses_by_setting: dict[str, list[dict]], alpha: float = 0.05) -> str:
    """LaTeX list for the appendix: per setting, each seed's Spearman rho of G_ii against the
    layer Jaccard (raw, and with depth partialled out) with its permutation p and point count;
    a seed with fewer than :data:`MIN_POINTS` points reads "not testable". No verdict is drawn
    here: the experiment-2 claims are decided in the claims table."""
    if not any(analyses_by_setting.values()):
        return ""
    lines = ["", "%% E2-listing", r"\paragraph{Experiment 2, per seed.}",
             r"Spearman $\rho$ of $G_{ii}$ against the raw layer Jaccard, per seed, with its "
             r"permutation $p$ and the number of layers it rests on (the claims use the Jaccard "
             r"over its chance level instead; see Table~\ref{tab:claims}).", r"\begin{itemize}"]
    for setting, runs in analyses_by_setting.items():
        parts = []
        for key, name in (("layer_gw_vs_jaccard", "raw"),
                          ("layer_gw_vs_jaccard_partial_depth", "given depth")):
            seeds = []
            for i, a in enumerate(runs):
                c = (a.get("correlations") or {}).get(key) or {}
                n = int(c.get("n") or 0)
                if c.get("rho") is None or n < MIN_POINTS or not math.isfinite(float(c["rho"])):
                    seeds.append(f"seed {_seed(a, i)}: not testable ($n = {n}$)")
                else:
                    p = "" if c.get("p") is None else f", $p = {float(c['p']):.3g}$"
                    seeds.append(f"seed {_seed(a, i)}: $\\rho = {float(c['rho']):+.2f}${p}, "
                                 f"$n = {n}$")
            parts.append(f"{name}: " + "; ".join(seeds))
        lines.append(rf"\item {escape(setting)}. " + ". ".join(parts) + ".")
    lines.append(r"\end{itemize}")
    return "\n".join(lines) + "\n"
