"""What the Snakefile expands: the job grid of one suite, named in one place.

Paths are relative to the repository root; ``RUN = <results_root>/<suite>/<model>/<dataset>/seed<seed>``.
Mask runs live in ``RUN/<tag>/<method>/`` (``tag`` is ``full`` or a partition tag such as
``contiguous2``), the DiLT partition runs in ``RUN/<tag>/dilt/p<k>/``, the tickets in
``RUN/<tag>/tickets/``; every mask run ends with ``masks.json``. Retraining of a source writes
``RUN/<tag>/<source>/retrain/records.json``.
"""

from __future__ import annotations

from dilt.methods import get_method
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


def records(spec: dict, root: str) -> list[str]:
    """Every records.json the report aggregates."""
    out = []
    for model in spec["models"]:
        for dataset in spec["datasets"]:
            for seed in spec["seeds"]:
                run = run_dir(root, model, dataset, seed)
                for tag, source in retrain_sources(spec, model):
                    out.append(f"{run}/full/dense/records.json" if source == "dense"
                               else f"{run}/{tag}/{source}/retrain/records.json")
                for target in transfer_targets(spec):
                    out += [f"{run}/{tag}/transfer/{target}/records.json"
                            for tag in [FULL] + tags(spec) if transfer_sources(spec, tag)]
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
    if not spec.get("analysis", {}).get("enabled", True) or "dilt" not in spec["methods"]:
        return []
    return [f"{run_dir(root, m, d, s)}/{t}/analysis.json" for m in spec["models"]
            for d in spec["datasets"] for s in spec["seeds"] for t in tags(spec)]


def transfer_targets(spec: dict) -> list[str]:
    tr = spec.get("transfer", {})
    return list(tr.get("targets", [])) if tr.get("enabled", True) else []


def transfer_sources(spec: dict, tag: str) -> list[str]:
    """Sources transferred from a tag: dense and LTH from the full data; COLT and the DiLT
    tickets from each partition scheme (only iterative methods: the proposal's experiment 4)."""
    methods = spec["methods"]
    if tag == FULL:
        return ["dense"] + (["lth"] if "lth" in methods else [])
    return (["colt"] if "colt" in methods else []) + (["tickets"] if "dilt" in methods else [])
