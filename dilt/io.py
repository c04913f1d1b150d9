"""Atomic, checked file writes and reads shared by every stage.

Every file is written to a temporary name beside its target, flushed to disk (fsync) and then
renamed over the target, and the directory is fsynced, so a kill or power loss at any instant
leaves either the old file or the new one, never a torn one. Temporary orphans of a killed
writer (``.NAME.*.tmp``) are removed by :func:`clean_orphans`. Checkpoints carry a SHA-256 of
their bytes and are refused when it does not match.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class FileCheckError(ValueError):
    """A file on disk is damaged, truncated or belongs to other settings (one line, names it)."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_CRASH_COUNT: dict[str, int] = {}


def _main_process() -> bool:
    """False on the ranks > 0 of a DDP job (torchrun sets RANK): rank 0 alone writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def _crash_point(path: Path) -> None:
    """Crash tests only: with ``DILT_CRASH_AT=<substring>:<n>`` the process kills itself
    (SIGKILL) at the n-th atomic write whose target contains <substring>, after the temporary
    file is written and before it is renamed: the worst instant of a save."""
    spec = os.environ.get("DILT_CRASH_AT")
    if not spec:
        return
    needle, _, n = spec.rpartition(":")
    if needle in str(path):
        _CRASH_COUNT[needle] = _CRASH_COUNT.get(needle, 0) + 1
        if _CRASH_COUNT[needle] == int(n):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the body succeeds, fsync it and rename it
    onto ``path`` (then fsync the directory). Under DDP the ranks > 0 write nothing to ``path``:
    their copy goes to the node's temporary directory, off the shared file system, and is
    dropped."""
    path = Path(path)
    main = _main_process()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp",
                               dir=path.parent if main else None)
    os.close(fd)
    try:
        yield Path(tmp)
        if not main:  # under DDP only rank 0 writes
            return
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _crash_point(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_HOST = socket.gethostname().replace(".", "_").replace("-", "_")


def _writer_dead(tmp: Path) -> bool:
    """Whether the process that made temporary file ``tmp`` is gone: its name carries the host
    and pid of its writer. A file of another host is left alone unless it is a day old (jobs on
    other nodes of a cluster may share the directory)."""
    import time

    parts = tmp.name.rsplit(".", 3)  # .<target>.<host>-<pid>.<random>.tmp
    host, _, pid = parts[1].rpartition("-") if len(parts) == 4 else ("", "", "")
    if host == _HOST and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return time.time() - tmp.stat().st_mtime > 86400


def clean_orphans(directory: str | os.PathLike) -> int:
    """Remove temporary files left under ``directory`` by killed writers (never one whose
    writer is still running); return how many."""
    d = Path(directory)
    if not d.is_dir():
        return 0
    n = 0
    for p in d.rglob(".*.tmp"):
        try:
            if _writer_dead(p):
                p.unlink(missing_ok=True)
                n += 1
        except FileNotFoundError:
            pass
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing file raises FileNotFoundError, a damaged one FileCheckError."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FileCheckError(f"{path}: damaged JSON ({e.__class__.__name__}); delete it to recompute") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


_MAGIC = b"dilt-ckpt-sha256:"


def save_checked(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` ``obj`` atomically behind a header holding the SHA-256 of its bytes."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(_MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n")
            f.write(data)


def load_checked(path: str | os.PathLike, map_location=None) -> Any:
    """Load what :func:`save_checked` wrote (``weights_only=True``), refusing damaged bytes."""
    import torch

    raw = Path(path).read_bytes()
    head, _, data = raw.partition(b"\n")
    if not head.startswith(_MAGIC):
        raise FileCheckError(f"{path}: not a dilt checkpoint (no checksum header); delete it to start over")
    if hashlib.sha256(data).hexdigest().encode() != head[len(_MAGIC):]:
        raise FileCheckError(f"{path}: checksum mismatch (damaged or truncated); delete it to start over")
    return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)


def settings_hash(obj: Any) -> str:
    """A short, stable hash of JSON-able settings (the provenance key of a result)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, tuple)):
        return str(o) if isinstance(o, Path) else list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
