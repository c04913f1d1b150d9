"""The platform shim: one process or several under ``torchrun`` (DDP inside one allocation).

Everything that differs between a single process and data-parallel ranks lives here, so the
training loop and the jobs ask the same few questions either way:

* :func:`init_from_env` starts the process group when ``torchrun`` (or SLURM + torchrun) set
  ``WORLD_SIZE`` > 1 (``nccl`` on CUDA, ``gloo`` on CPU); without it every helper below answers
  for a single process (rank 0 of 1) and does nothing;
* :func:`is_main` (rank 0 alone writes checkpoints, masks, logs and results) and :func:`barrier`;
* :func:`shard_batch`: a rank's share of one global batch cut from the permutation every rank
  computes alike, so the ranks together see exactly the single-process batches;
* :func:`all_reduce_sum` (evaluation counts), :func:`broadcast_object` (a changed mask, from
  rank 0) and :func:`all_equal` (a check that every rank holds the same mask).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_main() -> bool:
    """True on the one process that writes files (rank 0; always true without DDP)."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str = "auto", timeout_min: int = 30) -> bool:
    """Join the process group torchrun describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); idempotent. Returns True when running
    distributed. ``nccl`` when CUDA is used, else ``gloo``."""
    if is_distributed():
        return True
    if env_world_size() <= 1 or not dist.is_available():
        return False
    cuda = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_min))
    return True


def device_for(name: str) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` under DDP with CUDA, else ``name``
    (``auto``: CUDA when available, else CPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and is_distributed():
        if name != "cuda":  # (the config check refuses it first)
            raise ValueError(f"recipe.device: {name!r} under DDP: every rank would train on that one "
                             "GPU; use 'cuda' or 'auto' (each rank takes cuda:LOCAL_RANK)")
        return torch.device("cuda", local_rank())
    return torch.device(name)


def shard_batch(batch: np.ndarray, r: int | None = None, w: int | None = None) -> np.ndarray:
    """Rank ``r``'s contiguous share of one global batch (sizes differ by at most one)."""
    r = rank() if r is None else r
    w = world_size() if w is None else w
    return np.array_split(np.asarray(batch), w)[r]


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the ranks (in place; returned for convenience)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm statistics: each rank updated them from
    its own share of the last batches), so all evaluate the model rank 0 saves."""
    if is_distributed():
        for b in module.buffers():
            dist.broadcast(b, src=src)


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank (pickled). Tensors in it must be on the CPU: a CUDA
    tensor would come back on rank ``src``'s GPU index on every rank."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_equal(value) -> bool:
    """Whether every rank holds the same (picklable, comparable) ``value``."""
    if not is_distributed():
        return True
    got = [None] * world_size()
    dist.all_gather_object(got, value)
    return all(g == got[0] for g in got)


def gather_object(value) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    if not is_distributed():
        return [value]
    got = [None] * world_size()
    dist.all_gather_object(got, value)
    return got


_WAS_DISTRIBUTED = False  # set by shutdown(): this process left a process group


def shutdown() -> None:
    """Leave the process group together: a rank that tears down its connections while another
    still writes its results (rank 0) can abort that rank inside gloo."""
    global _WAS_DISTRIBUTED
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
        _WAS_DISTRIBUTED = True


def exit_process(code: int) -> NoReturn:
    """End the process with ``code``. A process that was a DDP rank ends by ``os._exit`` after
    flushing its output: its files are closed by then, and the C++ destructors that interpreter
    exit would run can abort a finished rank inside gloo's threads ("terminate called without
    an active exception", seen once in CI after both gloo ranks had finished), which torchrun and
    SLURM then report as a failed job."""
    if not _WAS_DISTRIBUTED:
        raise SystemExit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
