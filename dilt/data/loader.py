"""Mini-batches of a split (or a subset of it): one loader per training, a seeded order per epoch.

:class:`Loader` is built once per training and iterated once per epoch with that epoch's seed:

* the order is a permutation seeded by the epoch's seed, cut into global batches; under DDP each
  rank takes its contiguous share of every global batch (:func:`dilt.platform.shard_batch`), so
  the ranks together see exactly the single-process batches;
* in-memory data (:class:`~dilt.data.TensorImages`, possibly under ``Subset``) is sliced
  directly, which is several times faster than a ``DataLoader`` for small images;
* anything else goes through one ``DataLoader`` whose worker processes persist across epochs
  (and evaluations), with pinned memory on CUDA. Each sample's augmentation randomness is seeded
  from (epoch seed, sample index) just before it is loaded (``random``, ``numpy`` and ``torch``),
  so an epoch's batches are the same whatever the number of workers, in a fresh process and in a
  resumed run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, get_worker_info

from dilt.data import TensorImages


def permutation(n: int, seed: int) -> np.ndarray:
    """The epoch's order of ``n`` positions (the same on every rank and in every process)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n, generator=g).numpy()


def sample_seed(epoch_seed: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in the epoch seeded ``epoch_seed``."""
    return (int(epoch_seed) * 0x9E3779B1 + int(index) * 0x85EBCA77 + 0x165667B1) % (2**63 - 1)


def _tensors(ds: Dataset, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray] | None:
    """(x, y, positions in x) of ``ds[idx]`` when the dataset lives in memory, else None."""
    while isinstance(ds, Subset):
        idx = np.asarray(ds.indices)[idx]
        ds = ds.dataset
    if isinstance(ds, TensorImages):
        return ds.x, ds.y, np.asarray(idx, dtype=np.int64)
    return None


class _Seeded(Dataset):
    """``ds`` addressed by ``(index, seed)``: the global RNGs are seeded with ``seed`` before the
    item is loaded (in the main process their state is restored afterwards)."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, key):
        i, s = key
        if s is None:
            return self.ds[i]
        main = get_worker_info() is None
        if main:
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.default_generator.manual_seed(s)  # the CPU's only: a GPU's stream is the training's
        try:
            return self.ds[i]
        finally:
            if main:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


class _Plan:
    """The batch sampler: lists of ``(dataset index, seed)`` of this rank's share of every
    global batch of the epoch set by :meth:`set_epoch`."""

    def __init__(self, loader: Loader):
        self.loader, self.seed, self.augment_seed = loader, None, None

    def set_epoch(self, seed: int | None, augment_seed: int | None = None) -> None:
        self.seed, self.augment_seed = seed, augment_seed

    def __iter__(self):
        a = self.augment_seed
        for b in self.loader._plan(self.seed):
            idx = self.loader.indices[b]
            yield [(int(i), None if a is None else sample_seed(a, i)) for i in idx]

    def __len__(self) -> int:
        return len(self.loader)


class Loader:
    """Batches of ``ds`` restricted to ``indices`` (all when None), built once per training.

    ``batch_size`` is the global batch; under ``world_size`` ranks, ``rank`` gets its share of
    each. ``drop_last``: drop an incomplete final batch; ``min_last``: drop a final batch of fewer
    samples (training under DDP passes the world size, so no rank gets an empty batch).
    ``persistent``: keep the DataLoader's workers between epochs."""

    def __init__(self, ds: Dataset, indices: np.ndarray | None, batch_size: int, *,
                 num_workers: int = 0, pin_memory: bool = False, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False, min_last: int = 1, persistent: bool = True):
        self.ds, self.batch_size = ds, int(batch_size)
        self.indices = np.arange(len(ds)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.rank, self.world_size = rank, world_size
        self.drop_last, self.min_last = drop_last, max(1, min_last)
        self._mem = _tensors(ds, self.indices)
        self._dl = None
        if self._mem is None:
            self._sampler = _Plan(self)
            # its own generator: starting an epoch's iterator then draws nothing from the global
            # one, so a resumed run's first epoch sees the global RNG an uninterrupted run sees
            self._dl = DataLoader(_Seeded(ds), batch_sampler=self._sampler, num_workers=num_workers,
                                  pin_memory=pin_memory, generator=torch.Generator().manual_seed(0),
                                  persistent_workers=persistent and num_workers > 0)

    def __len__(self) -> int:
        """Global batches per epoch (the same on every rank)."""
        n, b = len(self.indices), self.batch_size
        full, rest = divmod(n, b)
        return full + (1 if rest and not self.drop_last and rest >= self.min_last else 0)

    def _plan(self, seed: int | None) -> Iterator[np.ndarray]:
        """Positions into ``indices`` of this rank's share of each global batch (empty shares,
        possible only in evaluation, are skipped)."""
        order = permutation(len(self.indices), seed) if seed is not None else np.arange(len(self.indices))
        for k in range(len(self)):
            mine = np.array_split(order[k * self.batch_size:(k + 1) * self.batch_size],
                                  self.world_size)[self.rank]
            if len(mine):
                yield mine

    def epoch(self, seed: int | None = None, augment_seed: int | None = None
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's batches of one epoch, in the order seeded by ``seed`` (None: as given);
        augmentation seeded by ``augment_seed`` (default ``seed``; both None: unseeded)."""
        if self._mem is not None:
            x, y, pos = self._mem
            for b in self._plan(seed):
                t = torch.as_tensor(pos[b], dtype=torch.long)
                yield x[t], y[t]
            return
        # before iter(): a persistent loader prefetches at once
        self._sampler.set_epoch(seed, seed if augment_seed is None else augment_seed)
        for x, y in self._dl:
            yield x, torch.as_tensor(y)

    def close(self) -> None:
        """Stop the worker processes (also done when the loader is garbage-collected)."""
        self._dl = None


def batches(ds: Dataset, indices: np.ndarray | None, batch_size: int, *,
            shuffle_seed: int | None = None, augment_seed: int = 0, num_workers: int = 0,
            drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass of ``(x, y)`` batches over ``ds`` restricted to ``indices`` (a one-off
    :class:`Loader`, workers not kept); shuffled with ``shuffle_seed`` when given. A split with
    random augmentation is augmented as seeded by ``augment_seed``, so the pass (a scoring
    batch, a probe) is the same in every process."""
    loader = Loader(ds, indices, batch_size, num_workers=num_workers, drop_last=drop_last,
                    pin_memory=torch.cuda.is_available(), persistent=False)
    yield from loader.epoch(shuffle_seed, augment_seed)
