"""Warm start for the jobs of a local Snakemake run: each job forks from one interpreter that
has imported torch, timm, POT and dilt already, instead of starting Python and importing them.

A smoke-suite job trains for a second or two, and a fresh ``python -m dilt`` spends about as
long on imports before it starts; over three hundred jobs that is a third of the suite's CPU time
(bench/RESULTS.md). The Snakefile starts one server per local run (never under a cluster
executor) and exports its socket in ``DILT_FORKSERVER``; ``python -m dilt`` then hands its
arguments, environment, working directory and standard streams to the server, which forks a
child that runs :func:`dilt.cli.main` exactly as the fresh process would have, and the client
exits with the child's status. Without a server (no socket, a SLURM job, ``DILT_FORKSERVER``
unset or empty) ``python -m dilt`` runs the job itself, so nothing depends on the server.

A client that disappears (Snakemake stopping a job) takes its child with it: the server kills
the child as soon as the client's connection closes. The server exits when the Snakemake process
that started it is gone or asks it to stop, and never runs a job itself: it only imports.

This module's client half imports nothing heavy; the server half imports the job stack.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from pathlib import Path

ENV = "DILT_FORKSERVER"
PRELOAD = ("numpy", "torch", "safetensors.torch", "timm.models.vision_transformer",
           "timm.data", "torchvision", "ot", "sklearn.cluster", "scipy.stats", "yaml",
           "jsonschema", "dilt.cli", "dilt.jobs", "dilt.train", "dilt.methods", "dilt.analysis",
           "dilt.models.small", "dilt.models.vit", "dilt.data.digits")
_HEADER = struct.Struct("!I")


def socket_path(workdir: str | os.PathLike, owner: int) -> str:
    """A node-local socket for this checkout, user and run (the Snakemake process ``owner``),
    short enough for AF_UNIX's 107 bytes."""
    import hashlib
    import tempfile

    tag = hashlib.sha256(f"{os.path.realpath(workdir)}:{socket.gethostname()}".encode()).hexdigest()[:12]
    return os.path.join(tempfile.gettempdir(), f"dilt-{os.getuid()}-{tag}-{owner}.sock")


def _remove_stale(workdir: str | os.PathLike) -> None:
    """Sockets of this checkout whose run is gone (a server killed before it could clean up)."""
    import glob

    for old in glob.glob(socket_path(workdir, 0)[:-len("0.sock")] + "*.sock"):
        try:
            if not _alive(int(old.rsplit("-", 1)[1][:-len(".sock")])):
                os.unlink(old)
        except (ValueError, OSError):
            pass


# -- client -------------------------------------------------------------------------------
def _send(sock: socket.socket, payload: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(payload).encode()
    if fds:
        socket.send_fds(sock, [_HEADER.pack(len(data)) + data], fds)
    else:
        sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, fds: list[int] | None = None) -> bytes:
    buf = b""
    while len(buf) < n:
        if fds is not None and not buf:
            chunk, got, _, _ = socket.recv_fds(sock, n, 8)
            fds.extend(got)
        else:
            chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _recv(sock: socket.socket, fds: list[int] | None = None) -> dict:
    """One length-prefixed JSON message (with the file descriptors sent along, into ``fds``)."""
    head = _recv_exact(sock, _HEADER.size, fds)
    (n,) = _HEADER.unpack(head[:_HEADER.size])
    rest = head[_HEADER.size:]
    return json.loads(rest + _recv_exact(sock, n - len(rest)))


def run_via_server(argv: list[str]) -> int | None:
    """Run ``python -m dilt argv`` in a process forked by the server; its exit status, or None
    when no server is there for this process (then the caller runs the job itself)."""
    path = os.environ.get(ENV, "")
    if not path or "SLURM_JOB_ID" in os.environ or not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    with sock:
        sys.stdout.flush()
        sys.stderr.flush()
        _send(sock, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
        try:
            status = _recv(sock)["returncode"]
        except (ConnectionError, ValueError):  # the server died: say so, and fail the job
            print("dilt: the fork server went away during the job", file=sys.stderr)
            return 1
    if status < 0:  # the child was killed by a signal: die the same way
        import signal

        if -status not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    return status


# -- server -------------------------------------------------------------------------------
def _child(conn_fds: list[int], request: dict) -> None:
    """In the forked child: become the job's process (streams, cwd, environment) and run it."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for target, fd in zip((0, 1, 2), conn_fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["dilt", *request["argv"]]
    code = 1
    try:
        from dilt.cli import main

        code = main(request["argv"])
        code = 0 if code is None else int(code)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def warm() -> None:
    """What the server does before it forks any job: import :data:`PRELOAD` and load the config
    (its checks cache model builds, on the meta device). Nothing here may touch CUDA: a child
    forked after CUDA is initialised cannot use it, and every GPU job of a local run forks."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional part missing here: its jobs import it themselves
            pass
    try:  # warm the config checks' caches (model builds) that every job's validation reads
        from dilt import config

        config.load()
    except Exception:  # a bad config: the jobs report it themselves
        pass


def serve(path: str, parent_pid: int, poll: float = 0.02) -> None:
    """Serve jobs on the AF_UNIX socket ``path`` until ``parent_pid`` exits or a client sends
    ``{"stop": true}``; one forked child per request, killed if its client goes away."""
    import selectors
    import signal
    import time

    warm()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is Snakemake's to handle
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    if os.path.exists(tmp):
        os.unlink(tmp)
    listener.bind(tmp)
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.replace(tmp, path)  # clients see the socket only once it accepts
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    running: dict[int, socket.socket] = {}  # child pid -> its client's connection
    started: dict[int, tuple[float, list]] = {}
    by_conn: dict[socket.socket, int] = {}
    stop = False
    try:
        while not stop:
            for key, _ in sel.select(timeout=poll):
                if key.fileobj is listener:
                    conn, _ = listener.accept()
                    fds: list[int] = []
                    try:
                        request = _recv(conn, fds)
                    except (ConnectionError, ValueError, OSError):
                        conn.close()
                        continue
                    if request.get("stop"):
                        stop = True
                        conn.close()
                        continue
                    pid = os.fork()
                    if pid == 0:
                        for other in (listener, conn, *by_conn):
                            other.close()
                        sel.close()
                        _child(fds, request)
                    for fd in fds:
                        os.close(fd)
                    running[pid], by_conn[conn] = conn, pid
                    started[pid] = (time.time(), request["argv"])
                    sel.register(conn, selectors.EVENT_READ)
                else:  # a client's connection became readable: it closed, so kill its job
                    pid = by_conn.get(key.fileobj)
                    if pid is not None:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    sel.unregister(key.fileobj)
            while running:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = running.pop(pid, None)
                if conn is None:
                    continue
                by_conn.pop(conn, None)
                if _registered(sel, conn):
                    sel.unregister(conn)
                code = os.waitstatus_to_exitcode(status)
                t0, what = started.pop(pid, (time.time(), []))
                print(json.dumps({"pid": pid, "job": what, "returncode": code,
                                  "seconds": round(time.time() - t0, 3),
                                  "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3)}),
                      flush=True)
                try:
                    _send(conn, {"returncode": code})
                except OSError:
                    pass
                conn.close()
            if not _alive(parent_pid):
                stop = True
    finally:
        for pid in running:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        listener.close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _registered(sel, conn) -> bool:
    try:
        sel.get_key(conn)
        return True
    except KeyError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def start(workdir: str | os.PathLike, log: str | os.PathLike, timeout: float = 60.0) -> str | None:
    """Start a server for this process (the Snakemake run) and wait until it accepts; its socket
    path, or None if it did not come up (the jobs then start as fresh processes)."""
    import subprocess
    import time

    path = socket_path(workdir, os.getpid())
    _remove_stale(workdir)
    stop(path)
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dilt.forkserver", path, str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                start_new_session=True, cwd=os.fspath(workdir))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        if os.path.exists(path):
            return path
        time.sleep(0.05)
    proc.kill()
    return None


def start_for_run(workdir: str | os.PathLike, log: str | os.PathLike, local: bool) -> str | None:
    """The Snakefile's start: a server for a local run unless ``DILT_FORKSERVER=0``; exports its
    socket to the jobs (``DILT_FORKSERVER``, empty when there is none)."""
    if not local or os.environ.get(ENV) == "0":
        return None
    path = start(workdir, log)
    os.environ[ENV] = path or ""
    return path


def stop(path: str | None) -> None:
    """Ask the server at ``path`` (if any) to exit; it kills jobs still running."""
    if not path or not os.path.exists(path):
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        _send(sock, {"stop": True})
    except OSError:
        try:  # nobody listens: a stale socket of a dead server
            os.unlink(path)
        except FileNotFoundError:
            pass
    finally:
        sock.close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
