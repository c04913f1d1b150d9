"""Probe set selection and per-layer feature extraction for the functional analysis.

Both networks see the same probe inputs, so row ``i`` of every feature matrix belongs to the same
image. Features are returned as float64 numpy arrays (n, d), one per named module.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from dilt.io import atomic_path

REDUCTIONS = ("gap", "flatten", "random_projection")
PROBE_TIES = 0x71E5  # the stream that orders classes of equal remainder in probe_indices


def probe_indices(targets, size: int = 1024, seed: int = 0) -> np.ndarray:
    """A fixed, class-stratified subset of ``size`` indices into ``targets`` (held-out labels).

    Every class gets a share proportional to its frequency (largest remainder rounding, at least
    one example per class when ``size`` allows it); the result is sorted. All indices are returned
    when ``size`` is at least the number of examples.
    """
    targets = np.asarray(targets)
    n = len(targets)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(targets, return_counts=True)
    share = counts * size / n
    take = np.floor(share).astype(int)
    if size >= len(classes):
        take = np.maximum(take, 1)
    # hand out what is left by largest remainder, never more than a class holds; equal remainders
    # (every class of a balanced split) in a seeded random order, not by class number, which would
    # give the extra examples to the first classes, all in the first partition of a contiguous split
    tie = np.random.default_rng([seed, PROBE_TIES]).permutation(len(classes))
    order = np.lexsort((tie, -(share - np.floor(share))))
    i = 0
    while take.sum() < size:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > size:  # only when the minimum of one per class overshoots
        c = int(np.argmax(take))
        take[c] -= 1
    out = []
    for c, k in zip(classes, take):
        idx = np.flatnonzero(targets == c)
        out.append(rng.permutation(idx)[:k])
    return np.sort(np.concatenate(out))


def _reduce(out: torch.Tensor, module: nn.Module, how: str, proj: torch.Tensor | None) -> torch.Tensor:
    out = out.detach()
    if how == "gap":
        if out.ndim >= 4 or (out.ndim == 3 and isinstance(module, nn.Conv1d)):
            return out.flatten(2).mean(dim=2)  # channels first: average the spatial positions
        if out.ndim == 3:
            return out.mean(dim=1)  # (n, tokens, d): average the tokens
        return out.reshape(len(out), -1)
    flat = out.reshape(len(out), -1)
    if how == "flatten" or proj is None:
        return flat
    return flat.to(proj.dtype) @ proj.to(flat.device)


def _projection(dim_in: int, dim_out: int, seed: int, index: int) -> torch.Tensor | None:
    """Gaussian random projection (JL) for layer ``index``; None when no reduction is needed.
    The matrix depends only on (seed, layer index, dims), so both networks share it."""
    if dim_in <= dim_out:
        return None
    rng = np.random.default_rng([seed, index, dim_in, dim_out])
    return torch.from_numpy(rng.standard_normal((dim_in, dim_out)) / np.sqrt(dim_out)).float()


def representation_modules(model: nn.Module, layer_names: Sequence[str]) -> dict[str, str]:
    """For each layer, the module whose output stands for it: the BatchNorm registered right
    after it in its parent (a conv and its normalisation, as in the CNNs and timm's ResNets),
    else the layer itself. In eval mode a BatchNorm's output no longer depends on how the
    layer's kept weights scale each channel, which a distance matrix would otherwise measure."""
    out = {}
    for name in layer_names:
        parent_name, _, child = name.rpartition(".")
        siblings = list((model.get_submodule(parent_name) if parent_name else model)._modules.items())
        i = [k for k, _ in siblings].index(child)
        after = siblings[i + 1] if i + 1 < len(siblings) else None
        norm = after is not None and isinstance(after[1], nn.modules.batchnorm._BatchNorm)
        out[name] = (f"{parent_name}.{after[0]}" if parent_name else after[0]) if norm else name
    return out


def _digest(x: torch.Tensor) -> str:
    """A content hash of the probe inputs (a cache made on other inputs of the same size is stale)."""
    return hashlib.sha256(np.ascontiguousarray(x.detach().cpu().numpy()).view(np.uint8).ravel()).hexdigest()[:16]


@torch.no_grad()
def extract_features(model: nn.Module, x: torch.Tensor, layer_names: Sequence[str],
                     reduce: str = "gap", batch_size: int = 256, *, proj_dim: int = 256,
                     seed: int = 0, cache: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Outputs of the layers ``layer_names`` on inputs ``x`` (each layer's
    :func:`representation_modules` output: after its BatchNorm where one follows), reduced to
    (n, d) float64 arrays.

    ``reduce``: "gap" (mean over spatial positions of conv maps, over tokens of (n, T, d)
    sequences), "flatten", or "random_projection" (flatten, then a seeded Gaussian projection to
    ``proj_dim`` dimensions when the layer is wider). The model runs in eval mode without
    gradients; its training flag is restored afterwards. With ``cache`` (an .npz path) the result
    is read from there when it was computed with the same settings, else computed and written
    atomically.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduce!r}; known: {', '.join(REDUCTIONS)}")
    layer_names = list(layer_names)
    hooked = representation_modules(model, layer_names)
    meta = np.array([reduce, str(proj_dim), str(seed), str(len(x)), _digest(x), *layer_names,
                     *(hooked[n] for n in layer_names)])
    if cache is not None and os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as z:
            if "meta" in z and z["meta"].tolist() == meta.tolist():
                return {name: z[f"f{i}"] for i, name in enumerate(layer_names)}

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in layer_names}
    projections: dict[str, torch.Tensor | None] = {}

    def hook_for(index: int, name: str, module: nn.Module):
        def hook(_mod, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if reduce == "random_projection" and name not in projections:
                projections[name] = _projection(out[0].numel(), proj_dim, seed, index)
            # (a copy: an in-place activation after a BatchNorm would change a flattened view)
            chunks[name].append(_reduce(out, module, reduce, projections.get(name)).float().cpu().clone())
        return hook

    handles = []
    was_training = model.training
    try:
        for i, name in enumerate(layer_names):
            hook = hook_for(i, name, model.get_submodule(name))
            handles.append(model.get_submodule(hooked[name]).register_forward_hook(hook))
        model.eval()
        for start in range(0, len(x), batch_size):
            model(x[start:start + batch_size].to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    feats = {name: torch.cat(chunks[name]).double().numpy() for name in layer_names}
    if cache is not None:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=meta, **{f"f{i}": feats[n] for i, n in enumerate(layer_names)})
    return feats
