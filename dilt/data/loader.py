"""Mini-batch iteration over a split (or a subset of it), with a per-epoch seeded shuffle.

In-memory data (:class:`~dilt.data.TensorImages`, possibly under ``Subset``) is sliced directly,
which is several times faster than a ``DataLoader`` for small images; anything else goes
through a ``DataLoader`` with worker processes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dilt.data import TensorImages


def _tensors(ds: Dataset, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The (x, y) tensors of ``ds[idx]`` when the dataset lives in memory, else None."""
    while isinstance(ds, Subset):
        idx = np.asarray(ds.indices)[idx]
        ds = ds.dataset
    if isinstance(ds, TensorImages):
        t = torch.as_tensor(idx, dtype=torch.long)
        return ds.x[t], ds.y[t]
    return None


def batches(ds: Dataset, indices: np.ndarray | None, batch_size: int, *,
            shuffle_seed: int | None = None, num_workers: int = 0,
            drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(x, y)`` batches of ``ds`` restricted to ``indices`` (all when None); shuffled
    with a generator seeded by ``shuffle_seed`` when given, so an epoch is reproducible on its
    own (a resumed run sees the same order)."""
    idx = np.arange(len(ds)) if indices is None else np.asarray(indices, dtype=np.int64)
    if shuffle_seed is not None:
        g = torch.Generator().manual_seed(int(shuffle_seed))
        idx = idx[torch.randperm(len(idx), generator=g).numpy()]
    mem = _tensors(ds, idx)
    if mem is not None:
        x, y = mem
        stop = len(idx) - (len(idx) % batch_size if drop_last else 0)
        for i in range(0, stop, batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    # the workers' random state (augmentation) derives from this generator: seeded per epoch,
    # a resumed run replays the same augmentations
    g = torch.Generator().manual_seed(int(shuffle_seed) if shuffle_seed is not None else 0)
    loader = DataLoader(Subset(ds, idx.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, drop_last=drop_last, generator=g,
                        persistent_workers=False, pin_memory=torch.cuda.is_available())
    for x, y in loader:
        yield x, torch.as_tensor(y)
