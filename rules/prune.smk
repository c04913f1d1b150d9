# Mask finding: the resolved config, theta_0, the dense reference, every registered method
# (DiLT: one job per partition), then the DiLT tickets.


rule resolved_config:
    """A record of the validated config the jobs read (the selected suite only; the jobs get
    it from the environment), written by a job, never at parse time."""
    output:
        reported_item(RESOLVED, "config", "Provenance"),
    log:
        f"{LOGS}/resolved_config.log",
    params:
        digest=PROV.digest(JOB_CFG),
    run:
        from dilt.io import write_text

        write_text(output[0], yaml.safe_dump(JOB_CFG, sort_keys=False))


rule init:
    output:
        f"{RUN}/theta0.safetensors",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/init.log",
    conda:
        ENV
    resources:
        **res("init"),
    params:
        prov=prov(
            lambda wc: PROV.init_settings(
                SUITE_OBJ, wc.model, wc.dataset, int(wc.seed)
            )
        ),
    shell:
        '"$DILT_PYTHON" -m dilt init --config env:DILT_CONFIG --model {wildcards.model:q} --dataset {wildcards.dataset:q} '
        "--seed {wildcards.seed} --out {output:q} > {log:q} 2>&1"


rule dense:
    input:
        theta0=f"{RUN}/theta0.safetensors",
    output:
        records=f"{RUN}/full/dense/records.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/dense.jsonl",
    conda:
        ENV
    threads: 1
    resources:
        **res("retrain", training=True),
    params:
        launch=launch("retrain"),
        prov=prov(
            lambda wc: PROV.dense_settings(
                SUITE_OBJ, wc.model, wc.dataset, int(wc.seed)
            )
        ),
    shell:
        '"$DILT_PYTHON" {params.launch} -m dilt dense --config env:DILT_CONFIG --model {wildcards.model:q} --dataset {wildcards.dataset:q} '
        "--seed {wildcards.seed} --theta0 {input.theta0:q} --out {output.records:q} "
        "--log {log:q} --threads {threads} 2> {log:q}.err"


rule find:
    """One mask run of a registered method (not per partition): LTH, COLT, SNIP, GraSP, random,
    RigL, CAP, SAViT."""
    input:
        unpack(find_inputs),
    output:
        f"{RUN}/{{tag}}/{{method}}/masks.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/{{method}}.jsonl",
    wildcard_constraints:
        method=METHODS,
    conda:
        ENV
    threads: 1
    resources:
        **res("imp", training=find_work),
    params:
        launch=launch("imp", find_work),
        prov=prov(find_settings),
        dense=lambda wc, input: (
            f"--dense {os.path.dirname(input.dense)}/dense.safetensors"
            if "dense" in input.keys()
            else ""
        ),
        out=lambda wc, output: os.path.dirname(output[0]),
    shell:
        '"$DILT_PYTHON" {params.launch} -m dilt find --config env:DILT_CONFIG --method {wildcards.method:q} --partition {wildcards.tag:q} '
        "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
        "--theta0 {input.theta0:q} {params.dense} --out-dir {params.out:q} "
        "--provenance {params.prov} --log {log:q} --threads {threads} 2> {log:q}.err"


rule dilt_partition:
    """One of DiLT's N independent IMP runs (partition k)."""
    input:
        theta0=f"{RUN}/theta0.safetensors",
    output:
        f"{RUN}/{{tag}}/{TICKET_METHOD}/p{{k}}/masks.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/{TICKET_METHOD}_p{{k}}.jsonl",
    conda:
        ENV
    threads: 1
    resources:
        **res("imp", training=True),
    params:
        launch=launch("imp"),
        prov=prov(
            lambda wc: PROV.find_settings(
                SUITE_OBJ,
                TICKET_METHOD,
                wc.model,
                wc.dataset,
                int(wc.seed),
                wc.tag,
                int(wc.k),
            )
        ),
        out=lambda wc, output: os.path.dirname(output[0]),
        method=TICKET_METHOD,
    shell:
        '"$DILT_PYTHON" {params.launch} -m dilt find --config env:DILT_CONFIG --method {params.method} --partition {wildcards.tag:q} --part {wildcards.k} '
        "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
        "--theta0 {input.theta0:q} --out-dir {params.out:q} --provenance {params.prov} "
        "--log {log:q} --threads {threads} 2> {log:q}.err"


rule tickets:
    input:
        runs=dilt_runs,
    output:
        f"{RUN}/{{tag}}/tickets/masks.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/tickets.log",
    conda:
        ENV
    resources:
        **res("tickets"),
    params:
        prov=prov(
            lambda wc: PROV.tickets_settings(
                SUITE_OBJ, wc.model, wc.dataset, int(wc.seed), wc.tag
            )
        ),
        runs=lambda wc, input: [os.path.dirname(p) for p in input.runs],
        out=lambda wc, output: os.path.dirname(output[0]),
    shell:
        '"$DILT_PYTHON" -m dilt tickets --config env:DILT_CONFIG --partition {wildcards.tag:q} --model {wildcards.model:q} '
        "--dataset {wildcards.dataset:q} --seed {wildcards.seed} --runs {params.runs:q} "
        "--out-dir {params.out:q} > {log:q} 2>&1"
