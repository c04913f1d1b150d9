"""Iterative magnitude pruning methods: LTH (Frankle & Carbin 2019), DiLT's independent
partition runs, and COLT (Hossain et al. 2025). One IMP loop serves all three
(:mod:`dilt.prune.imp`); they differ in the data each model sees and whether masks are
intersected every round."""

from __future__ import annotations

import numpy as np

from dilt.methods import Method, get_method, register_method
from dilt.methods.job import MaskJob


def _partition_part(job: MaskJob, p):
    from dilt.jobs import theta0_model
    from dilt.provenance import head_seed
    from dilt.prune.imp import Part
    from dilt.train import Split

    b = job.bundle
    lmap = p.label_map if p.class_disjoint else None
    classes = p.num_classes if p.class_disjoint else b.num_classes
    test_idx = np.flatnonzero(np.isin(b.test_targets, p.classes))
    return Part(lambda: theta0_model(job.suite, job.model, job.theta0, b, classes,
                                     head_seed(job.seed, p.index)),
                Split(b.train, p.train_idx, lmap), Split(b.val, p.val_idx, lmap),
                Split(b.test, test_idx, lmap))


def _size(split) -> int:
    return len(split.dataset) if split.indices is None else len(split.indices)


def find_imp(job: MaskJob) -> None:
    """Run IMP for ``job.method`` and list the mask of every target round in the manifest."""
    from dilt.jobs import full_splits, partitions
    from dilt.masks import Mask
    from dilt.prune.imp import Part, epochs_before, round_at_sparsity, run_imp
    from dilt.tickets import failed_run_fraction, first_failed_round

    method = get_method(job.method)
    if not method.on_partitions:  # LTH: one model on the full data
        tr, va, te = full_splits(job.bundle)
        runs = [Part(job.theta0_model, tr, va, te)]
    else:  # COLT: every partition in one run; DiLT: one run per partition
        parts = partitions(job.suite, job.bundle, job.partition, job.seed)
        runs = [_partition_part(job, p) for p in ([parts[job.part - 1]] if method.per_partition else parts)]
    from dilt.models.state import load_state

    prune = job.suite["prune"]
    meta = {"method": job.method, "model": job.model, "dataset": job.dataset,
            "partition": job.partition, "seed": job.seed, "part": job.part,
            "theta0": load_state(job.theta0)[1].get("hash"), "provenance": job.provenance}
    # an IMP round's training in passes over the full training set: a partition model's epoch
    # is its share of one (COLT's N models on 1/N of the data each cost one epoch a round, as
    # LTH's one model does)
    full = full_splits(job.bundle)[0] if method.on_partitions else runs[0].train
    share = sum(_size(run.train) for run in runs) / _size(full)
    summary = run_imp(runs, job.prunable, job.targets, prune["rate"], job.recipe, job.out_dir,
                      seed=job.seed, rewind_epoch=prune["rewind_epoch"], meta=meta,
                      log_path=job.log, desc=f"{job.method} {job.model}/{job.dataset} s{job.seed} "
                      f"{job.partition}" + (f" p{job.part}" if job.part else ""))
    masks = [Mask.load(job.out_dir / f"mask_r{r}.safetensors") for r in range(summary["final_round"] + 1)]
    # mask r exists after rounds 0..r-1 (round 0 trains the dense model); kept unrounded in the
    # manifest, for the DiLT tickets' sums over the partition runs
    epochs_by_round = [share * epochs_before(job.recipe.epochs, prune["rewind_epoch"], r)
                       for r in range(len(masks))]
    failed = first_failed_round(summary["rounds"], failed_run_fraction(job.suite))
    for t in job.targets:
        r = round_at_sparsity(masks, t)
        # a mask from a round at or after one where a model of the run failed is flagged, as
        # the DiLT tickets are (dilt.tickets)
        flags = ["failed_source"] if failed is not None and failed <= r else []
        job.write_mask(masks[r], t, round=r, epochs=round(epochs_by_round[r], 9),
                       extra={"trainings": r * len(runs), "flags": flags})
    job.finish(theta0=meta["theta0"], n_models=len(runs), final_round=summary["final_round"],
               rewind_epoch=prune["rewind_epoch"], failed_from_round=failed,
               epochs_by_round=epochs_by_round)


_CITE_LTH = "Frankle & Carbin, ICLR 2019; late rewinding: Frankle et al., ICML 2020"
LTH = register_method(Method("lth", "iterative", "LTH", find_imp, cite=_CITE_LTH))
DILT = register_method(Method("dilt", "iterative", "DiLT", find_imp, needs=("theta0", "partitions"),
                       per_partition=True, on_partitions=True, retrain=False,
                       cite="this work: N independent IMP runs on class-disjoint partitions"))
COLT = register_method(Method("colt", "iterative", "COLT", find_imp, needs=("theta0", "partitions"),
                       on_partitions=True, cite="Hossain et al., IEEE TAI 2025"))
