"""Random pruning at initialisation: the data-free baselines.

* ``random_uniform`` keeps the same fraction of every prunable layer;
* ``random_erk`` keeps the Erdos-Renyi-Kernel per-layer counts (Evci et al., ICML 2020).

Positions are uniformly random within each layer, from a generator seeded by the job's seed and
the target (:func:`mask_seed`), so every (seed, target) mask is reproducible and the targets'
masks are independent draws. Counts are exact: the total is ``keep_count(numel, target)``.
"""

from __future__ import annotations

import torch

from dilt.masks import Mask
from dilt.methods import Method, register_method
from dilt.prune.erk import erk_counts, random_mask, uniform_counts


def mask_seed(seed: int, target: float) -> int:
    """The generator seed of the random mask of ``seed`` at ``target`` sparsity."""
    return seed * 1_000_003 + int(round(target * 1_000_000))


def random_masks(job, counts_of) -> None:
    """One random mask per target with the per-layer counts ``counts_of(shapes, density)``."""
    shapes = Mask.ones(job.theta0_model(), job.prunable).shapes
    for t in job.targets:
        counts = counts_of(shapes, 1.0 - t)
        gen = torch.Generator().manual_seed(mask_seed(job.seed, t))
        job.write_mask(random_mask(shapes, counts, gen), t, epochs=0,
                       extra={"mask_seed": mask_seed(job.seed, t)})
    job.finish()


def find_uniform(job) -> None:
    """Random masks with one density in every prunable layer."""
    random_masks(job, uniform_counts)


def find_erk(job) -> None:
    """Random masks with ERK (or ER, ``erdos_renyi_kernel: false``) per-layer counts."""
    kernel = job.options.get("erdos_renyi_kernel")
    if not isinstance(kernel, bool):
        raise ValueError(f"method_options.random_erk.erdos_renyi_kernel: must be true or false, got {kernel!r}")
    random_masks(job, lambda shapes, d: erk_counts(shapes, d, erdos_renyi_kernel=kernel))


register_method(Method(
    name="random_uniform", kind="one-shot", display="Random (uniform)", find=find_uniform,
    needs=("theta0",), options={}, uses_model=False,
    cite="Liu et al. The Unreasonable Effectiveness of Random Pruning. ICLR 2022"))

register_method(Method(
    name="random_erk", kind="one-shot", display="Random (ERK)", find=find_erk,
    needs=("theta0",), options={"erdos_renyi_kernel": True}, uses_model=False,
    cite="Evci, Gale, Menick, Castro, Elsen. Rigging the Lottery: Making All Tickets Winners. "
         "ICML 2020"))
