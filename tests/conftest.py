import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)


def tiny_config(**suite_overrides) -> dict:
    """A small valid config: one suite 'tiny' on digits with the MLP."""
    suite = {
        "models": {"mlp": {"prune_first": True}},
        "datasets": ["digits"],
        "partitions": [{"n": 2, "scheme": "contiguous"}],
        "sparsities": [0.5, 0.8],
        "methods": ["lth", "dilt", "colt"],
        "seeds": [0],
        "prune": {"rate": 0.5},
        "recipes": {"default": {"epochs": 2, "batch_size": 128, "lr": 0.05}},
        "analysis": {"sparsity": 0.5, "probe_size": 64, "permutations": 200},
        "transfer": {"sparsity": 0.8, "targets": ["digits_rot"]},
    }
    suite.update(suite_overrides)
    return {"suite": "tiny", "suites": {"tiny": suite}}


def init_and_dense(suite, model: str, tmp_path):
    """theta_0 and the trained dense model of seed 0 on digits (what CAP and SAViT start from)."""
    from dilt import jobs

    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(suite, model, "digits", 0, str(theta0))
    jobs.dense(suite, model, "digits", 0, str(theta0), str(tmp_path / "dense" / "records.json"))
    return theta0, next((tmp_path / "dense").glob("*.safetensors"))


@pytest.fixture
def tiny_suite(tmp_path):
    from dilt import config

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    return config.load(path)


def assert_same_files(fa: dict, fb: dict) -> None:
    """Two sets of files (relative name -> path) hold the same results: the same names, tensors
    and metadata (safetensors), JSON apart from wall-clock ``seconds``, arrays (npz), bytes."""
    import json

    import numpy as np
    from safetensors import safe_open
    from safetensors.torch import load_file

    assert sorted(fa) == sorted(fb), sorted(set(fa) ^ set(fb))
    for name in fa:
        x, y = fa[name], fb[name]
        if name.endswith(".safetensors"):
            tx, ty = load_file(str(x)), load_file(str(y))
            assert tx.keys() == ty.keys(), name
            assert all(torch.equal(tx[k], ty[k]) for k in tx), name
            with safe_open(str(x), "pt") as f, safe_open(str(y), "pt") as g:
                assert f.metadata() == g.metadata(), name
        elif name.endswith(".json"):
            jx, jy = json.loads(x.read_text()), json.loads(y.read_text())
            for j in (jx, jy):
                if isinstance(j, dict):
                    j.pop("seconds", None)
            assert jx == jy, name
        elif name.endswith(".npz"):
            with np.load(x) as zx, np.load(y) as zy:
                assert sorted(zx.files) == sorted(zy.files), name
                assert all(np.array_equal(zx[k], zy[k]) for k in zx.files), name
        else:
            assert x.read_bytes() == y.read_bytes(), name


def workflow_failure(proc, workdir) -> str:
    """What a failed Snakemake run in ``workdir`` said, with the error logs of its failed jobs
    (``logs/**/*.err``), which Snakemake itself does not print."""
    errs = [f"--- {p.relative_to(workdir)}\n{p.read_text(errors='replace')[-1500:]}"
            for p in sorted(Path(workdir).glob("logs/**/*.err")) if p.stat().st_size]
    return "\n".join([proc.stdout[-3000:] + proc.stderr[-3000:], *errs])


def planned_jobs(*args, cwd=None, timeout=600) -> dict[str, int]:
    """Jobs per rule that `snakemake -n ... --quiet rules` plans (``args``: targets and options)."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", *args, "--quiet", "rules"],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


def pytest_collection_modifyitems(config, items):
    """The end-to-end (``slow``) tests first: with test files spread over xdist workers, the
    longest start while the short ones can still fill in around them."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
