"""One training step of the smoke suite's tiny ViT, three ways side by side in one process.

* ``eager``: as ``dilt.train`` runs it (timm's fused attention, PyTorch's SDPA kernel);
* ``plain attention``: timm's unfused attention (q k^T, softmax, times v) for the 4-token
  sequences of 8x8 digits;
* ``torch.compile``: the eager model compiled (inductor), after its compilation.

Each variant keeps its own model and fused AdamW; they run in turns (20 steps each, ``--reps``
rounds) on one random batch of the smoke recipe's size, one thread, so a load change on a
shared machine hits all alike. Prints the median ms per step and each variant's ratio to eager,
pair by pair. ``python bench/bench_vit_step.py [--reps 12] [--batch 64] [--no-compile]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dilt.models import build_model  # noqa: E402


def variant(fused_attn: bool, compiled: bool):
    torch.manual_seed(0)
    net = build_model("vit_tiny", 10, (1, 8, 8))
    for m in net.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused_attn
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    return (torch.compile(net) if compiled else net), opt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    x, y = torch.randn(args.batch, 1, 8, 8), torch.randint(0, 10, (args.batch,))
    variants = {"eager": variant(True, False), "plain attention": variant(False, False)}
    if not args.no_compile:
        variants["torch.compile"] = variant(True, True)

    def steps(net, opt, n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

    for name, (net, opt) in variants.items():  # warm-up (and compilation)
        t = time.perf_counter()
        steps(net, opt, 3)
        print(f"{name}: first 3 steps {time.perf_counter() - t:.1f} s")
    ms = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, (net, opt) in variants.items():
            t = time.perf_counter()
            steps(net, opt, args.steps)
            ms[name].append((time.perf_counter() - t) / args.steps * 1e3)
    print(f"tiny ViT, batch {args.batch}, 1 thread, median of {args.reps} rounds of {args.steps} steps:")
    for name, v in ms.items():
        ratio = statistics.median(b / a for a, b in zip(ms["eager"], v))
        print(f"  {name:16s} {statistics.median(v):7.2f} ms/step   x{ratio:.2f} of eager (pairwise median)")


if __name__ == "__main__":
    main()
