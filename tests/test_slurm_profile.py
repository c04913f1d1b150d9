"""The SLURM profiles: the cluster profile's keys, and (where a SLURM cluster answers) a toy
workflow submitted through the local test profile with sbatch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_PROFILE = ROOT / "slurm" / "config.yaml"
LOCAL_PROFILE = ROOT / "slurm" / "local"


def test_cluster_profile_keys():
    prof = yaml.safe_load(CLUSTER_PROFILE.read_text())
    assert prof["executor"] == "slurm"
    config = prof["config"]
    # either the mapping form {suite: paper} or the command-line form ["suite=paper"]
    if isinstance(config, dict):
        assert config["suite"] == "paper"
    else:
        assert "suite=paper" in config
    res = prof["default-resources"]
    for key in ("slurm_partition", "runtime", "mem_mb", "cpus_per_task", "gpu"):
        assert key in res, key
    assert isinstance(res["runtime"], int) and isinstance(res["mem_mb"], int)
    assert isinstance(res["cpus_per_task"], int) and res["gpu"] == 0
    assert int(prof["jobs"]) > 1
    assert int(prof["retries"]) >= 1
    assert int(prof["latency-wait"]) >= 5
    assert prof["rerun-incomplete"] is True


def test_local_profile_keys():
    prof = yaml.safe_load((LOCAL_PROFILE / "config.yaml").read_text())
    assert prof["executor"] == "slurm"
    assert prof["slurm-status-command"] == "squeue"  # no accounting on the test cluster
    assert prof["slurm-no-account"] is True
    assert "config" not in prof                      # the default suite
    assert prof["default-resources"]["gpu"] == 0      # no GPU GRES on the test cluster


def _cluster_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%a"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "up" in out.stdout


TOY = """
rule all:
    input: expand("out/{name}.txt", name=["a", "b"]), "out/c.txt"

rule one:
    output: "out/{name}.txt"
    resources: gpu=0, runtime=5, mem_mb=500, cpus_per_task=1
    shell: "echo $SLURM_JOB_ID > {output}"

rule c:
    input: "out/a.txt", "out/b.txt"
    output: "out/c.txt"
    resources: gpu=0, runtime=5, mem_mb=500, cpus_per_task=1
    shell: "cat {input} > {output}"
"""


@pytest.mark.slow
@pytest.mark.skipif(not _cluster_answers(), reason="no SLURM cluster answers sinfo "
                    "(start one with slurm/local/start_cluster.sh)")
def test_toy_workflow_through_local_slurm(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent(TOY))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(LOCAL_PROFILE), "--cores", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = []
    for name in ("a", "b"):
        text = (tmp_path / "out" / f"{name}.txt").read_text().split()
        assert text and text[0].isdigit(), f"{name}.txt did not run inside a SLURM job"
        ids.append(text[0])
    assert (tmp_path / "out" / "c.txt").read_text().split() == ids
    assert "submitted with SLURM jobid" in proc.stdout + proc.stderr
