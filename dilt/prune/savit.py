"""SAViT: structure-aware ViT pruning by collaborative (joint) importance (Zheng et al., NeurIPS 2022).

Three kinds of components of a timm ``VisionTransformer`` carry a gate ``alpha`` (1 = kept):
attention heads (per block), MLP hidden neurons (per block) and embedding dims (the residual
stream, shared by every block). Removing a set ``S`` sets ``alpha_S = 0``; its joint importance is
the second-order Taylor estimate of the loss change

    dL(S) ~= -g . 1_S + 1/2 1_S^T H 1_S,    g = dL/dalpha,  H = d2L/dalpha2  (at alpha = 1),

whose off-diagonal terms are the interactions between components (two redundant heads are each
cheap to remove, but not both). ``g`` and ``H`` are estimated on training batches: ``H`` exactly by
Hessian-vector products through the gates ("hessian"), or by the empirical Fisher of per-example
gate gradients ("fisher", cheaper). :func:`select` then removes components greedily by marginal
joint cost per FLOP saved until the model lands on a FLOPs target; :func:`shrink` builds the
physically smaller model, which computes exactly what the gated model computes.

The gate of an embedding dim multiplies the residual stream after every writer (patch embedding,
attention and MLP outputs) and the output of every LayerNorm that reads the stream, so a closed
gate is the same function as removing the dim; the shrunk model keeps LayerNorm's statistics over
the original width (:class:`FullWidthLayerNorm`), which is what the gated model computes.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dilt.masks import Mask

CURVATURES = ("hessian", "fisher")


class SAViTError(ValueError):
    """A model or option SAViT cannot handle (one line naming the offending part)."""


# -- structure ----------------------------------------------------------------------------------
@dataclass
class Structure:
    """Which components are kept: heads [L, H], hidden neurons [L, M], embedding dims [D]."""

    heads: torch.Tensor
    hidden: torch.Tensor
    embed: torch.Tensor

    @classmethod
    def full(cls, model: nn.Module) -> Structure:
        L, H, M, D = dims_of(model)
        return cls(torch.ones(L, H, dtype=torch.bool), torch.ones(L, M, dtype=torch.bool),
                   torch.ones(D, dtype=torch.bool))

    @classmethod
    def from_flat(cls, model: nn.Module, flat: torch.Tensor) -> Structure:
        L, H, M, D = dims_of(model)
        h, m, e = torch.split(flat.to(torch.bool).cpu(), [L * H, L * M, D])
        return cls(h.view(L, H), m.view(L, M), e.clone())

    def flat(self) -> torch.Tensor:
        return torch.cat([self.heads.reshape(-1), self.hidden.reshape(-1), self.embed])

    def counts(self) -> dict[str, int]:
        return {"heads": int(self.heads.sum()), "hidden": int(self.hidden.sum()),
                "embed": int(self.embed.sum())}


def check_vit(model: nn.Module) -> None:
    """Raise :class:`SAViTError` unless ``model`` is a plain timm ViT that SAViT can gate."""
    from timm.layers import Mlp
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise SAViTError(f"savit: model {type(model).__name__} is not a timm VisionTransformer")
    plain = {"norm_pre": model.norm_pre, "patch_embed.norm": model.patch_embed.norm}
    if getattr(model, "reg_token", None) is not None:
        raise SAViTError("savit: register tokens (reg_token) are not supported")
    if getattr(model, "attn_pool", None) is not None:
        raise SAViTError("savit: attention pooling (attn_pool) is not supported")
    if getattr(model, "dynamic_img_size", False):
        raise SAViTError("savit: dynamic_img_size is not supported")
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention or not isinstance(blk.mlp, Mlp):
            raise SAViTError(f"savit: blocks.{i} is not a plain timm Block(Attention, Mlp)")
        if blk.attn.gate is not None:
            raise SAViTError(f"savit: blocks.{i}.attn.gate (gated attention) is not supported")
        plain.update({f"blocks.{i}.{k}": getattr(blk, k.split(".")[0]) if "." not in k
                      else getattr(getattr(blk, k.split(".")[0]), k.split(".")[1])
                      for k in ("ls1", "ls2", "attn.q_norm", "attn.k_norm", "attn.norm", "mlp.norm")})
    for name, mod in plain.items():
        if not isinstance(mod, nn.Identity):
            raise SAViTError(f"savit: {name} must be nn.Identity, got {type(mod).__name__}")
    for name, mod in _readers(model):
        if not isinstance(mod, (nn.LayerNorm, nn.Identity)):
            raise SAViTError(f"savit: {name} must be a LayerNorm or Identity, got {type(mod).__name__}")


def dims_of(model: nn.Module) -> tuple[int, int, int, int]:
    """(blocks L, heads per block H, hidden neurons per block M, embedding dims D) of a dense ViT."""
    blk = model.blocks[0]
    return len(model.blocks), blk.attn.num_heads, blk.mlp.fc1.out_features, model.patch_embed.proj.out_channels


def _readers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The normalisations that read the residual stream (their outputs feed linear layers)."""
    out = []
    for i, blk in enumerate(model.blocks):
        out += [(f"blocks.{i}.norm1", blk.norm1), (f"blocks.{i}.norm2", blk.norm2)]
    return out + [("norm", model.norm), ("fc_norm", model.fc_norm)]


# -- gates ---------------------------------------------------------------------------------------
def _bcast(gate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``gate`` [B or 1, k] shaped to multiply ``x`` [B, ..., k]."""
    return gate.reshape(gate.shape[0], *([1] * (x.dim() - 2)), gate.shape[-1]).to(x.dtype)


@contextlib.contextmanager
def gated(model: nn.Module, heads: torch.Tensor, hidden: torch.Tensor, embed: torch.Tensor):
    """Run ``model`` with multiplicative gates: heads [(B,) L, H], hidden [(B,) L, M], embed [(B,) D]
    (a leading batch dim gives each example its own gates, for per-example gradients)."""
    check_vit(model)
    if heads.dim() == 2:
        heads, hidden, embed = heads[None], hidden[None], embed[None]
    hd = model.blocks[0].attn.head_dim

    def head_hook(l):
        def pre(mod, args):
            x = args[0]
            g = heads[:, l].repeat_interleave(hd, dim=-1)
            return (x * _bcast(g, x),)
        return pre

    def hidden_hook(l):
        return lambda mod, args: (args[0] * _bcast(hidden[:, l], args[0]),)

    def stream(mod, args, out):
        return out * _bcast(embed, out)

    handles = []
    try:
        handles.append(model.norm_pre.register_forward_hook(stream))
        for l, blk in enumerate(model.blocks):
            handles.append(blk.attn.proj.register_forward_pre_hook(head_hook(l)))
            handles.append(blk.mlp.fc2.register_forward_pre_hook(hidden_hook(l)))
            handles.append(blk.attn.register_forward_hook(stream))
            handles.append(blk.mlp.register_forward_hook(stream))
        for _, mod in _readers(model):
            handles.append(mod.register_forward_hook(stream))
        yield model
    finally:
        for h in handles:
            h.remove()


def masked(model: nn.Module, keep: Structure):
    """Context: ``model`` with the removed components' gates closed (the masked model)."""
    p = next(model.parameters())
    as_gate = lambda t: t.to(device=p.device, dtype=p.dtype)  # noqa: E731
    return gated(model, as_gate(keep.heads), as_gate(keep.hidden), as_gate(keep.embed))


@contextlib.contextmanager
def _unfused(model: nn.Module):
    """Plain-matmul attention (double backward and vmap through SDPA are not always available)."""
    saved = [blk.attn.fused_attn for blk in model.blocks]
    try:
        for blk in model.blocks:
            blk.attn.fused_attn = False
        yield
    finally:
        for blk, f in zip(model.blocks, saved):
            blk.attn.fused_attn = f


# -- FLOPs ---------------------------------------------------------------------------------------
def _geometry(model: nn.Module) -> dict:
    pe = model.patch_embed
    patches = pe.num_patches
    return {"patches": patches, "tokens": patches + model.num_prefix_tokens,
            "in_chans": pe.proj.in_channels, "kernel": pe.proj.kernel_size[0] * pe.proj.kernel_size[1],
            "head_dim": model.blocks[0].attn.head_dim, "classes": model.head.out_features
            if isinstance(model.head, nn.Linear) else 0}


def vit_flops(model: nn.Module, keep: Structure | None = None) -> int:
    """FLOPs of one image (2 per multiply-accumulate, as ``torch.utils.flop_counter`` counts):
    patch embedding, qkv, the two attention matmuls, proj, fc1, fc2 and the classifier head.
    Norms, softmax, activations and additions are not counted. Without ``keep`` the layer widths
    are read from the modules (so a shrunk model counts too); with it, from the kept components."""
    g = _geometry(model)
    if keep is None:
        heads = [blk.attn.num_heads for blk in model.blocks]
        hidden = [blk.mlp.fc1.out_features for blk in model.blocks]
        d = model.patch_embed.proj.out_channels
    else:
        heads, hidden = keep.heads.sum(1).tolist(), keep.hidden.sum(1).tolist()
        d = int(keep.embed.sum())
    return _flops(g, heads, hidden, d)


def _flops(g: dict, heads, hidden, d: int) -> int:
    n, hd = g["tokens"], g["head_dim"]
    total = 2 * g["patches"] * d * g["in_chans"] * g["kernel"] + 2 * d * g["classes"]
    for h, m in zip(heads, hidden):
        total += 2 * n * d * 3 * h * hd + 4 * h * n * n * hd + 2 * n * h * hd * d + 4 * n * d * m
    return int(total)


def _savings(g: dict, heads: torch.Tensor, hidden: torch.Tensor, d: int) -> tuple:
    """FLOPs saved by removing one head (per block), one neuron, one embedding dim, at the current
    widths (``heads``, ``hidden``: kept counts per block; ``d``: kept dims)."""
    n, hd = g["tokens"], g["head_dim"]
    head = 8 * n * d * hd + 4 * n * n * hd
    neuron = 4 * n * d
    dim = (2 * g["patches"] * g["in_chans"] * g["kernel"] + 2 * g["classes"]
           + float((8 * n * hd * heads + 4 * n * hidden).sum()))
    return head, neuron, dim


# -- joint importance ----------------------------------------------------------------------------
def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


def gate_taylor(model: nn.Module, batches, *, loss_fn=cross_entropy, curvature: str = "hessian",
                chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, H): the mean gradient and curvature of the loss w.r.t. all gates at alpha = 1, in the
    flat order heads, hidden, embed (see :meth:`Structure.flat`), averaged over ``batches``
    (an iterable of (x, y)), accumulated in float64 on the model's device and returned on the
    CPU. ``curvature="hessian"``: the exact Hessian by Hessian-vector products (``chunk`` at a
    time); ``"fisher"``: the empirical Fisher of per-example gate gradients."""
    return taylor_from_sums(*gate_taylor_sums(model, batches, loss_fn=loss_fn, curvature=curvature,
                                              chunk=chunk))


def taylor_from_sums(g_sum: torch.Tensor, h_sum: torch.Tensor, count) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, H) from :func:`gate_taylor_sums` (summed over DDP ranks, say): the means, H
    symmetrised, computed on the sums' device (one host copy of H: 2.9 GB for DeiT-S) and
    returned on the CPU. Consumes ``h_sum``."""
    count = float(count)
    if count == 0:
        raise SAViTError("savit: no scoring batches were given")
    h = h_sum.div_(count)
    h = h + h.T
    return (g_sum / count).cpu(), h.div_(2).cpu()


def gate_taylor_sums(model: nn.Module, batches, *, loss_fn=cross_entropy, curvature: str = "hessian",
                     chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The sums behind :func:`gate_taylor`, float64 on the model's device: example-weighted
    gradient and curvature, and the number of examples (zeros and 0 for no batches)."""
    if curvature not in CURVATURES:
        raise SAViTError(f"savit: curvature {curvature!r} is not one of {', '.join(CURVATURES)}")
    check_vit(model)
    L, H, M, D = dims_of(model)
    n = L * H + L * M + D
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    g_sum = torch.zeros(n, dtype=torch.float64, device=p.device)
    h_sum = torch.zeros(n, n, dtype=torch.float64, device=p.device)
    count = 0
    with _unfused(model):
        for x, y in batches:
            x, y = x.to(p.device), y.to(p.device)
            b = len(y) if curvature == "fisher" else 1
            alpha = torch.ones(b, n, dtype=p.dtype, device=p.device, requires_grad=True)
            hg, mg, eg = torch.split(alpha, [L * H, L * M, D], dim=1)
            with gated(model, hg.view(b, L, H), mg.view(b, L, M), eg):
                out = model(x)
            if curvature == "fisher":
                loss = loss_fn(out, y) * len(y)      # sum: row e of the gradient is example e's
                per = torch.autograd.grad(loss, alpha)[0].double()
                g_sum += per.sum(0)
                h_sum += per.T @ per
                count += len(y)
            else:
                loss = loss_fn(out, y)
                grad = torch.autograd.grad(loss, alpha, create_graph=True)[0][0]
                g_sum += grad.detach().double() * len(y)
                h_sum += _hessian_rows(grad, alpha, chunk).double() * len(y)
                count += len(y)
    model.train(was_training)
    return g_sum, h_sum, count


def gate_count(model: nn.Module) -> int:
    """How many gates :func:`gate_taylor` scores: heads, MLP neurons and embedding dims."""
    L, H, M, D = dims_of(model)
    return L * H + L * M + D


def _hessian_rows(grad: torch.Tensor, alpha: torch.Tensor, chunk: int) -> torch.Tensor:
    """The full Hessian from ``grad`` (built with create_graph) by batched Hessian-vector
    products, ``chunk`` at a time; out of memory, the chunk is halved (and said on stderr) down
    to single products, where the error stands."""
    import sys

    n = grad.numel()
    eye = torch.eye(n, dtype=grad.dtype, device=grad.device)
    rows, s = [], 0
    while s < n:
        e = eye[s:s + chunk]
        try:
            r = torch.autograd.grad(grad, alpha, grad_outputs=e, retain_graph=True,
                                    is_grads_batched=True)[0]
        except torch.OutOfMemoryError:  # (a RuntimeError too: caught first)
            if chunk == 1:
                raise
            chunk = max(1, chunk // 2)
            if grad.is_cuda:
                torch.cuda.empty_cache()
            print(f"dilt: savit: Hessian-vector products out of memory; now {chunk} at a time",
                  file=sys.stderr)
            continue
        except RuntimeError:     # an op without a batching rule: one product at a time
            r = torch.stack([torch.autograd.grad(grad, alpha, grad_outputs=v, retain_graph=True)[0]
                             for v in e])
        rows.append(r.reshape(len(e), n).detach())
        s += len(e)
    return torch.cat(rows)


def joint_cost(g: torch.Tensor, h: torch.Tensor, removed: torch.Tensor) -> float:
    """Second-order Taylor estimate of the loss change when the components flagged in ``removed``
    (flat bool) are removed: -g . r + 1/2 r^T H r with r the removal indicator."""
    r = removed.to(torch.float64)
    return float(-g.double() @ r + 0.5 * r @ h.double() @ r)


# -- selection -----------------------------------------------------------------------------------
def select(model: nn.Module, g: torch.Tensor, h: torch.Tensor, flops_keep: float, *,
           tolerance: float = 0.01, chunk: float = 0.005, interactions: bool = True) -> Structure:
    """The components to keep so that the FLOPs are ``flops_keep`` x the dense FLOPs (within
    ``tolerance`` of the target, relative), removing greedily the component with the smallest
    marginal joint cost per FLOP saved: ``-g_i + (H r)_i + H_ii / 2`` given the set ``r`` already
    removed (``interactions=False`` drops ``(H r)_i``: the per-component, diagonal ranking).
    At most ``chunk`` x dense FLOPs are removed between re-scorings; every block keeps at least one
    head and one neuron and at least one embedding dim is kept."""
    if not 0.0 < flops_keep <= 1.0:
        raise SAViTError(f"savit: flops_keep {flops_keep!r} must be in (0, 1]")
    L, H, M, D = dims_of(model)
    geo = _geometry(model)
    dense = vit_flops(model)
    target = flops_keep * dense
    low = target * (1.0 - tolerance)
    g, h = g.double(), h.double()
    n = g.numel()
    alive = torch.ones(n, dtype=torch.bool)
    hr = torch.zeros(n, dtype=torch.float64)
    diag = h.diagonal().clone()
    kind = torch.cat([torch.zeros(L * H), torch.ones(L * M), torch.full((D,), 2.0)]).long()
    block = torch.cat([torch.arange(L).repeat_interleave(H), torch.arange(L).repeat_interleave(M),
                       torch.full((D,), -1)])
    current = float(dense)
    while current > target:
        keep = Structure.from_flat(model, alive)
        heads_l, hidden_l, d = keep.heads.sum(1), keep.hidden.sum(1), int(keep.embed.sum())
        s_head, s_neuron, s_dim = _savings(geo, heads_l.double(), hidden_l.double(), d)
        saved = torch.tensor([s_head, s_neuron, s_dim], dtype=torch.float64)[kind]
        last = torch.zeros(n, dtype=torch.bool)
        last[:L * H] = (heads_l <= 1).repeat_interleave(H)
        last[L * H:L * H + L * M] = (hidden_l <= 1).repeat_interleave(M)
        last[L * H + L * M:] = d <= 1
        ok = alive & ~last & (saved <= current - low)
        if not ok.any():
            break
        cost = -g + 0.5 * diag + (hr if interactions else 0.0)
        score = torch.where(ok, cost / saved, torch.full_like(cost, float("inf")))
        order = torch.argsort(score)[: int(ok.sum())]
        budget = min(chunk * dense, current - target)
        left = {(0, l): int(heads_l[l]) for l in range(L)}
        left.update({(1, l): int(hidden_l[l]) for l in range(L)})
        left[(2, -1)] = d
        taken, acc = [], 0.0
        for i in order.tolist():
            if taken and acc + float(saved[i]) > budget:
                break
            key = (int(kind[i]), int(block[i]))
            if left[key] <= 1:
                continue
            left[key] -= 1
            taken.append(i)
            acc += float(saved[i])
        idx = torch.tensor(taken)
        alive[idx] = False
        hr += h[:, idx].sum(1)
        current = float(vit_flops(model, Structure.from_flat(model, alive)))
    return Structure.from_flat(model, alive)


# -- weight masks and the shrunk model -------------------------------------------------------------
def _head_rows(keep_heads: torch.Tensor, hd: int) -> torch.Tensor:
    return keep_heads.repeat_interleave(hd)


def layer_keep(model: nn.Module, keep: Structure) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Module name -> (kept output rows, kept input columns) of every conv / linear layer."""
    hd = model.blocks[0].attn.head_dim
    e = keep.embed
    out = {"patch_embed.proj": (e, torch.ones(model.patch_embed.proj.in_channels, dtype=torch.bool))}
    for l in range(len(model.blocks)):
        hr = _head_rows(keep.heads[l], hd)
        out[f"blocks.{l}.attn.qkv"] = (hr.repeat(3), e)
        out[f"blocks.{l}.attn.proj"] = (e, hr)
        out[f"blocks.{l}.mlp.fc1"] = (keep.hidden[l], e)
        out[f"blocks.{l}.mlp.fc2"] = (e, keep.hidden[l])
    if isinstance(model.head, nn.Linear):
        out["head"] = (torch.ones(model.head.out_features, dtype=torch.bool), e)
    return out


def weight_mask(model: nn.Module, keep: Structure, names) -> Mask:
    """The structural mask expanded to the weights ``names`` (whole rows / columns removed)."""
    layers = layer_keep(model, keep)
    params = dict(model.named_parameters())
    tensors = {}
    for name in names:
        mod = name.rsplit(".", 1)[0]
        if mod not in layers or not name.endswith(".weight"):
            raise SAViTError(f"savit: prunable weight {name!r} is not a ViT layer SAViT prunes")
        rows, cols = layers[mod]
        m = rows[:, None] & cols[None, :]
        tensors[name] = m.reshape(*m.shape, *([1] * (params[name].dim() - 2))).expand_as(params[name])
    return Mask(tensors)


class FullWidthLayerNorm(nn.Module):
    """LayerNorm over the kept dims whose statistics count the ``full - kept`` removed dims as zeros
    (what a LayerNorm over the full width computes when those dims of its input are zero)."""

    def __init__(self, kept: int, full: int, eps: float = 1e-6):
        super().__init__()
        self.kept, self.full, self.eps = kept, full, eps
        self.weight = nn.Parameter(torch.ones(kept))
        self.bias = nn.Parameter(torch.zeros(kept))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.sum(-1, keepdim=True) / self.full
        var = (((x - mu) ** 2).sum(-1, keepdim=True) + (self.full - self.kept) * mu ** 2) / self.full
        return (x - mu) * torch.rsqrt(var + self.eps) * self.weight + self.bias

    def extra_repr(self) -> str:
        return f"{self.kept}, full={self.full}, eps={self.eps}"


def _sliced_linear(lin: nn.Linear, rows: torch.Tensor, cols: torch.Tensor) -> nn.Linear:
    new = nn.Linear(int(cols.sum()), int(rows.sum()), bias=lin.bias is not None,
                    device=lin.weight.device, dtype=lin.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(lin.weight[rows][:, cols])
        if lin.bias is not None:
            new.bias.copy_(lin.bias[rows])
    return new


def _sliced_norm(norm: nn.Module, dims: torch.Tensor) -> nn.Module:
    if isinstance(norm, nn.Identity):
        return norm
    new = FullWidthLayerNorm(int(dims.sum()), norm.normalized_shape[0], norm.eps)
    new.to(device=norm.weight.device, dtype=norm.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(norm.weight[dims])
        new.bias.copy_(norm.bias[dims])
    return new


def shrink(model: nn.Module, keep: Structure) -> nn.Module:
    """A physically smaller copy of ``model`` without the removed heads, neurons and embedding
    dims; it computes what ``model`` computes under :func:`masked` with the same ``keep``."""
    check_vit(model)
    if keep.heads.sum(1).min() < 1 or keep.hidden.sum(1).min() < 1 or keep.embed.sum() < 1:
        raise SAViTError("savit: shrink needs at least one head and one neuron per block and one dim")
    new = copy.deepcopy(model)
    e = keep.embed.to(next(model.parameters()).device)
    layers = {k: (r.to(e.device), c.to(e.device)) for k, (r, c) in layer_keep(model, keep).items()}
    conv = model.patch_embed.proj
    pe = nn.Conv2d(conv.in_channels, int(e.sum()), conv.kernel_size, conv.stride, conv.padding,
                   bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        pe.weight.copy_(conv.weight[e])
        if conv.bias is not None:
            pe.bias.copy_(conv.bias[e])
    new.patch_embed.proj = pe
    for name in ("cls_token", "pos_embed"):
        t = getattr(model, name)
        if t is not None:
            setattr(new, name, nn.Parameter(t.detach()[..., e].clone()))
    for l, blk in enumerate(new.blocks):
        blk.attn.qkv = _sliced_linear(model.blocks[l].attn.qkv, *layers[f"blocks.{l}.attn.qkv"])
        blk.attn.proj = _sliced_linear(model.blocks[l].attn.proj, *layers[f"blocks.{l}.attn.proj"])
        blk.attn.num_heads = int(keep.heads[l].sum())
        blk.attn.attn_dim = blk.attn.num_heads * blk.attn.head_dim
        blk.mlp.fc1 = _sliced_linear(model.blocks[l].mlp.fc1, *layers[f"blocks.{l}.mlp.fc1"])
        blk.mlp.fc2 = _sliced_linear(model.blocks[l].mlp.fc2, *layers[f"blocks.{l}.mlp.fc2"])
        blk.norm1 = _sliced_norm(model.blocks[l].norm1, e)
        blk.norm2 = _sliced_norm(model.blocks[l].norm2, e)
    new.norm = _sliced_norm(model.norm, e)
    new.fc_norm = _sliced_norm(model.fc_norm, e)
    if "head" in layers:
        new.head = _sliced_linear(model.head, *layers["head"])
    new.embed_dim = new.num_features = int(e.sum())
    if hasattr(new, "head_hidden_size"):
        new.head_hidden_size = int(e.sum())
    return new


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
