"""The job grid of the paper and small suites, counted from the config by hand (independently of
the rules and of dilt.workflow), against what `snakemake -n` plans."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, planned_jobs

ITERATIVE = {"lth", "colt"}
PER_MASK = {"snip", "grasp", "random_uniform", "random_erk", "rigl", "cap"}  # retrained, no control
OWN_ONLY = {"savit"}                                                          # not retrained
VIT = ("vit", "deit")


def expected(suite: dict) -> dict[str, int]:
    models, datasets, seeds = list(suite["models"]), suite["datasets"], suite["seeds"]
    parts = [p["n"] for p in suite["partitions"]]
    methods, T = suite["methods"], len(suite["sparsities"])
    randoms = 2 if suite.get("prune", {}).get("random_controls", True) else 1
    targets = suite.get("transfer", {}).get("targets", [])
    c = dict.fromkeys(["init", "dense", "find", "dilt_partition", "tickets", "analyze",
                       "retrain_one", "transfer_one"], 0)
    for m in models:
        vit = m.startswith(VIT)
        for d in datasets:
            for _ in seeds:
                c["init"] += 1
                c["dense"] += 1
                c["find"] += ("lth" in methods) + ("colt" in methods) * len(parts) \
                    + sum(1 for x in methods if x in PER_MASK) + sum(1 for x in methods if x in OWN_ONLY and vit)
                if "dilt" in methods:
                    c["dilt_partition"] += sum(parts)
                    c["tickets"] += len(parts)
                    c["analyze"] += len(parts)
                    c["retrain_one"] += sum((n + 2) * 2 * T * randoms for n in parts)
                c["retrain_one"] += ("lth" in methods) * T * randoms + ("colt" in methods) * len(parts) * T * randoms
                c["retrain_one"] += sum(T for x in methods if x in PER_MASK)
                for t in targets:
                    if t == d:
                        continue
                    c["transfer_one"] += 1 + ("lth" in methods) * randoms
                    c["transfer_one"] += len(parts) * ("colt" in methods) * randoms
                    # DiLT tickets transfer in the source-matched mode only
                    c["transfer_one"] += sum((n + 2) * randoms for n in parts) * ("dilt" in methods)
    c.update(resolved_config=1, results=1, tables=1, figures=1, paper=1, versions=1, all=1)
    return {k: v for k, v in c.items() if v}


def planned(suite_name: str) -> dict[str, int]:
    return planned_jobs("--config", f"suite={suite_name}", cwd=ROOT)


@pytest.mark.parametrize("name", ["paper", "small"])
def test_dry_run_plans_exactly_the_grid(name):
    suite = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())["suites"][name]
    assert suite.get("batch_trainings") is False  # one training per GPU job
    plan = planned(name)
    want = expected(suite)
    if "paper" not in plan:  # no TeX on this machine: the PDF is not planned
        want.pop("paper")
    assert plan == want
    assert "retrain" not in plan and "transfer" not in plan  # the batched rules are not used


def _dry_run_jobs(targets: list[str]) -> dict[str, tuple[dict, str]]:
    """output -> (resources, shell command) of each job `snakemake -n -p` plans for ``targets``
    of the paper suite."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", *targets,
                           "--config", "suite=paper"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs, lines = {}, proc.stdout.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("output:"):
            block = lines[i:i + 10]
            res = next(b for b in block if b.strip().startswith("resources:"))
            cmd = next(b for b in block if b.startswith("Shell command:"))
            jobs[line.split(":", 1)[1].strip()] = (
                dict(kv.split("=", 1) for kv in res.split(":", 1)[1].replace(" ", "").split(",")), cmd)
    return jobs


def test_a_ddp_job_asks_cpus_and_memory_per_gpu_and_starts_one_rank_per_gpu():
    """The paper suite's ResNet-50 on ImageNet trains on 4 GPUs (`ddp`): its dense and LTH jobs
    ask 4 times the suite's CPUs and memory (every rank runs its own data-loader workers) and
    start under torchrun with 4 ranks; on Stanford Cars (no `ddp` key) one GPU, one process.
    SNIP scores once on one GPU; a random mask is drawn without one."""
    suite = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())["suites"]["paper"]
    base = suite["resources"]["default"]
    n = suite["ddp"]["resnet50/imagenet"]
    assert n > 1
    run = "results/paper/resnet50/{}/seed0/full/{}"
    want = {run.format("imagenet", "dense/records.json"): n,
            run.format("stanford_cars", "dense/records.json"): 1,
            run.format("imagenet", "lth/masks.json"): n,
            run.format("imagenet", "snip/masks.json"): 1,
            run.format("imagenet", "random_erk/masks.json"): 0}
    jobs = _dry_run_jobs(list(want))
    for out, gpus in want.items():
        res, cmd = jobs[out]
        assert int(res["gpu"]) == gpus, out
        assert int(res["cpus_per_task"]) == max(gpus, 1) * base["cpus_per_task"], out
        assert int(res["mem_mb"]) == max(gpus, 1) * base["mem_mb"], out
        assert (f"--nproc_per_node={gpus}" in cmd) == (gpus > 1), cmd


def test_under_a_shared_rewind_point_imp_retrainings_wait_for_the_dense_run():
    """The small suite rewinds to the dense run's point (`rewind_start: dense`): an LTH mask's
    retraining plans the dense job before it; a SNIP mask's, which starts from theta_0, does not."""
    from dilt import workflow as W

    suite = yaml.safe_load((ROOT / "workflow_config.yaml").read_text())["suites"]["small"]
    assert suite["prune"]["rewind_start"] == "dense" and suite["prune"]["rewind_epoch"] > 0
    run = f"results/small/resnet18/cifar100/seed{suite['seeds'][0]}/full"
    for source, dense in (("lth", 1), ("snip", 0)):
        entry = W.entries(suite, source, "full")[0]
        plan = planned_jobs(f"{run}/{source}/retrain/{entry}.records.json", "--config", "suite=small", cwd=ROOT)
        assert plan.get("retrain_one") == 1 and plan.get("dense", 0) == dense, (source, plan)
