# Shared definitions: the resolved config every job reads, paths, resources, provenance.
import yaml

RESOLVED = f"{R}/config.resolved.yaml"
PY = sys.executable
DILT = f"{PY} -m dilt"
RUN = R + "/{model}/{dataset}/seed{seed}"
METHODS = "|".join(method_names())

wildcard_constraints:
    model="[A-Za-z0-9_]+",
    dataset="[A-Za-z0-9_]+",
    target="[A-Za-z0-9_]+",
    seed=r"\d+",
    k=r"\d+",
    tag="full|[a-z]+[0-9]+",


rule resolved_config:
    """The validated config the jobs read, written by a job (never at parse time). Jobs take it
    as an `ancient` input: a config edit reruns only the jobs whose provenance changed."""
    output: RESOLVED
    params: digest=PROV.digest(CFG)
    log: LOGS + "/resolved_config.log"
    run:
        from dilt.io import write_text
        write_text(output[0], yaml.safe_dump(CFG, sort_keys=False))


ARGS = f"--config {RESOLVED} --suite {SUITE}"
CONF = ancient(RESOLVED)


def res(stage):
    """Resources of a stage from the suite (`gpu`, `runtime` minutes, `mem_mb`, `cpus_per_task`)."""
    r = {"gpu": 0, "runtime": 30, "mem_mb": 4000, "cpus_per_task": 1}
    r.update(S.get("resources", {}).get("default", {}))
    r.update(S.get("resources", {}).get(stage, {}))
    return r


def grid(pattern, **extra):
    """``pattern`` expanded over the suite's models, datasets and seeds (and ``extra``)."""
    return expand(pattern, model=list(S["models"]), dataset=S["datasets"], seed=S["seeds"], **extra)


def prov(fn):
    """A rule param: the provenance hash of the job's settings (edits rerun exactly the jobs
    whose settings changed)."""
    return lambda wc: PROV.digest(fn(wc))
