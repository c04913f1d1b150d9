"""Job start-up: fresh ``python -m dilt`` processes against jobs forked by the fork server.

Runs the same short job (``init``: build a model, write theta_0) ``--runs`` times each way,
interleaved (fresh, forked, fresh, ...) so a load change on a shared machine hits both alike,
and prints the median wall seconds per job and their ratio. The smoke suite has about 300 jobs,
so the difference times 300 is what the fork server saves a local run.

    python bench/bench_startup.py [--runs 10] [--model vit_tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dilt import forkserver  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--model", default="vit_tiny")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = forkserver.start(ROOT, Path(tmp) / "server.log")
        if path is None:
            sys.exit("the fork server did not start")
        fresh_env = {k: v for k, v in os.environ.items() if k != forkserver.ENV}
        warm_env = {**fresh_env, forkserver.ENV: path}
        times = {"fresh": [], "forked": []}
        try:
            for i in range(args.runs):
                for name, env in (("fresh", fresh_env), ("forked", warm_env)):
                    out = Path(tmp) / f"{name}{i}" / "theta0.safetensors"
                    cmd = [sys.executable, "-m", "dilt", "init", "--suite", "smoke", "--model",
                           args.model, "--dataset", "digits", "--seed", "0", "--out", str(out),
                           "--threads", "1"]
                    t = time.perf_counter()
                    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
                    times[name].append(time.perf_counter() - t)
        finally:
            forkserver.stop(path)
    fresh, forked = (statistics.median(times[k]) for k in ("fresh", "forked"))
    print(f"init job ({args.model}), median of {args.runs} runs each, interleaved:")
    print(f"  fresh process  {fresh:6.3f} s   (min {min(times['fresh']):.3f}, max {max(times['fresh']):.3f})")
    print(f"  forked         {forked:6.3f} s   (min {min(times['forked']):.3f}, max {max(times['forked']):.3f})")
    print(f"  ratio fresh / forked: {fresh / forked:.1f}x; saved per job: {fresh - forked:.2f} s")


if __name__ == "__main__":
    main()
