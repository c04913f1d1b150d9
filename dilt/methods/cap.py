"""CAP: gradual correlation-aware pruning of the trained dense model, then fine-tuning
(Kuznedelev et al., NeurIPS 2023). The pruner is :mod:`dilt.prune.cap`."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dilt.masks import Mask
from dilt.methods import Method, register_method
from dilt.prune.cap import PAPER, cap_prune, empirical_fisher, sparsity_schedule

NAME = "cap"  # the config and path name (registered below)

_INTS = ("num_grads", "grad_batch", "fisher_block", "steps", "prune_every")


def check_options(opts: dict) -> dict:
    """The options, checked; an error names the offending key and value."""
    def bad(key, want):
        return ValueError(f"method_options.{NAME}.{key}: must be {want}, got {opts.get(key)!r}")

    for key in _INTS:
        v = opts.get(key)
        low = 0 if key == "steps" else 1
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise bad(key, f"an integer >= {low}")
    for key in ("damp", "init_sparsity"):
        v = opts.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
            raise bad(key, "a positive number")
    if not opts["init_sparsity"] < 1:
        raise bad("init_sparsity", "below 1")
    lr = opts.get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0):
        raise bad("lr", "a positive number or null (the recipe's)")
    return opts


def gradient_batches(split, num_grads: int, grad_batch: int, seed: int,
                     shard: tuple[int, int] = (0, 1)):
    """``num_grads`` batches of ``grad_batch`` training examples drawn without replacement
    (with replacement only when the split is smaller) and augmented with ``seed``, labels mapped
    like the training loop. ``shard=(rank, world)``: only that rank's contiguous share of the
    batches (the same batches, augmentation included, as in one process)."""
    from dilt.data.loader import batches

    pool = np.arange(len(split.dataset)) if split.indices is None else np.asarray(split.indices)
    need = num_grads * grad_batch
    rng = np.random.default_rng(seed)
    idx = rng.choice(pool, need, replace=need > len(pool))
    rank, world = shard
    idx = np.array_split(idx.reshape(num_grads, grad_batch), world)[rank].reshape(-1)
    lmap = None if split.label_map is None else torch.as_tensor(split.label_map)
    for x, y in batches(split.dataset, idx, grad_batch, augment_seed=seed):
        yield x, (y if lmap is None else lmap[y])


def _seed(job_seed: int, target: float, step: int) -> int:
    return int(job_seed) * 1_000_003 + int(round(target * 1e6)) * 101 + step


def find(job) -> None:
    """One gradual CAP run from the dense model (prune, fine-tune, repeat) through every target,
    as the authors' run saves a model at each sparsity it reaches: a target's mask and its own
    accuracy are taken after the fine-tuning that follows the step pruning to it."""
    from dilt import platform
    from dilt.train import resolve_device

    opts = check_options(job.options)
    recipe = job.recipe
    tune = dataclasses.replace(recipe, epochs=opts["prune_every"], warmup_epochs=0,
                               lr=opts["lr"] or recipe.lr)
    train_split = job.splits()[0]
    device = resolve_device(recipe.device)
    plan = sparsity_schedule(job.targets, opts["init_sparsity"], opts["steps"])
    top = plan[-1]
    model = job.dense_model().to(device)
    mask = Mask.ones(model, job.prunable)
    losses = []
    for i, s in enumerate(plan):
        kept = _finished_step(job, i, device)
        if kept is not None:  # a restarted job: this step's Fisher, pruning and tuning are done
            model.load_state_dict(kept["model"])
            mask, losses = kept["mask"], kept["losses"]
        else:
            grads = gradient_batches(train_split, opts["num_grads"], opts["grad_batch"],
                                     _seed(job.seed, top, i), shard=(platform.rank(), platform.world_size()))
            fisher = empirical_fisher(model, job.prunable, grads, opts["fisher_block"], mask,
                                      dtype=_fisher_dtype(device))
            mask, estimate = cap_prune(model, mask, fisher, s, opts["damp"])
            del fisher
            losses.append(sum(estimate.values()))
            job.train(model, name=f"step{i}", mask=mask, recipe=tune)
            _keep_step(job, i, model, mask, losses)
        for t in (t for t in job.targets if t == s):
            epochs = recipe.epochs + (i + 1) * tune.epochs
            done = {"schedule": plan[:i + 1]}
            extra = {**done, "obs_loss": losses[:], "layer_density": mask.layer_density()}
            key = job.write_mask(mask, t, epochs=epochs, extra=extra)
            job.write_record(key, job.evaluate(model), target=t, actual_sparsity=mask.sparsity,
                             epochs=epochs, extra=done)
    job.finish(options={k: opts[k] for k in sorted(opts)})


def _step_path(job, i: int):
    return job.out_dir / f"step_{i}.pt"  # one of the job's RESUME_FILES


def _keep_step(job, i: int, model, mask: Mask, losses: list[float]) -> None:
    """Save the model, mask and loss estimates after step ``i`` (rank 0; with the run's
    provenance), and drop that step's epoch checkpoint: a job killed later resumes from here
    instead of computing the Fisher of every finished step again (on DeiT-S 4,096 gradients
    a step)."""
    from dilt import platform
    from dilt.io import save_checked

    if platform.is_main():
        save_checked(_step_path(job, i), {
            "model": model.state_dict(), "mask": {n: t.cpu() for n, t in mask.items()},
            "losses": list(losses), "provenance": job.provenance})
        (job.out_dir / f"ckpt_step{i}.pt").unlink(missing_ok=True)
    platform.barrier()


def _finished_step(job, i: int, device) -> dict | None:
    """What :func:`_keep_step` saved after step ``i`` of this run, or None (never saved, or
    saved under other settings)."""
    from dilt.io import load_checked

    path = _step_path(job, i)
    if not path.exists():
        return None
    kept = load_checked(path, map_location=device)
    if kept.get("provenance") != job.provenance:
        return None
    return {**kept, "mask": Mask(kept["mask"])}


def _fisher_dtype(device) -> torch.dtype:
    """float64 on a CPU: a block of fewer gradients than weights is rank-deficient, and float32
    rounding leaves it eigenvalues below -damp (Cholesky fails); on a GPU float32, as CAP's
    code, since the blocks of a DeiT-S take 16 GB in float32."""
    return torch.float64 if device.type == "cpu" else torch.float32


def cost(options: dict, targets: list, recipe_epochs: int) -> tuple[int, float]:
    """Fine-tuning segments of the run: one per pruning step of its schedule."""
    return len(sparsity_schedule(targets, options["init_sparsity"], options["steps"])), options["prune_every"]


def scoring(options: dict, targets: list, facts) -> float:
    """The Fisher's gradients: ``num_grads`` of ``grad_batch`` images at every pruning step."""
    steps = len(sparsity_schedule(targets, options["init_sparsity"], options["steps"]))
    return float(steps * options["num_grads"] * options["grad_batch"])


CAP = register_method(Method(
    name=NAME, kind="post-training", display="CAP", find=find, needs=("theta0", "dense"),
    options={**PAPER, "lr": None}, cost=cost, scoring=scoring, check=check_options,
    cite="Kuznedelev, Kurtic, Frantar, Alistarh. CAP: Correlation-Aware Pruning for "
         "Highly-Accurate Sparse Vision Models. NeurIPS 2023"))
