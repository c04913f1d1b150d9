"""Training throughput: the GPU path of ``dilt.train`` against eager fp32 with a fresh DataLoader.

Side by side in one process, on synthetic image files read like ``FileImages`` (PNG decode,
RandomResizedCrop + flip, normalisation, ``--workers`` loader processes), with a 50 %-sparse
fixed mask re-applied after every step and one evaluation pass per epoch, as in ``train``:

* ``baseline``: eager fp32, a new DataLoader for every epoch and every evaluation (the loop
  before issue 9);
* ``persistent``: one loader per training, workers kept, pinned memory on CUDA;
* ``+channels_last``: also channels_last weights and inputs (on a CUDA CNN ``auto`` turns it on);
* ``gpu path``: also ``torch.compile`` and bf16 autocast where the device has it (``amp: auto``).

Each variant keeps its own model, optimizer and loader; their epochs are interleaved
(variant A epoch 1, B epoch 1, ..., A epoch 2, ...) so a load change on a shared machine hits all
alike. Images/s counts training images over the wall time of the epoch's training and
evaluation; the first epoch (worker start-up, compilation) is reported apart from the median and
the best of the later ones (the best is the least disturbed by other jobs on a shared machine).
Usage: ``python bench/bench_train.py [--model resnet18] [--images 512]``.
"""

from __future__ import annotations

import argparse
import json
import platform as pyplatform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dilt.data.loader import Loader, batches  # noqa: E402
from dilt.masks import Mask  # noqa: E402
from dilt.models import build_model, prunable_names  # noqa: E402
from dilt.train import FixedMask, Recipe, build  # noqa: E402


def image_files(root: Path, n: int, size: int, classes: int):
    """``n`` random PNG images of ``size + size // 4`` px in a FileImages with the training
    transform (RandomResizedCrop to ``size``, flip, normalise)."""
    from PIL import Image
    from torchvision import transforms as tv

    from dilt.data.imagefolders import IMAGENET_MEAN, IMAGENET_STD, FileImages

    rng = np.random.default_rng(0)
    side = size + size // 4
    paths = []
    for i in range(n):
        p = root / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    aug = tv.Compose([tv.RandomResizedCrop(size), tv.RandomHorizontalFlip(), tv.ToTensor(),
                      tv.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return FileImages(paths, rng.integers(0, classes, n), aug)


class Variant:
    """One training set-up: its model, the components ``train`` builds, its loaders."""

    def __init__(self, name: str, args, ds, recipe: Recipe, persistent: bool):
        self.name, self.args, self.ds, self.persistent = name, args, ds, persistent
        torch.manual_seed(0)
        net = build_model(args.model, args.classes, (3, args.size, args.size))
        self.c = build(net, recipe)
        names = prunable_names(net)
        mask = Mask({n: torch.rand(dict(net.named_parameters())[n].shape) < 0.5 for n in names})
        self.sparse = FixedMask(mask)
        self.sparse.setup(net, self.c.optimizer, 0)
        self.sparse.after_step(-1)
        n = len(ds)
        self.train_idx, self.val_idx = np.arange(n - n // 4), np.arange(n - n // 4, n)
        pin = self.c.device.type == "cuda"
        if persistent:
            self.train = Loader(ds, self.train_idx, args.batch, num_workers=args.workers, pin_memory=pin)
            self.val = Loader(ds, self.val_idx, args.batch, num_workers=args.workers, pin_memory=pin)
        self.seconds: list[float] = []

    def _train_batches(self, epoch):
        if self.persistent:
            return self.train.epoch(epoch)
        return batches(self.ds, self.train_idx, self.args.batch, shuffle_seed=epoch,
                       num_workers=self.args.workers)

    def _val_batches(self):
        if self.persistent:
            return self.val.epoch(None)
        return batches(self.ds, self.val_idx, self.args.batch, num_workers=self.args.workers)

    def epoch(self, epoch: int) -> None:
        c = self.c
        sync = torch.cuda.synchronize if c.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        c.model.train()
        for x, y in self._train_batches(epoch):
            x, y = c.inputs(x), y.to(c.device, non_blocking=True)
            c.optimizer.zero_grad(set_to_none=True)
            with c.autocast():
                out = c.forward(x)
            loss = c.criterion(out.float(), y)
            loss.backward()
            c.optimizer.step()
            self.sparse.after_step(0)
        c.model.eval()
        with torch.no_grad():
            for x, _ in self._val_batches():
                with c.autocast():
                    c.eval_forward(c.inputs(x)).argmax(1)
        sync()
        self.seconds.append(time.perf_counter() - t0)

    def summary(self) -> dict:
        n = len(self.train_idx)
        later = self.seconds[1:] or self.seconds
        return {"variant": self.name, "first_epoch_img_s": n / self.seconds[0],
                "img_s": n / statistics.median(later), "best_img_s": n / min(later),
                "epoch_seconds": [round(s, 2) for s in self.seconds]}


def compile_works() -> bool:
    """Whether inductor can compile a small function on this machine (a C++ compiler, ...)."""
    try:
        f = torch.compile(lambda x: torch.relu(x) * 2)
        f(torch.randn(4))
        return True
    except Exception as e:  # pragma: no cover - depends on the machine
        print(f"torch.compile unavailable here: {type(e).__name__}: {str(e)[:200]}")
        return False


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    use_compile = args.compile == "on" or (args.compile == "auto" and compile_works())
    cuda = torch.cuda.is_available()
    device = (torch.cuda.get_device_name() if cuda
              else f"CPU ({pyplatform.processor() or 'cpu'}, {torch.get_num_threads()} threads)")
    with tempfile.TemporaryDirectory() as tmp:
        ds = image_files(Path(tmp), args.images, args.size, args.classes)
        base = dict(lr=0.05, amp="off", channels_last="off", compile=False)
        variants = [
            Variant("baseline (eager fp32, fresh DataLoader per epoch)", args, ds, Recipe(**base), False),
            Variant("persistent loader", args, ds, Recipe(**base), True),
            Variant("+ channels_last", args, ds, Recipe(**{**base, "channels_last": "on"}), True),
            Variant(f"gpu path (+ compile={use_compile}, amp=auto)", args, ds,
                    Recipe(lr=0.05, amp="auto", channels_last="on", compile=use_compile), True),
        ]
        for e in range(args.epochs):
            for v in variants:
                v.epoch(e)
                print(f"epoch {e} {v.name}: {v.seconds[-1]:.2f} s", flush=True)
        rows = [v.summary() for v in variants]
    ref = rows[0]["img_s"]
    print(f"\n{args.model} at {args.size} px, {args.images} images ({len(variants[0].train_idx)} train), "
          f"batch {args.batch}, {args.workers} workers, {args.epochs} epochs, device: {device}")
    best = rows[0]["best_img_s"]
    print(f"{'variant':52s} {'median img/s':>12s} {'ratio':>6s} {'best img/s':>10s} {'ratio':>6s} {'epoch 0':>8s}")
    for r in rows:
        r["ratio"], r["best_ratio"] = r["img_s"] / ref, r["best_img_s"] / best
        print(f"{r['variant']:52s} {r['img_s']:12.1f} {r['ratio']:6.2f} {r['best_img_s']:10.1f} "
              f"{r['best_ratio']:6.2f} {r['first_epoch_img_s']:8.1f}")
    out = {"args": vars(args), "device": device, "torch": torch.__version__, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
