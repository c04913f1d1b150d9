"""The one masked training loop used by every method (IMP rounds, retraining, transfer, RigL).

The loop knows no method. What a method does to the weights during training goes through a
:class:`Sparsifier` (a fixed mask re-applied after every step, RigL's drop/grow, ...); the
optimizer comes from :func:`make_optimizer` (SGD or AdamW, from the recipe). Validation accuracy
after every epoch selects the returned weights (the test split is never looked at here); a
checkpoint after every epoch, with the sparsifier's state, lets a killed run resume where it
stopped and end with exactly the weights it would have had. A non-finite loss stops the run with
:class:`DivergenceError` naming the run, epoch and step.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dilt.data.loader import batches
from dilt.io import load_checked, save_checked
from dilt.masks import Mask


class RecipeError(ValueError):
    """A recipe key or value the loop cannot honour (one line naming the key)."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class Recipe:
    """How to train one model on one data set (from the suite's ``recipes`` in the config)."""

    epochs: int = 20
    batch_size: int = 64
    optimizer: str = "sgd"            # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9             # sgd
    nesterov: bool = True             # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    weight_decay: float = 5e-4
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0            # max global grad norm; 0 = off
    eval_batch_size: int = 512
    num_workers: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        """A recipe from a config mapping; an unknown key is an error, never dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecipeError(f"recipe: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        r = cls(**d)
        r.check()
        return r

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise RecipeError(f"recipe.optimizer: {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        for key in ("lr", "momentum", "weight_decay", "label_smoothing", "grad_clip"):
            v = getattr(self, key)
            if not math.isfinite(v) or v < 0:
                raise RecipeError(f"recipe.{key}: {v!r} is not a finite non-negative number")
        if self.lr <= 0:
            raise RecipeError(f"recipe.lr: {self.lr!r} must be positive")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise RecipeError(f"recipe.warmup_epochs: {self.warmup_epochs} is not below epochs ({self.epochs})")

    def lr_at(self, epoch: int) -> float:
        """Learning rate for ``epoch``: linear warm-up, then cosine decay to zero."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        span = max(1, self.epochs - self.warmup_epochs)
        return 0.5 * self.lr * (1 + math.cos(math.pi * (epoch - self.warmup_epochs) / span))


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (SGD with momentum / Nesterov, or AdamW)."""
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, betas=recipe.betas,
                                 weight_decay=recipe.weight_decay)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0,
                           weight_decay=recipe.weight_decay)


class Sparsifier:
    """What a method does to the weights during training; the loop calls these hooks and
    checkpoints :meth:`state_dict`. The base class trains densely. ``step`` counts optimizer
    steps from 0 over the whole run."""

    mask: Mask | None = None

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        """Called once before training (and again after a resume, before ``load_state_dict``)."""

    def after_backward(self, step: int) -> bool:
        """Gradients are in place. Return False to skip this step's optimizer update."""
        return True

    def after_step(self, step: int) -> None:
        """Called after every optimizer step (and once before the first)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned: after ``setup`` on resume, and at the end of
        training with the best validation epoch's state (so ``mask`` matches the returned
        weights). The state holds tensors, numbers, strings, lists and dicts only (it is
        checkpointed with ``weights_only=True``)."""


class FixedMask(Sparsifier):
    """A mask that never changes: pruned weights are zeroed after every optimizer step."""

    def __init__(self, mask: Mask):
        self.mask = mask

    def setup(self, model, optimizer, total_steps):
        named = dict(model.named_parameters())
        self._w = [named[n] for n in self.mask]
        self._m = [self.mask[n].to(named[n].device, named[n].dtype) for n in self.mask]

    @torch.no_grad()
    def after_step(self, step):
        torch._foreach_mul_(self._w, self._m)


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


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch (data order, augmentation, dropout), so a run
    resumed at any epoch replays exactly what an uninterrupted run would have done."""
    return seed * 100_003 + epoch


def _seed_everything(s: int) -> None:
    import random

    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def train(model: nn.Module, train_split: Split, val_split: Split, recipe: Recipe, *,
          mask: Mask | None = None, sparsifier: Sparsifier | None = None, seed: int = 0,
          checkpoint: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
          desc: str = "train", on_epoch_end: Callable[[int, nn.Module], None] | None = None,
          checkpoint_meta: dict | None = None) -> TrainResult:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    ``mask`` is shorthand for ``sparsifier=FixedMask(mask)``. ``checkpoint``: written after every
    epoch (atomically, with a checksum) and resumed from when present; ``checkpoint_meta`` is
    stored in it and must match on resume (e.g. the provenance hash of the run).
    ``on_epoch_end(epoch, model)``: called after each epoch, before that epoch's checkpoint is
    written (late rewinding saves its point there, so a kill never loses it).
    """
    if mask is not None and sparsifier is not None:
        raise ValueError("give either mask or sparsifier, not both")
    sparsifier = FixedMask(mask) if mask is not None else (sparsifier or Sparsifier())
    device = resolve_device(recipe.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, recipe)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    lmap = _label_map(train_split.label_map, device)
    n_train = len(train_split.indices) if train_split.indices is not None else len(train_split.dataset)
    steps_per_epoch = math.ceil(n_train / recipe.batch_size)
    sparsifier.setup(model, opt, steps_per_epoch * recipe.epochs)

    start, best_epoch, best_val, best_state, best_sparse, history = 0, -1, -1.0, None, None, []
    ckpt = Path(checkpoint) if checkpoint else None
    meta = json.dumps(checkpoint_meta or {}, sort_keys=True)
    if ckpt is not None and ckpt.exists():
        state = load_checked(ckpt, map_location=device)
        if state.get("meta", "{}") != meta:
            raise ValueError(f"{ckpt}: checkpoint belongs to other settings; remove it to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sparsifier.load_state_dict(state["sparsifier"])
        start, best_epoch, best_val = state["epoch"] + 1, state["best_epoch"], state["best_val"]
        best_state, history = state["best_state"], json.loads(state["history"])
        best_sparse = state["best_sparsifier"]
    else:
        sparsifier.after_step(-1)

    bar = _progress(recipe.epochs, start, desc)
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        _seed_everything(epoch_seed(seed, epoch))
        for group in opt.param_groups:
            group["lr"] = recipe.lr_at(epoch)
        model.train()
        total, seen = 0.0, 0
        for i, (x, y) in enumerate(batches(train_split.dataset, train_split.indices, recipe.batch_size,
                                                          shuffle_seed=epoch_seed(seed, epoch),
                                           num_workers=recipe.num_workers)):
            step = epoch * steps_per_epoch + i
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if lmap is not None:
                y = lmap[y]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise DivergenceError(f"{desc}: loss is {float(loss.detach())} at epoch {epoch}, step {step} "
                                      f"(lr {recipe.lr_at(epoch):g}); nothing of this run is marked done")
            loss.backward()
            if recipe.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
            if sparsifier.after_backward(step):
                opt.step()
            sparsifier.after_step(step)
            total += float(loss.detach()) * len(y)
            seen += len(y)
        val = evaluate(model, val_split, recipe)
        if val > best_val:
            best_epoch, best_val = epoch, val
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            best_sparse = _clone(sparsifier.state_dict())
        row = {"epoch": epoch, "lr": recipe.lr_at(epoch), "train_loss": total / max(seen, 1),
               "val_top1": val, "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, model)
        if log_path:
            with open(log_path, "a") as f:
                f.write(json.dumps({"run": desc, **row}) + "\n")
        if ckpt is not None:
            save_checked(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "sparsifier": sparsifier.state_dict(), "meta": meta,
                                "epoch": epoch, "best_epoch": best_epoch, "best_val": best_val,
                                "best_state": best_state, "best_sparsifier": best_sparse,
                                "history": json.dumps(history)})
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    if best_state is not None:  # the returned weights and the sparsifier's mask: the best epoch's
        model.load_state_dict(best_state)
        sparsifier.load_state_dict(best_sparse)
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


def _clone(obj):
    """A deep copy of a state dict of tensors / lists / dicts / scalars."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return obj


def _label_map(label_map: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    return None if label_map is None else torch.as_tensor(label_map, dtype=torch.long, device=device)


def _progress(total: int, start: int, desc: str):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc=desc, leave=False, dynamic_ncols=True)


def recipe_dict(recipe: Recipe) -> dict:
    d = asdict(recipe)
    d["betas"] = list(d["betas"])
    return d
