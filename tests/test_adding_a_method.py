"""Adding a method touches only its module, its test, the schema's enum and the config.

In a copy of the repository (its tracked files, committed), follow the README's "Adding a
method" steps for a new method (one-shot global magnitude pruning of theta_0): write
``dilt/methods/magnitude_init.py``, add the name to the schema's enum, list it in a suite,
write its test. Then the CLI runs it, the workflow plans its find and retrain jobs, the report
knows its display name, and ``git status`` shows no other file changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

METHOD = '''\
"""Global magnitude pruning of theta_0, one shot (the classic pruning-at-initialisation control)."""

from __future__ import annotations

from dilt.masks import Mask
from dilt.methods import Method, register_method
from dilt.prune.pai import mask_from_scores


def find(job) -> None:
    model = job.theta0_model()
    params = dict(model.named_parameters())
    scores = {n: params[n].detach().abs() for n in job.prunable}
    like = Mask.ones(model, job.prunable)
    for t in job.targets:
        job.write_mask(mask_from_scores(scores, like, t, keep="largest"), t, epochs=0)
    job.finish()


register_method(Method(name="magnitude_init", kind="one-shot", display="Magnitude@init",
                       find=find, needs=("theta0",), cite="Frankle et al. 2021, ICLR"))
'''


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


def test_a_new_method_needs_only_its_module_test_schema_and_config(tmp_path):
    repo = tmp_path / "repo"
    for rel in _git(ROOT, "ls-files", "-z").split("\0"):
        if rel and (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")

    # the README's three steps
    (repo / "dilt/methods/magnitude_init.py").write_text(METHOD)
    schema = repo / "schemas/config.schema.yaml"
    text = schema.read_text()
    enum = "items: {enum: [lth, dilt, colt,"
    assert enum in text
    schema.write_text(text.replace(enum, "items: {enum: [magnitude_init, lth, dilt, colt,", 1))
    cfg = yaml.safe_load((repo / "workflow_config.yaml").read_text())
    cfg["suites"]["tiny"] = tiny_config(methods=["lth", "magnitude_init"])["suites"]["tiny"]
    (repo / "workflow_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (repo / "tests/test_magnitude_init.py").write_text(textwrap.dedent("""\
        def test_placeholder_for_its_defining_property():
            pass
    """))

    env = {k: v for k, v in os.environ.items() if k not in ("DILT_FORKSERVER", "DILT_CONFIG")}
    # the workflow plans its jobs, and the report knows its name
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config",
                          "suite=tiny", "--quiet", "rules"], cwd=repo, env=env,
                         capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-2000:]
    planned = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config",
                              "suite=tiny"], cwd=repo, env=env, capture_output=True, text=True)
    assert "full/magnitude_init/masks.json" in planned.stdout  # its find job
    assert "full/magnitude_init/retrain/records.json" in planned.stdout  # and its retraining
    names = subprocess.run([sys.executable, "-c", "from dilt.report.tables import display_name; "
                            "print(display_name('magnitude_init'))"], cwd=repo, env=env,
                           capture_output=True, text=True)
    assert names.stdout.strip() == "Magnitude@init", names.stderr[-1000:]

    # the CLI runs it: exact sparsities, read back through the registry's manifest
    py = [sys.executable, "-m", "dilt"]
    common = ["--suite", "tiny", "--model", "mlp", "--dataset", "digits", "--seed", "0"]
    run = repo / "results/tiny/mlp/digits/seed0"
    subprocess.run(py + ["init", *common, "--out", str(run / "theta0.safetensors")], cwd=repo,
                   env=env, check=True, capture_output=True)
    out = run / "full/magnitude_init"
    find = subprocess.run(py + ["find", "--method", "magnitude_init", "--partition", "full",
                                *common, "--theta0", str(run / "theta0.safetensors"),
                                "--out-dir", str(out)],
                          cwd=repo, env=env, capture_output=True, text=True)
    assert find.returncode == 0, find.stderr[-2000:]
    manifest = json.loads((out / "masks.json").read_text())
    assert manifest["method"] == "magnitude_init"
    got = sorted(round(e["actual_sparsity"], 3) for e in manifest["masks"])
    assert got == [0.5, 0.8]

    changed = sorted(line[3:] for line in _git(repo, "status", "--porcelain", "-uall").splitlines()
                     if not line[3:].startswith(("results/", "logs/", ".snakemake/")))
    assert changed == ["dilt/methods/magnitude_init.py", "schemas/config.schema.yaml",
                       "tests/test_magnitude_init.py", "workflow_config.yaml"]
