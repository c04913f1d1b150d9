"""Pruning at initialisation: SNIP (Lee et al., ICLR 2019) and GraSP (Wang et al., ICLR 2020).

Both score every prunable weight of theta_0 once from a small class-balanced batch and keep a
fixed number of weights globally:

* SNIP keeps the *largest* connection sensitivities ``|dL/dc| = |g * theta|`` (network in eval
  mode, as the authors' code scores with ``is_train=False``).
* GraSP scores ``S = -theta * (H g)`` with the loss on logits / T and keeps the *smallest* S: the
  authors' code removes the top of S (``keep = S <= the threshold of the largest scores``). The
  network is in train mode, as there (BatchNorm uses batch statistics).

The scoring runs on a deep copy, so the caller's weights, buffers, ``.grad`` and mode are
untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dilt.masks import Mask
from dilt.models import weight_layers
from dilt.prune.magnitude import keep_count, top_k_mask

Batch = tuple[torch.Tensor, torch.Tensor]


def _weights(net: nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    params = dict(net.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"model has no parameter {missing[0]!r}")
    return [params[n] for n in names]


def _grad(out: torch.Tensor, ws: list[torch.Tensor], **kw) -> list[torch.Tensor]:
    """d out / d ws, with zeros for weights the output does not depend on."""
    gs = torch.autograd.grad(out, ws, allow_unused=True, **kw)
    return [torch.zeros_like(w) if g is None else g for w, g in zip(ws, gs)]


def _device(net: nn.Module) -> torch.device:
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def snip_scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str],
                *, chunk: int | None = None) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity ``|g * theta|`` of the weights ``names`` (CPU float tensors),
    g the gradient of the mean cross-entropy over the whole batch in eval mode. ``chunk`` splits
    the forward passes (the mean is reassembled exactly)."""
    net = copy.deepcopy(model).eval()
    ws = _weights(net, names)
    dev = _device(net)
    n = len(y)
    step = chunk or n
    grads = [torch.zeros_like(w) for w in ws]
    for i in range(0, n, step):
        xb, yb = x[i:i + step].to(dev), y[i:i + step].to(dev)
        loss = F.cross_entropy(net(xb), yb) * (len(yb) / n)
        grads = [a + b for a, b in zip(grads, _grad(loss, ws))]
    return {nm: (g * w.detach()).abs().float().cpu() for nm, g, w in zip(names, grads, ws)}


def grasp_scores(model: nn.Module, batches: Sequence[Batch], names: Sequence[str],
                 T: float = 200.0, *, chunk: int | None = None) -> dict[str, torch.Tensor]:
    """GraSP scores ``-theta * (H g)`` of the weights ``names`` (CPU float tensors), in train mode.

    As in the authors' code: g = sum over ``batches`` of the gradient of the cross-entropy of
    logits / T, taken without graph; then for each batch z = <g, grad with graph> is
    differentiated again, and the results summed: Hg = sum_b H_b g. Gradients and Hessian are
    taken over every conv / linear weight of the model (the original's weight set), whichever of
    them are scored. ``chunk`` bounds the examples of one forward pass (memory): each batch's
    mean loss is reassembled from its chunks' and both products are linear in it, so without
    batch-dependent layers the scores are the unchunked ones; BatchNorm in train mode then
    normalises each chunk by its own statistics, as the original's smaller ImageNet batches do."""
    if not batches:
        raise ValueError("GraSP needs at least one batch")
    from timm.layers import DropPath

    net = copy.deepcopy(model).train()
    for m in net.modules():
        if hasattr(m, "fused_attn"):  # fused attention kernels have no double backward
            m.fused_attn = False
        if isinstance(m, (nn.modules.dropout._DropoutNd, DropPath)):  # BatchNorm in train mode as
            m.eval()  # the original, but no random dropout or stochastic depth: the scores of theta_0
    wrt = [f"{l}.weight" for l in weight_layers(net)]
    wrt += [n for n in names if n not in wrt]
    ws = _weights(net, wrt)
    dev = _device(net)

    def pieces(b: Batch):
        """(loss of one chunk of batch ``b``, weighted by its share of the batch), per chunk. A
        batch cut into chunks is first dealt round-robin over its classes, so that each chunk's
        BatchNorm statistics cover as many classes as a shuffled batch's would."""
        n = len(b[1])
        step = chunk or n
        order = _round_robin(b[1]) if step < n else torch.arange(n)
        for i in range(0, n, step):
            idx = order[i:i + step]
            x, y = b[0][idx].to(dev), b[1][idx].to(dev)
            yield F.cross_entropy(net(x) / T, y) * (len(y) / n)

    g = [torch.zeros_like(w) for w in ws]
    for b in batches:
        for loss in pieces(b):
            g = [a + d for a, d in zip(g, _grad(loss, ws))]
    hg = [torch.zeros_like(w) for w in ws]
    for b in batches:
        for loss in pieces(b):
            gf = _grad(loss, ws, create_graph=True)
            z = sum((a.detach() * d).sum() for a, d in zip(g, gf) if d.requires_grad)
            if isinstance(z, torch.Tensor):
                hg = [a + d for a, d in zip(hg, _grad(z, ws))]
    idx = {n: i for i, n in enumerate(wrt)}
    return {n: (-ws[idx[n]].detach() * hg[idx[n]]).float().cpu() for n in names}


def _round_robin(y: torch.Tensor) -> torch.Tensor:
    """An order of ``y``'s examples that takes one of each class in turn (each class's examples
    in their given order)."""
    count: dict[int, int] = {}
    turn = []  # the example's place among its class's
    for c in y.tolist():
        turn.append(count.get(c, 0))
        count[c] = turn[-1] + 1
    return torch.argsort(torch.tensor(turn), stable=True)


def grasp_batches(x: torch.Tensor, y: torch.Tensor, num_iters: int) -> list[Batch]:
    """Split a class-balanced draw into the original's batches: ``num_iters`` draws with an
    equal share of every class, each ordered by class and cut into two halves at N // 2."""
    out = []
    classes = torch.unique(y)
    per = {int(c): torch.nonzero(y == c).flatten() for c in classes}
    for it in range(num_iters):
        idx = torch.cat([ix[it::num_iters] for ix in per.values()])
        if len(idx) == 0:
            continue
        half = len(idx) // 2
        out += [(x[idx[:half]], y[idx[:half]]), (x[idx[half:]], y[idx[half:]])]
    return [b for b in out if len(b[1])]


def require_signal(scores: Mapping[str, torch.Tensor], method: str) -> None:
    """Refuse scores that leave a layer unranked. A layer whose every score is 0 got no gradient
    from the scoring batch (a residual branch behind a zero-initialised BatchNorm, as timm's
    ``zero_init_last`` builds ResNets), and the global top-k would keep or drop it by
    tie-breaking."""
    dead = [n for n, s in scores.items() if not bool(s.any())]
    if dead:
        raise ValueError(f"{method}: every score of {dead[0]!r} is 0 at theta_0 ({len(dead)} of "
                         f"{len(scores)} layers): no gradient reaches it from the scoring batch "
                         "(e.g. a residual branch behind a zero-initialised BatchNorm), so its mask "
                         "would be chosen by tie-breaking")


def mask_from_scores(scores: Mapping[str, torch.Tensor], like: Mask, sparsity: float,
                     keep: str = "largest") -> Mask:
    """Global one-shot mask: exactly ``keep_count(like.numel, sparsity)`` weights kept, those with
    the ``largest`` (SNIP) or ``smallest`` (GraSP) scores, over the tensors of ``like``."""
    if keep not in ("largest", "smallest"):
        raise ValueError(f"keep must be 'largest' or 'smallest', got {keep!r}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"target sparsity must lie in [0, 1), got {sparsity}")
    missing = [n for n in like if n not in scores]
    if missing:
        raise KeyError(f"no score for parameter {missing[0]!r}")
    flat = torch.cat([scores[n].detach().float().cpu().flatten() for n in like])
    if not torch.isfinite(flat).all():
        raise ValueError("scores contain NaN or inf (the scoring batch may have diverged)")
    return top_k_mask(flat if keep == "largest" else -flat, keep_count(like.numel, sparsity), like)


def option(options: Mapping, method: str, key: str, kind: type = int, minimum: float = 1):
    """``options[key]`` checked to be a ``kind`` >= ``minimum``; one-line error naming the key."""
    value = options.get(key)
    ok = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if not ok or value < minimum:
        raise ValueError(f"method_options.{method}.{key}: must be a {kind.__name__} >= {minimum}, "
                         f"got {value!r}")
    return kind(value)
