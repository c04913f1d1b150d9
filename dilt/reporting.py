"""The report stage: results.csv, tables, figures and the paper for one suite."""

from __future__ import annotations

from pathlib import Path

from dilt.config import Suite
from dilt.io import read_json


def analyses(suite: Suite, files=None) -> dict[str, list[dict]]:
    """The declared analysis results (``files``; all on disk when None), grouped by
    'model / dataset / partition' (one dict per seed)."""
    groups: dict[str, list[dict]] = {}
    paths = sorted(suite.results_dir.glob("*/*/seed*/*/analysis.json")) if files is None else files
    for path in paths:
        a = read_json(path)
        m = a.get("meta", {})
        groups.setdefault(f"{m.get('model')} / {m.get('dataset')} / {m.get('partition')}", []).append(a)
    return groups


def run(suite: Suite, what: str, records=None, imp=None, analysis_files=None) -> None:
    """One report step. ``records`` / ``imp`` / ``analysis_files``: the files the config declares
    (the workflow passes them); nothing else on disk enters the report."""
    from dilt.report import aggregate, verdicts

    res = suite.results_dir
    csv, imp_csv = res / "results.csv", res / "imp_rounds.csv"
    tables, figures = Path("tables") / suite.name, Path("figures") / suite.name
    nc = None  # number of classes per data set: verdicts.KNOWN_NUM_CLASSES
    vs = suite.spec.get("flags") or {}
    if what == "results":
        aggregate.write_results_csv(res if records is None else records, csv)
        aggregate.write_imp_csv(res if imp is None else imp, imp_csv)
    elif what == "tables":
        from dilt.report import analysis_tables
        from dilt.report import tables as t

        t.write_tables(csv, imp_csv, tables, suite.name, num_classes=nc,
                       density_floor=vs.get("density_floor"))
        analysis_tables.write_exp2_blocks(analyses(suite, analysis_files), tables / "exp2_blocks.tex")
        verdicts.write_claims(csv, analyses(suite, analysis_files), suite.spec.get("claims"),
                              tables / "claims.tex", nc, vs)
    elif what == "figures":
        from dilt.report import analysis_figures
        from dilt.report import figures as f

        f.write_figures(csv, imp_csv, figures)
        groups = analyses(suite, analysis_files)
        chosen = _figure_groups(groups)
        analysis_figures.write_fig1(chosen, figures / "fig1_gw_heatmap")
        analysis_figures.write_fig2(chosen, figures / "fig2_layer_clusters")
        analysis_figures.write_fig3(chosen, figures / "fig3_block_analysis")
    elif what == "paper":
        from dilt.report import analysis_tables, paper

        extra = analysis_tables.exp2_findings(analyses(suite, analysis_files))
        if paper.build_paper(suite.name, root=".", extra_findings=extra, results_csv=csv,
                             claims=suite.spec.get("claims"), analyses=analyses(suite, analysis_files),
                             num_classes=nc, settings=vs) is None:
            # asked for the PDF explicitly (`snakemake paper`) on a machine without TeX
            raise FileNotFoundError(paper.TEX_HINT)


def _figure_groups(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The analyses figures 1-3 show: the deepest model's (most layers; ties by name) on its
    first data set, one panel per partition scheme (experts and siblings side by side), each with
    all its seeds. A rule fixed in advance, whichever model's results look best."""
    if not groups:
        return {}

    def depth(key: str) -> tuple:
        runs = groups[key]
        return (-max(len(a.get("layer_names") or []) for a in runs), key)

    first = min(groups, key=depth).rsplit(" / ", 1)[0]
    return {key: runs for key, runs in groups.items() if key.startswith(first + " / ")}
