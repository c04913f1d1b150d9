# Aggregation: results.csv, LaTeX tables, figures and the manuscript.
TABLES = [f"tables/{SUITE}/{t}.tex" for t in
          ("exp1_sparsity", "exp1_rounds", "exp2_blocks", "exp3_specialists", "exp4_transfer")]
FIGURES = [f"figures/{SUITE}/{f}.{ext}" for f in
           ("fig1_gw_heatmap", "fig2_layer_clusters", "fig3_block_analysis",
            "acc_vs_sparsity", "acc_vs_rounds") for ext in ("pdf", "png")]
PAPER_PDF = f"paper/{SUITE}/main.pdf"


def _records():
    out = grid(RUN + "/full/dense/retrain/records.json")
    if "lth" in S["methods"]:
        out += grid(RUN + "/full/lth/retrain/records.json")
    for source in ("colt", "tickets"):
        if ("dilt" if source == "tickets" else source) in S["methods"]:
            out += grid(RUN + "/{tag}/" + source + "/retrain/records.json", tag=TAGS)
    for target in TARGETS:
        out += grid(RUN + "/{tag}/transfer/" + target + "/records.json", tag=["full"] + TAGS)
    return out


ANALYSES = grid(RUN + "/{tag}/analysis.json", tag=TAGS) if ANALYSIS else []


rule results:
    input: _records()
    output: R + "/results.csv"
    log: LOGS + "/report_results.log"
    resources: **res("report")
    shell: "{DILT} report results {ARGS} > {log} 2>&1"


rule tables:
    input: R + "/results.csv", ANALYSES
    output: TABLES
    log: LOGS + "/report_tables.log"
    resources: **res("report")
    shell: "{DILT} report tables {ARGS} > {log} 2>&1"


rule figures:
    input: R + "/results.csv", ANALYSES
    output: FIGURES
    log: LOGS + "/report_figures.log"
    resources: **res("report")
    shell: "{DILT} report figures {ARGS} > {log} 2>&1"


rule paper:
    input: R + "/results.csv", TABLES, FIGURES, "paper/main.tex"
    output: PAPER_PDF
    log: LOGS + "/report_paper.log"
    resources: **res("report")
    shell: "{DILT} report paper {ARGS} > {log} 2>&1 || (tail -n 30 {log} >&2; exit 1)"
