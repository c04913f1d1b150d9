# Mask finding: theta_0, the dense reference, every registered method (DiLT: one job per
# partition), then the DiLT tickets.


rule init:
    input: CONF
    output: RUN + "/theta0.safetensors"
    log: LOGS + "/{model}/{dataset}/seed{seed}/init.log"
    params: prov=prov(lambda wc: PROV.init_settings(SUITE_OBJ, wc.model, wc.dataset, int(wc.seed)))
    resources: **res("init")
    shell: "{DILT} init {ARGS} --model {wildcards.model:q} --dataset {wildcards.dataset:q} "
           "--seed {wildcards.seed} --out {output:q} > {log:q} 2>&1"


rule dense:
    input:
        conf=CONF,
        theta0=RUN + "/theta0.safetensors",
    output:
        records=RUN + "/full/dense/records.json",
    log: LOGS + "/{model}/{dataset}/seed{seed}/dense.jsonl"
    params: prov=prov(lambda wc: PROV.dense_settings(SUITE_OBJ, wc.model, wc.dataset, int(wc.seed)))
    resources: **res("retrain")
    threads: 1
    shell: "{DILT} dense {ARGS} --model {wildcards.model:q} --dataset {wildcards.dataset:q} "
           "--seed {wildcards.seed} --theta0 {input.theta0:q} --out {output.records:q} "
           "--log {log:q} --threads {threads} 2> {log:q}.err"


def find_inputs(wc):
    ins = {"conf": CONF, "theta0": f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/theta0.safetensors"}
    if "dense" in get_method(wc.method).needs:
        ins["dense"] = f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/full/dense/records.json"
    return ins


def find_settings(wc):
    return PROV.find_settings(SUITE_OBJ, wc.method, wc.model, wc.dataset, int(wc.seed), wc.tag)


rule find:
    """One mask run of a registered method (not per partition): LTH, COLT, SNIP, GraSP, random,
    RigL, CAP, SAViT."""
    input: unpack(find_inputs)
    output: RUN + "/{tag}/{method}/masks.json"
    wildcard_constraints: method=METHODS
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/{method}.jsonl"
    params:
        prov=prov(find_settings),
        dense=lambda wc, input: f"--dense {os.path.dirname(input.dense)}/dense.safetensors"
            if "dense" in input.keys() else "",
        out=lambda wc, output: os.path.dirname(output[0]),
    resources: **res("imp")
    threads: 1
    shell: "{DILT} find {ARGS} --method {wildcards.method:q} --partition {wildcards.tag:q} "
           "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
           "--theta0 {input.theta0:q} {params.dense} --out-dir {params.out:q} "
           "--provenance {params.prov} --log {log:q} --threads {threads} 2> {log:q}.err"


rule dilt_partition:
    """One of DiLT's N independent IMP runs (partition k)."""
    input:
        conf=CONF,
        theta0=RUN + "/theta0.safetensors",
    output: RUN + "/{tag}/dilt/p{k}/masks.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/dilt_p{k}.jsonl"
    params:
        prov=prov(lambda wc: PROV.find_settings(SUITE_OBJ, "dilt", wc.model, wc.dataset, int(wc.seed),
                                                wc.tag, int(wc.k))),
        out=lambda wc, output: os.path.dirname(output[0]),
    resources: **res("imp")
    threads: 1
    shell: "{DILT} find {ARGS} --method dilt --partition {wildcards.tag:q} --part {wildcards.k} "
           "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
           "--theta0 {input.theta0:q} --out-dir {params.out:q} --provenance {params.prov} "
           "--log {log:q} --threads {threads} 2> {log:q}.err"


def dilt_runs(wc):
    return [f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}/dilt/p{k}/masks.json"
            for k in range(1, NPART[wc.tag] + 1)]


rule tickets:
    input:
        conf=CONF,
        runs=dilt_runs,
    output: RUN + "/{tag}/tickets/masks.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/tickets.log"
    params:
        prov=prov(lambda wc: PROV.tickets_settings(SUITE_OBJ, wc.model, wc.dataset, int(wc.seed), wc.tag)),
        runs=lambda wc, input: [os.path.dirname(p) for p in input.runs],
        out=lambda wc, output: os.path.dirname(output[0]),
    resources: **res("tickets")
    shell: "{DILT} tickets {ARGS} --partition {wildcards.tag:q} --model {wildcards.model:q} "
           "--dataset {wildcards.dataset:q} --seed {wildcards.seed} --runs {params.runs:q} "
           "--out-dir {params.out:q} > {log:q} 2>&1"
