# Aggregation: results.csv, LaTeX tables, figures and the manuscript. Only the outputs the
# current config declares enter the report (never whatever else is on disk).
TABLES = [f"tables/{SUITE}/{t}.tex" for t in
          ("claims", "exp1_sparsity", "exp1_rounds", "exp2_blocks", "exp3_specialists", "exp4_transfer")]
FIGURES = [f"figures/{SUITE}/{f}.{ext}" for f in
           ("fig1_gw_heatmap", "fig2_layer_clusters", "fig3_block_analysis",
            "acc_vs_sparsity", "acc_vs_rounds") for ext in ("pdf", "png")]
PAPER_PDF = f"paper/{SUITE}/main.pdf"
RECORDS = W.records(S, R)
IMP_SUMMARIES = W.imp_summaries(S, R)
ANALYSES = W.analyses(S, R)


def _made_by_find(path):
    """own_records.json and imp_summary.json are written by a find job: its masks.json stands
    for them as the rule input."""
    return os.path.join(os.path.dirname(path), "masks.json")


rule results:
    input:
        conf=CONF,
        records=[_made_by_find(p) if p.endswith(W.OWN) else p for p in RECORDS],
        imp=[_made_by_find(p) for p in IMP_SUMMARIES],
    output:
        csv=R + "/results.csv",
        imp=R + "/imp_rounds.csv",
    log: LOGS + "/report_results.log"
    params:
        records=RECORDS,
        imp=IMP_SUMMARIES,
    resources: **res("report")
    shell: "{DILT} report results {ARGS} --records {params.records:q} --imp {params.imp:q} > {log:q} 2>&1"


rule tables:
    input: CONF, R + "/results.csv", R + "/imp_rounds.csv", ANALYSES
    output: TABLES
    log: LOGS + "/report_tables.log"
    params: analyses=ANALYSES
    resources: **res("report")
    shell: "{DILT} report tables {ARGS} --analyses {params.analyses:q} > {log:q} 2>&1"


rule figures:
    input: CONF, R + "/results.csv", R + "/imp_rounds.csv", ANALYSES
    output: FIGURES
    log: LOGS + "/report_figures.log"
    params: analyses=ANALYSES
    resources: **res("report")
    shell: "{DILT} report figures {ARGS} --analyses {params.analyses:q} > {log:q} 2>&1"


rule paper:
    input: CONF, R + "/results.csv", TABLES, FIGURES, "paper/main.tex"
    output: PAPER_PDF
    log: LOGS + "/report_paper.log"
    params: analyses=ANALYSES
    resources: **res("report")
    shell: "{DILT} report paper {ARGS} --analyses {params.analyses:q} > {log:q} 2>&1 "
           "|| (tail -n 30 {log:q} >&2; exit 1)"
