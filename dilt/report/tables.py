"""LaTeX tables of experiments 1, 3 and 4 from ``results.csv`` (experiment 2's table is written
by the analysis stage).

Every accuracy cell is top-1 in percent, mean +- sample std (ddof=1) over seeds. A ticket is
always shown beside its random control (a random mask with the ticket's per-layer densities).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dilt.io import write_text
from dilt.methods import iterative_methods
from dilt.report.aggregate import collect_imp, read_results
from dilt.report.latex import booktabs_table, empty_table, escape, mean_std
from dilt.report.verdicts import DILT, TOLERANCE, flag

FIRST = ("dense", *iterative_methods())  # the study's own rows first; then the baselines


def display_name(method: str) -> str:
    """A method's display name, from the method registry (``dense`` is the reference)."""
    from dilt.methods import get_method, method_names

    if method == "dense":
        return "Dense"
    return get_method(method).display if method in method_names() else method


def structured(method: str) -> bool:
    """Whether a method's results sit on a FLOPs axis (structured pruning), not a sparsity one."""
    from dilt.methods import get_method, method_names

    return method in method_names() and get_method(method).kind == "structured"
PROTOCOLS = {"retrain": "$\\theta_0$", "own": "own"}
FLAG_ABBR = {"bottleneck": "b", "collapsed": "c", "chance": "ch", "failed_source": "f"}
FLAG_NOTE = ("$^\\dagger$: flagged in at least one seed (column Flags: b bottleneck layer, c "
             "collapsed (an empty layer), ch accuracy within the chance margin, f from a failed "
             "IMP run; the number is the count of flagged seeds). Flagged rows are shown "
             "but never count as support for a claim.")
MODE_ABBR = {"source-matched": "SM", "density-matched": "DM", "-": "-"}
IMP_METHODS = tuple(iterative_methods())  # from the registry: lth, colt, dilt

PM = r"$\pm$ is the sample standard deviation (ddof=1) over seeds"
MODE_NOTE = ("SM: source-matched (partition masks at the target sparsity); DM: density-matched "
             "(the IMP round whose ticket sparsity is closest to the target). $s$: mean actual "
             "sparsity of the ticket.")


# ---------------------------------------------------------------- small helpers

def _method_rank(method: str) -> int:
    return FIRST.index(method) if method in FIRST else len(FIRST)


def _ticket_rank(ticket: str) -> float:
    fixed = {"dense": 0, "mask": 1, "core": 2, "union": 9}
    if ticket in fixed:
        return fixed[ticket]
    m = re.fullmatch(r"spec(\d+)", ticket)
    return 3 + int(m.group(1)) / 1000 if m else 10


def sort_key(method: str, ticket: str, mode: str) -> tuple:
    """Display order: dense, LTH, COLT, DiLT (core, spec_k, union), then other methods."""
    return (_method_rank(method), method, _ticket_rank(ticket), mode != "source-matched", mode)


def ticket_label(method: str, ticket: str, mode: str = "-") -> str:
    """A readable row name such as ``DiLT-core (DM)`` (plain text, escaped later)."""
    name = display_name(method)
    if ticket not in ("dense", "mask"):
        name += f"-{ticket}"
    if mode != "-":
        name += f" ({MODE_ABBR.get(mode, mode)})"
    return name


def pct(x: float) -> str:
    return f"{100 * x:.0f}\\%"


def spars(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f}" if v.size else "--"


def delta(ticket_vals, random_vals) -> tuple[float, float]:
    """(mean ticket - mean random, pooled std) in percentage points; std NaN below 2 seeds."""
    a, b = np.asarray(ticket_vals, float) * 100, np.asarray(random_vals, float) * 100
    d = a.mean() - b.mean()
    if a.size < 2 or b.size < 2:
        return d, math.nan
    return d, math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)


def delta_cell(ticket_vals, random_vals) -> str:
    """Delta vs random in points, with a dagger when |Delta| exceeds the pooled seed std."""
    if len(ticket_vals) == 0 or len(random_vals) == 0:
        return "--"
    d, sd = delta(ticket_vals, random_vals)
    mark = r"$^\dagger$" if not math.isnan(sd) and abs(d) > sd else ""
    return f"${d:+.1f}${mark}"


def pair_flags(ticket: pd.DataFrame, control: pd.DataFrame) -> str:
    """The ticket's flags, then its random control's after ``r:`` (when it has any)."""
    own, rnd = flag_cell(ticket), flag_cell(control)
    return " ".join(x for x in (own, f"r: {rnd}" if rnd else "") if x)


def flag_cell(rows: pd.DataFrame) -> str:
    """Flagged seeds per reason, e.g. ``b3 ch1`` (reasons from the ``flags`` column)."""
    if "flags" not in rows or rows.empty:
        return ""
    per_seed = rows.groupby("seed")["flags"].agg(lambda f: set(x for v in f for x in
                                                               str(v).split(";") if x))
    counts = {k: sum(k in v for v in per_seed) for k in FLAG_ABBR}
    return " ".join(f"{FLAG_ABBR[k]}{n}" for k, n in counts.items() if n)


def dagger(rows: pd.DataFrame) -> str:
    return r"$^\dagger$" if flag_cell(rows) else ""


def matched_delta(a: pd.DataFrame, b: pd.DataFrame, tolerance: float = TOLERANCE) -> str:
    """Mean over shared seeds of a - b (points) when every seed's two actual densities agree
    within ``tolerance`` (relative); ``unmatched`` otherwise; ``--`` without a shared seed."""
    if a.empty or b.empty:
        return "--"
    m = (a.groupby("seed")[["value", "actual_sparsity"]].mean()
         .merge(b.groupby("seed")[["value", "actual_sparsity"]].mean(), left_index=True,
                right_index=True, suffixes=("", "_b")))
    if m.empty:
        return "--"
    da, db = 1 - m["actual_sparsity"], 1 - m["actual_sparsity_b"]
    if ((db - da).abs() > tolerance * da + 1e-12).any():
        return "unmatched"
    return f"${100 * (m['value'] - m['value_b']).mean():+.1f}$"


def _label_id(*parts: str) -> str:
    return "-".join(re.sub(r"[^a-z0-9]+", "", str(p).lower()) for p in parts)


def _seed_text(g: pd.DataFrame) -> str:
    seeds = sorted(g["seed"].unique())
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def latex_table(rows: pd.DataFrame, caption: str, label: str, header: list[str],
                raw: list[str], notes: str, groups: list[tuple[str, int]] = (),
                fmt: str | None = None) -> str:
    """A booktabs table whose header row is ``header`` (LaTeX, one per column), optionally under
    a row of ``groups`` (title, span) covering the last columns; shrunk to the line width only
    when wider. ``rows`` keeps unique internal column names."""
    cols = list(rows.columns)
    lead = len(cols) - sum(span for _, span in groups)
    fmt = fmt or "l" * lead + "r" * (len(cols) - lead)
    tex = booktabs_table(rows, caption, label, column_format=fmt, raw_columns=raw, notes=notes)
    old = " & ".join(escape(c) for c in cols) + r" \\"
    new = " & ".join(header) + r" \\"
    if groups:
        top, rules, start = [""] * lead, [], lead + 1
        for title, span in groups:
            top.append(rf"\multicolumn{{{span}}}{{c}}{{{title}}}")
            if title:
                rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        new = " & ".join(top) + r" \\" + "\n" + " ".join(rules) + "\n" + new
    return fit_width(tex.replace(old, new, 1))


def join_blocks(blocks: list[str], label: str) -> str:
    """Join table floats; the first also carries the file's generic ``label``."""
    blocks[0] = blocks[0].replace("\\label{", f"\\label{{{label}}}\\label{{", 1)
    return "\n".join(blocks)


def fit_width(tex: str) -> str:
    """Wrap the tabular in a resizebox that shrinks it only when it is wider than the line."""
    return (tex.replace(r"\begin{tabular}",
                        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{"
                        r"\begin{tabular}", 1)
            .replace(r"\end{tabular}", r"\end{tabular}}", 1))


# ---------------------------------------------------------------- experiment 1

EXP1_TICKETS = ("dense", "mask", "core", "union")


def _exp1_keys(tickets: pd.DataFrame) -> list[tuple]:
    keys = tickets.groupby(["target_sparsity", "method", "ticket", "mode", "protocol"]).groups
    return sorted(keys, key=lambda k: (structured(k[1]), k[1] != "dense", k[0],
                                       *sort_key(k[1], k[2], k[3]), k[4] != "retrain"))


def _exp1_block(g: pd.DataFrame, suite: str, model: str, dataset: str, partition: str,
                tolerance: float) -> str:
    tickets = g[g["control"] == "ticket"]
    randoms = g[g["control"] == "random"]
    flops = any(structured(m) for m in tickets.method.unique())
    rows = []
    for t, method, ticket, mode, protocol in _exp1_keys(tickets):
        sel = dict(method=method, ticket=ticket, mode=mode, protocol=protocol)
        own = tickets[np.isclose(tickets.target_sparsity, t)]
        own = own[np.logical_and.reduce([own[k] == v for k, v in sel.items()])]
        rnd = randoms[np.isclose(randoms.target_sparsity, t)]
        rnd = rnd[np.logical_and.reduce([rnd[k] == v for k, v in sel.items()])]
        on_flops = structured(method)
        row = {"Target": "--" if method == "dense" else
               (f"FLOPs $-${pct(t)}" if on_flops else pct(t)),
               "Method": ticket_label(method, ticket, mode),
               "Protocol": PROTOCOLS.get(protocol, escape(protocol)),
               "s": "--" if on_flops else spars(own.actual_sparsity)}
        if flops:
            row["FLOPs"] = f"{own.flops_ratio.mean():.2f}" if on_flops else "--"
        row.update({"Epochs": f"{own.epochs.mean():.0f}",
                    "Top-1": mean_std(own.value) + dagger(own),
                    "Random": (mean_std(rnd.value) + dagger(rnd)) if len(rnd) else "--",
                    "Delta": matched_delta(own, rnd, tolerance) if len(rnd) else "--",
                    "Flags": pair_flags(own, rnd)})
        rows.append(row)
    table = pd.DataFrame(rows)
    caption = (f"Experiment 1, {escape(suite)} suite: top-1 accuracy (\\%) on "
               f"$T_\\mathrm{{full}}$ of {escape(model)} on {escape(dataset)}, partition "
               f"{escape(partition)}; mean $\\pm$ std over {_seed_text(g)}.")
    notes = (f"{PM}. $s$: the ticket's mean actual sparsity (never the target's). Protocol "
             "$\\theta_0$: the mask is retrained from the shared initialisation (or the rewind "
             "point) with the common recipe; own: the method's own training schedule. Epochs: "
             "training spent finding the mask, in passes over the full training set (IMP: "
             "every round of every partition run, a partition model's epoch counting as its "
             "share of the data; own protocol: the method's own training), mean over seeds; "
             "retraining a mask "
             "from $\\theta_0$ adds one recipe. Random: a "
             "random mask with the ticket's per-layer densities; Flags after r: are its "
             "control's. $\\Delta$: ticket minus random, "
             "mean paired difference over seeds in points, shown only when every seed's two "
             f"densities agree within {100 * tolerance:g}\\% (relative), else ``unmatched''. "
             + ("SAViT prunes structure to a FLOPs budget: its row has a FLOPs ratio "
                "(pruned / dense), not a sparsity. " if flops else "")
             + f"{FLAG_NOTE} {MODE_NOTE}")
    header = ["Target", "Method", "Protocol", "$s$"] + (["FLOPs"] if flops else []) + [
        "Epochs", "top-1", "random", "$\\Delta$", "Flags"]
    raw = [c for c in table.columns if c not in ("Method", "Flags")]
    fmt = "lll" + "r" * (len(header) - 4) + "l"
    return latex_table(table, caption, f"tab:exp1-{_label_id(model, dataset, partition)}",
                       header, raw, notes, fmt=fmt)


def exp1_sparsity(df: pd.DataFrame, suite: str, tolerance: float = TOLERANCE) -> str:
    """Experiment 1: T_full top-1 of dense, LTH, COLT, the DiLT core and union, and the baselines
    (SNIP, GraSP, random uniform / ERK, RigL, CAP; SAViT on a FLOPs axis) per target, with each
    ticket's actual sparsity, epochs, its random control and flags."""
    d = df[(df.experiment == "retrain") & (df.split == "full") & (df.metric == "top1")
           & df.ticket.isin(EXP1_TICKETS)]
    if d.empty:
        return empty_table(f"Experiment 1 ({escape(suite)} suite): accuracy vs sparsity.",
                           "tab:exp1", "This suite has no retraining results.")
    blocks = []
    for (model, dataset), g in d.groupby(["model", "dataset"]):
        parts = sorted(p for p in g.partition.unique() if p != "-") or ["-"]
        for p in parts:
            blocks.append(_exp1_block(g[g.partition.isin(["-", p])], suite, model, dataset, p,
                                      tolerance))
    return join_blocks(blocks, "tab:exp1")


def _imp_val(imp: pd.DataFrame) -> pd.DataFrame:
    """Mean IMP validation top-1 per (method, model, dataset, partition, seed, round)."""
    keys = ["method", "model", "dataset", "partition", "seed", "round"]
    if imp.empty:
        return pd.DataFrame(columns=keys + ["imp_val"])
    return imp.groupby(keys, as_index=False)["val_top1"].mean().rename(
        columns={"val_top1": "imp_val"})


def _int_range(values) -> str:
    lo, hi = int(min(values)), int(max(values))
    return str(lo) if lo == hi else f"{lo}--{hi}"


def exp1_rounds(df: pd.DataFrame, imp: pd.DataFrame, suite: str) -> str:
    """Experiment 1: IMP rounds and trainings to reach each target, with retrained accuracy."""
    d = df[(df.experiment == "retrain") & (df.split == "full") & (df.metric == "top1")
           & (df.control == "ticket") & df.method.isin(IMP_METHODS)
           & df.ticket.isin(["mask", "core", "union"])]
    if d.empty:
        return empty_table(f"Experiment 1 ({escape(suite)} suite): pruning rounds.", "tab:exp1rounds",
                           "This suite has no IMP-based tickets (LTH, COLT, DiLT).")
    d = d.merge(_imp_val(imp), how="left",
                on=["method", "model", "dataset", "partition", "seed", "round"])
    blocks = []
    for (model, dataset), g in d.groupby(["model", "dataset"]):
        rows = []
        keys = sorted(g.groupby(["partition", "method", "ticket", "mode", "target_sparsity"]).groups,
                      key=lambda k: (k[4], k[0] != "-", k[0], *sort_key(k[1], k[2], k[3])))
        for partition, method, ticket, mode, t in keys:
            c = g[(g.partition == partition) & (g.method == method) & (g.ticket == ticket)
                  & (g["mode"] == mode) & (g.target_sparsity == t)]
            rows.append({"Target": pct(t), "Partition": partition,
                         "Ticket": ticket_label(method, ticket, mode),
                         "Rounds": _int_range(c["round"]),
                         "Trainings": _int_range(c["trainings"]),
                         "$s$": spars(c.actual_sparsity),
                         "Top-1 (retrained)": mean_std(c.value) + dagger(c),
                         "IMP val top-1": mean_std(c.imp_val.dropna())})
        table = pd.DataFrame(rows)
        caption = (f"Experiment 1, {escape(suite)} suite, {escape(model)} on {escape(dataset)}: "
                   "IMP rounds and total training runs spent to find each mask, and the "
                   "retrained top-1 (\\%) on $T_\\mathrm{full}$; mean $\\pm$ std over "
                   f"{_seed_text(g)}.")
        notes = (f"{PM}. Trainings: LTH = rounds; COLT and DiLT = $N\\times$rounds ($N$ "
                 "partitions). Rounds and trainings show the range over seeds. IMP val top-1: "
                 "validation accuracy of the model trained in that IMP round (COLT, DiLT: mean "
                 f"over the partition models, each on its own partition's classes). {MODE_NOTE} "
                 "$^\\dagger$: flagged in at least one seed (the reasons are in the Flags "
                 "column of the accuracy table); flagged rows never count as support.")
        blocks.append(latex_table(
            table, caption, f"tab:exp1-rounds-{_label_id(model, dataset)}",
            [escape(c) for c in table.columns[:5]] + ["$s$", "top-1 retrained", "IMP val top-1"],
            ["Target", "$s$", "Top-1 (retrained)", "IMP val top-1"], notes, fmt="lllrrrrr"))
    return join_blocks(blocks, "tab:exp1rounds")


# ---------------------------------------------------------------- experiment 3

def _split_rank(split: str) -> tuple:
    m = re.fullmatch(r"part(\d+)", split)
    return (0, 0) if split == "full" else (1, int(m.group(1))) if m else (2, split)


def _split_name(split: str) -> str:
    m = re.fullmatch(r"part(\d+)", split)
    return "$T_\\mathrm{full}$" if split == "full" else f"$T_{{{m.group(1)}}}$" if m else escape(split)


def _collapse_text(c: pd.DataFrame) -> str:
    per_seed = c.drop_duplicates("seed")
    n, k = int(per_seed.collapsed.sum()), len(per_seed)
    text = "no" if n == 0 else f"yes, {n}/{k} seeds (max {int(per_seed.empty_layers.max())} empty layers)"
    if "min_layer_kept" in per_seed and n == 0:
        text += f" (min {int(per_seed.min_layer_kept.min())} weights)"
    return text


def exp3_specialists(df: pd.DataFrame, suite: str) -> str:
    """Experiment 3: DiLT core, spec_k, union (+ random controls) on T_full and each T_k."""
    d = df[(df.experiment == "retrain") & (df.method == DILT) & (df.metric == "top1")]
    parts = sorted(d[d.ticket.str.startswith("spec")].partition.unique())
    d = d[d.partition.isin(parts)]
    if d.empty:
        return empty_table(f"Experiment 3 ({escape(suite)} suite): specialist tickets.", "tab:exp3",
                           "This suite has no DiLT specialist tickets.")
    blocks = []
    for (model, dataset, partition), g in d.groupby(["model", "dataset", "partition"]):
        splits = sorted(g.split.unique(), key=_split_rank)
        rows = []
        keys = sorted(g.groupby(["target_sparsity", "mode", "ticket", "control"]).groups,
                      key=lambda k: (k[0], k[1] != "source-matched", k[1], _ticket_rank(k[2]),
                                     k[3] != "ticket"))
        for t, mode, ticket, control in keys:
            c = g[(g.target_sparsity == t) & (g["mode"] == mode) & (g.ticket == ticket)
                  & (g.control == control)]
            row = {"Target": pct(t), "Mode": MODE_ABBR.get(mode, mode), "Ticket": ticket,
                   "Control": control, "$s$": spars(c.drop_duplicates("seed").actual_sparsity),
                   "Collapsed": _collapse_text(c), "Flags": flag_cell(c)}
            for s in splits:
                row[s] = mean_std(c[c.split == s].value) + dagger(c)
            rows.append(row)
        table = pd.DataFrame(rows)
        caption = (f"Experiment 3, {escape(suite)} suite, {escape(model)} on {escape(dataset)}, "
                   f"partition {escape(partition)}: top-1 (\\%) of DiLT tickets retrained on the "
                   "full data, on all test classes ($T_\\mathrm{full}$) and on partition $k$'s "
                   f"classes ($T_k$); mean $\\pm$ std over {_seed_text(g)}.")
        notes = (f"{PM}. Control random: a random mask with the ticket's per-layer densities. "
                 "Collapsed: seeds whose ticket has a layer with no weight left (reported, not "
                 "dropped); otherwise the fewest weights any layer keeps, over seeds (a layer "
                 f"with a handful of weights is a bottleneck). {FLAG_NOTE} {MODE_NOTE}")
        header = ["Target", "Mode", "Ticket", "Control", "$s$", "Collapsed", "Flags"] + [
            _split_name(s) for s in splits]
        blocks.append(latex_table(
            table, caption, f"tab:exp3-{_label_id(model, dataset, partition)}", header,
            ["Target", "$s$"] + splits, notes, fmt="llllrll" + "r" * len(splits)))
    return join_blocks(blocks, "tab:exp3")


# ---------------------------------------------------------------- experiment 4

def exp4_transfer(df: pd.DataFrame, suite: str) -> str:
    """Experiment 4: masks found on a source dataset, retrained from a new init on targets."""
    d = df[(df.experiment == "transfer") & (df.split == "full") & (df.metric == "top1")]
    if d.empty:
        return empty_table(f"Experiment 4 ({escape(suite)} suite): mask transfer.", "tab:exp4",
                           "This suite has no transfer results.")
    blocks = []
    for (model, source), g in d.groupby(["model", "source_dataset"]):
        targets = sorted(g.dataset.unique())
        keys = sorted(g.groupby(["target_sparsity", "partition", "method", "ticket", "mode",
                                 "control"]).groups,
                      key=lambda k: (k[0], k[1] != "-", k[1], *sort_key(k[2], k[3], k[4]),
                                     k[5] != "ticket"))
        rows = []
        for t, partition, method, ticket, mode, control in keys:
            c = g[(g.target_sparsity == t) & (g.partition == partition) & (g.method == method)
                  & (g.ticket == ticket) & (g["mode"] == mode) & (g.control == control)]
            row = {"Target": pct(t), "Partition": partition,
                   "Ticket": ticket_label(method, ticket, mode), "Control": control}
            for ds in targets:
                cd = c[c.dataset == ds]
                row[f"s{ds}"] = spars(cd.actual_sparsity)
                row[f"top1{ds}"] = mean_std(cd.value) + dagger(cd)
            row["Flags"] = flag_cell(c)
            rows.append(row)
        table = pd.DataFrame(rows)
        caption = (f"Experiment 4, {escape(suite)} suite, {escape(model)}: masks found on "
                   f"{escape(source)}, applied to a new initialisation and trained on each "
                   "target dataset; top-1 (\\%) on the target's test set, mean $\\pm$ std over "
                   f"{_seed_text(g)}.")
        notes = (f"{PM}. Sparsity: the target sparsity the mask was found for on the source; "
                 "$s$: its actual sparsity. Control random: a random mask with the ticket's "
                 f"per-layer densities. {FLAG_NOTE} {MODE_NOTE}")
        table = table[[c for c in table.columns if c != "Flags"] + ["Flags"]]
        raw = ["Target"] + [c for c in table.columns if c.startswith(("s", "top1"))]
        header = (["Sparsity", "Partition", "Ticket", "Control"] + ["$s$", "top-1"] * len(targets)
                  + ["Flags"])
        blocks.append(latex_table(table, caption, f"tab:exp4-{_label_id(model, source)}", header,
                                  raw, notes, groups=[(escape(ds), 2) for ds in targets] +
                                  [("", 1)], fmt="llll" + "rr" * len(targets) + "l"))
    return join_blocks(blocks, "tab:exp4")


# ---------------------------------------------------------------- entry point

def write_tables(results_csv: str | Path, imp_summaries_dir: str | Path, out_dir: str | Path,
                 suite: str, num_classes=None, tolerance: float = TOLERANCE,
                 density_floor: float | None = None) -> list[Path]:
    """Write exp1_sparsity, exp1_rounds, exp3_specialists and exp4_transfer .tex files.

    Rows are flagged with :func:`dilt.report.verdicts.flag` (``num_classes``: {dataset: K} for
    the chance flag; ``density_floor``: a layer density below it is a bottleneck)."""
    df = read_results(results_csv)
    if len(df):
        from dilt.report.verdicts import KNOWN_NUM_CLASSES
        nc = num_classes if isinstance(num_classes, (int, float)) else \
            {**KNOWN_NUM_CLASSES, **dict(num_classes or {})}
        df["flags"] = flag(df, num_classes=nc, density_floor=density_floor)
    imp = collect_imp(imp_summaries_dir)
    out_dir = Path(out_dir)
    texts = {"exp1_sparsity.tex": exp1_sparsity(df, suite, tolerance),
             "exp1_rounds.tex": exp1_rounds(df, imp, suite),
             "exp3_specialists.tex": exp3_specialists(df, suite),
             "exp4_transfer.tex": exp4_transfer(df, suite)}
    paths = []
    for name, text in texts.items():
        write_text(out_dir / name, text)
        paths.append(out_dir / name)
    return paths
