"""The manuscript: generated results and appendix, per-suite macros, and the latexmk build.

``paper/main.tex`` is shared by every suite. For suite S, :func:`build_paper` writes
``paper/S/suite.tex`` (macros naming ``tables/S`` and ``figures/S``), ``paper/S/results.tex``
(one sentence per declared claim, from :func:`dilt.report.verdicts.suite_verdicts`) and
``paper/S/findings.tex`` (the itemised comparisons of the appendix, from ``results.csv``), then
compiles from the repository root::

    TEXINPUTS=paper/S: latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir=paper/S paper/main.tex
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from dilt.io import write_text
from dilt.report import verdicts as V
from dilt.report.aggregate import read_results
from dilt.report.latex import escape
from dilt.report.tables import MODE_ABBR, pct, ticket_label

TABLES = ["claims", "exp1_sparsity", "exp1_rounds", "exp2_blocks", "exp3_specialists",
          "exp4_transfer"]
FIGURES = ["fig1_gw_heatmap", "fig2_layer_clusters", "fig3_block_analysis", "acc_vs_sparsity",
           "acc_vs_rounds"]
MAX_MAIN_PAGES = 12
TEX_HINT = ("PDF skipped: latexmk not found; install TeX with `apt-get install latexmk "
            "texlive-latex-recommended texlive-latex-extra texlive-pictures texlive-science` "
            "or `conda install -c conda-forge texlive-core`, then rerun.")
VERDICT_ORDER = ("supported", "refuted", "inconclusive", "descriptive", "not testable", "not run")
SECTIONS = [("E1", "Cost and accuracy at equal sparsity (experiment 1)"),
            ("E3", "Specialisation (experiment 3)"),
            ("E4", "Transfer (experiment 4)"),
            ("E2", "Functional blocks (experiment 2)")]


# ---------------------------------------------------------------- results (main text)

def _num(x: float) -> str:
    return f"{x:+.2f}"


def _group_text(group: dict) -> str:
    g = {k: v for k, v in group.items() if v not in (None, "-")}
    src = g.pop("source_dataset", None)
    label = "/".join(str(v) for v in g.values())
    if src is not None and src != g.get("dataset"):
        label += f" (masks from {src})"
    return label or "all results"


def _targets(v: dict) -> str:
    ts = sorted({float(c["anchor_target"]) for c in v.get("comparisons", [])
                 if c.get("counted", True) and c.get("anchor_target") is not None
                 and not pd.isna(c["anchor_target"])})
    return ", ".join(f"{100 * t:g}" for t in ts) + "\\%" if ts else ""


def group_sentence(v: dict) -> str:
    """One LaTeX sentence for one verdict: group, paired difference and interval, the densities
    compared, the verdict, and what was left out (unmatched, flagged)."""
    where = escape(_group_text(v["group"]))
    if v["verdict"] in ("not run", "not testable"):
        return f"On {where} it is \\emph{{{v['verdict']}}}: {escape(v['reason'])}."
    if math.isnan(v["mean"]):
        diff = "no paired difference could be formed"
    else:
        iv = "" if math.isnan(v["lo"]) else f" [{_num(v['lo'])}, {_num(v['hi'])}]"
        diff = (f"the mean paired difference is {_num(v['mean'])}{iv} {escape(v['units'])} over "
                f"{v['n']} seed{'s' if v['n'] != 1 else ''}")
    at = []
    if v["kind"] != "correlation":
        t = _targets(v)
        if t:
            at.append(f"targets {t}")
        gap = v.get("density_gap", math.nan)
        if not pd.isna(gap):
            at.append(f"mean density ratio {1 + gap:.2f}" if "same target" in v["comparison"]
                      else f"largest density gap counted {100 * gap:.1f}\\%")
        if v.get("interpolated"):
            at.append(f"{v['interpolated']} value(s) interpolated")
    left = []
    if v.get("unmatched"):
        left.append(f"{v['unmatched']} unmatched pair(s)")
    if v.get("flagged_comparisons"):
        left.append(f"{v['flagged_comparisons']} comparison(s) with flagged inputs "
                    f"({escape(v['flag_reasons'].replace(';', ', '))})")
    text = (f"On {where} {diff}" + (f" ({'; '.join(at)})" if at else "")
            + f": \\emph{{{v['verdict']}}}")
    if v["verdict"] == "descriptive":
        text += " (the masks differ in density: reported, not judged)"
    if left:
        text += "; left out: " + " and ".join(left)
    return text + "."


def claim_paragraph(vs: list[dict]) -> str:
    """The sentences of one claim (all its groups): what is compared, then one per group."""
    v0 = vs[0]
    head = (f"\\textbf{{{escape(v0['id'])}}}. {escape(v0['text'])} Compared: "
            f"{escape(v0['comparison'])}.")
    return " ".join([head] + [group_sentence(v) for v in vs])


def results_text(verdicts: list[dict], tolerance: float = V.TOLERANCE) -> str:
    """The generated results section (LaTeX): a tally, then one paragraph per claim, grouped by
    experiment, every number taken from ``verdicts``."""
    by_id: dict[str, list[dict]] = {}
    for v in verdicts:
        by_id.setdefault(v["id"], []).append(v)
    tally = Counter(v["verdict"] for v in verdicts)
    counts = ", ".join(f"{tally[k]} {k}" for k in VERDICT_ORDER if tally[k])
    alpha = verdicts[0].get("alpha", 0.05) if verdicts else 0.05
    lines = ["% Generated by dilt.report.paper.results_text from the verdicts; do not edit.",
             f"The suite declares {len(by_id)} claims, evaluated in {len(verdicts)} groups "
             f"(model, data set): {counts or 'none'}. Every sentence below is generated from "
             f"Table~\\ref{{tab:claims}}. A difference is the mean over seeds of the paired, "
             f"per-seed difference with its {100 * (1 - alpha):.0f}\\% interval; accuracy "
             f"comparisons are at equal actual density (within "
             f"{100 * tolerance:g}\\% relative, or interpolated between bracketing IMP rounds), "
             "and pairs that cannot be matched or that involve a flagged ticket are left out and "
             "counted.", ""]
    done = set()
    for prefix, title in SECTIONS:
        ids = [i for i in by_id if i.split("-")[0] == prefix]
        if not ids:
            continue
        lines += [f"\\paragraph{{{title}.}}", ""]
        for i in ids:
            lines += [claim_paragraph(by_id[i]), ""]
            done.add(i)
    rest = [i for i in by_id if i not in done]
    if rest:
        lines += ["\\paragraph{Other claims.}", ""]
        lines += [claim_paragraph(by_id[i]) + "\n" for i in rest]
    return "\n".join(lines) + "\n"


def write_results(verdicts: list[dict], out_path: str | Path,
                  tolerance: float = V.TOLERANCE) -> Path:
    write_text(out_path, results_text(verdicts, tolerance))
    return Path(out_path)


# ---------------------------------------------------------------- appendix (itemised lists)

LISTING_NOTE = (
    "The lists below give every comparison behind the claims, group by group (mean over seeds, "
    "top-1 in \\%, each side's mean actual sparsity $s$). They draw no conclusion: the verdicts "
    "are those of Table~\\ref{tab:claims}. A row is marked \\textsc{unmatched} when the two "
    "sides' mean densities differ by more than the tolerance, and \\textsc{flagged} when a "
    "ticket of either side is flagged in some seed; such rows are listed but never count as "
    "support. Density-matched tickets that are the same mask as a source-matched one are listed "
    "once.")


def _acc(values) -> str:
    return f"{100 * np.mean(values):.1f}\\%"


def _where(model, dataset, partition=None, mode=None, target=None) -> str:
    parts = [f"{escape(model)} on {escape(dataset)}"]
    if partition not in (None, "-"):
        parts.append(f"partition {escape(partition)}")
    if mode not in (None, "-"):
        parts.append(MODE_ABBR.get(mode, escape(mode)))
    if target is not None:
        parts.append(f"target {pct(target)}")
    return ", ".join(parts)


def mark(a: pd.DataFrame, b: pd.DataFrame, tolerance: float = V.TOLERANCE,
         density: bool = True) -> str:
    """``matched`` / ``UNMATCHED (gap)`` and ``FLAGGED (reasons)`` for two groups of rows."""
    out = []
    if density:
        da, db = 1 - a.actual_sparsity.mean(), 1 - b.actual_sparsity.mean()
        gap = abs(db - da) / da if da > 0 else math.inf
        out.append(f"densities within {100 * gap:.1f}\\%" if gap <= tolerance else
                   f"\\textsc{{unmatched}} (densities differ by {100 * gap:.0f}\\%)")
    fl = V._join_flags(*a.get("flags", pd.Series(dtype=str)), *b.get("flags", pd.Series(dtype=str)))
    if fl:
        out.append(f"\\textsc{{flagged}} ({escape(fl.replace(';', ', '))})")
    return "; ".join(out)


def _pp(a, b) -> str:
    return f"$\\Delta = {100 * (np.mean(a) - np.mean(b)):+.1f}$ points"


def _listing(name: str, items: list[str], empty: str) -> list[str]:
    lines = [f"\\paragraph{{{name}}}"]
    if not items:
        return lines + [f"Not run on this suite: {empty}", ""]
    n_ok = sum(("unmatched" not in t and "flagged" not in t) for t in items)
    lines.append(f"{len(items)} comparisons, {n_ok} at matched density and unflagged.")
    return lines + ["\\begin{itemize}"] + [f"\\item {t}" for t in items] + ["\\end{itemize}", ""]


def _sel(df, **kw) -> pd.DataFrame:
    m = np.ones(len(df), bool)
    for k, v in kw.items():
        m &= (df[k] == v).to_numpy()
    return df[m]


def _masks(*sides: pd.DataFrame) -> tuple:
    """What a comparison compares: each side's (seed, round, actual sparsity) rows. A
    density-matched ticket that is a source-matched one gives the same tuple."""
    return tuple(tuple(sorted(zip(s.seed, s["round"], s.actual_sparsity.round(9)))) for s in sides)


def _listed_once(groups: list, mode_at: int, sides) -> list:
    """``groups`` ((key, frame) pairs) less those that compare the same masks as another group
    of the same model, data set and partition (``key[:3]``); the source-matched one is kept.
    ``sides(frame)``: the frames compared; ``key[mode_at]``: the group's mode."""
    first: dict = {}
    for key, g in sorted(groups, key=lambda kg: kg[0][mode_at] != "source-matched"):
        first.setdefault((key[:3], _masks(*sides(g))), key)
    return [(key, g) for key, g in groups if first[(key[:3], _masks(*sides(g)))] == key]


def union_vs_core(df: pd.DataFrame, tolerance: float = V.TOLERANCE) -> list[str]:
    d = _sel(df, experiment="retrain", split="full", metric="top1", method=V.DILT, control="ticket")
    out = []
    groups = list(d.groupby(["model", "dataset", "partition", "mode", "target_sparsity"]))
    for (model, ds, part, mode, t), g in _listed_once(
            groups, 3, lambda g: (g[g.ticket == "union"], g[g.ticket == "core"])):
        u, c = g[g.ticket == "union"], g[g.ticket == "core"]
        if u.empty or c.empty:
            continue
        out.append(f"{_where(model, ds, part, mode, t)}: union {_acc(u.value)} "
                   f"($s={u.actual_sparsity.mean():.3f}$) vs core {_acc(c.value)} "
                   f"($s={c.actual_sparsity.mean():.3f}$), {_pp(u.value, c.value)}; "
                   f"{mark(u, c, tolerance)}.")
    return out


def ticket_vs_random(df: pd.DataFrame, tolerance: float = V.TOLERANCE) -> list[str]:
    d = _sel(df, experiment="retrain", split="full", metric="top1")
    d = d[~V.same_mask_duplicates(d)]
    keys = ["model", "dataset", "partition", "method", "ticket", "mode", "target_sparsity"]
    out = []
    for key, g in d.groupby(keys):
        a, b = g[g.control == "ticket"], g[g.control == "random"]
        if a.empty or b.empty:
            continue
        model, ds, part, method, ticket, mode, t = key
        out.append(f"{_where(model, ds, part, None, t)}, "
                   f"{escape(ticket_label(method, ticket, mode))}: ticket {_acc(a.value)} vs "
                   f"random {_acc(b.value)} ($s={a.actual_sparsity.mean():.3f}$), "
                   f"{_pp(a.value, b.value)}; {mark(a, b, tolerance)}.")
    return out


def _per_seed(g: pd.DataFrame, split: str) -> pd.Series:
    return g[g.split == split].groupby("seed").value.mean()


def specialists(df: pd.DataFrame) -> list[str]:
    """Per group: each specialist's T_1 - T_2 gap, and the difference in differences."""
    d = _sel(df, experiment="retrain", metric="top1", method=V.DILT, control="ticket")
    out = []
    groups = list(d.groupby(["model", "dataset", "partition", "mode", "target_sparsity"]))
    specs = lambda g: tuple(g[(g.ticket == k) & (g.split == "full")] for k in ("spec1", "spec2"))  # noqa: E731
    for (model, ds, part, mode, t), g in _listed_once(groups, 3, specs):
        if not {"part1", "part2"} <= set(g.split) or not {"spec1", "spec2"} <= set(g.ticket):
            continue
        gap = {k: (_per_seed(g[g.ticket == k], "part1") - _per_seed(g[g.ticket == k], "part2"))
               for k in ("spec1", "spec2", "core")}
        did = (gap["spec1"] - gap["spec2"]).dropna()
        text = (f"{_where(model, ds, part, mode, t)}: $T_1 - T_2$ gap of spec$_1$ "
                f"${100 * gap['spec1'].mean():+.1f}$, of spec$_2$ ${100 * gap['spec2'].mean():+.1f}$"
                f" points; difference in differences ${100 * did.mean():+.1f}$ points")
        core = g[(g.ticket == "core") & (g.split == "full")]
        if len(gap["core"].dropna()):
            text += (f" (the core's own gap: ${100 * gap['core'].mean():+.1f}$, at its own "
                     f"$s={core.actual_sparsity.mean():.3f}$ against the specialists' "
                     f"${g[g.ticket.isin(['spec1', 'spec2'])].actual_sparsity.mean():.3f}$)")
        sp = g[g.ticket.isin(["spec1", "spec2"])]
        fl = mark(sp, sp, density=False)
        out.append(text + (f"; {fl}" if fl else "") + ".")
    return out


def transfer(df: pd.DataFrame, tolerance: float = V.TOLERANCE) -> list[str]:
    d = _sel(df, experiment="transfer", split="full", metric="top1", control="ticket")
    out = []
    for (model, src, ds, t), g in d.groupby(["model", "source_dataset", "dataset",
                                              "target_sparsity"]):
        lth = g[g.method == V.LTH]
        seen = set()   # a density-matched mask pair that is a source-matched one is listed once
        cores = g[(g.method == V.DILT) & (g.ticket == "core")].groupby(["partition", "mode"])
        for (part, mode), c in sorted(cores, key=lambda kc: (kc[0][0], kc[0][1] != "source-matched")):
            union = g[(g.method == V.DILT) & (g.ticket == "union") & (g.partition == part)
                      & (g["mode"] == mode)]
            for name, other in (("union", union), ("LTH", lth)):
                if other.empty or (part, name, _masks(c, other)) in seen:
                    continue
                seen.add((part, name, _masks(c, other)))
                out.append(f"{escape(model)}, masks from {escape(src)} (partition "
                           f"{escape(part)}, {MODE_ABBR.get(mode, escape(mode))}) trained on "
                           f"{escape(ds)}, target {pct(t)}: core {_acc(c.value)} "
                           f"($s={c.actual_sparsity.mean():.3f}$) vs {name} {_acc(other.value)} "
                           f"($s={other.actual_sparsity.mean():.3f}$), {_pp(c.value, other.value)}; "
                           f"{mark(c, other, tolerance)}.")
    return out


def colt_rounds(df: pd.DataFrame, tolerance: float = V.TOLERANCE) -> list[str]:
    d = _sel(df, experiment="retrain", split="full", metric="top1", control="ticket")
    out = []
    for (model, ds, t), g in d.groupby(["model", "dataset", "target_sparsity"]):
        lth = g[g.method == V.LTH]
        for part, c in g[g.method == V.COLT].groupby("partition"):
            if lth.empty:
                continue
            out.append(f"{_where(model, ds, part, None, t)}: COLT {c['round'].mean():.1f} rounds, "
                       f"{c.epochs.mean():.0f} epochs vs LTH {lth['round'].mean():.1f} rounds, "
                       f"{lth.epochs.mean():.0f} epochs; {mark(c, lth, tolerance)}.")
    return out


def comparisons_text(verdicts: list[dict]) -> list[str]:
    """Per claim and group, the per-target verdicts (flagged ones marked, never counted)."""
    lines = ["\\paragraph{Per-target verdicts.} Each claim's comparisons at one target and mode; "
             "those with flagged inputs are marked and left out of the claim's verdict.",
             "\\begin{itemize}"]
    n = 0
    for v in verdicts:
        for c in v.get("comparisons", []):
            t = c.get("anchor_target")
            where = ", ".join(escape(x) for x in (
                _group_text(v["group"]),
                f"target {100 * float(t):g}%" if t is not None and not pd.isna(t) else "",
                MODE_ABBR.get(str(c.get("anchor_mode")), str(c.get("anchor_mode")))
                if str(c.get("anchor_mode")) not in ("-", "nan") else "",
                str(c.get("anchor_partition")) if str(c.get("anchor_partition")) not in
                ("-", "nan") else "") if x)
            iv = "" if pd.isna(c["lo"]) else f" [{_num(c['lo'])}, {_num(c['hi'])}]"
            diff = "--" if pd.isna(c["mean"]) else f"{_num(c['mean'])}{iv}"
            fl = (f"; \\textsc{{flagged}} ({escape(c['flags'].replace(';', ', '))})"
                  if c.get("flags") else "")
            lines.append(f"\\item {escape(v['id'])}, {where}: {diff} "
                         f"{escape(v['units'])}, {c['verdict']}{fl}.")
            n += 1
    if not n:
        return []
    return lines + ["\\end{itemize}", ""]


def findings_text(df: pd.DataFrame, verdicts: list[dict] | None = None,
                  tolerance: float = V.TOLERANCE) -> str:
    """The appendix's itemised comparisons (LaTeX) for one suite's results."""
    models = ", ".join(escape(m) for m in sorted(df.model.unique())) or "none"
    n_seeds = df.seed.nunique()
    lines = ["% Generated by dilt.report.paper.write_findings from results.csv; do not edit.",
             f"These lists are generated from {len(df)} result rows (models: {models}; "
             f"{n_seeds} seed{'s' if n_seeds != 1 else ''}). {LISTING_NOTE}", ""]
    lines += comparisons_text(verdicts or [])
    sections = [
        ("L1", "Rounds and epochs of COLT and LTH.", colt_rounds(df, tolerance),
         "no COLT and LTH results."),
        ("L2", "Union and core tickets on $T_\\mathrm{full}$.", union_vs_core(df, tolerance),
         "no DiLT core and union results."),
        ("L3", "Tickets and their random controls.", ticket_vs_random(df, tolerance),
         "no random-control results."),
        ("L4", "Specialists on their own and the other partition's classes.", specialists(df),
         "no specialist tickets evaluated on $T_k$ splits."),
        ("L5", "Transfer of the core, union and LTH masks.", transfer(df, tolerance),
         "no transfer results."),
    ]
    for tag, name, items, empty in sections:
        lines.append(f"%% {tag}")
        lines += _listing(name, items, empty)
    if any(str(p).startswith("iid") for p in set(df.partition)):
        lines.append("Partitions named iid split samples, not classes: every part sees all "
                     "classes. They are the sibling control for the class-disjoint partitions.")
    return "\n".join(lines) + "\n"


def write_findings(results_csv: str | Path, out_path: str | Path, extra: str = "",
                   verdicts: list[dict] | None = None, num_classes=None,
                   settings=None) -> Path:
    """Write the appendix listing (``findings.tex``) for ``results_csv``, followed by ``extra``
    (the experiment-2 listing, generated from the analyses). Rows are flagged as the verdicts
    flag them (``num_classes``, ``settings`` as in :func:`dilt.report.verdicts.suite_verdicts`)."""
    df = read_results(results_csv)
    settings = dict(settings or {})
    if len(df):
        nc = num_classes if isinstance(num_classes, (int, float)) else \
            {**V.KNOWN_NUM_CLASSES, **dict(num_classes or {})}
        df["flags"] = V.flag(df, margin=settings.get("chance_margin", V.CHANCE_MARGIN),
                             num_classes=nc, density_floor=settings.get("density_floor"))
    write_text(out_path, findings_text(df, verdicts, settings.get("tolerance", V.TOLERANCE))
               + extra)
    return Path(out_path)


# ---------------------------------------------------------------- build

def required_inputs(suite: str, root: str | Path = ".") -> list[Path]:
    """The files main.tex needs for ``suite``: the manuscript, tables and figure PDFs."""
    root = Path(root)
    return ([root / "paper" / "main.tex"]
            + [root / "tables" / suite / f"{t}.tex" for t in TABLES]
            + [root / "figures" / suite / f"{f}.pdf" for f in FIGURES])


def write_suite_tex(suite: str, out_path: str | Path) -> Path:
    """Macros that point main.tex at this suite's tables and figures (paths from the root)."""
    write_text(out_path, "% Generated by dilt.report.paper; do not edit.\n"
               f"\\newcommand{{\\suitename}}{{{escape(suite)}}}\n"
               f"\\newcommand{{\\tabledir}}{{tables/{suite}}}\n"
               f"\\newcommand{{\\figdir}}{{figures/{suite}}}\n")
    return Path(out_path)


def main_text_pages(out_dir: str | Path) -> int | None:
    """Pages before the appendix of a compiled manuscript: the page of label ``sec:appendix``
    in ``main.aux``, minus one (the appendix starts on a fresh page); None if not found."""
    aux = Path(out_dir) / "main.aux"
    if not aux.exists():
        return None
    m = re.search(r"\\newlabel\{sec:appendix\}\{\{[^}]*\}\{(\d+)\}", aux.read_text())
    return int(m.group(1)) - 1 if m else None


def build_paper(suite: str, root: str | Path = ".", extra_findings: str = "",
                results_csv: str | Path | None = None, *, claims=None, analyses=None,
                num_classes=None, settings=None) -> Path | None:
    """Write suite.tex, results.tex and findings.tex under paper/<suite>/ and compile
    paper/<suite>/main.pdf.

    ``claims`` (the suite's declared claims; default :data:`~dilt.report.verdicts.DEFAULT_CLAIMS`),
    ``analyses`` (experiment-2 results, a list or a mapping setting -> list), ``num_classes``
    ({dataset: K}) and ``settings`` (tolerance, alpha, method, chance_margin, density_floor) are
    passed to :func:`dilt.report.verdicts.suite_verdicts`, as for the claims table. Raises
    FileNotFoundError naming every missing input; returns None (one printed line) when latexmk
    is not installed; raises RuntimeError with the log tail when LaTeX fails.
    """
    root = Path(root)
    missing = [str(p) for p in required_inputs(suite, root) if not p.exists()]
    results_csv = Path(results_csv) if results_csv is not None else root / "results" / suite / "results.csv"
    out_dir = root / "paper" / suite
    if not results_csv.exists() and not (out_dir / "findings.tex").exists():
        missing.append(str(results_csv))
    if missing:
        raise FileNotFoundError(f"cannot build the paper of suite {suite!r}; missing: "
                                + ", ".join(missing))
    write_suite_tex(suite, out_dir / "suite.tex")
    if results_csv.exists():
        verdicts = V.suite_verdicts(results_csv, analyses, claims, num_classes, settings)
        tol = dict(settings or {}).get("tolerance", V.TOLERANCE)
        write_results(verdicts, out_dir / "results.tex", tol)
        write_findings(results_csv, out_dir / "findings.tex", extra_findings, verdicts,
                       num_classes, settings)
    if shutil.which("latexmk") is None:
        print(TEX_HINT)
        return None
    texinputs = f"paper/{suite}{os.pathsep}{os.environ.get('TEXINPUTS', '')}"
    if not texinputs.endswith(os.pathsep):
        texinputs += os.pathsep
    cmd = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error",
           f"-outdir=paper/{suite}", "paper/main.tex"]
    proc = subprocess.run(cmd, cwd=root, env={**os.environ, "TEXINPUTS": texinputs},
                          capture_output=True, text=True)
    pdf = out_dir / "main.pdf"
    if proc.returncode != 0 or not pdf.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"latexmk failed for suite {suite!r} (log: {out_dir / 'main.log'}):\n"
                           f"{tail}")
    pages = main_text_pages(out_dir)
    if pages is not None and pages > MAX_MAIN_PAGES:
        print(f"warning: the main text of suite {suite!r} runs to {pages} pages before the "
              f"appendix (limit {MAX_MAIN_PAGES})")
    return pdf
