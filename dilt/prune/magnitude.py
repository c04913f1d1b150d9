"""Global magnitude pruning and the IMP sparsity schedule."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dilt.masks import Mask

_EPS = 1e-9


def keep_count(numel: int, sparsity: float) -> int:
    """Number of weights kept at ``sparsity`` (rounded to the nearest integer)."""
    return int(round((1.0 - sparsity) * numel))


def schedule(targets: Sequence[float], rate: float) -> list[float]:
    """Sparsities after each IMP round: each round prunes ``rate`` of the remaining weights,
    except that a round that would cross a target stops exactly on it, so every target is a
    round of its own. Ends at the highest target."""
    if not 0 < rate < 1:
        raise ValueError(f"prune rate must be in (0, 1), got {rate}")
    targets = sorted(set(float(t) for t in targets))
    if not targets or targets[0] <= 0 or targets[-1] >= 1:
        raise ValueError(f"target sparsities must lie in (0, 1), got {targets}")
    out, s = [], 0.0
    while s < targets[-1] - _EPS:
        nxt = 1.0 - (1.0 - s) * (1.0 - rate)
        crossed = [t for t in targets if s + _EPS < t <= nxt + _EPS]
        s = crossed[0] if crossed else nxt
        out.append(s)
    return out


def magnitudes(model: nn.Module, mask: Mask) -> torch.Tensor:
    """|w| of every prunable weight as one flat float tensor (mask order); pruned weights get -1
    so they are never kept again."""
    params = dict(model.named_parameters())
    flat = []
    for name, m in mask.items():
        w = params[name].detach().abs().float().cpu().flatten()
        if not bool(torch.isfinite(w[m.flatten()]).all()):
            raise ValueError(f"weights of {name} are not finite (the training diverged); refusing to prune")
        flat.append(torch.where(m.flatten(), w, torch.full_like(w, -1.0)))
    return torch.cat(flat)


def mask_from_flat(keep: torch.Tensor, like: Mask) -> Mask:
    out, i = {}, 0
    for name, m in like.items():
        out[name] = keep[i:i + m.numel()].view(m.shape).clone()
        i += m.numel()
    return Mask(out)


def top_k_mask(scores: torch.Tensor, k: int, like: Mask) -> Mask:
    """Keep exactly the ``k`` highest ``scores`` (flat, in ``like``'s order)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.topk(scores, k, sorted=False).indices] = True
    return mask_from_flat(keep, like)


def magnitude_prune(model: nn.Module, mask: Mask, sparsity: float) -> Mask:
    """Global magnitude pruning: keep exactly ``keep_count(numel, sparsity)`` of the weights
    still kept by ``mask``, those of largest magnitude. The result is a subset of ``mask``."""
    k = keep_count(mask.numel, sparsity)
    if k > mask.kept:
        raise ValueError(f"cannot prune to sparsity {sparsity}: the mask already keeps only {mask.kept}")
    return top_k_mask(magnitudes(model, mask), k, mask)


def consensus_prune(models: Sequence[nn.Module], mask: Mask, rate: float,
                    next_target: float | None) -> Mask:
    """COLT's round: every model prunes ``rate`` of the weights kept by the shared ``mask`` by
    global magnitude, and the masks are intersected. If the intersection would be sparser than
    ``next_target`` it is cut exactly at that target instead: weights are ranked by the worst
    rank any model gives them, which is the order in which the intersection gains them as the
    per-model keep count grows. A step that reaches the target before rounding to whole weights
    (as :func:`schedule` plans it) also stops on it, so rounding never leaves a round a weight
    short of the target and a next round that prunes only that sliver."""
    scores = [magnitudes(m, mask) for m in models]
    alive = scores[0] >= 0
    n_alive = int(alive.sum())
    ranks = []
    for s in scores:
        order = torch.argsort(s, descending=True, stable=True)
        r = torch.empty_like(order)
        r[order] = torch.arange(len(order))
        ranks.append(r)
    worst = torch.stack(ranks).max(0).values          # weight enters the intersection at k = worst+1
    total = torch.stack(ranks).sum(0)                 # tie-break: better ranked on average first
    k_model = keep_count(n_alive, rate)               # each model keeps this many of the alive ones
    inter = alive & (worst < k_model)
    if next_target is not None:
        k_target = keep_count(mask.numel, next_target)
        # (1 - rate) * n_alive: the step's keep count before rounding; n_alive is the previous
        # target's count rounded, so within half a weight
        if int(inter.sum()) <= k_target or (1.0 - rate) * n_alive <= (1.0 - next_target) * mask.numel + 0.5:
            key = worst.double() * (len(worst) * len(models) + 1) + total.double()
            key[~alive] = float("inf")
            keep = torch.zeros_like(alive)
            keep[torch.argsort(key, stable=True)[:k_target]] = True
            inter = keep
    return mask_from_flat(inter, mask)
