"""The manuscript: generated findings, per-suite macros, and the latexmk build.

``paper/main.tex`` is shared by every suite. For suite S, :func:`build_paper` writes
``paper/S/suite.tex`` (macros naming ``tables/S`` and ``figures/S``) and ``paper/S/findings.tex``
(plain sentences from ``results/S/results.csv``), then compiles from the repository root::

    TEXINPUTS=paper/S: latexmk -pdf -interaction=nonstopmode -halt-on-error -outdir=paper/S paper/main.tex
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from dilt.io import write_text
from dilt.report.aggregate import read_results
from dilt.report.latex import escape
from dilt.report.tables import MODE_ABBR, delta, pct, ticket_label

TABLES = ["exp1_sparsity", "exp1_rounds", "exp2_blocks", "exp3_specialists", "exp4_transfer"]
FIGURES = ["fig1_gw_heatmap", "fig2_layer_clusters", "fig3_block_analysis", "acc_vs_sparsity",
           "acc_vs_rounds"]
TEX_HINT = ("PDF skipped: latexmk not found; install TeX with `apt-get install latexmk "
            "texlive-latex-recommended texlive-latex-extra texlive-pictures texlive-science` "
            "or `conda install -c conda-forge texlive-core`, then rerun.")

CRITERION = (
    "Each statement below compares two groups of runs (mean over seeds, top-1 in \\%). A "
    "comparison \\emph{holds} when the difference of the means goes in the predicted direction "
    "by more than the pooled seed standard deviation $\\sqrt{(s_a^2+s_b^2)/2}$; otherwise it "
    "\\emph{does not hold} (either reversed, or within the seed spread). This rule was fixed "
    "before the results were seen; it is a check of spread, not a significance test. With a "
    "single seed there is no spread estimate and only the sign is used.")


# ---------------------------------------------------------------- verdicts

def verdict(a, b) -> tuple[str, float, float]:
    """(verdict text, difference, pooled std) for the prediction mean(a) > mean(b)."""
    d, sd = delta(a, b)
    if math.isnan(sd):
        text = "holds (single seed, sign only)" if d > 0 else "does not hold (single seed, sign only)"
    elif d > sd:
        text = "holds"
    elif d < -sd:
        text = "does not hold (reversed)"
    else:
        text = "does not hold (within the seed spread)"
    return text, d, sd


def _pp(d: float, sd: float) -> str:
    spread = "" if math.isnan(sd) else f", pooled std {sd:.1f}"
    return f"$\\Delta = {d:+.1f}$ points{spread}"


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


def _tag(partition: str = "-", mode: str = "-") -> str:
    """The subgroup a comparison is counted in: partition kind (and mode, if any)."""
    kind = ("full data" if partition == "-" else
            "sibling control" if partition.startswith("iid") else "class-disjoint")
    return f"{kind}, {MODE_ABBR.get(mode, mode)}" if mode != "-" else kind


def _summary(name: str, results: list[tuple[str, str, str]], empty: str,
             note: str = "") -> list[str]:
    """A heading, counts of comparisons that hold (overall and per subgroup), one item each."""
    lines = [f"\\paragraph{{{name}}}"]
    if not results:
        return lines + [f"Not tested on this suite: {empty}", ""]
    main = [r for r in results if "sibling control" not in r[2]] or results
    n_hold = sum(v.startswith("holds") for v, _, _ in main)
    overall = ("holds in every comparison" if n_hold == len(main) else
               "does not hold in any comparison" if n_hold == 0 else
               "holds in some comparisons and does not hold in others")
    scope = "" if main is results else " (sibling control excluded)"
    counts = pd.Series([t for _, _, t in results]).value_counts(sort=False)
    held = pd.Series([t for v, _, t in results if v.startswith("holds")], dtype=object)
    per = "; ".join(f"{escape(t)}: {int((held == t).sum())} of {n}" for t, n in counts.items())
    lines.append(f"On this suite{scope} the prediction {overall}: it holds in {n_hold} of "
                 f"{len(main)} comparisons (by subgroup: {per}). {note}".rstrip())
    lines += ["\\begin{itemize}"] + [f"\\item {s}" for _, s, _ in results]
    return lines + ["\\end{itemize}", ""]


def _sel(df, **kw) -> pd.DataFrame:
    m = np.ones(len(df), bool)
    for k, v in kw.items():
        m &= (df[k] == v).to_numpy()
    return df[m]


# ---------------------------------------------------------------- hypotheses

def union_vs_core(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """H1: the union ticket beats the core ticket on T_full."""
    d = _sel(df, experiment="retrain", split="full", metric="top1", method="dilt", control="ticket")
    out = []
    for (model, ds, part, mode, t), g in d.groupby(["model", "dataset", "partition", "mode",
                                                     "target_sparsity"]):
        u, c = g[g.ticket == "union"], g[g.ticket == "core"]
        if u.empty or c.empty:
            continue
        v, dd, sd = verdict(u.value, c.value)
        out.append((v, f"{_where(model, ds, part, mode, t)}: union {_acc(u.value)} "
                       f"(sparsity {u.actual_sparsity.mean():.3f}) vs core {_acc(c.value)} "
                       f"(sparsity {c.actual_sparsity.mean():.3f}), {_pp(dd, sd)}: {v}.",
                    _tag(part, mode)))
    return out


def ticket_vs_random(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """H2: every ticket beats its random control (same per-layer densities) on T_full."""
    d = _sel(df, experiment="retrain", split="full", metric="top1")
    keys = ["model", "dataset", "partition", "method", "ticket", "mode", "target_sparsity"]
    out = []
    for key, g in d.groupby(keys):
        a, b = g[g.control == "ticket"], g[g.control == "random"]
        if a.empty or b.empty:
            continue
        model, ds, part, method, ticket, mode, t = key
        v, dd, sd = verdict(a.value, b.value)
        out.append((v, f"{_where(model, ds, part, None, t)}, {escape(ticket_label(method, ticket, mode))}: "
                       f"ticket {_acc(a.value)} vs random {_acc(b.value)}, {_pp(dd, sd)}: {v}.",
                    _tag(part, mode)))
    return out


def _per_seed(g: pd.DataFrame, splits) -> pd.Series:
    return g[g.split.isin(splits)].groupby("seed").value.mean()


def specialist_on_own_classes(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """H3: spec_k is more accurate on T_k than on the other partitions' classes."""
    d = _sel(df, experiment="retrain", metric="top1", method="dilt", control="ticket")
    d = d[d.split.str.startswith("part")]
    out = []
    for (model, ds, part, mode, t), g in d.groupby(["model", "dataset", "partition", "mode",
                                                     "target_sparsity"]):
        splits = sorted(g.split.unique())
        for ticket in sorted(x for x in g.ticket.unique() if x.startswith("spec")):
            own = f"part{ticket[4:]}"
            if own not in splits or len(splits) < 2:
                continue
            others = [s for s in splits if s != own]
            s = g[g.ticket == ticket]
            a, b = _per_seed(s, [own]), _per_seed(s, others)
            v, dd, sd = verdict(a, b)
            text = (f"{_where(model, ds, part, mode, t)}, {ticket}: {_acc(a)} on $T_{{{own[4:]}}}$ "
                    f"vs {_acc(b)} on the other partitions' classes, {_pp(dd, sd)}: {v}.")
            core = g[g.ticket == "core"]
            if not core.empty:
                cd, _ = delta(_per_seed(core, [own]), _per_seed(core, others))
                text += (f" For reference, the core ticket's difference between the same splits "
                         f"is ${cd:+.1f}$ points.")
            n_coll = int(s.drop_duplicates("seed").collapsed.sum())
            if n_coll:
                text += (f" The ticket has an empty layer (collapsed) in {n_coll} of "
                         f"{s.seed.nunique()} seeds.")
            out.append((v, text, _tag(part, mode)))
    return out


def core_transfers_better(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """H4: the core ticket transfers better than the union and the LTH ticket."""
    d = _sel(df, experiment="transfer", split="full", metric="top1", control="ticket")
    out = []
    for (model, src, ds, t), g in d.groupby(["model", "source_dataset", "dataset",
                                              "target_sparsity"]):
        lth = g[g.method == "lth"]
        for (part, mode), c in g[(g.method == "dilt") & (g.ticket == "core")].groupby(
                ["partition", "mode"]):
            union = g[(g.method == "dilt") & (g.ticket == "union") & (g.partition == part)
                      & (g["mode"] == mode)]
            lth_m = lth[lth["mode"] == mode] if (lth["mode"] == mode).any() else lth
            for name, other in (("union", union), ("LTH", lth_m)):
                if other.empty:
                    continue
                v, dd, sd = verdict(c.value, other.value)
                out.append((v, f"{escape(model)}, masks from {escape(src)} "
                               f"(partition {escape(part)}, {MODE_ABBR.get(mode, escape(mode))}) "
                               f"trained on {escape(ds)}, target {pct(t)}: core {_acc(c.value)} "
                               f"vs {name} {_acc(other.value)}, {_pp(dd, sd)}: {v}.",
                            f"core vs {name}" + (", sibling control" if part.startswith("iid") else "")))
    return out


def colt_fewer_rounds(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """H0: COLT reaches each target sparsity in fewer IMP rounds than LTH."""
    d = _sel(df, experiment="retrain", split="full", metric="top1", control="ticket")
    out = []
    for (model, ds, t), g in d.groupby(["model", "dataset", "target_sparsity"]):
        lth = g[g.method == "lth"]
        for part, c in g[g.method == "colt"].groupby("partition"):
            if lth.empty:
                continue
            rc, rl = c["round"].mean(), lth["round"].mean()
            v = "holds" if rc < rl else "does not hold"
            out.append((v, f"{_where(model, ds, part, None, t)}: COLT {rc:.1f} rounds "
                           f"({c.trainings.mean():.0f} trainings) vs LTH {rl:.1f} rounds "
                           f"({lth.trainings.mean():.0f} trainings): {v}.", _tag(part)))
    return out


def findings_text(df: pd.DataFrame) -> str:
    """The generated findings section (LaTeX) for one suite's results."""
    models = ", ".join(escape(m) for m in sorted(df.model.unique())) or "none"
    n_seeds = df.seed.nunique()
    lines = [f"% Generated by dilt.report.paper.write_findings from results.csv; do not edit.",
             f"These findings are generated from {len(df)} result rows (models: {models}; "
             f"{n_seeds} seed{'s' if n_seeds != 1 else ''}). {CRITERION}", ""]
    sections = [
        ("H0", "H0: COLT needs fewer IMP rounds than LTH.", colt_fewer_rounds(df),
         "no COLT and LTH results.", "Each COLT round costs $N$ trainings, one per partition."),
        ("H1", "H1: the union ticket is more accurate than the core ticket on $T_\\mathrm{full}$.",
         union_vs_core(df), "no DiLT core and union results.",
         "In SM mode the union keeps more weights than the core (see the sparsities); DM "
         "compares them at nearly equal density."),
        ("H2", "H2: tickets are more accurate than random masks with the same per-layer densities.",
         ticket_vs_random(df), "no random-control results."),
        ("H3", "H3: a specialist ticket $m_{\\mathrm{spec}_k}$ is more accurate on its own "
               "partition's classes $T_k$ than on the other partitions' classes.",
         specialist_on_own_classes(df), "no specialist tickets evaluated on $T_k$ splits."),
        ("H4", "H4: the core ticket transfers better than the union and the LTH ticket.",
         core_transfers_better(df), "no transfer results."),
    ]
    for tag, name, results, empty, *note in sections:
        lines.append(f"%% {tag}")
        lines += _summary(name, results, empty, *note)
    if "iid2" in set(df.partition):
        lines.append("Partition iid2 splits samples, not classes: every part sees all classes. "
                     "Its comparisons are the sibling control for the class-disjoint partitions and are "
                     "counted separately.")
    return "\n".join(lines) + "\n"


def write_findings(results_csv: str | Path, out_path: str | Path, extra: str = "") -> Path:
    """Write the generated findings (``findings.tex``) for ``results_csv``, followed by
    ``extra`` (the experiment-2 findings, generated from the analyses)."""
    write_text(out_path, findings_text(read_results(results_csv)) + extra)
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


def build_paper(suite: str, root: str | Path = ".", extra_findings: str = "",
                results_csv: str | Path | None = None) -> Path | None:
    """Write suite.tex and findings.tex under paper/<suite>/ and compile paper/<suite>/main.pdf.

    Raises FileNotFoundError naming every missing input; returns None (one printed line) when
    latexmk is not installed; raises RuntimeError with the log tail when LaTeX fails.
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
        write_findings(results_csv, out_dir / "findings.tex", extra_findings)
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
    return pdf
