"""How a local run's time splits: CPU seconds per stage and model, from the fork server's log.

Every job of a local ``snakemake`` run is one line of ``logs/<suite>/forkserver.log`` (its
arguments, wall seconds and CPU seconds). This sums them by stage (init, dense, find, retrain,
transfer, analyze, ...) and model, and compares the total with the run's wall time when given.

    python bench/time_split.py logs/smoke/forkserver.log [--wall SECONDS] [--cores 2]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def _arg(argv: list[str], flag: str, default: str = "-") -> str:
    return argv[argv.index(flag) + 1] if flag in argv[:-1] else default


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--wall", type=float, help="the run's wall seconds (from `time snakemake ...`)")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    cpu, wall, jobs = defaultdict(float), defaultdict(float), defaultdict(int)
    failed = 0
    with open(args.log) as f:
        for line in f:
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            argv = r["job"]
            stage = argv[0] if argv else "?"
            key = (stage, _arg(argv, "--model"))
            cpu[key] += r.get("cpu_seconds", r["seconds"])
            wall[key] += r["seconds"]
            jobs[key] += 1
            failed += r["returncode"] != 0
    total = sum(cpu.values())
    print(f"{'stage':10s} {'model':10s} {'jobs':>5s} {'CPU s':>8s} {'share':>6s} {'wall s':>8s}")
    for key in sorted(cpu, key=lambda k: -cpu[k]):
        print(f"{key[0]:10s} {key[1]:10s} {jobs[key]:5d} {cpu[key]:8.0f} {cpu[key] / total:6.1%} "
              f"{wall[key]:8.0f}")
    by_stage, by_model = defaultdict(float), defaultdict(float)
    for (stage, model), v in cpu.items():
        by_stage[stage] += v
        by_model[model] += v
    print("by stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(by_stage.items(), key=lambda x: -x[1])))
    print("by model: " + ", ".join(f"{k} {v:.0f} s" for k, v in sorted(by_model.items(), key=lambda x: -x[1])))
    print(f"jobs {sum(jobs.values())} ({failed} failed), CPU {total:.0f} s = {total / args.cores / 60:.1f} min "
          f"on {args.cores} cores if perfectly parallel")
    if args.wall:
        print(f"wall {args.wall:.0f} s = {args.wall / 60:.1f} min; jobs' CPU covers "
              f"{total / (args.wall * args.cores):.0%} of {args.cores} cores x wall (the rest: "
              "Snakemake, the report steps outside the server, idle cores)")


if __name__ == "__main__":
    main()
