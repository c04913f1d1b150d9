# Retraining every mask run from theta_0 (experiments 1 and 3), transfer (experiment 4) and the
# functional analysis of the DiLT partition models (experiment 2).


def retrain_settings(wc):
    return PROV.retrain_settings(SUITE_OBJ, wc.source, wc.model, wc.dataset, int(wc.seed), wc.tag)


rule retrain:
    input:
        conf=CONF,
        theta0=RUN + "/theta0.safetensors",
        source=RUN + "/{tag}/{source}/masks.json",
    output: RUN + "/{tag}/{source}/retrain/records.json"
    wildcard_constraints: source=f"tickets|{METHODS}"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/retrain_{source}.jsonl"
    params:
        prov=prov(retrain_settings),
        src=lambda wc, input: os.path.dirname(input.source),
    resources: **res("retrain")
    threads: 1
    shell: "{DILT} retrain {ARGS} --partition {wildcards.tag:q} --source {params.src:q} "
           "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
           "--theta0 {input.theta0:q} --out {output:q} --log {log:q} --threads {threads} 2> {log:q}.err"


rule retrain_one:
    """One training of a source's retraining (suites with `batch_trainings: false`)."""
    input:
        conf=CONF,
        theta0=RUN + "/theta0.safetensors",
        source=RUN + "/{tag}/{source}/masks.json",
    output: RUN + "/{tag}/{source}/retrain/{entry}.records.json"
    wildcard_constraints: source=f"tickets|{METHODS}", entry=r"[A-Za-z0-9_.\-]+"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/retrain_{source}/{entry}.jsonl"
    params:
        prov=prov(retrain_settings),
        src=lambda wc, input: os.path.dirname(input.source),
    resources: **res("retrain")
    threads: 1
    shell: "{DILT} retrain {ARGS} --partition {wildcards.tag:q} --source {params.src:q} "
           "--entry {wildcards.entry:q} --model {wildcards.model:q} --dataset {wildcards.dataset:q} "
           "--seed {wildcards.seed} --theta0 {input.theta0:q} --out {output:q} --log {log:q} "
           "--threads {threads} 2> {log:q}.err"


def transfer_sources(wc):
    base = f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}"
    return [f"{base}/{s}/masks.json" for s in W.transfer_sources(S, wc.tag) if s != "dense"]


rule transfer:
    input:
        conf=CONF,
        sources=transfer_sources,
    output: RUN + "/{tag}/transfer/{target}/records.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/transfer_{target}.jsonl"
    params:
        prov=prov(lambda wc: PROV.transfer_settings(SUITE_OBJ, W.transfer_sources(S, wc.tag), wc.model,
                                                    wc.dataset, int(wc.seed), wc.tag, wc.target)),
        src=lambda wc, input: (["dense"] if wc.tag == "full" else [])
                              + [os.path.dirname(p) for p in input.sources],
    resources: **res("transfer")
    threads: 1
    shell: "{DILT} transfer {ARGS} --partition {wildcards.tag:q} --target {wildcards.target:q} "
           "--sources {params.src:q} --model {wildcards.model:q} --dataset {wildcards.dataset:q} "
           "--seed {wildcards.seed} --out {output:q} --log {log:q} --threads {threads} 2> {log:q}.err"


def transfer_one_source(wc):
    source = W.source_of(wc.entry)
    base = f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}"
    return [] if source == "dense" else [f"{base}/{source}/masks.json"]


rule transfer_one:
    """One training of a transfer (suites with `batch_trainings: false`)."""
    input:
        conf=CONF,
        sources=transfer_one_source,
    output: RUN + "/{tag}/transfer/{target}/{entry}.records.json"
    wildcard_constraints: entry=r"[A-Za-z0-9_.\-]+"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/transfer_{target}/{entry}.jsonl"
    params:
        prov=prov(lambda wc: PROV.transfer_settings(SUITE_OBJ, W.transfer_sources(S, wc.tag), wc.model,
                                                    wc.dataset, int(wc.seed), wc.tag, wc.target)),
        src=lambda wc, input: ["dense"] if W.source_of(wc.entry) == "dense"
                              else [os.path.dirname(p) for p in input.sources],
    resources: **res("transfer")
    threads: 1
    shell: "{DILT} transfer {ARGS} --partition {wildcards.tag:q} --target {wildcards.target:q} "
           "--sources {params.src:q} --entry {wildcards.entry:q} --model {wildcards.model:q} "
           "--dataset {wildcards.dataset:q} --seed {wildcards.seed} --out {output:q} --log {log:q} "
           "--threads {threads} 2> {log:q}.err"


rule analyze:
    input:
        conf=CONF,
        theta0=RUN + "/theta0.safetensors",
        runs=dilt_runs,
    output: RUN + "/{tag}/analysis.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/analyze.log"
    params:
        prov=prov(lambda wc: PROV.analysis_settings(SUITE_OBJ, wc.model, wc.dataset, int(wc.seed), wc.tag)),
        runs=lambda wc, input: [os.path.dirname(p) for p in input.runs],
    resources: **res("analyze")
    threads: S.get("analysis", {}).get("n_jobs", 1)
    shell: "{DILT} analyze {ARGS} --partition {wildcards.tag:q} --runs {params.runs:q} "
           "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
           "--theta0 {input.theta0:q} --out {output:q} --threads {threads} > {log:q} 2>&1"
