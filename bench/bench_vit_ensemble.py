"""Headroom of training K tiny-ViT masks at once (``torch.func.vmap``) against one at a time.

A smoke retrain job trains its masks one after another, and a tiny-ViT step on a CPU is mostly
per-kernel overhead (4 tokens of 64 dimensions; see ``bench_vit_step.py``). This bench asks how
much of that overhead K trainings would share if their parameters were stacked and one vmapped
forward/backward and one fused AdamW step served all K, each member with its own mask:

* ``one at a time``: K models, each with its own fused AdamW, stepped in turn (today's path);
* ``vmap, shared batch``: the K members see the same batch (trainings that share a seed's data
  order, as a retrain job's masks do);
* ``vmap, own batches``: each member sees its own batch (trainings with different data orders).

Each variant runs in turns (``--steps`` steps, ``--reps`` rounds, one thread) so a load change on
a shared machine hits all alike; prints the median ms per member-step and the ratio to one at a
time, pair by pair. It also prints the largest difference between the first member's weights
after the same steps one at a time and vmapped: vmap's batched kernels sum in another order, so
the two paths agree to rounding, not bit for bit. This is a measurement, not a training path:
``dilt.train`` does not batch trainings.
``python bench/bench_vit_ensemble.py [--k 8] [--reps 8] [--steps 10] [--batch 64]``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state, vmap

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dilt.models import build_model, weight_layers  # noqa: E402


def masks_for(net: torch.nn.Module, k: int, density: float) -> list[dict[str, torch.Tensor]]:
    """K random masks at ``density`` on the weight layers' weights (the head stays dense)."""
    layers = weight_layers(net)[:-1]
    g = torch.Generator().manual_seed(1)
    return [{f"{n}.weight": (torch.rand(net.get_submodule(n).weight.shape, generator=g) < density).float()
             for n in layers} for _ in range(k)]


class OneAtATime:
    def __init__(self, base, masks):
        self.nets = [copy.deepcopy(base) for _ in masks]
        self.masks = masks
        self.opts = [torch.optim.AdamW(n.parameters(), lr=1e-3, weight_decay=0.05, fused=True) for n in self.nets]
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self):
        for net, mask in zip(self.nets, self.masks):
            params = dict(net.named_parameters())
            for name, m in mask.items():
                params[name].mul_(m)

    def step(self, xs, y):
        for i, (net, opt) in enumerate(zip(self.nets, self.opts)):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(xs[i]), y).backward()
            opt.step()
        self.apply_masks()


class Vmapped:
    def __init__(self, base, masks, shared_batch: bool):
        params, self.buffers = stack_module_state([copy.deepcopy(base) for _ in masks])
        self.params = {k: v.detach().requires_grad_() for k, v in params.items()}
        self.masks = {name: torch.stack([m[name] for m in masks]) for name in masks[0]}
        self.opt = torch.optim.AdamW(self.params.values(), lr=1e-3, weight_decay=0.05, fused=True)
        self.base = copy.deepcopy(base).to("meta")
        for m in self.base.modules():  # PyTorch's CPU flash attention has no vmap batching rule:
            if hasattr(m, "fused_attn"):  # it would fall back to a loop over the members
                m.fused_attn = False
        self.shared = shared_batch
        self.apply_masks()

        def loss(p, b, x, y):
            return torch.nn.functional.cross_entropy(functional_call(self.base, (p, b), (x,)), y)

        self.losses = vmap(loss, in_dims=(0, 0, None if shared_batch else 0, None))

    @torch.no_grad()
    def apply_masks(self):
        for name, m in self.masks.items():
            self.params[name].mul_(m)

    def step(self, xs, y):
        self.opt.zero_grad(set_to_none=True)
        x = xs[0] if self.shared else xs
        self.losses(self.params, self.buffers, x, y).sum().backward()
        self.opt.step()
        self.apply_masks()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--density", type=float, default=0.1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = build_model("vit_tiny", 10, (1, 8, 8))
    masks = masks_for(base, args.k, args.density)
    g = torch.Generator().manual_seed(2)
    xs = torch.randn(args.k, args.batch, 1, 8, 8, generator=g)
    shared = xs[:1].expand_as(xs).contiguous()
    y = torch.randint(0, 10, (args.batch,), generator=g)

    # agreement: member 0 after 5 steps on the shared batch, one at a time vs vmapped
    ref, vm = OneAtATime(base, masks), Vmapped(base, masks, shared_batch=True)
    for _ in range(5):
        ref.step(shared, y)
        vm.step(shared, y)
    diff = max((p - vm.params[n][0]).abs().max().item() for n, p in ref.nets[0].named_parameters())
    print(f"member 0 after 5 steps: largest |one at a time - vmapped| weight difference {diff:.2e}")

    variants = {"one at a time": (OneAtATime(base, masks), shared),
                "vmap, shared batch": (Vmapped(base, masks, True), shared),
                "vmap, own batches": (Vmapped(base, masks, False), xs)}
    for v, batch in variants.values():  # warm-up
        v.step(batch, y)
    ms = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, (v, batch) in variants.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                v.step(batch, y)
            ms[name].append((time.perf_counter() - t) / args.steps / args.k * 1e3)
    print(f"tiny ViT, K={args.k} members, batch {args.batch}, 1 thread, median of {args.reps} rounds "
          f"of {args.steps} steps, ms per member-step:")
    for name, v in ms.items():
        ratio = statistics.median(a / b for a, b in zip(ms["one at a time"], v))
        print(f"  {name:20s} {statistics.median(v):7.2f} ms   x{ratio:.2f} faster than one at a time (pairwise median)")


if __name__ == "__main__":
    main()
