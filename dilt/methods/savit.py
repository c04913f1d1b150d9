"""SAViT: structure-aware ViT pruning by collaborative importance (Zheng et al., NeurIPS 2022).

Prunes the trained dense ViT of the seed to each FLOPs target (heads, MLP neurons and embedding
dims, by the second-order joint importance of :mod:`dilt.prune.savit`), fine-tunes the physically
smaller model and records its accuracy on a FLOPs axis. ``flops_keep``: the kept fractions of the
dense FLOPs; ``"sparsities"`` maps each suite sparsity s to a kept fraction 1 - s.
"""

from __future__ import annotations

import dataclasses

import torch

from dilt import platform
from dilt.methods import Method, register_method
from dilt.methods.job import mask_key
from dilt.prune import savit as sv

NAME = "savit"  # the config and path name (registered below)

OPTIONS = {"flops_keep": [0.5], "per_class": 32, "batch_size": 64, "curvature": "hessian",
           "tolerance": 0.01, "finetune_epochs": None}
# A Hessian-vector product by double backward costs about two training steps (Pearlmutter 1994:
# a small constant times a gradient); an estimate for `dilt budget`, not timed on a GPU.
HVP_STEPS = 2.0
SCORES = "scores.pt"   # the scores of an unfinished run (removed when it completes)


def flops_keeps(opts: dict, targets) -> list[float]:
    """The kept FLOPs fractions to prune to, from ``flops_keep`` (a list, or "sparsities")."""
    keep = opts["flops_keep"]
    if keep == "sparsities":
        keep = [round(1.0 - float(s), 6) for s in targets]
    if not isinstance(keep, (list, tuple)) or not keep:
        raise sv.SAViTError(f"{NAME}: flops_keep {keep!r} must be a non-empty list or 'sparsities'")
    for k in keep:
        if not isinstance(k, (int, float)) or not 0.0 < k <= 1.0:
            raise sv.SAViTError(f"{NAME}: flops_keep value {k!r} must be in (0, 1]")
    return sorted({float(k) for k in keep}, reverse=True)


def _check(opts: dict) -> None:
    """The options, checked (one line naming the key); the FLOPs targets by :func:`flops_keeps`."""
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise sv.SAViTError(f"{NAME}: unknown option {unknown[0]!r} (known: {', '.join(sorted(OPTIONS))})")
    for key in ("per_class", "batch_size"):
        if not isinstance(opts[key], int) or isinstance(opts[key], bool) or opts[key] < 1:
            raise sv.SAViTError(f"{NAME}: option {key} = {opts[key]!r} must be a positive integer")
    ft = opts["finetune_epochs"]
    if ft is not None and (not isinstance(ft, int) or isinstance(ft, bool) or ft < 0):
        raise sv.SAViTError(f"{NAME}: option finetune_epochs = {ft!r} must be a non-negative integer")
    if opts["curvature"] not in sv.CURVATURES:
        raise sv.SAViTError(f"{NAME}: option curvature = {opts['curvature']!r} is not one of "
                            f"{', '.join(sv.CURVATURES)}")
    tol = opts["tolerance"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < 1:
        raise sv.SAViTError(f"{NAME}: option tolerance = {tol!r} must be a number in (0, 1)")


def check_options(opts: dict) -> None:
    _check(opts)
    flops_keeps(opts, [0.5])  # the values; "sparsities" maps the suite's targets


def find(job) -> None:
    """Score the dense model once; per FLOPs target: select, shrink, fine-tune, record."""
    from dilt.train import resolve_device

    opts = job.options
    _check(opts)
    keeps = flops_keeps(opts, job.targets)
    device = resolve_device(job.recipe.device)
    dense = job.dense_model().to(device)
    sv.check_vit(dense)
    g, h, n = _kept_scores(job, dense, opts)
    dense_flops = sv.vit_flops(dense)
    recipe = job.recipe
    if opts["finetune_epochs"] is not None:
        recipe = dataclasses.replace(recipe, epochs=opts["finetune_epochs"])
    for keep_frac in keeps:
        keep = sv.select(dense, g, h, keep_frac, tolerance=opts["tolerance"])
        target = round(1.0 - keep_frac, 6)          # FLOPs reduction, not a weight sparsity
        key = mask_key(target)
        wmask = sv.weight_mask(dense, keep, job.prunable)
        flops = sv.vit_flops(dense, keep)
        extra = {"structured": True, "axis": "flops", "flops_keep": keep_frac, "flops": flops,
                 "flops_dense": dense_flops, "flops_ratio": flops / dense_flops,
                 "predicted_loss_change": sv.joint_cost(g, h, ~keep.flat()), **keep.counts()}
        job.write_mask(wmask, target, epochs=0, extra=extra)
        small = sv.shrink(dense, keep)
        if recipe.epochs > 0:
            job.train(small, name=key, recipe=recipe)
        small.eval()
        with torch.no_grad():
            scores = job.evaluate(small)
        job.write_record(key, scores, target=target, actual_sparsity=wmask.sparsity,
                         epochs=recipe.epochs, extra={**extra, "params": sv.param_count(small),
                                                      "params_dense": sv.param_count(dense)})
    job.finish(scoring_examples=n, per_class=opts["per_class"], curvature=opts["curvature"],
               flops_dense=dense_flops, axis="flops")
    if platform.is_main():  # the run is complete: its scores are no longer needed
        (job.out_dir / SCORES).unlink(missing_ok=True)


def _kept_scores(job, dense, opts) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`_scores`, kept in the run directory (``scores.pt``, with the run's provenance):
    the exact Hessian is most of a DeiT-S job's cost, so a job killed in its fine-tuning and
    started again does not compute it again."""
    from dilt.io import load_checked, save_checked

    path = job.out_dir / SCORES
    if path.exists():
        kept = load_checked(path)
        if kept.get("provenance") == job.provenance:
            return kept["g"], kept["h"], int(kept["n"])
    g, h, n = _scores(job, dense, opts)
    if platform.is_main():  # every rank holds them; one copy on disk (2.9 GB for DeiT-S)
        save_checked(path, {"g": g, "h": h, "n": n, "provenance": job.provenance})
    return g, h, n


def _scores(job, dense, opts) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The gates' gradient and curvature (on the CPU) over the scoring batch, and its size.
    Under DDP each rank loads and scores its share of the batch (32,000 images at 224 px are
    about 19 GB, and the exact Hessian takes hours) and the ranks sum their parts."""
    x, y = job.class_balanced_batch(opts["per_class"], shard=(platform.rank(), platform.world_size()))
    bs = opts["batch_size"]
    batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(y), bs)]
    if platform.world_size() == 1:
        return (*sv.gate_taylor(dense, batches, curvature=opts["curvature"]), len(y))
    # the sums stay on the model's device (NCCL reduces there), and only the final H comes to
    # the host: one 2.9 GB copy a rank for DeiT-S, not three
    g_sum, h_sum, count = sv.gate_taylor_sums(dense, batches, curvature=opts["curvature"])
    parts = [g_sum, h_sum, torch.tensor(float(count), dtype=torch.float64, device=g_sum.device)]
    for t in parts:
        platform.all_reduce_sum(t)
    g, h = sv.taylor_from_sums(*parts)
    return g, h, int(parts[2])


def cost(options: dict, targets: list, recipe_epochs: int) -> tuple[int, float]:
    """One fine-tuning per FLOPs target."""
    ft = recipe_epochs if options["finetune_epochs"] is None else options["finetune_epochs"]
    return len(flops_keeps(options, targets)), ft


def scoring(options: dict, targets: list, facts) -> float:
    """The scoring batch (``per_class`` images a class): one gradient per image, plus with the
    exact Hessian one Hessian-vector product per gate and image."""
    images = options["per_class"] * facts.classes
    per_image = 1.0
    if options["curvature"] == "hessian":
        per_image += HVP_STEPS * sv.gate_count(facts.model)
    return float(images * per_image)


register_method(Method(
    name=NAME, kind="structured", display="SAViT", find=find, needs=("theta0", "dense"),
    retrain=False, vit_only=True, options=dict(OPTIONS), cost=cost, scoring=scoring,
    check=check_options,
    cite="Zheng, Li, Zhang, Yang, Tan, Xiao, Ren, Pu. SAViT: Structure-Aware Vision Transformer "
         "Pruning via Collaborative Optimization. NeurIPS 2022"))
