"""Per-layer densities: Erdos-Renyi(-Kernel) (Evci et al., "Rigging the Lottery", ICML 2020)
and uniform, with exact integer kept counts.

ERK gives layer ``l`` the density ``eps * (sum of its dims) / (product of its dims)``
(``(n_in + n_out + k_h + k_w) / (n_in n_out k_h k_w)`` for a conv); plain Erdos-Renyi drops the
kernel terms (``(n_in + n_out) / (n_in n_out)``). ``eps`` is solved so the overall density over
*all* the given layers, those held dense included, is the target. A layer whose density would
exceed 1 is made dense and ``eps`` re-solved over the rest, one layer (the largest raw density)
at a time, as in ``sparse_utils.get_sparsities`` of google-research/rigl.

Counts: the kept total is exactly ``round(density * numel)`` (= ``keep_count(numel, s)`` for
``density = 1 - s``). Dense layers keep everything; every other layer gets the floor of its real
quota and the remaining units go one each to the layers with the largest fractional parts (ties:
model order), never above a layer's size (largest-remainder apportionment).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from dilt.masks import Mask

Shapes = Mapping[str, tuple[int, ...]]


def raw_density(shape: tuple[int, ...], erdos_renyi_kernel: bool = True) -> float:
    """The unscaled ER(K) density of a weight of torch layout ``(n_out, n_in, *kernel)``."""
    if len(shape) < 2:
        raise ValueError(f"ERK needs a weight with at least 2 dimensions, got shape {tuple(shape)}")
    if erdos_renyi_kernel:
        return sum(shape) / math.prod(shape)
    n_out, n_in = shape[0], shape[1]
    return (n_in + n_out) / (n_in * n_out)


def _check(shapes: Shapes, density: float, dense) -> None:
    if not shapes:
        raise ValueError("no layers given")
    if not (isinstance(density, (int, float)) and 0 < density <= 1):
        raise ValueError(f"density must lie in (0, 1], got {density!r}")
    unknown = sorted(set(dense) - set(shapes))
    if unknown:
        raise ValueError(f"dense layer {unknown[0]!r} is not one of the given layers")


def erk_densities(shapes: Shapes, density: float, dense=frozenset(),
                  erdos_renyi_kernel: bool = True) -> dict[str, float]:
    """Per-layer densities (layer order of ``shapes``) with overall density ``density``."""
    _check(shapes, density, dense)
    numel = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(numel.values())
    raw = {n: raw_density(tuple(s), erdos_renyi_kernel) for n, s in shapes.items()}
    dense = set(dense)
    while True:
        budget = density * total - sum(numel[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        if budget < -1e-9 * total:
            raise ValueError(f"density {density} is below what the dense layers "
                             f"{sorted(dense)} keep alone")
        if not free:
            break
        eps = budget / sum(raw[n] * numel[n] for n in free)
        top = max(raw[n] for n in free)
        if eps * top <= 1:
            break
        dense |= {n for n in free if raw[n] == top}
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def uniform_densities(shapes: Shapes, density: float, dense=frozenset()) -> dict[str, float]:
    """The same density in every layer not held dense, overall density ``density``."""
    _check(shapes, density, dense)
    numel = {n: math.prod(s) for n, s in shapes.items()}
    n_dense = sum(numel[n] for n in dense)
    n_free = sum(numel.values()) - n_dense
    d = (density * sum(numel.values()) - n_dense) / n_free if n_free else 1.0
    if d < -1e-12 or d > 1 + 1e-12:
        raise ValueError(f"density {density} cannot be reached with dense layers {sorted(dense)}")
    return {n: 1.0 if n in dense else min(max(d, 0.0), 1.0) for n in shapes}


def apportion(quotas: Mapping[str, float], sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Integers ``c_l <= sizes[l]`` summing to ``total`` near the real ``quotas`` (largest
    remainder: floors, then one more for the largest fractional parts; ties by order)."""
    if not 0 <= total <= sum(sizes.values()):
        raise ValueError(f"cannot keep {total} of {sum(sizes.values())} weights")
    counts = {n: min(sizes[n], max(0, math.floor(q))) for n, q in quotas.items()}
    frac = {n: q - math.floor(q) for n, q in quotas.items()}
    order = list(quotas)
    missing = total - sum(counts.values())
    if missing > 0:
        ranked = sorted(order, key=lambda n: (-frac[n], order.index(n)))
        while missing > 0:
            room = [n for n in ranked if counts[n] < sizes[n]]
            for n in room[:missing]:
                counts[n] += 1
            missing = total - sum(counts.values())
    elif missing < 0:
        ranked = sorted(order, key=lambda n: (frac[n], order.index(n)))
        while missing < 0:  # only from float error; layers at their full size stay full
            over = [n for n in ranked if 0 < counts[n] and quotas[n] < sizes[n]] or \
                [n for n in ranked if counts[n] > 0]
            for n in over[:-missing]:
                counts[n] -= 1
            missing = total - sum(counts.values())
    return counts


def counts_from_densities(shapes: Shapes, densities: Mapping[str, float], density: float) -> dict[str, int]:
    """Exact kept counts for per-layer ``densities``, summing to ``round(density * numel)``."""
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = int(round(density * sum(sizes.values())))
    return apportion({n: densities[n] * sizes[n] for n in shapes}, sizes, total)


def erk_counts(shapes: Shapes, density: float, dense=frozenset(),
               erdos_renyi_kernel: bool = True) -> dict[str, int]:
    """Kept weights per layer under ERK (see the module doc for the rounding)."""
    return counts_from_densities(shapes, erk_densities(shapes, density, dense, erdos_renyi_kernel), density)


def uniform_counts(shapes: Shapes, density: float, dense=frozenset()) -> dict[str, int]:
    """Kept weights per layer at one shared density (exact total, largest remainder)."""
    return counts_from_densities(shapes, uniform_densities(shapes, density, dense), density)


def random_mask(shapes: Shapes, counts: Mapping[str, int], generator: torch.Generator) -> Mask:
    """A mask keeping ``counts[l]`` uniformly random positions of every layer ``l``."""
    out = {}
    for n, shape in shapes.items():
        size = math.prod(shape)
        flat = torch.zeros(size, dtype=torch.bool)
        flat[torch.randperm(size, generator=generator)[:counts[n]]] = True
        out[n] = flat.view(tuple(shape))
    return Mask(out)
