"""The one masked training loop used by every method (IMP rounds, retraining, transfer).

SGD with momentum and a cosine schedule (from the recipe); the mask is re-applied in place after
every optimizer step; validation accuracy after every epoch selects the returned weights (the
test split is never looked at here); a checkpoint after every epoch lets a killed run resume
where it stopped and end with exactly the weights it would have had.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dilt.data.loader import batches
from dilt.io import atomic_path
from dilt.masks import Mask


@dataclass(frozen=True)
class Recipe:
    """How to train one model on one data set (from the suite's ``recipes`` in the config)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    eval_batch_size: int = 512
    num_workers: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def lr_at(self, epoch: int) -> float:
        """Learning rate for ``epoch``: linear warm-up, then cosine decay to zero."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        span = max(1, self.epochs - self.warmup_epochs)
        return 0.5 * self.lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / span))


@dataclass
class Split:
    """A data split restricted to ``indices`` (None = all), with an optional label map
    (global class -> local label; samples mapped to -1 never occur in ``indices``)."""

    dataset: Dataset
    indices: np.ndarray | None = None
    label_map: np.ndarray | None = None


@dataclass
class TrainResult:
    best_epoch: int
    best_val_top1: float
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train(model: nn.Module, train_split: Split, val_split: Split, recipe: Recipe, *,
          mask: Mask | None = None, seed: int = 0, checkpoint: str | os.PathLike | None = None,
          log_path: str | os.PathLike | None = None, desc: str = "train",
          on_epoch_end: Callable[[int, nn.Module], None] | None = None) -> TrainResult:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    ``checkpoint``: written after every epoch (atomically) and resumed from when present.
    ``on_epoch_end(epoch, model)``: called after each epoch (used for late rewinding and by
    tests to simulate a crash).
    """
    device = resolve_device(recipe.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.nesterov and recipe.momentum > 0,
                          weight_decay=recipe.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    if mask is not None:
        named = dict(model.named_parameters())
        mask_w = [named[n] for n in mask]
        mask_f = [mask[n].to(device, named[n].dtype) for n in mask]
        _mul = lambda: torch._foreach_mul_(mask_w, mask_f)  # noqa: E731
        with torch.no_grad():
            _mul()
    lmap = _label_map(train_split.label_map, device)

    start, best_epoch, best_val, best_state, history = 0, -1, -1.0, None, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, best_epoch, best_val = state["epoch"] + 1, state["best_epoch"], state["best_val"]
        best_state, history = state["best_state"], json.loads(state["history"])

    bar = _progress(recipe.epochs, start, desc)
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = recipe.lr_at(epoch)
        model.train()
        total, seen = 0.0, 0
        for x, y in batches(train_split.dataset, train_split.indices, recipe.batch_size,
                            shuffle_seed=seed * 100_003 + epoch, num_workers=recipe.num_workers):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if lmap is not None:
                y = lmap[y]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            if mask is not None:
                with torch.no_grad():
                    _mul()
            total += float(loss.detach()) * len(y)
            seen += len(y)
        val = evaluate(model, val_split, recipe)
        if val > best_val:
            best_epoch, best_val = epoch, val
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        row = {"epoch": epoch, "lr": recipe.lr_at(epoch), "train_loss": total / max(seen, 1),
               "val_top1": val, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if log_path:
            with open(log_path, "a") as f:
                f.write(json.dumps({"run": desc, **row}) + "\n")
        if ckpt is not None:
            with atomic_path(ckpt) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                            "epoch": epoch, "best_epoch": best_epoch, "best_val": best_val,
                            "best_state": best_state, "history": json.dumps(history)}, tmp)
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val:.3f}")
            bar.update(1)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(best_epoch, best_val, recipe.epochs, history)


@torch.no_grad()
def predict(model: nn.Module, split: Split, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and true labels (mapped through ``split.label_map``)."""
    device = next(model.parameters()).device
    model.eval()
    preds, labels = [], []
    lmap = _label_map(split.label_map, torch.device("cpu"))
    for x, y in batches(split.dataset, split.indices, recipe.eval_batch_size,
                        num_workers=recipe.num_workers):
        preds.append(model(x.to(device)).argmax(1).cpu())
        labels.append(lmap[y] if lmap is not None else y)
    if not preds:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def evaluate(model: nn.Module, split: Split, recipe: Recipe) -> float:
    """Top-1 accuracy on ``split``."""
    pred, true = predict(model, split, recipe)
    return float((pred == true).mean()) if len(true) else float("nan")


def _label_map(label_map: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return None if label_map is None else torch.as_tensor(label_map, dtype=torch.long, device=device)


def _progress(total: int, start: int, desc: str):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True)


def recipe_dict(recipe: Recipe) -> dict:
    return asdict(recipe)
