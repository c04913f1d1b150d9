"""The fork server of local runs: a job run through it behaves exactly like a fresh process
(output, exit status, environment, working directory), a vanished client takes its job with it,
and without a server (or inside a SLURM job) ``python -m dilt`` runs the job itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dilt import forkserver

ROOT = Path(__file__).resolve().parent.parent


def _serve_with(tmp_path: Path, main_src: str) -> tuple[subprocess.Popen, str]:
    """A server whose jobs run ``main_src`` (a function ``main(argv)``) instead of dilt's CLI."""
    path = str(tmp_path / "fs.sock")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import dilt.cli
        {textwrap.indent(textwrap.dedent(main_src), "        ").strip()}
        dilt.cli.main = main
        from dilt.forkserver import serve
        serve({path!r}, {os.getpid()})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
    for _ in range(600):
        if os.path.exists(path):
            return proc, path
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("fork server did not come up")


def _dilt(args, env, cwd=ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "dilt", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, **kw)


def test_job_through_server_matches_a_fresh_process(tmp_path):
    path = forkserver.start(ROOT, tmp_path / "fs.log")
    assert path is not None
    try:
        fresh = {k: v for k, v in os.environ.items() if k != forkserver.ENV}
        warm = {**fresh, forkserver.ENV: path}
        for args in (["validate"], ["validate", "--suite", "no_such_suite"]):
            a, b = _dilt(args, fresh), _dilt(args, warm)
            assert (a.returncode, a.stdout, a.stderr) == (b.returncode, b.stdout, b.stderr)
        assert _dilt(["validate", "--suite", "no_such_suite"], warm).returncode == 2
        log = (tmp_path / "fs.log").read_text()
        assert '"job": ["validate"]' in log  # it really ran in the server
    finally:
        forkserver.stop(path)
    for _ in range(100):
        if not os.path.exists(path):
            break
        time.sleep(0.05)
    assert not os.path.exists(path)


def test_environment_cwd_and_status_reach_the_job(tmp_path):
    proc, path = _serve_with(tmp_path, """
        def main(argv):
            import os, sys
            print(os.environ.get("PROBE"), os.getcwd(), argv)
            print("to stderr", file=sys.stderr)
            return int(argv[-1])
    """)
    try:
        env = {**os.environ, forkserver.ENV: path, "PROBE": "seen"}
        run = _dilt(["x", "7"], env, cwd=tmp_path)
        assert run.returncode == 7
        assert run.stdout.strip() == f"seen {tmp_path} ['x', '7']"
        assert run.stderr.strip() == "to stderr"
        # inside a SLURM job the client never uses the server (the fresh CLI rejects "x")
        slurm = _dilt(["x", "7"], {**env, "SLURM_JOB_ID": "1"}, cwd=tmp_path)
        assert slurm.returncode != 7 and "seen" not in slurm.stdout
    finally:
        proc.kill()
        proc.wait()


def test_a_vanished_client_takes_its_job_with_it(tmp_path):
    marker = tmp_path / "pid"
    proc, path = _serve_with(tmp_path, f"""
        def main(argv):
            import os, time
            open({str(marker)!r}, "w").write(str(os.getpid()))
            time.sleep(60)
            return 0
    """)
    try:
        client = subprocess.Popen([sys.executable, "-m", "dilt", "sleep"], cwd=ROOT,
                                  env={**os.environ, forkserver.ENV: path})
        for _ in range(200):
            if marker.exists() and marker.read_text():
                break
            time.sleep(0.05)
        child = int(marker.read_text())
        os.kill(child, 0)  # the job runs
        client.send_signal(signal.SIGKILL)
        client.wait()
        for _ in range(100):
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    finally:
        proc.kill()
        proc.wait()


def test_a_job_killed_by_a_signal_kills_its_client_the_same_way(tmp_path):
    proc, path = _serve_with(tmp_path, """
        def main(argv):
            import os, signal
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    try:
        run = _dilt(["x"], {**os.environ, forkserver.ENV: path})
        assert run.returncode == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def test_no_server_means_the_job_runs_itself(tmp_path, monkeypatch):
    env = {**os.environ, forkserver.ENV: str(tmp_path / "absent.sock")}
    for value in (str(tmp_path / "absent.sock"), "", "0"):
        monkeypatch.setenv(forkserver.ENV, value)
        assert forkserver.run_via_server(["validate"]) is None
    run = _dilt(["validate"], env)
    assert run.returncode == 0 and run.stdout.startswith("suite ")


def test_server_exits_with_its_parent(tmp_path):
    path = str(tmp_path / "fs.sock")
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    server = subprocess.Popen([sys.executable, "-m", "dilt.forkserver", path, str(parent.pid)],
                              cwd=ROOT)
    for _ in range(600):
        if os.path.exists(path):
            break
        time.sleep(0.05)
    assert os.path.exists(path)
    parent.kill()
    parent.wait()
    assert server.wait(timeout=10) == 0
    assert not os.path.exists(path)


def test_warming_the_server_never_touches_cuda():
    """Every job of a local run, GPU jobs included (the small suite on one GPU), forks from the
    server; a child forked after CUDA was initialised cannot use it. Warming (imports and the
    config check) must not initialise or even query CUDA: the CUDA entry points are made to
    record any call, in a fresh interpreter."""
    code = textwrap.dedent("""
        import torch
        calls = []
        def spy(name):
            return lambda *a, **k: calls.append(name) or (_ for _ in ()).throw(RuntimeError(name))
        for name in ("is_available", "device_count", "init", "_lazy_init", "current_device",
                     "get_device_properties", "get_device_capability", "is_bf16_supported",
                     "set_device", "synchronize", "mem_get_info"):
            setattr(torch.cuda, name, spy(name))
        for name in ("_cuda_getDeviceCount", "_cuda_init"):
            if hasattr(torch._C, name):
                setattr(torch._C, name, spy(name))
        from dilt import forkserver
        forkserver.warm()
        import sys
        assert all(m in sys.modules for m in ("timm", "ot", "dilt.train")), "preload failed"
        print("CUDA calls:", calls, torch.cuda.is_initialized())
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CUDA calls: [] False" in proc.stdout, proc.stdout
