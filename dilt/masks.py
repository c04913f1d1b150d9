"""Binary masks over a model's prunable weights, and their N-ary algebra.

A :class:`Mask` maps parameter names to boolean tensors of the parameters' shapes (``True`` =
the weight is kept). It is plain data: apply it with :meth:`Mask.apply_` after each optimizer
step instead of forward hooks. The DiLT tickets of N partition masks ``m_1..m_N`` are

* ``core``      = m_1 & ... & m_N
* ``spec_k``    = m_k minus (the union of every m_j, j != k)
* ``union``     = m_1 | ... | m_N
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from safetensors.torch import load_file, save_file

from dilt.io import atomic_path

FORMAT = "dilt-mask-v1"


class MaskError(ValueError):
    """A mask does not fit the model or the other masks it is combined with."""


class Mask(Mapping[str, torch.Tensor]):
    """Immutable mapping ``parameter name -> bool tensor`` in a fixed (model) order."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t = {name: t.detach().to("cpu", torch.bool) for name, t in tensors.items()}

    # -- mapping ---------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._t[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(self._t)

    def __repr__(self) -> str:
        return f"Mask({len(self)} tensors, sparsity={self.sparsity:.4f})"

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def ones(cls, model: torch.nn.Module, names: Sequence[str]) -> Mask:
        params = dict(model.named_parameters())
        missing = [n for n in names if n not in params]
        if missing:
            raise MaskError(f"model has no parameter {missing[0]!r}")
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in names})

    # -- statistics ------------------------------------------------------------------------
    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(t.shape) for n, t in self._t.items()}

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self._t.values())

    @property
    def kept(self) -> int:
        return int(sum(int(t.sum()) for t in self._t.values()))

    @property
    def density(self) -> float:
        return self.kept / self.numel if self.numel else 0.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def layer_density(self) -> dict[str, float]:
        return {n: float(t.float().mean()) for n, t in self._t.items()}

    def empty_layers(self) -> list[str]:
        """Names of tensors with no weight left: a ticket with one cannot pass signal."""
        return [n for n, t in self._t.items() if not bool(t.any())]

    # -- algebra ---------------------------------------------------------------------------
    def _check_compatible(self, other: Mask) -> None:
        if self.shapes != other.shapes:
            diff = next((n for n in self.shapes.keys() | other.shapes.keys()
                         if self.shapes.get(n) != other.shapes.get(n)), "?")
            raise MaskError(f"masks differ at {diff!r}: {self.shapes.get(diff)} vs {other.shapes.get(diff)}")

    def _combine(self, other: Mask, op) -> Mask:
        self._check_compatible(other)
        return Mask({n: op(t, other[n]) for n, t in self._t.items()})

    def __and__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_and)

    def __or__(self, other: Mask) -> Mask:
        return self._combine(other, torch.logical_or)

    def __sub__(self, other: Mask) -> Mask:
        return self._combine(other, lambda a, b: a & ~b)

    def __le__(self, other: Mask) -> bool:
        """Subset: every weight kept here is kept in ``other``."""
        self._check_compatible(other)
        return all(bool((t & ~other[n]).sum() == 0) for n, t in self._t.items())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask) or self.shapes != other.shapes:
            return False
        return all(torch.equal(t, other[n]) for n, t in self._t.items())

    __hash__ = None  # type: ignore[assignment]

    def content_hash(self) -> str:
        """A short hash of the names, shapes and kept positions (stored in saved masks)."""
        return state_hash(self._t)

    def isdisjoint(self, other: Mask) -> bool:
        return (self & other).kept == 0

    # -- use -------------------------------------------------------------------------------
    @torch.no_grad()
    def apply_(self, model: torch.nn.Module) -> None:
        """Zero every pruned weight of ``model`` in place."""
        params = dict(model.named_parameters())
        weights, masks = [], []
        for name, m in self._t.items():
            p = params[name]
            weights.append(p)
            masks.append(m.to(p.device, p.dtype))
        torch._foreach_mul_(weights, masks)

    def to_dtype(self, like: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Masks as float tensors on the devices of ``like`` (cached by the training loop)."""
        return {n: m.to(like[n].device, like[n].dtype) for n, m in self._t.items()}

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **metadata: object) -> None:
        """Write the mask atomically as safetensors with JSON metadata (model, theta_0 hash, ...)."""
        meta = {"format": FORMAT, "sparsity": f"{self.sparsity:.8f}",
                "shapes": json.dumps(self.shapes), "content": self.content_hash()}
        meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
        with atomic_path(path) as tmp:
            save_file({n: t.contiguous() for n, t in self._t.items()}, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, *, expect: Mapping[str, object] | None = None,
             shapes: Mapping[str, tuple[int, ...]] | None = None) -> Mask:
        """Read a mask; check its metadata against ``expect`` and its shapes against ``shapes``."""
        mask, meta = cls.load_with_metadata(path)
        for key, want in (expect or {}).items():
            got = meta.get(key)
            want_s = want if isinstance(want, str) else json.dumps(want)
            if got != want_s:
                raise MaskError(f"{path}: metadata {key!r} is {got!r}, expected {want_s!r}")
        if shapes is not None:
            want = {n: tuple(s) for n, s in shapes.items()}
            if mask.shapes != want:
                bad = next(n for n in want.keys() | mask.shapes.keys()
                           if want.get(n) != mask.shapes.get(n))
                raise MaskError(f"{path}: parameter {bad!r} has shape {mask.shapes.get(bad)}, "
                                f"the model has {want.get(bad)}")
        return mask

    @classmethod
    def load_with_metadata(cls, path: str | os.PathLike) -> tuple[Mask, dict[str, str]]:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                order = json.loads(meta["shapes"]).keys() if "shapes" in meta else f.keys()
            tensors = load_file(str(path))
        except FileNotFoundError:
            raise
        except Exception as e:  # safetensors reports truncation and garbage in many ways
            raise MaskError(f"{path}: unreadable mask file ({type(e).__name__}); delete it to recompute") from None
        if meta.get("format") != FORMAT:
            raise MaskError(f"{path}: not a dilt mask (format {meta.get('format')!r})")
        mask = cls({n: tensors[n] for n in order})
        if mask.content_hash() != meta.get("content"):
            raise MaskError(f"{path}: content does not match its checksum (damaged); delete it to recompute")
        return mask, meta


# -- N-ary algebra ---------------------------------------------------------------------------
def intersection(masks: Sequence[Mask]) -> Mask:
    _need(masks)
    out = masks[0]
    for m in masks[1:]:
        out = out & m
    return out


def union(masks: Sequence[Mask]) -> Mask:
    _need(masks)
    out = masks[0]
    for m in masks[1:]:
        out = out | m
    return out


def specialist(masks: Sequence[Mask], k: int) -> Mask:
    """Weights kept by ``masks[k]`` and by no other mask."""
    _need(masks)
    others = [m for j, m in enumerate(masks) if j != k]
    return masks[k] - union(others) if others else masks[k]


def tickets(masks: Sequence[Mask]) -> dict[str, Mask]:
    """``core``, ``spec1``..``specN`` and ``union`` of N partition masks."""
    out = {"core": intersection(masks)}
    out.update({f"spec{k + 1}": specialist(masks, k) for k in range(len(masks))})
    out["union"] = union(masks)
    return out


def jaccard(a: Mask, b: Mask, names: Iterable[str] | None = None) -> float:
    """|a & b| / |a | b| over ``names`` (all tensors by default); 1.0 when both are empty."""
    names = list(a) if names is None else list(names)
    inter = sum(int((a[n] & b[n]).sum()) for n in names)
    uni = sum(int((a[n] | b[n]).sum()) for n in names)
    return inter / uni if uni else 1.0


def chance_jaccard(a: Mask, b: Mask, names: Iterable[str] | None = None) -> float:
    """Expected Jaccard of two independent uniformly random masks with the per-layer kept counts
    of ``a`` and ``b`` (per layer: E|A&B| = d_a d_b n, |A|B| = n_a + n_b - |A&B|)."""
    names = list(a) if names is None else list(names)
    inter = uni = 0.0
    for n in names:
        size = a[n].numel()
        ka, kb = int(a[n].sum()), int(b[n].sum())
        i = ka * kb / size if size else 0.0
        inter += i
        uni += ka + kb - i
    return inter / uni if uni else 1.0


def random_like(mask: Mask, generator: torch.Generator) -> Mask:
    """A random mask with exactly the same number of kept weights in every tensor."""
    out = {}
    for n, t in mask.items():
        k = int(t.sum())
        flat = torch.zeros(t.numel(), dtype=torch.bool)
        flat[torch.randperm(t.numel(), generator=generator)[:k]] = True
        out[n] = flat.view(t.shape)
    return Mask(out)


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """A short content hash of a state dict (used to tie masks and checkpoints to theta_0)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def _need(masks: Sequence[Mask]) -> None:
    if not masks:
        raise MaskError("need at least one mask")
