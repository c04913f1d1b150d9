"""Pre-emption on SLURM: a slice of dilt's own workflow (theta_0, one LTH mask run, its retraining)
runs through the local test profile (slurm/local/) on the loopback cluster. The test cancels the
LTH job and then the retrain job mid-training, each after its first epoch checkpoint exists (what
a pre-emption or a node loss does to a job); Snakemake resubmits each (the profile's `retries`),
the resubmitted job resumes from the epoch checkpoint, and everything ends bit-identical to a
local run of the same jobs: masks, weights, records, and every epoch's logged metrics.

Skipped when no SLURM cluster answers `sinfo` (start one with slurm/local/start_cluster.sh; CI
does). About 1.5-2.5 minutes on 2 cores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, assert_same_files, tiny_config

pytestmark = pytest.mark.slow

LOCAL_PROFILE = ROOT / "slurm" / "local"
EPOCHS = 25          # per training: ~1-2.5 s on one CPU, long enough to cancel a job mid-way
RUN = "results/tiny/mlp/digits/seed0"
TARGETS = [f"{RUN}/theta0.safetensors", f"{RUN}/full/lth/retrain/records.json"]
LOGS = "logs/tiny/mlp/digits/seed0/full"


def _cluster_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "up" in out.stdout


def _workdir(path: Path) -> Path:
    raw = tiny_config(methods=["lth"], sparsities=[0.5],
                      analysis={"sparsity": 0.5, "probe_size": 64, "permutations": 200},
                      transfer={"enabled": False, "sparsity": 0.5, "targets": ["digits_rot"]},
                      recipes={"default": {"epochs": EPOCHS, "batch_size": 16, "lr": 0.05}},
                      resources={"default": {"gpu": 0, "runtime": 10, "mem_mb": 500, "cpus_per_task": 1}})
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(raw))
    return path


def _snakemake(wd: Path, *args: str, out) -> subprocess.Popen:
    # targets first: --configfile takes several values
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [sys.executable, "-m", "snakemake", *TARGETS, *args, "-s", str(ROOT / "Snakefile"),
           "--directory", str(wd), "--configfile", str(wd / "config.yaml")]
    return subprocess.Popen(cmd, cwd=wd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def _squeue(wd: Path) -> dict[str, tuple[str, str]] | None:
    """{SLURM job id: (state, comment)} of this test's jobs (those whose working directory is
    wd); None when squeue does not answer (a busy slurmctld)."""
    proc = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i|%T|%k|%Z"], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        return None
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.count("|") == 3]
    return {i: (s, c) for i, s, c, z in rows if Path(z) == wd}


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def _cancel_mid_training(wd: Path, rule: str, ckpt_dir: Path, pattern: str, log: Path,
                         proc: subprocess.Popen, out: Path, timeout: float = 180) -> dict:
    """Wait until ``rule``'s SLURM job runs and has written an epoch checkpoint, scancel it, wait
    until SLURM reports it CANCELLED (its processes are gone), and return what was on disk then:
    the epoch of each checkpoint and the rows the job had logged."""
    deadline = time.monotonic() + timeout
    jid = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended (rc {proc.returncode}) before {rule} was cancelled:\n{_tail(out)}")
        if list(ckpt_dir.glob(pattern)):
            running = [i for i, (s, c) in (_squeue(wd) or {}).items()
                       if s == "RUNNING" and c.startswith(f"rule_{rule}_")]
            if running:
                jid = running[0]
                subprocess.run(["scancel", jid], check=True, timeout=30)
                break
        time.sleep(0.05)
    else:
        pytest.fail(f"no running {rule} job with a checkpoint in {timeout:.0f} s:\n{_tail(out)}")
    while time.monotonic() < deadline:
        jobs = _squeue(wd)
        if jobs is not None and jobs.get(jid, ("?",))[0] == "CANCELLED":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"SLURM job {jid} ({rule}) did not reach CANCELLED")
    from dilt.io import load_checked

    # read at once: Snakemake empties the job's log when it starts it again (>= 5 s from now)
    return {"jid": jid, "rule": rule, "rows": _rows(log),
            "ckpts": {p.name: int(load_checked(p)["epoch"]) for p in sorted(ckpt_dir.glob(pattern))}}


def _rows(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _files(path: Path) -> dict[str, Path]:
    return {str(p.relative_to(path)): p for p in sorted(path.rglob("*")) if p.is_file()}


def _same_tree(a: Path, b: Path) -> None:
    """Every file of ``a`` and ``b`` holds the same results (see conftest.assert_same_files)."""
    assert_same_files(_files(a), _files(b))


def _check_resumed(cut: dict, log: Path, ref_log: Path) -> None:
    """The resubmitted job started where the cancelled one's checkpoint left off, redid nothing
    that was checkpointed or committed, and logged the same metrics as the uninterrupted run.
    (The final log holds the resubmitted job's rows only: Snakemake empties a job's log files
    when it starts the job.)"""
    killed, resumed, ref = cut["rows"], _rows(log), _rows(ref_log)
    assert len(cut["ckpts"]) == 1, f"{cut['rule']}: expected one epoch checkpoint at the cancel: {cut['ckpts']}"
    (name, epoch), = cut["ckpts"].items()
    assert epoch + 1 < EPOCHS, f"{cut['rule']}: cancelled after the last epoch; nothing left to resume"
    assert killed and resumed, cut
    run = [r["run"] for r in killed if r["epoch"] == epoch][-1]   # the training being checkpointed
    # the resubmitted job went on at the epoch after the checkpoint (not from epoch 0) ...
    assert (resumed[0]["run"], resumed[0]["epoch"]) == (run, epoch + 1), (name, epoch, resumed[0])
    # ... and redid no training that had finished, nor a checkpointed epoch
    finished = {r["run"] for r in killed} - {run}
    for r in resumed:
        assert r["run"] not in finished, f"a finished training was redone after the cancel: {r}"
        assert not (r["run"] == run and r["epoch"] <= epoch), f"a checkpointed epoch was redone: {r}"
    # every epoch of every training ran, with the metrics of the uninterrupted local run
    want = {(r["run"], r["epoch"]): (r["train_loss"], r["val_top1"]) for r in ref}
    for r in killed + resumed:
        assert want[(r["run"], r["epoch"])] == (r["train_loss"], r["val_top1"]), r
    assert {(r["run"], r["epoch"]) for r in killed + resumed} == set(want)


@pytest.mark.skipif(not _cluster_answers(), reason="no SLURM cluster answers sinfo "
                    "(start one with slurm/local/start_cluster.sh)")
def test_cancelled_jobs_are_resubmitted_and_resume_bit_identical(tmp_path):
    prof = yaml.safe_load((LOCAL_PROFILE / "config.yaml").read_text())
    assert int(prof["retries"]) >= 1 and prof["rerun-incomplete"] is True

    ref, wd = _workdir(tmp_path / "local"), _workdir(tmp_path / "slurm")
    ref_out, out = tmp_path / "local.out", tmp_path / "slurm.out"
    with open(ref_out, "w") as fr, open(out, "w") as fs:
        local = _snakemake(ref, "--cores", "1", out=fr)          # the reference, meanwhile
        proc = _snakemake(wd, "--profile", str(LOCAL_PROFILE), "--cores", "2", out=fs)
        try:
            lth = wd / RUN / "full" / "lth"
            cuts = [_cancel_mid_training(wd, "find", lth, "ckpt_r*.pt", wd / LOGS / "lth.jsonl", proc, out),
                    _cancel_mid_training(wd, "retrain", lth / "retrain", "**/*.ckpt",
                                         wd / LOGS / "retrain_lth.jsonl", proc, out)]
            rc = proc.wait(timeout=240)
            rc_local = local.wait(timeout=240)
        finally:
            for p in (proc, local):
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=60)
            for i, (s, _) in (_squeue(wd) or {}).items():
                if s in ("PENDING", "RUNNING"):
                    subprocess.run(["scancel", i], timeout=30)
    text = out.read_text()
    assert rc_local == 0, _tail(ref_out)
    assert rc == 0, text[-4000:]

    # SLURM ran every job; the two cancelled ones failed and were submitted again
    for cut in cuts:
        assert f"SLURM-job '{cut['jid']}' failed" in text and "CANCELLED" in text, text[-4000:]
    submitted = text.count("submitted with SLURM jobid")
    assert submitted == 5, f"{submitted} submissions (init, find twice, retrain twice)"

    _check_resumed(cuts[0], wd / LOGS / "lth.jsonl", ref / LOGS / "lth.jsonl")
    _check_resumed(cuts[1], wd / LOGS / "retrain_lth.jsonl", ref / LOGS / "retrain_lth.jsonl")

    # no checkpoint or temporary file left; outputs bit-identical to the local run
    left = [p for p in (wd / "results").rglob("*") if p.suffix in (".ckpt", ".pt", ".tmp")]
    assert not left, left
    _same_tree(ref / "results", wd / "results")
