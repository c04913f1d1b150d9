"""One CAP pruning step (``dilt.prune.cap.cap_prune``): this checkout against a git revision.

Loads ``dilt/prune/cap.py`` of ``--ref`` as a separate module, computes one empirical Fisher on
a model, and runs both versions' ``cap_prune`` to 50% sparsity in turns (ref, current, ref, ...)
on the same weights, one thread. Prints the median seconds of each, their ratio, and whether the
masks, the OBS-updated weights and the loss estimates are bit-identical.

    python bench/bench_cap_prune.py --ref d3639ed [--model resnet18] [--block 8] [--runs 3]

Models: ``resnet18`` (CIFAR stem, 3 classes at 32 px: the paper-shaped test's CAP job) or
``vit_tiny`` (digits, the smoke suite's).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dilt.masks import Mask  # noqa: E402
from dilt.models import build_model, prunable_names  # noqa: E402
from dilt.prune import cap as current  # noqa: E402

MODELS = {"resnet18": ((3, 32, 32), 3, {"cifar_stem": True}), "vit_tiny": ((1, 8, 8), 10, {})}


def load_ref(rev: str):
    src = subprocess.run(["git", "show", f"{rev}:dilt/prune/cap.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "cap_ref.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("cap_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True, help="git revision to compare against")
    ap.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    ap.add_argument("--block", type=int, default=8, help="fisher_block")
    ap.add_argument("--grads", type=int, default=4, help="gradients in the Fisher")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ref = load_ref(args.ref)
    shape, classes, opts = MODELS[args.model]
    torch.manual_seed(0)
    model = build_model(args.model, classes, shape, **opts)
    names = prunable_names(model)
    batches = [(torch.randn(1, *shape), torch.tensor([i % classes])) for i in range(args.grads)]
    fisher = current.empirical_fisher(model, names, batches, args.block, None, dtype=torch.float64)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    times = {"ref": [], "current": []}
    out = {}
    for _ in range(args.runs):
        for label, mod in (("ref", ref), ("current", current)):
            model.load_state_dict(start)
            t = time.perf_counter()
            mask, estimate = mod.cap_prune(model, Mask.ones(model, names), fisher, 0.5, 1e-8)
            times[label].append(time.perf_counter() - t)
            out[label] = (mask, estimate, {k: v.clone() for k, v in model.state_dict().items()})
    (m0, e0, w0), (m1, e1, w1) = out["ref"], out["current"]
    same = (all(torch.equal(m0[n], m1[n]) for n in m0) and e0 == e1
            and all(torch.equal(w0[k], w1[k]) for k in w0))
    r, c = statistics.median(times["ref"]), statistics.median(times["current"])
    weights = sum(model.get_parameter(n).numel() for n in names)
    print(f"cap_prune to 50%, {args.model} ({weights:,} prunable weights), fisher_block "
          f"{args.block}, median of {args.runs} runs each, 1 thread:")
    print(f"  {args.ref:>10s}  {r:8.2f} s   (min {min(times['ref']):.2f})")
    print(f"  {'current':>10s}  {c:8.2f} s   (min {min(times['current']):.2f})")
    print(f"  ratio ref / current: {r / c:.2f}x; masks, weights and estimates bit-identical: {same}")


if __name__ == "__main__":
    main()
