"""GraSP: one-shot pruning at initialisation that preserves gradient flow (Wang et al., ICLR 2020)."""

from __future__ import annotations

from dilt.masks import Mask
from dilt.methods import Method, register_method
from dilt.prune.pai import grasp_batches, grasp_scores, mask_from_scores, option, require_signal

# The authors' defaults (Alecwangcq/GraSP: CIFAR-10 configs samples_per_class=10, num_iters=1,
# T=200; their CIFAR-100 configs use 5 per class and 2 iterations). ``chunk``: examples per
# forward pass (0: a whole batch), for memory on large images.
DEFAULTS = {"samples_per_class": 10, "num_iters": 1, "T": 200.0, "chunk": 0}

NAME = "grasp"  # the config and path name (registered below)


def find(job) -> None:
    """Score theta_0 once; one mask per target keeping the smallest -theta * Hg (the original
    removes the largest)."""
    from dilt.train import resolve_device

    per_class, iters, T, chunk = check_options(job.options)
    model = job.theta0_model().to(resolve_device(job.recipe.device))
    x, y = job.class_balanced_batch(per_class * iters)
    scores = grasp_scores(model, grasp_batches(x, y, iters), job.prunable, T, chunk=chunk)
    require_signal(scores, NAME)
    like = Mask.ones(model, job.prunable)
    for t in job.targets:
        job.write_mask(mask_from_scores(scores, like, t, keep="smallest"), t, epochs=0)
    job.finish(scoring_examples=len(y), samples_per_class=per_class, num_iters=iters, T=T,
               chunk=chunk, mode="train")


def check_options(opts: dict) -> tuple[int, int, float, int | None]:
    """(samples_per_class, num_iters, T, chunk or None), checked."""
    return (option(opts, NAME, "samples_per_class"), option(opts, NAME, "num_iters"),
            option(opts, NAME, "T", float, 1e-6), option(opts, NAME, "chunk", minimum=0) or None)


def scoring(options: dict, targets: list, facts) -> float:
    """Every scoring image twice: a gradient (one step), then a Hessian-gradient product (about
    two)."""
    return float(options["samples_per_class"] * options["num_iters"] * facts.classes * 3)


register_method(Method(
    name=NAME, kind="one-shot", display="GraSP", find=find, needs=("theta0",),
    options=dict(DEFAULTS), scoring=scoring, check=check_options,
    cite="Wang, Zhang, Grosse. Picking Winning Tickets Before Training by Preserving Gradient "
         "Flow. ICLR 2020"))
