# Aggregation: results.csv, LaTeX tables, figures and the manuscript. Only the outputs the
# current config declares enter the report (never whatever else is on disk). For
# `snakemake --report report.zip` every table and figure carries its caption (report/).


rule results:
    input:
        records=[_made_by_find(p) if p.endswith(W.OWN) else p for p in RECORDS],
        imp=[_made_by_find(p) for p in IMP_SUMMARIES],
    output:
        csv=reported_item(f"{R}/results.csv", "results", "Results"),
        imp=reported_item(f"{R}/imp_rounds.csv", "imp_rounds", "Results"),
    log:
        f"{LOGS}/report_results.log",
    conda:
        ENV
    resources:
        **res("report"),
    params:
        records=RECORDS,
        imp=IMP_SUMMARIES,
    shell:
        '"$DILT_PYTHON" -m dilt report results --config env:DILT_CONFIG --records {params.records:q} --imp {params.imp:q} > {log:q} 2>&1'


rule tables:
    input:
        results=f"{R}/results.csv",
        imp=f"{R}/imp_rounds.csv",
        analyses=ANALYSES,
    output:
        reported(TABLES, "tables"),
    log:
        f"{LOGS}/report_tables.log",
    conda:
        ENV
    resources:
        **res("report"),
    params:
        analyses=ANALYSES,
    shell:
        '"$DILT_PYTHON" -m dilt report tables --config env:DILT_CONFIG --analyses {params.analyses:q} > {log:q} 2>&1'


rule figures:
    input:
        results=f"{R}/results.csv",
        imp=f"{R}/imp_rounds.csv",
        analyses=ANALYSES,
    output:
        reported(FIGURES, "figures"),
    log:
        f"{LOGS}/report_figures.log",
    conda:
        ENV
    resources:
        **res("report"),
    params:
        analyses=ANALYSES,
    shell:
        '"$DILT_PYTHON" -m dilt report figures --config env:DILT_CONFIG --analyses {params.analyses:q} > {log:q} 2>&1'


rule paper:
    input:
        results=f"{R}/results.csv",
        tables=TABLES,
        figures=FIGURES,
        analyses=ANALYSES,
        tex="paper/main.tex",
    output:
        reported_item(PAPER_PDF, "paper", "Paper"),
    log:
        f"{LOGS}/report_paper.log",
    conda:
        ENV
    resources:
        **res("report"),
    params:
        analyses=ANALYSES,
    shell:
        '"$DILT_PYTHON" -m dilt report paper --config env:DILT_CONFIG --analyses {params.analyses:q} > {log:q} 2>&1 '
        "|| (tail -n 30 {log:q} >&2; exit 1)"


rule versions:
    """The interpreter, platform and every installed package (pip freeze) of the environment that
    built results.csv: a report item, and what a reader compares before `dilt compare --exact`.
    """
    input:
        f"{R}/results.csv",
    output:
        reported_item(f"{R}/versions.txt", "versions", "Provenance"),
    log:
        f"{LOGS}/versions.log",
    conda:
        ENV
    resources:
        **res("report"),
    shell:
        '("$DILT_PYTHON" -VV && uname -srm && "$DILT_PYTHON" -m pip freeze --all) > {output:q} 2> {log:q}'
