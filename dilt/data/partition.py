"""Partitioning a training set into N disjoint parts.

Schemes:

* ``contiguous`` classes 0..C/N-1, C/N..2C/N-1, ... (the proposal's 1..C/2 vs C/2+1..C);
* ``random``     classes shuffled with the seed, then cut into N near-equal groups;
* ``semantic``   whole superclasses (CIFAR-100's 20 coarse labels) in their fixed id order, cut
  into N near-equal groups of superclasses (N=2: superclasses 0-9 vs 10-19), so a part holds
  whole semantic groups (all five flowers, both vehicle superclasses) rather than classes that
  happen to have neighbouring ids; the same for every seed, like ``contiguous``. Only data sets
  that give superclasses (``DataBundle.superclasses``) accept it;
* ``iid``        samples (not classes) split into N parts that each hold every class: the
  sibling control, which separates the effect of class-disjointness from that of training on
  different data.

Under the class schemes a partition model sees its own classes only, with labels re-indexed to
0..|Y_k|-1 (``label_map``); under ``iid`` labels are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMES = ("contiguous", "random", "semantic", "iid")
# data sets whose loader gives superclasses, with their number (for checks without the files)
SEMANTIC_DATASETS = {"cifar100": 20}


def scheme_problem(scheme: str, n: int, dataset: str) -> str | None:
    """Why ``n`` parts under ``scheme`` cannot be made of ``dataset`` as far as known without its
    files (one line), or None. Only ``semantic`` has such a rule here."""
    if scheme != "semantic":
        return None
    if dataset not in SEMANTIC_DATASETS:
        return (f"the semantic scheme needs superclass labels, which only "
                f"{', '.join(sorted(SEMANTIC_DATASETS))} gives; {dataset} has none")
    if n > SEMANTIC_DATASETS[dataset]:
        return f"{n} semantic partitions of the {SEMANTIC_DATASETS[dataset]} superclasses of {dataset}"
    return None


@dataclass(frozen=True)
class Partition:
    index: int                 # k, 0-based
    classes: tuple[int, ...]   # Y_k (global class ids)
    train_idx: np.ndarray      # indices into the training split
    val_idx: np.ndarray        # indices into the validation split
    label_map: np.ndarray      # global class -> local label, -1 outside Y_k
    class_disjoint: bool

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def partition_tag(n: int, scheme: str) -> str:
    return f"{scheme}{n}"


def class_groups(num_classes: int, n: int, scheme: str, seed: int,
                 superclasses: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """The class sets Y_1..Y_N (for ``iid``: every part gets all classes). ``superclasses``
    (class -> superclass id) is needed by ``semantic`` only."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    if n < 1 or (scheme != "iid" and n > num_classes):
        raise ValueError(f"cannot split {num_classes} classes into n={n} partitions")
    classes = np.arange(num_classes)
    if scheme == "iid":
        return [tuple(classes.tolist())] * n
    if scheme == "semantic":
        return _semantic_groups(num_classes, n, superclasses)
    if scheme == "random":
        classes = np.random.default_rng(seed).permutation(classes)
    return [tuple(sorted(int(c) for c in g)) for g in np.array_split(classes, n)]


def _semantic_groups(num_classes: int, n: int, superclasses) -> list[tuple[int, ...]]:
    if superclasses is None:
        raise ValueError("the semantic partition scheme needs superclass labels; this data set "
                         f"has none (only {', '.join(sorted(SEMANTIC_DATASETS))} gives them)")
    sup = np.asarray(superclasses, dtype=np.int64)
    if sup.shape != (num_classes,) or (sup < 0).any():
        raise ValueError(f"superclasses: expected one superclass id >= 0 for each of the "
                         f"{num_classes} classes, got shape {sup.shape}")
    ids = np.unique(sup)
    if n > len(ids):
        raise ValueError(f"cannot split {len(ids)} superclasses into n={n} semantic partitions")
    return [tuple(np.flatnonzero(np.isin(sup, g)).tolist()) for g in np.array_split(ids, n)]


def make_partitions(train_targets: np.ndarray, val_targets: np.ndarray, num_classes: int,
                    n: int, scheme: str, seed: int,
                    superclasses: np.ndarray | None = None) -> list[Partition]:
    """The N parts of the training and validation splits under ``scheme`` (``superclasses``:
    class -> superclass id, for ``semantic``)."""
    groups = class_groups(num_classes, n, scheme, seed, superclasses)
    if scheme == "iid":
        for split, targets in (("training", train_targets), ("validation", val_targets)):
            counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)
            if counts.min() < n:
                c = int(counts.argmin())
                raise ValueError(f"iid{n}: class {c} has {counts[c]} {split} sample(s), fewer "
                                 f"than the {n} parts; every part must hold every class (raise "
                                 "the suite's val_fraction for this data set, or use fewer parts)")
        tr = _iid_split(train_targets, n, seed)
        va = _iid_split(val_targets, n, seed + 1)
        ident = np.arange(num_classes)
        return [Partition(k, groups[k], tr[k], va[k], ident, False) for k in range(n)]
    parts = []
    for k, g in enumerate(groups):
        label_map = np.full(num_classes, -1, dtype=np.int64)
        label_map[list(g)] = np.arange(len(g))
        parts.append(Partition(k, g, np.flatnonzero(np.isin(train_targets, g)),
                               np.flatnonzero(np.isin(val_targets, g)), label_map, True))
    return parts


def _iid_split(targets: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    """Split each class's samples into n near-equal parts (stratified), seeded."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n)]
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        rng.shuffle(idx)
        offset = int(rng.integers(n))  # rotate so remainders do not always land in part 0
        for j, chunk in enumerate(np.array_split(idx, n)):
            parts[(j + offset) % n].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
