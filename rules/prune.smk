# Mask finding: theta_0, then IMP per method (DiLT: one job per partition), then DiLT tickets.


rule init:
    output: RUN + "/theta0.safetensors"
    log: LOGS + "/{model}/{dataset}/seed{seed}/init.log"
    resources: **res("init")
    shell: "{DILT} init {ARGS} --model {wildcards.model} --dataset {wildcards.dataset} "
           "--seed {wildcards.seed} --out {output} > {log} 2>&1"


rule lth:
    input: RUN + "/theta0.safetensors"
    output: RUN + "/full/lth/imp_summary.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/full/lth.jsonl"
    resources: **res("imp")
    threads: 1
    shell: "{DILT} imp {ARGS} --method lth --model {wildcards.model} --dataset {wildcards.dataset} "
           "--seed {wildcards.seed} --theta0 {input} --out-dir $(dirname {output}) --log {log} "
           "--threads {threads} 2> {log}.err"


rule dilt_partition:
    input: RUN + "/theta0.safetensors"
    output: RUN + "/{tag}/dilt/p{k}/imp_summary.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/dilt_p{k}.jsonl"
    resources: **res("imp")
    threads: 1
    shell: "{DILT} imp {ARGS} --method dilt --partition {wildcards.tag} --part {wildcards.k} "
           "--model {wildcards.model} --dataset {wildcards.dataset} --seed {wildcards.seed} "
           "--theta0 {input} --out-dir $(dirname {output}) --log {log} --threads {threads} 2> {log}.err"


rule colt:
    input: RUN + "/theta0.safetensors"
    output: RUN + "/{tag}/colt/imp_summary.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/colt.jsonl"
    resources: **res("imp")
    threads: 1
    shell: "{DILT} imp {ARGS} --method colt --partition {wildcards.tag} --model {wildcards.model} "
           "--dataset {wildcards.dataset} --seed {wildcards.seed} --theta0 {input} "
           "--out-dir $(dirname {output}) --log {log} --threads {threads} 2> {log}.err"


def dilt_runs(wc):
    return [f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}/dilt/p{k}/imp_summary.json"
            for k in range(1, NPART[wc.tag] + 1)]


rule tickets:
    input: dilt_runs
    output: RUN + "/{tag}/tickets/manifest.json"
    log: LOGS + "/{model}/{dataset}/seed{seed}/{tag}/tickets.log"
    resources: **res("tickets")
    params:
        runs=lambda wc, input: " ".join(os.path.dirname(p) for p in input),
    shell: "{DILT} tickets {ARGS} --partition {wildcards.tag} --model {wildcards.model} "
           "--dataset {wildcards.dataset} --seed {wildcards.seed} --runs {params.runs} "
           "--out-dir $(dirname {output}) > {log} 2>&1"
