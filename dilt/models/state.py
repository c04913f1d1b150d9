"""Saving and loading model weights (safetensors, with metadata) and building theta_0 copies."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dilt.io import atomic_path
from dilt.masks import state_hash
from dilt.models import build_model, head_parameters


def save_state(path: str | os.PathLike, net: nn.Module, **metadata: object) -> str:
    """Write ``net.state_dict()`` atomically; returns its content hash (also in the metadata)."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    digest = state_hash(state)
    meta = {"hash": digest, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return digest


def load_state(path: str | os.PathLike, *,
               expect: dict | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read weights written by :func:`save_state`, refusing a damaged file (its content hash)
    or one whose metadata differs from ``expect`` (e.g. ``{"seed": 0, "model": "cnn"}``)."""
    from dilt.io import FileCheckError

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        state = load_file(str(path))
    except FileNotFoundError:
        raise
    except Exception as e:  # truncated or not a safetensors file
        raise FileCheckError(f"{path}: unreadable weights file ({type(e).__name__}); delete it to recompute") from None
    if "hash" in meta and state_hash(state) != meta["hash"]:
        raise FileCheckError(f"{path}: content does not match its checksum (damaged); delete it to recompute")
    for key, want in (expect or {}).items():
        got = meta.get(key)
        want_s = want if isinstance(want, str) else json.dumps(want)
        if got != want_s:
            raise FileCheckError(f"{path}: {key} is {got}, expected {want_s} (a file of another run)")
    return state, meta


def model_from_theta0(name: str, theta0_path: str | os.PathLike, num_classes: int,
                      input_shape, head_seed: int, options: dict | None = None) -> tuple[nn.Module, str]:
    """A model initialised with theta_0. When ``num_classes`` differs from theta_0's head (a
    partition model sees |Y_k| classes), the head alone is freshly initialised with
    ``head_seed``; every other weight is theta_0's. Returns the model and theta_0's hash."""
    state, meta = load_state(theta0_path)
    torch.manual_seed(head_seed)
    model = build_model(name, num_classes, input_shape, **(options or {}))
    own = model.state_dict()
    head = set(head_parameters(model))
    load = {k: v for k, v in state.items() if not (k in head and own[k].shape != v.shape)}
    missing = [k for k in own if k not in load and k not in head]
    if missing:
        raise ValueError(f"{theta0_path}: theta_0 has no tensor {missing[0]!r} for model {name!r}")
    model.load_state_dict(load, strict=False)
    return model, meta.get("hash", state_hash(state))
