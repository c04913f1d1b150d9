# Retraining every mask run from theta_0 (experiments 1 and 3), transfer (experiment 4) and the
# functional analysis of the DiLT partition models (experiment 2).


rule retrain:
    input:
        unpack(rewind_inputs),
        theta0=f"{RUN}/theta0.safetensors",
        source=f"{RUN}/{{tag}}/{{source}}/masks.json",
    output:
        f"{RUN}/{{tag}}/{{source}}/retrain/records.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/retrain_{{source}}.jsonl",
    wildcard_constraints:
        source=f"tickets|{METHODS}",
    conda:
        ENV
    threads: 1
    resources:
        **res("retrain", training=True),
    params:
        launch=launch("retrain"),
        prov=prov(retrain_settings),
        src=lambda wc, input: os.path.dirname(input.source),
    shell:
        '"$DILT_PYTHON" {params.launch} -m dilt retrain --config env:DILT_CONFIG --partition {wildcards.tag:q} --source {params.src:q} '
        "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
        "--theta0 {input.theta0:q} --out {output:q} --log {log:q} --threads {threads} 2> {log:q}.err"


rule retrain_one:
    """One training of a source's retraining (suites with `batch_trainings: false`)."""
    input:
        unpack(rewind_inputs),
        theta0=f"{RUN}/theta0.safetensors",
        source=f"{RUN}/{{tag}}/{{source}}/masks.json",
    output:
        f"{RUN}/{{tag}}/{{source}}/retrain/{{entry}}.records.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/retrain_{{source}}/{{entry}}.jsonl",
    wildcard_constraints:
        source=f"tickets|{METHODS}",
        entry=r"[A-Za-z0-9_.\-]+",
    conda:
        ENV
    threads: 1
    resources:
        **res("retrain", training=True),
    params:
        launch=launch("retrain"),
        prov=prov(retrain_settings),
        src=lambda wc, input: os.path.dirname(input.source),
    shell:
        '"$DILT_PYTHON" {params.launch} -m dilt retrain --config env:DILT_CONFIG --partition {wildcards.tag:q} --source {params.src:q} '
        "--entry {wildcards.entry:q} --model {wildcards.model:q} --dataset {wildcards.dataset:q} "
        "--seed {wildcards.seed} --theta0 {input.theta0:q} --out {output:q} --log {log:q} "
        "--threads {threads} 2> {log:q}.err"


rule transfer:
    input:
        sources=transfer_sources,
    output:
        f"{RUN}/{{tag}}/transfer/{{target}}/records.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/transfer_{{target}}.jsonl",
    conda:
        ENV
    threads: 1
    resources:
        **res("transfer", training=True),
    params:
        launch=launch("transfer"),
        prov=prov(
            lambda wc: PROV.transfer_settings(
                SUITE_OBJ,
                W.transfer_sources(S, wc.tag),
                wc.model,
                wc.dataset,
                int(wc.seed),
                wc.tag,
                wc.target,
            )
        ),
        src=lambda wc, input: (["dense"] if wc.tag == "full" else [])
        + [os.path.dirname(p) for p in input.sources],
    shell:
        '"$DILT_PYTHON" {params.launch} -m dilt transfer --config env:DILT_CONFIG --partition {wildcards.tag:q} --target {wildcards.target:q} '
        "--sources {params.src:q} --model {wildcards.model:q} --dataset {wildcards.dataset:q} "
        "--seed {wildcards.seed} --out {output:q} --log {log:q} --threads {threads} 2> {log:q}.err"


rule transfer_one:
    """One training of a transfer (suites with `batch_trainings: false`)."""
    input:
        sources=transfer_one_source,
    output:
        f"{RUN}/{{tag}}/transfer/{{target}}/{{entry}}.records.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/transfer_{{target}}/{{entry}}.jsonl",
    wildcard_constraints:
        entry=r"[A-Za-z0-9_.\-]+",
    conda:
        ENV
    threads: 1
    resources:
        **res("transfer", training=True),
    params:
        launch=launch("transfer"),
        prov=prov(
            lambda wc: PROV.transfer_settings(
                SUITE_OBJ,
                W.transfer_sources(S, wc.tag),
                wc.model,
                wc.dataset,
                int(wc.seed),
                wc.tag,
                wc.target,
            )
        ),
        src=lambda wc, input: (
            ["dense"]
            if W.source_of(wc.entry) == "dense"
            else [os.path.dirname(p) for p in input.sources]
        ),
    shell:
        '"$DILT_PYTHON" {params.launch} -m dilt transfer --config env:DILT_CONFIG --partition {wildcards.tag:q} --target {wildcards.target:q} '
        "--sources {params.src:q} --entry {wildcards.entry:q} --model {wildcards.model:q} "
        "--dataset {wildcards.dataset:q} --seed {wildcards.seed} --out {output:q} --log {log:q} "
        "--threads {threads} 2> {log:q}.err"


rule analyze:
    input:
        theta0=f"{RUN}/theta0.safetensors",
        runs=dilt_runs,
    output:
        f"{RUN}/{{tag}}/analysis.json",
    log:
        f"{LOGS}/{{model}}/{{dataset}}/seed{{seed}}/{{tag}}/analyze.log",
    conda:
        ENV
    threads: S.get("analysis", {}).get("n_jobs", 1)
    resources:
        **res("analyze"),
    params:
        prov=prov(
            lambda wc: PROV.analysis_settings(
                SUITE_OBJ, wc.model, wc.dataset, int(wc.seed), wc.tag
            )
        ),
        runs=lambda wc, input: [os.path.dirname(p) for p in input.runs],
    shell:
        '"$DILT_PYTHON" -m dilt analyze --config env:DILT_CONFIG --partition {wildcards.tag:q} --runs {params.runs:q} '
        "--model {wildcards.model:q} --dataset {wildcards.dataset:q} --seed {wildcards.seed} "
        "--theta0 {input.theta0:q} --out {output:q} --threads {threads} > {log:q} 2>&1"
