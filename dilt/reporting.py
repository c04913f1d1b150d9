"""The report stage: results.csv, tables, figures and the paper for one suite."""

from __future__ import annotations

from pathlib import Path

from dilt.config import Suite
from dilt.io import read_json


def analyses(suite: Suite) -> dict[str, list[dict]]:
    """Analysis results on disk, grouped by 'model / dataset / partition' (one dict per seed)."""
    groups: dict[str, list[dict]] = {}
    for path in sorted(suite.results_dir.glob("*/*/seed*/*/analysis.json")):
        a = read_json(path)
        m = a.get("meta", {})
        groups.setdefault(f"{m.get('model')} / {m.get('dataset')} / {m.get('partition')}", []).append(a)
    return groups


def run(suite: Suite, what: str) -> None:
    from dilt.report import aggregate

    res = suite.results_dir
    csv = res / "results.csv"
    tables, figures = Path("tables") / suite.name, Path("figures") / suite.name
    if what == "results":
        aggregate.write_results_csv(res, csv)
    elif what == "tables":
        from dilt.report import analysis_tables, tables as t

        t.write_tables(csv, res, tables, suite.name)
        analysis_tables.write_exp2_blocks(analyses(suite), tables / "exp2_blocks.tex")
    elif what == "figures":
        from dilt.report import analysis_figures, figures as f

        f.write_figures(csv, res, figures)
        groups = analyses(suite)
        chosen = _figure_groups(groups)
        analysis_figures.write_fig1(chosen, figures / "fig1_gw_heatmap")
        analysis_figures.write_fig2(chosen, figures / "fig2_layer_clusters")
        analysis_figures.write_fig3(chosen, figures / "fig3_block_analysis")
    elif what == "paper":
        from dilt.report import analysis_tables, paper

        extra = analysis_tables.exp2_findings(analyses(suite))
        if paper.build_paper(suite.name, root=".", extra_findings=extra) is None:
            # asked for the PDF explicitly (`snakemake paper`) on a machine without TeX
            raise FileNotFoundError(paper.TEX_HINT)


def _figure_groups(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The analyses figures 1-3 show: the first model and data set (the deepest smoke model,
    ``cnn``, sorts first), one panel per partition scheme (experts and siblings side by side),
    each with all its seeds."""
    if not groups:
        return {}
    first = next(iter(groups)).rsplit(" / ", 1)[0]
    return {key: runs for key, runs in groups.items() if key.startswith(first + " / ")}
