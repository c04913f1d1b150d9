# Shared definitions: the resolved config every job reads, paths, resources, provenance.
import yaml

RESOLVED = f"{R}/config.resolved.yaml"  # a copy for the record and the report
JOB_CFG = {**CFG, "suites": {SUITE: S}}  # what the jobs read: the suite that runs
# the jobs read the config from the environment they inherit (`--config env:DILT_CONFIG`), not
# from a file: no job depends on a file that a config edit rewrites, so an edit reruns exactly
# the jobs whose settings (provenance parameters) changed, in the same run
os.environ["DILT_CONFIG"] = yaml.safe_dump(JOB_CFG, sort_keys=False)
# jobs run `"$DILT_PYTHON" -m dilt ...`: the interpreter that runs Snakemake (set here, in the
# environment the jobs inherit, so a moved virtual environment reruns nothing)
os.environ["DILT_PYTHON"] = sys.executable
# the software of every job (with --use-conda)
ENV = os.path.join(workflow.basedir, "environment.yml")
RUN = f"{R}/{{model}}/{{dataset}}/seed{{seed}}"
METHODS = "|".join(method_names())
# the method whose independent partition runs make the tickets (DiLT), named by the registry
TICKET_METHOD = ticket_method().name


envvars:
    "DILT_PYTHON",
    "DILT_CONFIG",


wildcard_constraints:
    model="[A-Za-z0-9_]+",
    dataset="[A-Za-z0-9_]+",
    target="[A-Za-z0-9_]+",
    seed=r"\d+",
    k=r"\d+",
    tag="full|[a-z]+[0-9]+",


def flagged(path, **kw):
    """``path`` marked for `snakemake --report` (Snakemake's `report` function; called through
    this name because a line that starts with `report(` parses as the workflow keyword).
    """
    return report(path, **kw)


def caption(*parts):
    """A report caption, report/<parts>.rst, as an absolute path (Snakemake resolves a relative
    caption against the file that defines the rule)."""
    return os.path.join(workflow.basedir, "report", *parts[:-1], parts[-1] + ".rst")


def reported_item(path, name, category):
    """``path`` flagged for `snakemake --report` under ``category``, captioned by report/<name>.rst.
    (A function: Snakemake's parser rejects a multi-line `report(...)` in an output whose
    continuation line starts with `keyword=`.)"""
    return flagged(
        path,
        caption=caption(name),
        category=category,
        labels={"file": os.path.basename(path)},
    )


def res(stage, training=False):
    """Resources of a stage from the suite (`gpu`, `runtime` minutes, `mem_mb`, `cpus_per_task`).
    A training job's GPUs come from the suite's `ddp` for its model and data set, with CPUs and
    memory per GPU (`dilt.workflow.job_resources`). `training` may instead give the job's work
    from its wildcards (`find_work`: a find job of a one-shot method scores once, on at most one
    GPU, or draws random masks, on none).
    """
    assert stage in RESOURCE_STAGES, stage  # the stages the config check knows
    r = W.stage_resources(S, stage)
    if training:
        job = _job_resources(stage, training)
        r.update({k: (lambda wc, k=k: job(wc)[k]) for k in W.JOB_KEYS})
    return r


def _job_resources(stage, training):
    work = training if callable(training) else (lambda wc: "trains")
    return lambda wc: W.job_resources(
        S, stage, wc.model, getattr(wc, "target", wc.dataset), work(wc)
    )


def find_work(wc):
    """What a find job does: trains, scores or draws (see `Method.find_work`)."""
    return get_method(wc.method).find_work


def launch(stage, training=True):
    """How a training job of `stage` starts: plain, or under torchrun with one process per GPU
    (DDP). The count is the suite's, as `res` asks it, not the job's `gpu` resource, which a
    profile may override (a site that asks GPUs by `gres`)."""
    job = _job_resources(stage, training)

    def args(wc):
        n = job(wc)["gpu"]
        return (
            f"-m torch.distributed.run --standalone --nproc_per_node={n}"
            if n > 1
            else ""
        )

    return args


def grid(pattern, **extra):
    """``pattern`` expanded over the suite's models, datasets and seeds (and ``extra``)."""
    return expand(
        pattern,
        model=list(S["models"]),
        dataset=S["datasets"],
        seed=S["seeds"],
        **extra,
    )


def prov(fn):
    """A parameter of the rules, the provenance hash of the job's settings (edits rerun exactly the jobs
    whose settings changed)."""
    return lambda wc: PROV.digest(fn(wc))


# -- input functions and the report's file lists ----------------------------------------
def find_inputs(wc):
    ins = {"theta0": f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/theta0.safetensors"}
    if "dense" in get_method(wc.method).needs:
        ins["dense"] = (
            f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/full/dense/records.json"
        )
    return ins


def find_settings(wc):
    return PROV.find_settings(
        SUITE_OBJ, wc.method, wc.model, wc.dataset, int(wc.seed), wc.tag
    )


def rewind_inputs(wc):
    """The dense run, where a retrained source starts from its rewind point
    (`prune.rewind_start: dense`)."""
    if W.rewind_point(S, wc.source) != "dense":
        return {}
    return {
        "dense": f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/full/dense/records.json"
    }


def dilt_runs(wc):
    return [
        f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}/{TICKET_METHOD}/p{k}/masks.json"
        for k in range(1, NPART[wc.tag] + 1)
    ]


def retrain_settings(wc):
    return PROV.retrain_settings(
        SUITE_OBJ, wc.source, wc.model, wc.dataset, int(wc.seed), wc.tag
    )


def transfer_sources(wc):
    base = f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}"
    return [
        f"{base}/{s}/masks.json" for s in W.transfer_sources(S, wc.tag) if s != "dense"
    ]


def transfer_one_source(wc):
    source = W.source_of(wc.entry)
    base = f"{R}/{wc.model}/{wc.dataset}/seed{wc.seed}/{wc.tag}"
    return [] if source == "dense" else [f"{base}/{source}/masks.json"]


TABLES = [
    f"tables/{SUITE}/{t}.tex"
    for t in (
        "claims",
        "exp1_sparsity",
        "exp1_rounds",
        "exp2_blocks",
        "exp3_specialists",
        "exp4_transfer",
    )
]


FIGURES = [
    f"figures/{SUITE}/{f}.{ext}"
    for f in (
        "fig1_gw_heatmap",
        "fig2_layer_clusters",
        "fig3_block_analysis",
        "acc_vs_sparsity",
        "acc_vs_rounds",
    )
    for ext in ("pdf", "png")
]


PAPER_PDF = f"paper/{SUITE}/main.pdf"


# `snakemake --report report.zip`: every table and figure with its caption (report/<kind>/<name>.rst,
# what it shows and how to read it; a figure's PDF and PNG share one), grouped by experiment.
TOPIC = {
    "claims": "Claims",
    "exp1_sparsity": "Experiment 1",
    "exp1_rounds": "Experiment 1",
    "acc_vs_sparsity": "Experiment 1",
    "acc_vs_rounds": "Experiment 1",
    "exp2_blocks": "Experiment 2",
    "fig1_gw_heatmap": "Experiment 2",
    "fig2_layer_clusters": "Experiment 2",
    "fig3_block_analysis": "Experiment 2",
    "exp3_specialists": "Experiment 3",
    "exp4_transfer": "Experiment 4",
}


def reported(paths, kind):
    """``paths`` (``kind``: tables or figures) flagged for the report with their captions."""
    items = []
    for p in paths:
        name, ext = os.path.splitext(os.path.basename(p))
        items.append(
            flagged(
                p,
                caption=caption(kind, name),
                category=kind.capitalize(),
                subcategory=TOPIC[name],
                labels={"name": name, "format": ext[1:]},
            )
        )
    return items


RECORDS = W.records(S, R)


IMP_SUMMARIES = W.imp_summaries(S, R)


ANALYSES = W.analyses(S, R)


def _made_by_find(path):
    """own_records.json and imp_summary.json are written by a find job: its masks.json stands
    for them as the rule input."""
    return os.path.join(os.path.dirname(path), "masks.json")
