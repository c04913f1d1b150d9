# Shared definitions: the resolved config every job reads, paths, resources.
import json
import os

import yaml

RESOLVED = f"{R}/config.resolved.yaml"


def _write_resolved():
    """Write the validated config for the jobs; rewrite only when it changed (keeps mtimes)."""
    text = yaml.safe_dump(CFG, sort_keys=False)
    if os.path.exists(RESOLVED) and open(RESOLVED).read() == text:
        return
    os.makedirs(os.path.dirname(RESOLVED), exist_ok=True)
    tmp = RESOLVED + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, RESOLVED)


_write_resolved()

PY = sys.executable
DILT = f"{PY} -m dilt"
ARGS = f"--config {RESOLVED} --suite {SUITE}"
RUN = R + "/{model}/{dataset}/seed{seed}"

wildcard_constraints:
    model="[A-Za-z0-9_]+",
    dataset="[A-Za-z0-9_]+",
    target="[A-Za-z0-9_]+",
    seed=r"\d+",
    k=r"\d+",
    tag="full|[a-z]+[0-9]+",


def res(stage):
    """Resources of a stage from the suite (`gpu`, `runtime` minutes, `mem_mb`, `cpus_per_task`)."""
    r = {"gpu": 0, "runtime": 30, "mem_mb": 4000, "cpus_per_task": 1}
    r.update(S.get("resources", {}).get("default", {}))
    r.update(S.get("resources", {}).get(stage, {}))
    return r


def grid(pattern, **extra):
    """``pattern`` expanded over the suite's models, datasets and seeds (and ``extra``)."""
    return expand(pattern, model=list(S["models"]), dataset=S["datasets"], seed=S["seeds"], **extra)
