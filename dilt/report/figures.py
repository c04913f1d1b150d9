"""Accuracy figures from ``results.csv``: accuracy vs sparsity and accuracy vs pruning rounds.

Each figure is saved as PDF and PNG. Lines differ by marker and line style as well as colour so
the figures stay readable in grayscale; random controls are dashed with open markers.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from dilt.io import atomic_path  # noqa: E402
from dilt.report.aggregate import collect_imp, read_results  # noqa: E402
from dilt.report.tables import IMP_METHODS, sort_key, structured, ticket_label  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h"]
STYLES = ["-", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]

plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 6,
                     "text.usetex": False, "savefig.dpi": 200})


def _styles(keys) -> dict:
    """A (colour, marker, line style) per line key, stable in the display order."""
    colors = plt.get_cmap("tab10").colors
    return {k: (colors[i % 10], MARKERS[i % len(MARKERS)], STYLES[i % len(STYLES)])
            for i, k in enumerate(keys)}


def save(fig, out_dir: Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``stem``.pdf and ``stem``.png atomically; close it."""
    paths = []
    for ext in ("pdf", "png"):
        path = Path(out_dir) / f"{stem}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _grid(n: int, ncols: int, w: float = 3.3, h: float = 2.6):
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False)
    return fig, axes


def _no_data(message: str):
    fig, ax = plt.subplots(figsize=(4, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return fig


def _panels(d: pd.DataFrame) -> list[tuple[str, str, str, pd.DataFrame]]:
    """(model, dataset, partition, rows) per panel; dense and LTH rows join every partition."""
    out = []
    for (model, dataset), g in d.groupby(["model", "dataset"]):
        parts = sorted(p for p in g.partition.unique() if p != "-") or ["-"]
        out += [(model, dataset, p, g[g.partition.isin(["-", p])]) for p in parts]
    return out


def acc_vs_sparsity(df: pd.DataFrame):
    """T_full top-1 vs actual sparsity, one line per method/ticket/mode, mean +- std over seeds
    (structured methods sit on a FLOPs axis, never on this one)."""
    d = df[(df.experiment == "retrain") & (df.split == "full") & (df.metric == "top1")
           & df.ticket.isin(["dense", "mask", "core", "union"])
           & ~df.method.map(structured).astype(bool)]
    if d.empty:
        return _no_data("no retraining results in this suite")
    panels = _panels(d)
    fig, axes = _grid(len(panels), min(3, len(panels)))
    keys = sorted({(m, t, mo) for m, t, mo in zip(d.method, d.ticket, d["mode"]) if m != "dense"},
                  key=lambda k: sort_key(*k))
    style = _styles(keys)
    for ax, (model, dataset, part, g) in zip(axes.flat, panels):
        dense = g[g.method == "dense"].value * 100
        if len(dense):
            m, s = dense.mean(), dense.std(ddof=1) if len(dense) > 1 else 0.0
            ax.axhspan(m - s, m + s, color="0.85", zorder=0)
            ax.axhline(m, color="0.4", lw=0.8, zorder=0, label="Dense (mean ± std)")
        for key in keys:
            color, marker, ls = style[key]
            for control in ("ticket", "random"):
                c = g[(g.method == key[0]) & (g.ticket == key[1]) & (g["mode"] == key[2])
                      & (g.control == control)]
                if c.empty:
                    continue
                agg = c.groupby("target_sparsity").agg(
                    x=("actual_sparsity", "mean"), y=("value", "mean"),
                    e=("value", "std")).sort_values("x")
                rnd = control == "random"
                ax.errorbar(agg.x, agg.y * 100, yerr=agg.e.fillna(0) * 100, color=color,
                            marker=marker, ls="--" if rnd else ls, lw=0.8 if rnd else 1.2,
                            ms=4, capsize=2, mfc="white" if rnd else color,
                            label=ticket_label(*key) + (" random" if rnd else ""))
        ax.set_title(f"{model} / {dataset} / {part}")
        ax.set_xlabel("actual sparsity")
        ax.set_ylabel("top-1 on T_full (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles))
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(seen.values(), seen.keys(), loc="upper center", ncol=4,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    fig.tight_layout()
    return fig


def acc_vs_rounds(df: pd.DataFrame, imp: pd.DataFrame):
    """Per panel row: retrained top-1 vs IMP rounds, vs total trainings, and the IMP-internal
    validation top-1 of every round (from imp_summary.json)."""
    d = df[(df.experiment == "retrain") & (df.split == "full") & (df.metric == "top1")
           & (df.control == "ticket") & df.method.isin(IMP_METHODS)
           & df.ticket.isin(["mask", "core", "union"])]
    if d.empty and imp.empty:
        return _no_data("no IMP results in this suite")
    panels = _panels(d) if not d.empty else []
    if not panels:
        panels = [(m, ds, p, d) for (m, ds, p) in
                  imp[["model", "dataset", "partition"]].drop_duplicates().itertuples(index=False)]
    fig, axes = _grid(3 * len(panels), 3)
    keys = sorted({(m, t, mo) for m, t, mo in zip(d.method, d.ticket, d["mode"])},
                  key=lambda k: sort_key(*k))
    style = _styles(keys + [(m, "imp", "-") for m in IMP_METHODS])
    for i, (row, (model, dataset, part, g)) in enumerate(zip(axes, panels)):
        for key in keys:
            c = g[(g.method == key[0]) & (g.ticket == key[1]) & (g["mode"] == key[2])]
            if c.empty:
                continue
            color, marker, ls = style[key]
            for ax, x in zip(row[:2], ("round", "trainings")):
                agg = c.groupby("target_sparsity").agg(x=(x, "mean"), y=("value", "mean"),
                                                       e=("value", "std")).sort_values("x")
                ax.errorbar(agg.x, agg.y * 100, yerr=agg.e.fillna(0) * 100, color=color,
                            marker=marker, ls=ls, ms=4, capsize=2, label=ticket_label(*key))
        ip = imp[(imp.model == model) & (imp.dataset == dataset) & imp.partition.isin(["-", part])]
        for method, gi in ip.groupby("method"):
            color, marker, ls = style.get((method, "imp", "-"), ("k", "o", "-"))
            agg = gi.groupby("round").agg(y=("val_top1", "mean"), e=("val_top1", "std"))
            row[2].errorbar(agg.index, agg.y * 100, yerr=agg.e.fillna(0) * 100, color=color,
                            marker=marker, ls=ls, ms=3, capsize=2,
                            label=f"{ticket_label(method, 'mask')} IMP")
        titles = ["retrained vs IMP rounds", "retrained vs total trainings",
                  "IMP-internal val top-1"]
        xlabels = ["IMP rounds", "training runs", "IMP round"]
        for ax, title, xl in zip(row, titles, xlabels):
            ax.set_title(f"{model} / {dataset} / {part}: {title}")
            ax.set_xlabel(xl)
            ax.set_ylabel("top-1 (%)")
            ax.grid(alpha=0.3)
            if i == 0 and ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best")
    fig.tight_layout()
    return fig


def write_figures(results_csv: str | Path, results_dir: str | Path,
                  out_dir: str | Path) -> list[Path]:
    """Write acc_vs_sparsity and acc_vs_rounds (PDF + PNG) under ``out_dir``."""
    df = read_results(results_csv)
    imp = collect_imp(results_dir)
    out_dir = Path(out_dir)
    return (save(acc_vs_sparsity(df), out_dir, "acc_vs_sparsity")
            + save(acc_vs_rounds(df, imp), out_dir, "acc_vs_rounds"))
