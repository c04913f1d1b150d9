"""Dataset registry.

Every loader returns a :class:`DataBundle`: train / validation / test datasets whose items are
``(image tensor, int label)``, the label arrays, the number of classes and the input shape.
The validation split is always carved from the training data (never from test), so model
selection and early stopping never see the test set. Data sets with a class hierarchy (CIFAR-100)
also give each class's superclass, for the ``semantic`` partition scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from dilt.config import VAL_FRACTION

_REGISTRY: dict[str, Callable[..., DataBundle]] = {}


@dataclass
class DataBundle:
    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    train_targets: np.ndarray
    val_targets: np.ndarray
    test_targets: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str] = field(default_factory=list)
    superclasses: np.ndarray | None = None   # class -> superclass id (CIFAR-100's coarse labels)
    superclass_names: list[str] = field(default_factory=list)

    def coarse_targets(self, split: str) -> np.ndarray:
        """The superclass of every image of ``split`` (train, val, test)."""
        if self.superclasses is None:
            raise ValueError(f"{self.name} has no superclass labels")
        return self.superclasses[self.split(split)[1]]

    def split(self, name: str) -> tuple[Dataset, np.ndarray]:
        if name not in ("train", "val", "test"):
            raise KeyError(f"unknown split {name!r} (train, val, test)")
        return getattr(self, name), getattr(self, f"{name}_targets")


def register_dataset(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


# real-data loaders live in a module that imports torchvision (seconds of start-up per job):
# it is imported only when one of its data sets is used
_LAZY = {"imagenet": "dilt.data.imagefolders", "cifar100": "dilt.data.imagefolders",
         "stanford_cars": "dilt.data.imagefolders", "cub200": "dilt.data.imagefolders"}


def dataset_names() -> list[str]:
    _import_loaders()
    return sorted(set(_REGISTRY) | set(_LAZY))


def get_loader(name: str) -> Callable[..., DataBundle]:
    """The registered loader function of ``name`` (importing its module on first use)."""
    _import_loaders(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())}")
    return _REGISTRY[name]


def load_dataset(name: str, *, root: str | Path = "data", seed: int = 0,
                 val_fraction: float = VAL_FRACTION, **options) -> DataBundle:
    """Load dataset ``name`` from ``root``; ``seed`` fixes the train/validation split and
    ``val_fraction`` (by default the config's) its size."""
    return get_loader(name)(root=Path(root), seed=seed, val_fraction=val_fraction, **options)


def stratified_split(targets: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held) with ``fraction`` of every class held out, deterministically."""
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        held.append(idx[: int(round(fraction * len(idx)))])
    held = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    rest = np.setdiff1d(np.arange(len(targets)), held)
    return rest, held


def carve_validation(name: str, train: Dataset, train_targets: np.ndarray, test: Dataset,
                     test_targets: np.ndarray, num_classes: int, input_shape: tuple[int, ...],
                     val_fraction: float, seed: int, class_names=None, *,
                     superclasses=None, superclass_names=()) -> DataBundle:
    """Bundle a dataset with official train/test splits, holding a stratified validation split
    out of train."""
    rest, held = stratified_split(train_targets, val_fraction, seed)
    return DataBundle(name, Subset(train, rest.tolist()), Subset(train, held.tolist()), test,
                      np.asarray(train_targets)[rest], np.asarray(train_targets)[held],
                      np.asarray(test_targets), num_classes, tuple(input_shape),
                      list(class_names or []),
                      None if superclasses is None else np.asarray(superclasses, dtype=np.int64),
                      list(superclass_names or []))


class TensorImages(Dataset):
    """In-memory images and labels; the training loop slices ``x``/``y`` directly (no loader)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def _import_loaders(name: str | None = None) -> None:
    """Import the modules that register loaders (the embedded ones always, a real one when
    ``name`` needs it or ``name`` is "*"); importing a module registers its loaders."""
    import importlib

    from dilt.data import digits  # noqa: F401

    for module in sorted(set(_LAZY.values()) if name == "*" else {_LAZY.get(name)} - {None}):
        importlib.import_module(module)
