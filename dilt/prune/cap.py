"""CAP, the Correlation-Aware Pruner (Kuznedelev, Kurtic, Frantar, Alistarh; NeurIPS 2023).

Every prunable weight tensor is flattened (a conv weight row by row, ``in*kh*kw`` per output
channel) and cut into blocks of ``B`` consecutive weights. Per block, the empirical Fisher

    F = damp * I + (1/m) sum_i g_i g_i^T          (g_i: m gradients of the loss, one block's part)

is the curvature of the loss. Inside a block weights are removed one at a time (optimal brain
surgeon): the weight q with the smallest saliency ``w_q^2 / (2 [F^-1]_qq)`` goes, the others move
by ``-w_q / [F^-1]_qq * F^-1[:, q]``, and ``F^-1`` is downdated to the inverse of the Fisher of
the weights still there, so the next choice sees the correlations with the weights already
removed. The running sum of saliencies is the block's loss for removing its first k weights;
removing the globally cheapest of these block prefixes allocates the sparsity across blocks and
layers (no per-layer sparsity is fixed in advance).

The elimination runs twice (once to price every prefix, once to stop each block at its
allocated count) instead of keeping every intermediate weight vector, so memory stays O(d B).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dilt import platform
from dilt.masks import Mask
from dilt.prune.magnitude import keep_count

# The paper's settings for DeiT-S (Table 6 and the authors' released code, IST-DASLab/CAP:
# research/recipes/gradual_pruning/cap/300ep_vit_sp=0.40_90.yaml, research/one_shot_pruning.py)
PAPER = {
    "num_grads": 4096,      # m: gradients in the empirical Fisher
    "grad_batch": 128,      # examples per gradient (the released scripts' --gb 128)
    "fisher_block": 192,    # B (the ResNet-50 gradual recipe: 256)
    "damp": 1e-8,           # lambda (also the ResNet-50 gradual recipe's)
    "init_sparsity": 0.5,   # the first, one-shot step of the gradual schedule
    "steps": 13,            # further pruning steps to the highest target (0.5 -> 0.9 in 14 steps)
    "prune_every": 20,      # fine-tuning epochs after every pruning step
}

# The DeiT-S recipe's ladder: 0.5 at its first step, then linear pieces through 0.6 (step 1) and
# 0.75 (step 4) to 0.9 (step 13); as (fraction of the steps, fraction of the way from the first
# to the last sparsity), so other ranges and step counts keep its shape.
RECIPE_KNOTS = ((0.0, 0.0), (1 / 13, 0.25), (4 / 13, 0.625), (1.0, 1.0))


def block_size(numel: int, wanted: int) -> int:
    """The block size used for a tensor of ``numel`` weights: the smallest divisor of ``numel``
    that is at least ``wanted`` (all of it when smaller), so blocks tile it exactly."""
    if wanted < 1:
        raise ValueError(f"fisher_block must be >= 1, got {wanted}")
    if wanted >= numel:
        return numel
    return next(b for b in range(wanted, numel + 1) if numel % b == 0)


# -- the empirical Fisher --------------------------------------------------------------------
def sample_gradients(model: nn.Module, names: Sequence[str],
                     batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     mask: Mapping[str, torch.Tensor] | None = None):
    """Yield one gradient per batch (mean cross-entropy over the batch; eval mode) as a dict
    ``name -> flat gradient``; gradients of weights the mask removed are zero."""
    params = dict(model.named_parameters())
    wrt = [params[n] for n in names]
    device = wrt[0].device
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            grads = torch.autograd.grad(F.cross_entropy(model(x), y), wrt)
            out = {}
            for n, g in zip(names, grads):
                g = g.detach().flatten()
                if mask is not None:
                    g = g * mask[n].to(device).flatten()
                out[n] = g
            yield out
    finally:
        model.train(was_training)


def empirical_fisher(model: nn.Module, names: Sequence[str],
                     batches: Iterable[tuple[torch.Tensor, torch.Tensor]], fisher_block: int,
                     mask: Mapping[str, torch.Tensor] | None = None, chunk: int = 64,
                     dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """``(1/m) sum_i g_i g_i^T`` restricted to the diagonal blocks, for every tensor in ``names``:
    a ``(d / B, B, B)`` tensor each (no dampening; :func:`fisher_inverse` adds it). Under DDP
    each rank passes its share of the gradient batches and every rank gets the whole Fisher
    (the ranks' sums of ``g g^T`` and their counts are all-reduced)."""
    params = dict(model.named_parameters())
    sizes = {n: block_size(params[n].numel(), fisher_block) for n in names}
    acc = {n: None for n in names}
    buf: dict[str, list] = {n: [] for n in names}
    m = 0

    def flush():
        for n in names:
            if not buf[n]:
                return
            g = torch.stack(buf[n]).to(dtype).view(len(buf[n]), -1, sizes[n])
            part = torch.einsum("cnb,cnk->nbk", g, g)
            acc[n] = part if acc[n] is None else acc[n] + part
            buf[n].clear()

    for grads in sample_gradients(model, names, batches, mask):
        for n in names:
            buf[n].append(grads[n])
        m += 1
        if m % chunk == 0:
            flush()
    flush()
    if platform.world_size() > 1:
        device = params[names[0]].device      # NCCL reduces on the GPU
        for n in names:
            if acc[n] is None:                # a rank given no batches adds nothing
                b = sizes[n]
                acc[n] = torch.zeros(params[n].numel() // b, b, b, dtype=dtype, device=device)
            platform.all_reduce_sum(acc[n])
        m = int(platform.all_reduce_sum(torch.tensor(float(m), dtype=torch.float64, device=device)))
    if m == 0:
        raise ValueError("empirical_fisher: no gradient batches were given")
    return {n: a / m for n, a in acc.items()}


def fisher_inverse(fisher: torch.Tensor, alive: torch.Tensor, damp: float) -> torch.Tensor:
    """Inverse of ``fisher + damp * I`` over the weights still alive, per block (float64):
    removed weights are decoupled (their row and column are the identity's)."""
    f = fisher.to(torch.float64, copy=True)
    dead = ~alive
    f.masked_fill_(dead.unsqueeze(2) | dead.unsqueeze(1), 0.0)
    diag = f.diagonal(dim1=1, dim2=2)
    diag.add_(damp)
    diag.masked_fill_(dead, 1.0)
    chol, info = torch.linalg.cholesky_ex(f)
    del f
    if bool((info > 0).any()):
        raise ValueError(f"method_options.cap.damp: {damp!r} leaves a Fisher block singular; "
                         "use a larger one")
    return torch.cholesky_inverse(chol)


# -- optimal brain surgeon inside each block --------------------------------------------------
def obs_eliminate(w: torch.Tensor, finv: torch.Tensor, alive: torch.Tensor,
                  counts: torch.Tensor | None = None, *, overwrite: bool = False):
    """Remove weights one at a time from every block (row of ``w``) by OBS.

    ``w``: (n, B) weights, ``finv``: (n, B, B) inverse Fisher over the alive weights, ``alive``:
    (n, B) bool. Block b stops after ``counts[b]`` removals (all its alive weights when None).
    Returns the updated weights, the alive flags, and ``loss`` (n, B): ``loss[b, j]`` is the
    block's OBS loss estimate after its first j+1 removals (inf beyond what it removed).
    Inputs are not modified, except ``finv`` when ``overwrite`` (a caller's scratch inverse:
    the (n, B, B) updates then run in place, without a copy or a new tensor per step).
    """
    w, alive = w.clone(), alive.clone()
    if not overwrite:
        finv = finv.clone()
    n, size = w.shape
    rows = torch.arange(n, device=w.device)
    limit = alive.sum(1) if counts is None else torch.minimum(counts.to(w.device), alive.sum(1))
    done = torch.zeros(n, dtype=torch.long, device=w.device)
    total = torch.zeros(n, dtype=w.dtype, device=w.device)
    loss = torch.full((n, size), float("inf"), dtype=w.dtype, device=w.device)
    outer = torch.empty_like(finv)
    for step in range(int(limit.max()) if n else 0):
        active = done < limit
        diag = finv.diagonal(dim1=1, dim2=2).clamp_min(torch.finfo(w.dtype).tiny)
        score = torch.where(alive, w * w / diag, torch.full_like(w, float("inf")))
        q = score.argmin(1)
        total = total + torch.where(active, 0.5 * score[rows, q], torch.zeros_like(total))
        loss[rows[active], step] = total[active]
        col = finv[rows, :, q]                                   # F^-1[:, q]
        scale = active.to(w.dtype) / diag[rows, q]
        w = w - col * (w[rows, q] * scale).unsqueeze(1)
        torch.mul(col.unsqueeze(2), (col * scale.unsqueeze(1)).unsqueeze(1), out=outer)
        finv.sub_(outer)
        a, qa = rows[active], q[active]
        w[a, qa] = 0.0
        alive[a, qa] = False
        finv[a, qa, :] = 0.0
        finv[a, :, qa] = 0.0
        finv[a, qa, qa] = 1.0
        done = done + active.long()
    return w, alive, loss


def allocate(losses: Mapping[str, torch.Tensor], n_remove: int) -> dict[str, torch.Tensor]:
    """How many weights each block removes: the ``n_remove`` smallest prefix losses over all
    blocks of all tensors (ties: earlier block, then shorter prefix). Losses grow with the
    prefix, so the chosen entries are prefixes; returns ``name -> (n_blocks,)`` counts."""
    names = list(losses)
    flat = torch.cat([losses[n].flatten().cpu() for n in names])
    finite = int(torch.isfinite(flat).sum())
    if not 0 <= n_remove <= finite:
        raise ValueError(f"cannot remove {n_remove} weights: {finite} are left to remove")
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.argsort(flat, stable=True)[:n_remove]] = True
    out, i = {}, 0
    for n in names:
        k = losses[n].numel()
        out[n] = chosen[i:i + k].view(losses[n].shape).sum(1)
        i += k
    return out


@torch.no_grad()
def cap_prune(model: nn.Module, mask: Mask, fisher: Mapping[str, torch.Tensor], sparsity: float,
              damp: float) -> tuple[Mask, dict[str, float]]:
    """One CAP step: prune the weights ``mask`` still keeps until exactly
    ``keep_count(mask.numel, sparsity)`` remain, allocating globally by OBS loss, and write
    the OBS-updated weights into ``model``. Returns the new mask (a subset of ``mask``) and the
    OBS loss estimate per tensor."""
    params = dict(model.named_parameters())
    n_remove = mask.numel - keep_count(mask.numel, sparsity)
    dead = mask.numel - mask.kept
    if n_remove < dead:
        raise ValueError(f"cannot prune to sparsity {sparsity}: the mask already keeps only {mask.kept}")
    state = {}
    for name in mask:
        f = fisher[name]
        b = f.shape[-1]
        w = params[name].detach().to(f.device, torch.float64).reshape(-1, b)
        alive = mask[name].to(f.device).reshape(-1, b)
        w = torch.where(alive, w, torch.zeros_like(w))
        _, _, loss = obs_eliminate(w, fisher_inverse(f, alive, damp), alive, overwrite=True)
        state[name] = (w, alive, loss)
    counts = allocate({n: s[2] for n, s in state.items()}, n_remove - dead)
    out, estimate = {}, {}
    for name, (w, alive, _) in state.items():    # F^-1 again: one layer's at a time in memory
        k = counts[name].to(w.device)
        new_w, new_alive, loss = obs_eliminate(w, fisher_inverse(fisher[name], alive, damp), alive, k,
                                                overwrite=True)
        p = params[name]
        p.copy_(new_w.reshape(p.shape).to(p.dtype))
        out[name] = new_alive.reshape(p.shape).cpu()
        taken = (k - 1).clamp_min(0)
        estimate[name] = float(torch.where(k > 0, loss.gather(1, taken.unsqueeze(1)).squeeze(1),
                                           torch.zeros_like(loss[:, 0])).sum())
    return Mask(out), estimate


def sparsity_schedule(targets: Sequence[float], init_sparsity: float, steps: int) -> list[float]:
    """Sparsities of one gradual run that passes every target, as the authors' run saves a model
    at each sparsity it reaches: one-shot to ``min(init_sparsity, lowest target)``, then ``steps``
    steps to the highest target along the recipe's linear pieces (:data:`RECIPE_KNOTS`), with
    every target a step of its own (a ladder step within 1e-9 of a target is that target).
    ``steps`` 0: one pruning step per target, nothing in between."""
    import numpy as np

    targets = sorted({float(t) for t in targets})
    if not targets or not all(0 < t < 1 for t in targets):
        raise ValueError(f"target sparsities must lie in (0, 1), got {targets}")
    if steps == 0:  # one-shot to each target in turn
        return targets
    first, top = min(init_sparsity, targets[0]), targets[-1]
    xs, ys = zip(*RECIPE_KNOTS)
    ladder = [first + (top - first) * float(np.interp(i / steps, xs, ys)) for i in range(1, steps + 1)]
    plan = [first] + [s for s in ladder if first < s < top and all(abs(s - t) > 1e-9 for t in targets)]
    return sorted(set(plan) | set(targets))
