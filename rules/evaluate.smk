# Retraining every mask from theta_0 (experiments 1 and 3), transfer (experiment 4) and the
# functional analysis of the DiLT partition models (experiment 2).

SOURCES = {"dense": "full", "lth": "full", "colt": None, "tickets": None}


def retrain_source(wc):
    base = f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}"
    return {"dense": [], "lth": [f"{base}/lth/imp_summary.json"],
            "colt": [f"{base}/colt/imp_summary.json"],
            "tickets": [f"{base}/tickets/manifest.json"]}[wc.source]


rule retrain:
    input:
        theta0=RUN + "/theta0.safetensors",
        source=retrain_source,
    output: RUN + "/{tag}/{source,dense|lth|colt|tickets}/retrain/records.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/retrain_{source}.jsonl"
    resources: **res("retrain")
    threads: 1
    params:
        src=lambda wc, input: "dense" if wc.source == "dense" else os.path.dirname(input.source[0]),
    shell: "{DILT} retrain {ARGS} --partition {wildcards.tag} --source {params.src} "
           "--model {wildcards.model} --dataset {wildcards.dataset} --seed {wildcards.seed} "
           "--theta0 {input.theta0} --out {output} --log {log} --threads {threads} 2> {log}.err"


def transfer_sources(wc):
    base = f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}"
    if wc.tag == "full":
        return [f"{base}/lth/imp_summary.json"] if "lth" in S["methods"] else []
    out = []
    if "colt" in S["methods"]:
        out.append(f"{base}/colt/imp_summary.json")
    if "dilt" in S["methods"]:
        out.append(f"{base}/tickets/manifest.json")
    return out


rule transfer:
    input: transfer_sources
    output: RUN + "/{tag}/transfer/{target}/records.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/transfer_{target}.jsonl"
    resources: **res("transfer")
    threads: 1
    params:
        src=lambda wc, input: " ".join((["dense"] if wc.tag == "full" else [])
                                       + [os.path.dirname(p) for p in input]),
    shell: "{DILT} transfer {ARGS} --partition {wildcards.tag} --target {wildcards.target} "
           "--sources {params.src} --model {wildcards.model} --dataset {wildcards.dataset} "
           "--seed {wildcards.seed} --out {output} --log {log} --threads {threads} 2> {log}.err"


rule analyze:
    input:
        theta0=RUN + "/theta0.safetensors",
        runs=dilt_runs,
    output: RUN + "/{tag}/analysis.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/analyze.log"
    resources: **res("analyze")
    threads: S.get("analysis", {}).get("n_jobs", 1)
    params:
        runs=lambda wc, input: " ".join(os.path.dirname(p) for p in input.runs),
    shell: "{DILT} analyze {ARGS} --partition {wildcards.tag} --runs {params.runs} "
           "--model {wildcards.model} --dataset {wildcards.dataset} --seed {wildcards.seed} "
           "--theta0 {input.theta0} --out {output} --threads {threads} > {log} 2>&1"
