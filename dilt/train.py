"""The one masked training loop used by every method (IMP rounds, retraining, transfer, RigL).

The loop knows no method. What a method does to the weights during training goes through a
:class:`Sparsifier` (a fixed mask re-applied after every step, RigL's drop/grow, ...); the
optimizer comes from :func:`make_optimizer` (SGD or AdamW, from the recipe). Validation accuracy
after every epoch selects the returned weights (the test split is never looked at here); a
checkpoint after every epoch, with the sparsifier's state, lets a killed run resume where it
stopped and end with exactly the weights it would have had. A non-finite loss stops the run with
:class:`DivergenceError` naming the run, epoch and step.

The published recipes' parts are recipe keys: a warm-up then cosine or multi-step schedule,
label smoothing, mixup/cutmix (timm's ``Mixup`` with ``SoftTargetCrossEntropy``), an EMA of the
weights (timm's ``ModelEmaV3``, masked like the model), gradient clipping. So is the GPU path:
bf16 autocast, channels_last, ``torch.compile`` (the mask is applied to the weights outside the
compiled forward, so a new mask or a new IMP round reuses the compiled graphs), and one
persistent loader per training. Under ``torchrun`` the loop runs data-parallel
(:mod:`dilt.platform`): ``batch_size`` stays the global batch, rank 0 alone writes, evaluation is
all-reduced and every rank holds the same mask. :func:`build` constructs all of it from a recipe,
so what a job would train with can be read without training.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from dilt import platform
from dilt.data.loader import Loader
from dilt.io import load_checked, save_checked
from dilt.masks import Mask


class RecipeError(ValueError):
    """A recipe key or value the loop cannot honour (one line naming the key)."""


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite."""


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep")
AMP = ("auto", "bf16", "off")
CHANNELS_LAST = ("auto", "on", "off")
COMPILE_BACKEND = "inductor"  # what ``compile: true`` uses (tests swap in a counting backend)
RANK_SEED_STRIDE = 1_000_003  # rank r > 0 seeds dropout / mixup with epoch_seed + r * stride


@dataclass(frozen=True)
class Recipe:
    """How to train one model on one data set (from the suite's ``recipes`` in the config)."""

    epochs: int = 20
    batch_size: int = 64              # the global batch (split over DDP ranks)
    optimizer: str = "sgd"            # sgd | adamw
    lr: float = 0.05
    momentum: float = 0.9             # sgd
    nesterov: bool = True             # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    weight_decay: float = 5e-4
    decay_norms_and_biases: bool = True  # False: no decay on 1-D parameters (biases, norm weights)
                                         # nor the model's no_weight_decay() (timm, DeiT, Goyal)
    schedule: str = "cosine"          # after warm-up: cosine (to min_lr) | multistep
    warmup_epochs: int = 0
    min_lr: float = 0.0               # cosine's floor
    milestones: tuple[int, ...] = ()  # multistep: epochs where lr is multiplied by gamma
    gamma: float = 0.1                # multistep
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0          # timm Mixup; 0 and cutmix_alpha 0 = off
    cutmix_alpha: float = 0.0
    mixup_prob: float = 1.0           # probability of mixing a batch at all
    mixup_switch_prob: float = 0.5    # probability of cutmix instead of mixup when both are on
    ema_decay: float = 0.0            # EMA of the weights; 0 = off
    ema_select: bool = False          # select / return the EMA weights (timm) instead of the raw (DeiT)
    grad_clip: float = 0.0            # max global grad norm; 0 = off
    amp: str = "auto"                 # auto (bf16 on CUDA, off on CPU) | bf16 | off
    channels_last: str = "auto"       # auto (on for CNNs: faster with oneDNN and cuDNN) | on | off
    compile: bool = False             # torch.compile the forward
    sync_bn: bool = False             # SyncBatchNorm under DDP on CUDA
    eval_batch_size: int = 512
    num_workers: int = 0
    device: str = "auto"
    checkpoint_interval: float = 0.0  # seconds between epoch checkpoints (0: after every epoch)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        """A recipe from a config mapping; an unknown key is an error, never dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecipeError(f"recipe: unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(float(b) for b in d["betas"])
        if "milestones" in d:
            d["milestones"] = tuple(int(m) for m in d["milestones"])
        r = cls(**d)
        r.check()
        return r

    def check(self) -> None:
        for key, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("amp", AMP),
                             ("channels_last", CHANNELS_LAST)):
            if getattr(self, key) not in allowed:
                raise RecipeError(f"recipe.{key}: {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        for key in ("lr", "momentum", "weight_decay", "label_smoothing", "grad_clip", "min_lr",
                    "gamma", "mixup_alpha", "cutmix_alpha", "mixup_prob", "mixup_switch_prob",
                    "ema_decay", "checkpoint_interval"):
            v = getattr(self, key)
            if not math.isfinite(v) or v < 0:
                raise RecipeError(f"recipe.{key}: {v!r} is not a finite non-negative number")
        if self.lr <= 0:
            raise RecipeError(f"recipe.lr: {self.lr!r} must be positive")
        for key in ("mixup_prob", "mixup_switch_prob"):
            if getattr(self, key) > 1:
                raise RecipeError(f"recipe.{key}: {getattr(self, key)!r} is not a probability")
        if not 0 < self.gamma <= 1:
            raise RecipeError(f"recipe.gamma: {self.gamma!r} must lie in (0, 1]")
        if self.ema_decay >= 1:
            raise RecipeError(f"recipe.ema_decay: {self.ema_decay!r} must lie in [0, 1)")
        if self.ema_select and self.ema_decay == 0:
            raise RecipeError("recipe.ema_select: needs ema_decay > 0")
        if self.min_lr > self.lr:
            raise RecipeError(f"recipe.min_lr: {self.min_lr!r} is above lr ({self.lr!r})")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise RecipeError(f"recipe.warmup_epochs: {self.warmup_epochs} is not below epochs ({self.epochs})")
        if list(self.milestones) != sorted(set(self.milestones)) or any(m < 1 for m in self.milestones):
            raise RecipeError(f"recipe.milestones: {list(self.milestones)} are not increasing positive epochs")
        if self.schedule == "multistep" and not self.milestones:
            raise RecipeError("recipe.milestones: the multistep schedule needs at least one")

    def lr_at(self, epoch: int) -> float:
        """Learning rate for ``epoch``: linear warm-up, then cosine decay to ``min_lr`` or a drop
        by ``gamma`` at every milestone passed."""
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        if self.schedule == "multistep":
            return self.lr * self.gamma ** sum(epoch >= m for m in self.milestones)
        span = max(1, self.epochs - self.warmup_epochs)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (
            1 + math.cos(math.pi * (epoch - self.warmup_epochs) / span))

    @property
    def mixes(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.mixup_prob > 0


def param_groups(model: nn.Module, recipe: Recipe) -> list:
    """The trainable parameters of ``model``, as the optimizer takes them: one list, weight
    decay on all (OpenLTH, COLT); or with ``decay_norms_and_biases: false`` two groups, the
    second without decay, as timm's optimizer factory builds them for DeiT (1-D parameters,
    biases and the model's ``no_weight_decay()`` names such as a ViT's position embedding)."""
    if recipe.decay_norms_and_biases:
        return [p for p in model.parameters() if p.requires_grad]
    from timm.optim import param_groups_weight_decay

    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    return param_groups_weight_decay(model, recipe.weight_decay, no_weight_decay_list=skip)


def make_optimizer(params, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (a list of parameters, or groups as
    :func:`param_groups` gives them; SGD with momentum / Nesterov, or AdamW), with PyTorch's
    fused kernels where every parameter allows them (floating point, on a CPU or CUDA device):
    8-17% faster per training on the smoke models (bench/RESULTS.md)."""
    params = list(params)
    flat = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(flat) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in flat)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, betas=recipe.betas,
                                 weight_decay=recipe.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov and recipe.momentum > 0,
                           weight_decay=recipe.weight_decay, fused=fused)


class Sparsifier:
    """What a method does to the weights during training; the loop calls these hooks and
    checkpoints :meth:`state_dict`. The base class trains densely. ``step`` counts optimizer
    steps from 0 over the whole run."""

    mask: Mask | None = None

    def setup(self, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        """Called once before training (and again after a resume, before ``load_state_dict``)."""

    def after_backward(self, step: int) -> bool:
        """Gradients are in place (before clipping, which measures what this leaves). Return
        False to skip this step's optimizer update."""
        return True

    def after_step(self, step: int) -> None:
        """Called after every optimizer step (and once before the first)."""

    def mask_changed(self, step: int) -> bool:
        """Whether ``step`` may have changed :attr:`mask` (the loop then re-masks the EMA copy
        and, under DDP, broadcasts rank 0's state). True unless a subclass knows better (the
        dense base class is never asked)."""
        return True

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned: after ``setup`` on resume, and at the end of
        training with the best validation epoch's state (so ``mask`` matches the returned
        weights). The state holds tensors, numbers, strings, lists and dicts only (it is
        checkpointed with ``weights_only=True``)."""


class FixedMask(Sparsifier):
    """A mask that never changes: pruned weights get no gradient (so gradient clipping measures
    the sparse network's gradient) and are zeroed after every optimizer step."""

    def __init__(self, mask: Mask):
        self.mask = mask

    def setup(self, model, optimizer, total_steps):
        named = dict(model.named_parameters())
        self._w = [named[n] for n in self.mask]
        self._m = [self.mask[n].to(named[n].device, named[n].dtype) for n in self.mask]

    @torch.no_grad()
    def after_backward(self, step):
        live = [(w.grad, m) for w, m in zip(self._w, self._m) if w.grad is not None]
        if live:
            torch._foreach_mul_([g for g, _ in live], [m for _, m in live])
        return True

    @torch.no_grad()
    def after_step(self, step):
        torch._foreach_mul_(self._w, self._m)

    def mask_changed(self, step):
        return False


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
    return platform.device_for(name)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of everything random in one epoch (data order, augmentation, dropout), so a run
    resumed at any epoch replays exactly what an uninterrupted run would have done."""
    return seed * 100_003 + epoch


def _seed_everything(s: int) -> None:
    import random

    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


# -- what train() builds -----------------------------------------------------------------------
def amp_dtype(recipe: Recipe, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 when asked, or by default on a CUDA device that computes it
    natively (Ampere and later; older GPUs only emulate it, slower than fp32)."""
    if recipe.amp == "bf16":
        return torch.bfloat16
    if (recipe.amp == "auto" and device.type == "cuda"
            and torch.cuda.is_bf16_supported(including_emulation=False)):
        return torch.bfloat16
    return None


def is_cnn(model: nn.Module) -> bool:
    """More 2-d convolutions than linear layers (ResNets yes, ViTs with a conv stem no)."""
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    return convs > sum(isinstance(m, nn.Linear) for m in model.modules())


def num_classes_of(model: nn.Module) -> int:
    """The model's number of outputs (timm's ``num_classes``, else its head's width)."""
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    from dilt.models import head_name

    head = model.get_submodule(head_name(model))
    return int(getattr(head, "out_features", None) or head.out_channels)


@dataclass
class Components:
    """What :func:`train` trains with, built from the recipe by :func:`build`."""

    model: nn.Module                 # the raw model (its state is what gets saved)
    device: torch.device
    optimizer: torch.optim.Optimizer
    criterion: nn.Module             # the training loss (soft targets when mixing)
    mixup: object | None             # timm.data.Mixup
    ema: nn.Module | None            # timm.utils.ModelEmaV3
    amp_dtype: torch.dtype | None
    channels_last: bool
    forward: nn.Module               # the training forward: DDP-wrapped and/or compiled
    eval_forward: nn.Module          # the evaluation forward of the raw model (compiled if asked)
    ema_forward: nn.Module | None
    world_size: int = 1
    rank: int = 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _compile(module: nn.Module) -> nn.Module:
    return torch.compile(module, backend=COMPILE_BACKEND)


def build(model: nn.Module, recipe: Recipe, *, num_classes: int | None = None) -> Components:
    """Move ``model`` to the recipe's device and memory format and build the optimizer, loss,
    mixup, EMA, autocast and (under DDP and/or ``compile``) the wrapped forward ``train`` uses."""
    platform.init_from_env(recipe.device)
    device = resolve_device(recipe.device)
    world, rank = platform.world_size(), platform.rank()
    if recipe.sync_bn and world > 1 and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    cl = recipe.channels_last == "on" or (recipe.channels_last == "auto" and is_cnn(model))
    model.to(device)
    if cl:
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(param_groups(model, recipe), recipe)
    mixup = None
    if recipe.mixes:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        mixup = Mixup(mixup_alpha=recipe.mixup_alpha, cutmix_alpha=recipe.cutmix_alpha,
                      prob=recipe.mixup_prob, switch_prob=recipe.mixup_switch_prob, mode="batch",
                      label_smoothing=recipe.label_smoothing,
                      num_classes=num_classes or num_classes_of(model))
        criterion = SoftTargetCrossEntropy()
    else:
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    ema = None
    if recipe.ema_decay > 0:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=recipe.ema_decay)
    fwd = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if recipe.compile:
        fwd = _compile(fwd)
    return Components(model, device, opt, criterion, mixup, ema, amp_dtype(recipe, device), cl, fwd,
                      _compile(model) if recipe.compile else model,
                      None if ema is None else (_compile(ema.module) if recipe.compile else ema.module),
                      world, rank)


def _even(n: int) -> int:
    """Samples of a rank's batch that mixup uses (timm mixes x with its reverse: even sizes)."""
    return n - 1 if n % 2 and n > 1 else n


def _global_count(n: int, world: int, mixes: bool) -> int:
    """Samples of a global batch of ``n`` that all ranks together train on."""
    sizes = [len(s) for s in np.array_split(np.arange(n), world)]
    return sum(_even(s) for s in sizes) if mixes else n


class _MaskedEMA:
    """Zeroes the EMA copy's pruned weights, with the mask tensors cached until it changes."""

    def __init__(self, ema: nn.Module, sparsifier: Sparsifier):
        self.ema, self.sparsifier, self._w, self._m = ema, sparsifier, [], []

    def refresh(self) -> None:
        mask = self.sparsifier.mask
        if mask is None:
            return
        named = dict(self.ema.module.named_parameters())
        self._w = [named[n] for n in mask]
        self._m = [mask[n].to(named[n].device, named[n].dtype) for n in mask]

    @torch.no_grad()
    def apply(self) -> None:
        if self._w:
            torch._foreach_mul_(self._w, self._m)


def _sync_mask(sparsifier: Sparsifier, model: nn.Module) -> None:
    """Under DDP: every rank takes rank 0's sparsifier state and re-masks its weights."""
    if platform.world_size() == 1:
        return
    state = platform.broadcast_object(sparsifier.state_dict() if platform.is_main() else None)
    if not platform.is_main():
        sparsifier.load_state_dict(state)
        if sparsifier.mask is not None:
            sparsifier.mask.apply_(model)


def train(model: nn.Module, train_split: Split, val_split: Split, recipe: Recipe, *,
          mask: Mask | None = None, sparsifier: Sparsifier | None = None, seed: int = 0,
          checkpoint: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
          desc: str = "train", on_epoch_end: Callable[[int, nn.Module], None] | None = None,
          checkpoint_meta: dict | None = None, start_epoch: int = 0) -> TrainResult:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    ``mask`` is shorthand for ``sparsifier=FixedMask(mask)``. ``checkpoint``: written after every
    epoch (atomically, with a checksum) and resumed from when present; ``checkpoint_meta`` is
    stored in it and must match on resume (e.g. the provenance hash of the run).
    ``on_epoch_end(epoch, model)``: called after each epoch, before that epoch's checkpoint is
    written (late rewinding saves its point there, so a kill never loses it); under DDP on
    rank 0 only, which alone writes the checkpoint and the log.
    With an EMA, each epoch also evaluates the EMA weights (``val_top1_ema``); the raw weights
    are selected and returned as DeiT does, the EMA weights when ``ema_select``.
    ``start_epoch``: train epochs ``start_epoch .. epochs - 1`` only, with their learning rates
    and data order (a model rewound to that epoch continues its schedule, as OpenLTH does).
    """
    if mask is not None and sparsifier is not None:
        raise ValueError("give either mask or sparsifier, not both")
    if not 0 <= start_epoch < recipe.epochs:
        raise RecipeError(f"start epoch {start_epoch} is not below recipe.epochs ({recipe.epochs})")
    sparsifier = FixedMask(mask) if mask is not None else (sparsifier or Sparsifier())
    c = build(model, recipe)
    model, device, opt, world = c.model, c.device, c.optimizer, c.world_size
    if recipe.batch_size % world:
        raise RecipeError(f"recipe.batch_size: {recipe.batch_size} is not divisible by the "
                          f"{world} DDP ranks")
    params = [p for p in model.parameters() if p.requires_grad]
    lmap = _label_map(train_split.label_map, device)
    pin = device.type == "cuda"
    train_loader = Loader(train_split.dataset, train_split.indices, recipe.batch_size,
                          num_workers=recipe.num_workers, pin_memory=pin, rank=c.rank,
                          world_size=world, min_last=world)
    val_loader = Loader(val_split.dataset, val_split.indices, recipe.eval_batch_size,
                        num_workers=recipe.num_workers, pin_memory=pin, rank=c.rank, world_size=world)
    n_train = len(train_loader.indices)
    steps_per_epoch = len(train_loader)
    sparsifier.setup(model, opt, steps_per_epoch * recipe.epochs)
    ema_mask = _MaskedEMA(c.ema, sparsifier) if c.ema is not None else None

    start, best_epoch, best_val, best_state, best_sparse, history = start_epoch, -1, -1.0, None, None, []
    ckpt = Path(checkpoint) if checkpoint else None
    meta = json.dumps(checkpoint_meta or {}, sort_keys=True)
    state = load_checked(ckpt, map_location=device) if ckpt is not None and ckpt.exists() else None
    if state is not None and state.get("meta", "{}") != meta:  # stale: never resumed, started over
        print(f"dilt: {ckpt}: checkpoint of other settings; starting over", file=sys.stderr)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sparsifier.load_state_dict(state["sparsifier"])
        if c.ema is not None:
            c.ema.module.load_state_dict(state["ema"])
        start, best_epoch, best_val = state["epoch"] + 1, state["best_epoch"], state["best_val"]
        best_state, history = state["best_state"], json.loads(state["history"])
        best_sparse = state["best_sparsifier"]
    else:
        sparsifier.after_step(-1)
        if c.ema is not None:
            c.ema.set(model)
    _sync_mask(sparsifier, model)
    if world > 1 and sparsifier.mask is not None and not platform.all_equal(sparsifier.mask.content_hash()):
        raise RuntimeError(f"{desc}: the DDP ranks hold different masks")
    if ema_mask is not None:
        ema_mask.refresh()
        ema_mask.apply()

    main = platform.is_main()
    bar = _progress(recipe.epochs - start_epoch, start - start_epoch, desc) if main else None
    last_save = time.monotonic()
    for epoch in range(start, recipe.epochs):
        t0 = time.perf_counter()
        _seed_everything(epoch_seed(seed, epoch) + RANK_SEED_STRIDE * c.rank)
        for group in opt.param_groups:
            group["lr"] = recipe.lr_at(epoch)
        model.train()
        total, seen = torch.zeros((), dtype=torch.float64, device=device), 0
        for i, (x, y) in enumerate(train_loader.epoch(epoch_seed(seed, epoch))):
            step = epoch * steps_per_epoch + i
            x, y = c.inputs(x), y.to(device, non_blocking=True)
            if lmap is not None:
                y = lmap[y]
            if c.mixup is not None:
                keep = _even(len(y))
                x, y = c.mixup(x[:keep], y[:keep]) if keep > 1 else (x, _soft(y, c.mixup))
            opt.zero_grad(set_to_none=True)
            with c.autocast():
                out = c.forward(x)
            loss = c.criterion(out.float(), y)
            mine = bool(torch.isfinite(loss.detach()))
            # under DDP all ranks stop together (one alone would leave the others waiting in the
            # gradients' all-reduce until a time-out)
            everyone = mine if world == 1 else bool(platform.all_reduce_sum(
                torch.tensor(float(not mine), device=device)) == 0)
            if not everyone:
                what = f"loss is {float(loss.detach())}" if not mine else "another rank's loss is not finite"
                raise DivergenceError(f"{desc}: {what} at epoch {epoch}, step {step} "
                                      f"(lr {recipe.lr_at(epoch):g}); nothing of this run is marked done")
            if world > 1:  # DDP averages gradients over ranks: weight by this rank's share
                n_global = _global_count(min(recipe.batch_size, n_train - i * recipe.batch_size),
                                         world, c.mixup is not None)
                (loss * (len(x) * world / n_global)).backward()
            else:
                loss.backward()
            # the sparsifier first (it zeroes inactive weights' gradients), so that clipping
            # measures the gradient of the sparse network
            if sparsifier.after_backward(step):
                if recipe.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                opt.step()
            sparsifier.after_step(step)
            changed = ((world > 1 or c.ema is not None) and type(sparsifier) is not Sparsifier
                       and sparsifier.mask_changed(step))
            if changed and world > 1:
                _sync_mask(sparsifier, model)
            if c.ema is not None:
                c.ema.update(model, step=step)
                if changed:
                    ema_mask.refresh()
                ema_mask.apply()
            total += loss.detach().double() * len(x)
            seen += len(x)
        stats = platform.all_reduce_sum(torch.stack([total, torch.tensor(float(seen), dtype=torch.float64,
                                                                        device=device)]))
        platform.broadcast_buffers(model)
        if c.ema is not None:  # its buffers are copies of this rank's: evaluate and keep rank 0's
            platform.broadcast_buffers(c.ema.module)
        val = _evaluate_loader(c.eval_forward, model, val_loader, val_split.label_map, c)
        row = {"epoch": epoch, "lr": recipe.lr_at(epoch),
               "train_loss": float(stats[0] / max(float(stats[1]), 1.0)), "val_top1": val}
        score, chosen = val, model
        if c.ema is not None:
            row["val_top1_ema"] = _evaluate_loader(c.ema_forward, c.ema.module, val_loader,
                                                   val_split.label_map, c)
            if recipe.ema_select:
                score, chosen = row["val_top1_ema"], c.ema.module
        if score > best_val:
            best_epoch, best_val = epoch, score
            best_state = {k: v.detach().clone() for k, v in chosen.state_dict().items()}
            best_sparse = _clone(sparsifier.state_dict())
        row["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(row)
        if main:
            if on_epoch_end is not None:
                on_epoch_end(epoch, model)
            if log_path:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"run": desc, **row}) + "\n")
            if ckpt is not None and (recipe.checkpoint_interval == 0 or (
                    time.monotonic() - last_save >= recipe.checkpoint_interval
                    and epoch < recipe.epochs - 1)):  # (the last epoch's would go unused)
                last_save = time.monotonic()
                save_checked(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "sparsifier": sparsifier.state_dict(), "meta": meta,
                                    "ema": None if c.ema is None else c.ema.module.state_dict(),
                                    "epoch": epoch, "best_epoch": best_epoch, "best_val": best_val,
                                    "best_state": best_state, "best_sparsifier": best_sparse,
                                    "history": json.dumps(history)})
        platform.barrier()
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{val:.3f}")
            bar.update(1)
    if bar is not None:
        bar.close()
    train_loader.close()
    val_loader.close()
    if best_state is not None:  # the returned weights and the sparsifier's mask: the best epoch's
        model.load_state_dict(best_state)
        sparsifier.load_state_dict(best_sparse)
    if c.channels_last:  # saved weights (safetensors) must be contiguous
        model.to(memory_format=torch.contiguous_format)
    return TrainResult(best_epoch, best_val, recipe.epochs - start_epoch, history)


def _soft(y: torch.Tensor, mixup) -> torch.Tensor:
    """A lone sample's smoothed one-hot target (a batch of one cannot be mixed)."""
    from timm.data.mixup import mixup_target

    return mixup_target(y, mixup.num_classes, 1.0, mixup.label_smoothing)


@torch.no_grad()
def _evaluate_loader(fwd: nn.Module, model: nn.Module, loader: Loader, label_map, c: Components) -> float:
    """Top-1 accuracy over ``loader``, counts summed over the DDP ranks."""
    model.eval()
    lmap = _label_map(label_map, torch.device("cpu"))
    counts = torch.zeros(2, dtype=torch.float64)
    for x, y in loader.epoch(None):
        with c.autocast():
            pred = fwd(c.inputs(x)).argmax(1).cpu()
        y = lmap[y] if lmap is not None else y
        counts += torch.tensor([float((pred == y).sum()), float(len(y))], dtype=torch.float64)
    counts = platform.all_reduce_sum(counts.to(c.device)).cpu()
    return float(counts[0] / counts[1]) if counts[1] else float("nan")


@torch.no_grad()
def predict(model: nn.Module, split: Split, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes and true labels (mapped through ``split.label_map``), in this process
    (all of the split, whatever the DDP ranks)."""
    device = next(model.parameters()).device
    model.eval()
    preds, labels = [], []
    lmap = _label_map(split.label_map, torch.device("cpu"))
    dtype = amp_dtype(recipe, device)
    loader = Loader(split.dataset, split.indices, recipe.eval_batch_size,
                    num_workers=recipe.num_workers, persistent=False)
    for x, y in loader.epoch(None):
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            preds.append(model(x.to(device)).argmax(1).cpu())
        labels.append(lmap[y] if lmap is not None else y)
    if not preds:
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    return torch.cat(preds).numpy(), torch.cat(labels).numpy()


def evaluate(model: nn.Module, split: Split, recipe: Recipe) -> float:
    """Top-1 accuracy on ``split``; under DDP each rank evaluates its share and the counts are
    all-reduced (every rank gets the same number)."""
    device = next(model.parameters()).device
    c = Components(model, device, None, None, None, None, amp_dtype(recipe, device),
                   recipe.channels_last == "on", model, model, None,
                   platform.world_size(), platform.rank())
    loader = Loader(split.dataset, split.indices, recipe.eval_batch_size,
                    num_workers=recipe.num_workers, rank=c.rank, world_size=c.world_size,
                    persistent=False)
    return _evaluate_loader(model, model, loader, split.label_map, c)


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
    d["milestones"] = list(d["milestones"])
    return d
