"""Crash safety: every job kind, SIGKILLed at random instants (and at the worst instants of a
save: between writing a temporary file and renaming it), resumes to bit-identical outputs."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import assert_same_files, tiny_config

pytestmark = pytest.mark.slow
KILLS = 10


def _config(tmp: Path) -> Path:
    raw = tiny_config(prune={"rate": 0.5, "rewind_epoch": 1},
                      recipes={"default": {"epochs": 3, "batch_size": 128, "lr": 0.05}})
    raw["results_root"] = "results"
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _jobs(cfg: Path, d: Path) -> dict[str, tuple[list[str], Path]]:
    """kind -> (command-line args, its output directory), in dependency order."""
    base = ["--config", str(cfg), "--model", "mlp", "--dataset", "digits", "--seed", "0"]
    t0 = str(d / "theta0.safetensors")
    c2 = d / "contiguous2"
    runs = [str(c2 / "dilt" / "p1"), str(c2 / "dilt" / "p2")]
    return {
        "init": (["init", *base, "--out", t0], d / "theta0.safetensors"),
        "dense": (["dense", *base, "--theta0", t0, "--out", str(d / "full/dense/records.json")], d / "full/dense"),
        "lth": (["find", *base, "--method", "lth", "--partition", "full", "--theta0", t0,
                 "--out-dir", str(d / "full/lth")], d / "full/lth"),
        "dilt_p1": (["find", *base, "--method", "dilt", "--partition", "contiguous2", "--part", "1",
                     "--theta0", t0, "--out-dir", runs[0]], Path(runs[0])),
        "dilt_p2": (["find", *base, "--method", "dilt", "--partition", "contiguous2", "--part", "2",
                     "--theta0", t0, "--out-dir", runs[1]], Path(runs[1])),
        "colt": (["find", *base, "--method", "colt", "--partition", "contiguous2", "--theta0", t0,
                  "--out-dir", str(c2 / "colt")], c2 / "colt"),
        "tickets": (["tickets", *base, "--partition", "contiguous2", "--runs", *runs,
                     "--out-dir", str(c2 / "tickets")], c2 / "tickets"),
        "retrain": (["retrain", *base, "--partition", "contiguous2", "--source", str(c2 / "tickets"),
                     "--theta0", t0, "--out", str(c2 / "tickets/retrain/records.json")], c2 / "tickets/retrain"),
        "transfer": (["transfer", *base, "--partition", "contiguous2", "--target", "digits_rot",
                      "--sources", str(c2 / "colt"), str(c2 / "tickets"),
                      "--out", str(c2 / "transfer/digits_rot/records.json")], c2 / "transfer/digits_rot"),
        "analyze": (["analyze", *base, "--partition", "contiguous2", "--runs", *runs, "--theta0", t0,
                     "--out", str(c2 / "analysis.json")], c2 / "analysis.json"),
    }


def _run(args, cwd, env=None, timeout=600):
    proc = subprocess.run([sys.executable, "-m", "dilt", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _start(args, cwd, env=None):
    return subprocess.Popen([sys.executable, "-m", "dilt", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    cfg = _config(tmp)
    ref = tmp / "ref"
    seconds = {}
    for kind, (args, _) in _jobs(cfg, ref).items():
        t = time.perf_counter()
        _run(args, tmp)
        seconds[kind] = time.perf_counter() - t
    return tmp, cfg, ref, seconds


def _files(path: Path) -> dict[str, Path]:
    """The job's own files (not those later jobs of the reference chain add to its directory:
    the retraining's results, the analysis's feature caches)."""
    if path.is_file():
        return {path.name: path}
    return {str(p.relative_to(path)): p for p in sorted(path.rglob("*"))
            if p.is_file() and not p.name.startswith((".", "features_"))
            and not str(p.relative_to(path)).startswith("retrain/")}


def _same(a: Path, b: Path) -> None:
    assert_same_files(_files(a), _files(b))


def _prepare(kind: str, cfg: Path, ref: Path, work: Path) -> None:
    """Copy the reference outputs of every job before ``kind`` into ``work``."""
    for k, (_, out) in _jobs(cfg, ref).items():
        if k == kind:
            return
        dst = work / out.relative_to(ref)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if out.is_dir():
            shutil.copytree(out, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(out, dst)


@pytest.mark.parametrize("kind", ["init", "dense", "lth", "dilt_p1", "colt", "tickets", "retrain",
                                  "transfer", "analyze"])
def test_random_sigkills_resume_bit_identical(reference, kind):
    tmp, cfg, ref, seconds = reference
    work = tmp / f"kill_{kind}"
    _prepare(kind, cfg, ref, work)
    args, out = _jobs(cfg, work)[kind]
    rng = random.Random(f"{kind}-kills")
    killed = 0
    for i in range(KILLS):
        # rapid kills first (start-up, first writes), then anywhere in the job's run time
        delay = rng.uniform(0.05, 1.0) if i < 3 else rng.uniform(0.3, 1.0) * seconds[kind]
        proc = _start(args, tmp)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
    _run(args, tmp)
    _same(_jobs(cfg, ref)[kind][1], out)
    assert killed >= 1


# kills inside a save: after the temporary file is written, before the rename
CRASH_POINTS = [("lth", "rewind"), ("lth", "ckpt_r0"), ("lth", "weights_r1"), ("lth", "round_r1"),
                ("lth", "mask_r2"), ("lth", "mask_s0.8"), ("lth", "masks.json"),
                ("dilt_p1", "rewind"), ("colt", "round_r1_p2"), ("tickets", "core_r1"),
                ("retrain", "records.json"), ("retrain", ".ckpt"), ("dense", "dense.safetensors")]


@pytest.mark.parametrize("kind,where", CRASH_POINTS)
def test_kill_during_a_save_resumes_bit_identical(reference, kind, where):
    tmp, cfg, ref, _ = reference
    work = tmp / f"save_{kind}_{where}"
    _prepare(kind, cfg, ref, work)
    args, out = _jobs(cfg, work)[kind]
    for n in (1, 2):  # two crashes in a row at the same kind of save
        proc = subprocess.run([sys.executable, "-m", "dilt", *args], cwd=tmp, capture_output=True,
                              env={**os.environ, "DILT_CRASH_AT": f"{where}:{n}"}, timeout=600)
        if proc.returncode == 0:  # the save happened fewer than n times: already complete
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-1000:]
    _run(args, tmp)
    assert not [p for p in (out if out.is_dir() else out.parent).rglob(".*.tmp")], "orphans left"
    _same(_jobs(cfg, ref)[kind][1], out)
