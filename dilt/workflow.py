"""What the Snakefile expands: the job grid of one suite, named in one place.

Paths are relative to the repository root; ``RUN = <results_root>/<suite>/<model>/<dataset>/seed<seed>``.
Mask runs live in ``RUN/<tag>/<method>/`` (``tag`` is ``full`` or a partition tag such as
``contiguous2``), the DiLT partition runs in ``RUN/<tag>/dilt/p<k>/``, the tickets in
``RUN/<tag>/tickets/``; every mask run ends with ``masks.json``. Retraining of a source writes
``RUN/<tag>/<source>/retrain/records.json``.
"""

from __future__ import annotations

from dilt.methods import get_method, ticket_method
from dilt.provenance import FULL


def is_vit(model: str) -> bool:
    return model.startswith(("vit", "deit"))


def applies(method: str, model: str) -> bool:
    """Whether ``method`` runs on ``model`` (the ViT pruners only on ViTs)."""
    return not get_method(method).vit_only or is_vit(model)


def tags(spec: dict) -> list[str]:
    return [f"{p['scheme']}{p['n']}" for p in spec["partitions"]]


def method_tags(spec: dict, method: str) -> list[str]:
    """Where a method's mask runs live: on every partition scheme, or on the full data."""
    return tags(spec) if get_method(method).on_partitions else [FULL]


OWN = "own_records.json"  # written by a find job beside masks.json (its own protocol's rows)


def run_dir(root: str, model: str, dataset: str, seed: int) -> str:
    return f"{root}/{model}/{dataset}/seed{seed}"


def retrain_sources(spec: dict, model: str) -> list[tuple[str, str]]:
    """(tag, source) pairs retrained and evaluated for ``model``: the dense reference, every
    method's mask run (the DiLT partition runs through their tickets)."""
    out = [(FULL, "dense")]
    for method in spec["methods"]:
        if not applies(method, model):
            continue
        source = "tickets" if get_method(method).per_partition else method
        out += [(t, source) for t in method_tags(spec, method)]
    return out


def entries(spec: dict, source: str, tag: str, *, transfer: bool = False) -> list[str]:
    """The names of the trainings a source's retraining (or transfer) makes, as the retrain job
    names them (``dilt.jobs.manifest_entries``): one per mask and random control."""
    from dilt.models import model_names  # noqa: F401  (registry import side effects)

    targets = sorted(spec["sparsities"])
    if transfer:
        targets = [spec.get("transfer", {}).get("sparsity") or targets[0]]
    randoms = spec.get("prune", {}).get("random_controls", True)
    if source == "dense":
        return ["dense"]
    if source == "tickets":
        n = dict(zip(tags(spec), [p["n"] for p in spec["partitions"]]))[tag]
        names = ["core", *[f"spec{k}" for k in range(1, n + 1)], "union"]
        modes = ["source-matched"] if transfer else ["source-matched", "density-matched"]
        return [f"{ticket_method().name}_{t}_{mode}_s{x:g}" + r for x in targets for mode in modes for t in names
                for r in (["", "_random"] if randoms else [""])]
    m = get_method(source)
    if not m.retrain:
        return []
    controls = ["", "_random"] if randoms and m.kind == "iterative" else [""]
    return [f"{source}_mask_s{x:g}" + r for x in targets for r in controls]


def source_of(entry: str) -> str:
    """The source directory name an entry's mask comes from."""
    if entry == "dense":
        return "dense"
    head = entry.split("_mask_s")[0]
    return "tickets" if entry.startswith(f"{ticket_method().name}_") else head


def records(spec: dict, root: str) -> list[str]:
    """Every records file the report aggregates: one per retrain / transfer job (per source,
    or per training when the suite sets ``batch_trainings: false``), the dense reference, and
    the own-protocol results of methods that train their own network."""
    from dilt.jobs import own_protocol

    batch = spec.get("batch_trainings", True)
    out = []
    for model in spec["models"]:
        for dataset in spec["datasets"]:
            for seed in spec["seeds"]:
                run = run_dir(root, model, dataset, seed)
                out.append(f"{run}/full/dense/records.json")
                for tag, source in retrain_sources(spec, model):
                    if source == "dense":
                        continue
                    if source != "tickets" and own_protocol(source):
                        out.append(f"{run}/{tag}/{source}/{OWN}")
                    names = entries(spec, source, tag)
                    if not names:
                        continue
                    base = f"{run}/{tag}/{source}/retrain"
                    out += [f"{base}/records.json"] if batch else [f"{base}/{e}.records.json" for e in names]
                for target in transfer_targets(spec, dataset):
                    for tag in [FULL] + tags(spec):
                        sources = transfer_sources(spec, tag)
                        if not sources:
                            continue
                        base = f"{run}/{tag}/transfer/{target}"
                        out += [f"{base}/records.json"] if batch else \
                            [f"{base}/{e}.records.json" for s in sources for e in entries(spec, s, tag, transfer=True)]
    return out


def imp_summaries(spec: dict, root: str) -> list[str]:
    out = []
    for model in spec["models"]:
        for dataset in spec["datasets"]:
            for seed in spec["seeds"]:
                run = run_dir(root, model, dataset, seed)
                for method in spec["methods"]:
                    m = get_method(method)
                    if m.kind != "iterative":
                        continue
                    for tag in method_tags(spec, method):
                        if m.per_partition:
                            n = dict(zip(tags(spec), [p["n"] for p in spec["partitions"]]))[tag]
                            out += [f"{run}/{tag}/{method}/p{k}/imp_summary.json" for k in range(1, n + 1)]
                        else:
                            out.append(f"{run}/{tag}/{method}/imp_summary.json")
    return out


def analyses(spec: dict, root: str) -> list[str]:
    if not spec.get("analysis", {}).get("enabled", True) or ticket_method().name not in spec["methods"]:
        return []
    return [f"{run_dir(root, m, d, s)}/{t}/analysis.json" for m in spec["models"]
            for d in spec["datasets"] for s in spec["seeds"] for t in tags(spec)]


def transfer_targets(spec: dict, source: str | None = None) -> list[str]:
    """The data sets masks are transferred to; from ``source``, those other than it (a transfer
    needs a new data set)."""
    tr = spec.get("transfer", {})
    targets = list(tr.get("targets", [])) if tr.get("enabled", True) else []
    return [t for t in targets if t != source]


def rewinds(source: str) -> bool:
    """Whether a retrained source starts from its run's late-rewinding point (and trains the
    rest of the schedule) rather than theta_0: the IMP-family masks and the DiLT tickets
    (``dilt.jobs._rewind_start``; counted so by ``dilt budget``)."""
    from dilt.methods import iterative_methods

    return source == "tickets" or source in iterative_methods()


def rewind_point(spec: dict, source: str) -> str | None:
    """Where a retrained ``source`` starts when that is not theta_0: "own" (its run's rewind
    point), "dense" (the dense reference's weights after ``rewind_epoch`` epochs, which the
    dense job then writes; ``prune.rewind_start``), or None (theta_0)."""
    prune = spec.get("prune") or {}
    if prune.get("rewind_epoch", 0) <= 0 or not rewinds(source):
        return None
    return prune.get("rewind_start", "own")


def dense_rewind(spec: dict) -> int:
    """The epoch after which the dense job keeps its weights as a rewind point (0: it keeps
    none): ``rewind_epoch`` when the suite has an IMP method, whatever ``rewind_start`` says, so
    switching between a shared and an own start reruns no dense run (nor CAP and SAViT, which
    start from it)."""
    from dilt.methods import iterative_methods

    iterative = set(iterative_methods()) & set(spec.get("methods", []))
    return (spec.get("prune") or {}).get("rewind_epoch", 0) if iterative else 0


def transfer_sources(spec: dict, tag: str) -> list[str]:
    """Sources transferred from a tag: dense and LTH from the full data; COLT and the DiLT
    tickets from each partition scheme (only iterative methods: the proposal's experiment 4)."""
    from dilt.methods import get_method, iterative_methods

    chosen = [get_method(m) for m in iterative_methods() if m in spec["methods"]]
    if tag == FULL:
        return ["dense"] + [m.name for m in chosen if not m.on_partitions]
    return [("tickets" if m.per_partition else m.name) for m in chosen if m.on_partitions]


# what a job gets where the suite's ``resources`` say nothing (``runtime`` in minutes)
RESOURCE_DEFAULTS = {"gpu": 0, "runtime": 30, "mem_mb": 4000, "cpus_per_task": 1, "nodes": 1}


def stage_resources(spec: dict, stage: str) -> dict:
    """Resources of a workflow stage: :data:`RESOURCE_DEFAULTS`, then the suite's
    ``resources.default``, then ``resources.<stage>`` (``nodes`` stays 1: a job's GPUs on one
    node, as ``torchrun --standalone`` sees only its own node's)."""
    res = spec.get("resources") or {}
    return {**RESOURCE_DEFAULTS, **(res.get("default") or {}), **(res.get(stage) or {})}


def gpus(spec: dict, model: str, dataset: str, default: int) -> int:
    """GPUs (DDP processes) of one training job: the suite's ``ddp`` for ``model/dataset``, else
    for ``model``, else the stage's resources."""
    ddp = spec.get("ddp") or {}
    return int(ddp.get(f"{model}/{dataset}", ddp.get(model, default)))


# a job's resources that depend on its wildcards (the rest are the stage's, the same for all)
JOB_KEYS = ("gpu", "cpus_per_task", "mem_mb")


WORKS = ("trains", "scores", "draws")


def job_resources(spec: dict, stage: str, model: str, dataset: str, work: str = "trains") -> dict:
    """``gpu``, ``cpus_per_task`` and ``mem_mb`` of one job of ``stage`` on ``model/dataset``. A
    job that trains takes its :func:`gpus`; with n > 1 (DDP) it asks n times the stage's CPUs and
    memory, which are per GPU (every rank runs its own data-loader workers). One that scores
    once (SNIP, GraSP) asks at most one GPU, one that draws random masks none
    (``Method.find_work``)."""
    if work not in WORKS:
        raise ValueError(f"job_resources: work {work!r} is not one of {', '.join(WORKS)}")
    r = stage_resources(spec, stage)
    if work == "trains":
        n = gpus(spec, model, dataset, r["gpu"])
    else:
        n = min(r["gpu"], 1) if work == "scores" else 0
    scale = max(n, 1)
    return {"gpu": n, "cpus_per_task": r["cpus_per_task"] * scale, "mem_mb": r["mem_mb"] * scale}
