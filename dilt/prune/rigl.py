"""RigL: sparse training with drop / grow updates (Evci et al., "Rigging the Lottery", ICML 2020).

A :class:`dilt.train.Sparsifier`; the training loop knows nothing of it. As in the authors' code
(google-research/rigl ``SparseRigLOptimizer``) and rigl-torch (``RigLScheduler``):

* the initial mask is random with ERK (or uniform) per-layer counts over the given weights;
* with ``t = step + 1`` optimizer steps seen, every ``delta_t``-th step with ``t < T_end``
  (``T_end = int(end_fraction * total_steps)``) is a mask update *instead of* an optimizer step;
* the update works layer by layer: with ``f_t = alpha/2 (1 + cos(pi t / T_end))`` it drops the
  ``k = floor(f_t * n_active)`` active weights of smallest magnitude (truncated, as both codes
  do), then grows ``k`` weights with the largest dense-gradient magnitude among all weights not
  kept by the drop (the just-dropped ones are candidates, so a weight may be dropped and
  regrown: it then keeps its value). Newly grown weights start at zero, and the optimizer state (momentum buffer, Adam
  moments) of every weight not active both before and after the update is zeroed (the originals
  zero it for the grown weights; dropped ones are masked, so this changes nothing). Equal scores
  are broken by the lower index, where the TF code adds N(0, 1e-5) noise to ``|w|``. Each layer's
  count, hence the exact sparsity, never changes;
* between updates the gradients of inactive weights are zeroed and the mask is re-applied to the
  weights after every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from dilt.masks import Mask
from dilt.prune.erk import erk_counts, random_mask, uniform_counts
from dilt.train import Sparsifier


def drop_fraction_at(t: int, alpha: float, t_end: int) -> float:
    """RigL's cosine-decayed drop fraction after ``t`` steps (0 from ``T_end`` on)."""
    if t >= t_end:
        return 0.0
    return alpha / 2 * (1 + math.cos(math.pi * t / t_end))


class RigL(Sparsifier):
    """Dynamic sparse training of the weights ``names`` at overall density ``density``."""

    def __init__(self, names: Sequence[str], density: float, *, delta_t: int = 100,
                 drop_fraction: float = 0.3, end_fraction: float = 0.75, erk: bool = True,
                 dense=frozenset(), seed: int = 0):
        if not 0 < drop_fraction < 1:
            raise ValueError(f"drop_fraction must lie in (0, 1), got {drop_fraction!r}")
        if not 0 < end_fraction <= 1:
            raise ValueError(f"end_fraction must lie in (0, 1], got {end_fraction!r}")
        if int(delta_t) != delta_t or delta_t < 1:
            raise ValueError(f"delta_t must be a positive integer, got {delta_t!r}")
        self.names, self.density = list(names), density
        self.delta_t, self.alpha, self.end_fraction = int(delta_t), drop_fraction, end_fraction
        self.erk, self.dense, self.seed = erk, frozenset(dense), seed
        self.step, self.updates = -1, 0
        self._m: dict[str, torch.Tensor] = {}

    # -- the hooks ---------------------------------------------------------------------------
    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        named = dict(model.named_parameters())
        missing = [n for n in self.names if n not in named]
        if missing:
            raise KeyError(f"model has no parameter {missing[0]!r}")
        self._p = {n: named[n] for n in self.names}
        self._opt = optimizer
        self.t_end = int(self.end_fraction * total_steps)
        shapes = {n: tuple(p.shape) for n, p in self._p.items()}
        counts = (erk_counts(shapes, self.density, self.dense) if self.erk
                  else uniform_counts(shapes, self.density, self.dense))
        init = random_mask(shapes, counts, torch.Generator().manual_seed(self.seed))
        self._set(init)
        self.step, self.updates = -1, 0

    def is_update(self, step: int) -> bool:
        t = step + 1
        return t % self.delta_t == 0 and t < self.t_end

    def mask_changed(self, step: int) -> bool:
        """The mask changes only at update steps (the loop re-syncs copies and ranks then)."""
        return self.is_update(step)

    def after_backward(self, step: int) -> bool:
        self.step = step
        if self.is_update(step):
            self.update(drop_fraction_at(step + 1, self.alpha, self.t_end))
            return False
        with torch.no_grad():
            for n, p in self._p.items():
                if p.grad is not None:
                    p.grad.mul_(self._m[n])
        return True

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        for n, p in self._p.items():
            p.mul_(self._m[n])

    # -- the drop / grow update ----------------------------------------------------------------
    @torch.no_grad()
    def update(self, fraction: float) -> None:
        """Drop and regrow ``fraction`` of every layer's active weights (gradients in place)."""
        for n, p in self._p.items():
            old = self._m[n]
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            new = drop_grow(p, grad, old, fraction)
            p[new & ~old] = 0.0
            stay = (old & new).to(p.dtype)
            for v in self._opt.state.get(p, {}).values():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v.mul_(stay)
            self._m[n] = new
        self.updates += 1

    # -- state ---------------------------------------------------------------------------------
    @property
    def mask(self) -> Mask:
        return Mask(self._m)

    def state_dict(self) -> dict:
        return {"mask": {n: m.detach().cpu().clone() for n, m in self._m.items()},
                "step": self.step, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        got = state["mask"]
        for n, p in self._p.items():
            if n not in got or tuple(got[n].shape) != tuple(p.shape):
                raise ValueError(f"RigL state: mask of {n!r} is missing or has the wrong shape")
        self._set(Mask({n: got[n] for n in self._p}))
        self.step, self.updates = int(state["step"]), int(state["updates"])

    def _set(self, mask: Mask) -> None:
        self._m = {n: mask[n].to(self._p[n].device) for n in self._p}


def drop_grow(weight: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """One layer's new mask: drop the ``floor(fraction * active)`` smallest ``|weight|`` of the
    active positions, grow as many of the largest ``|grad|`` among positions the drop did not
    keep. Ties go to the lower flat index (the same mask on every device)."""
    flat = mask.flatten()
    active = int(flat.sum())
    k = int(fraction * active)
    if k == 0:
        return mask.clone()
    neg = torch.tensor(-math.inf, device=weight.device)
    keep_score = torch.where(flat, weight.detach().abs().flatten().float(), neg)
    kept = torch.zeros_like(flat)
    kept[_top(keep_score, active - k)] = True
    grow_score = torch.where(kept, neg, grad.detach().abs().flatten().float())
    grown = torch.zeros_like(flat)
    grown[_top(grow_score, k)] = True
    return (kept | grown).view(mask.shape)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest ``scores``; equal scores in index order (stable sort)."""
    return torch.argsort(scores, descending=True, stable=True)[:k]
