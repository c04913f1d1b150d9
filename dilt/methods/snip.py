"""SNIP: one-shot pruning at initialisation by connection sensitivity (Lee et al., ICLR 2019)."""

from __future__ import annotations

from dilt.masks import Mask
from dilt.methods import Method, register_method
from dilt.prune.pai import mask_from_scores, option, require_signal, snip_scores

NAME = "snip"  # the config and path name (registered below)


def find(job) -> None:
    """Score theta_0 once on a class-balanced batch; one mask per target (largest |g * theta|)."""
    from dilt.train import resolve_device

    per_class, chunk = check_options(job.options)
    model = job.theta0_model().to(resolve_device(job.recipe.device))
    x, y = job.class_balanced_batch(per_class)
    scores = snip_scores(model, x, y, job.prunable, chunk=chunk)
    require_signal(scores, NAME)
    like = Mask.ones(model, job.prunable)
    for t in job.targets:
        job.write_mask(mask_from_scores(scores, like, t, keep="largest"), t, epochs=0)
    job.finish(scoring_examples=len(y), per_class=per_class, mode="eval")


def check_options(opts: dict) -> tuple[int, int]:
    """(per_class, chunk), checked."""
    return option(opts, NAME, "per_class"), option(opts, NAME, "chunk")


def scoring(options: dict, targets: list, facts) -> float:
    """One gradient of the scoring batch (``per_class`` images a class)."""
    return float(options["per_class"] * facts.classes)


register_method(Method(
    name=NAME, kind="one-shot", display="SNIP", find=find, needs=("theta0",),
    options={"per_class": 10, "chunk": 256}, scoring=scoring, check=check_options,
    cite="Lee, Ajanthan, Torr. SNIP: Single-shot Network Pruning based on Connection "
         "Sensitivity. ICLR 2019"))
