"""Published recipes and the GPU path, read off what ``train`` builds (all on the CPU here):
DeiT's AdamW / warm-up + cosine / label smoothing / mixup + cutmix / EMA / clipping, bf16
autocast, channels_last, torch.compile reused across IMP rounds, and a persistent loader that
replays the same augmented batches for (seed, epoch) in a fresh process."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dilt.train as T
from dilt.data import load_dataset
from dilt.data.loader import Loader
from dilt.masks import Mask
from dilt.models import build_model, prunable_names
from dilt.prune.magnitude import magnitude_prune
from dilt.train import Recipe, Split, build, train

ROOT = Path(__file__).resolve().parent.parent

# DeiT-S as published (Touvron et al. 2021, deit/main.py defaults): AdamW lr 5e-4 x batch/512,
# wd 0.05, 5 warm-up epochs, cosine to 1e-5 over 300 epochs, smoothing 0.1, mixup 0.8, cutmix 1.0
DEIT = {"epochs": 300, "batch_size": 1024, "optimizer": "adamw", "lr": 1e-3, "betas": [0.9, 0.999],
        "weight_decay": 0.05, "warmup_epochs": 5, "min_lr": 1e-5, "label_smoothing": 0.1,
        "mixup_alpha": 0.8, "cutmix_alpha": 1.0, "mixup_prob": 1.0, "mixup_switch_prob": 0.5,
        "ema_decay": 0.99996, "grad_clip": 1.0}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_deit_recipe_builds_adamw_schedule_mixup_ema(digits):
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.utils import ModelEmaV3

    r = Recipe.from_dict(DEIT)
    net = build_model("vit_tiny", 10, digits.input_shape)
    c = build(net, r)
    assert type(c.optimizer) is torch.optim.AdamW
    g = c.optimizer.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"]) == (1e-3, (0.9, 0.999), 0.05)
    assert isinstance(c.criterion, SoftTargetCrossEntropy)
    assert isinstance(c.mixup, Mixup)
    assert (c.mixup.mixup_alpha, c.mixup.cutmix_alpha, c.mixup.mix_prob, c.mixup.switch_prob,
            c.mixup.label_smoothing, c.mixup.num_classes) == (0.8, 1.0, 1.0, 0.5, 0.1, 10)
    assert isinstance(c.ema, ModelEmaV3) and c.ema.decay == 0.99996
    assert c.amp_dtype is None and not c.channels_last  # CPU defaults
    assert r.grad_clip == 1.0 and r.label_smoothing == 0.1
    # mixed targets are soft: rows sum to one, smoothed, and not one-hot
    np.random.seed(0)
    x, y = torch.randn(8, *digits.input_shape), torch.arange(8)
    _, soft = c.mixup(x, y)
    assert torch.allclose(soft.sum(1), torch.ones(8)) and soft.max() < 1 - 0.1 + 1e-6
    # the schedule equals torch's LinearLR warm-up followed by CosineAnnealingLR (eta_min = min_lr)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=r.lr)
    w = r.warmup_epochs
    ref = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, 1 / w, 1.0, total_iters=w - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r.epochs - w, eta_min=r.min_lr)],
        milestones=[w])
    for e in range(r.epochs):
        assert r.lr_at(e) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6, abs=1e-12), e
        opt.step()
        ref.step()


def test_multistep_schedule_matches_torch():
    r = Recipe.from_dict({"epochs": 90, "lr": 0.1, "schedule": "multistep", "milestones": [30, 60, 80]})
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, [30, 60, 80], gamma=0.1)
    for e in range(90):
        assert r.lr_at(e) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), e
        opt.step()
        ref.step()
    with pytest.raises(T.RecipeError, match="milestones"):
        Recipe.from_dict({"schedule": "multistep"})
    with pytest.raises(T.RecipeError, match="amp"):
        Recipe.from_dict({"amp": "fp8"})


def test_mixup_ema_training_keeps_mask_on_ema_weights(digits):
    torch.manual_seed(0)
    net = build_model("cnn", 10, digits.input_shape)
    mask = magnitude_prune(net, Mask.ones(net, prunable_names(net)), 0.7)
    r = Recipe(epochs=3, batch_size=63, lr=0.05, mixup_alpha=0.8, cutmix_alpha=1.0,
               label_smoothing=0.1, ema_decay=0.9, ema_select=True, grad_clip=1.0)
    res = train(net, Split(digits.train), Split(digits.val), r, mask=mask, seed=0)
    params = dict(net.named_parameters())  # the returned weights are the (masked) EMA's
    assert all(torch.all(params[n][~m] == 0) for n, m in mask.items())
    assert all("val_top1_ema" in h for h in res.history)
    assert res.best_val_top1 == max(h["val_top1_ema"] for h in res.history) > 0.3


def test_autocast_off_on_cpu_by_default_bf16_when_asked(digits):
    x = torch.randn(4, *digits.input_shape)
    for amp, want in (("auto", torch.float32), ("off", torch.float32), ("bf16", torch.bfloat16)):
        c = build(build_model("cnn", 10, digits.input_shape), Recipe(amp=amp))
        with c.autocast():
            out = c.forward(c.inputs(x))
        assert out.dtype == want, amp
    torch.manual_seed(0)
    net = build_model("mlp", 10, digits.input_shape)
    res = train(net, Split(digits.train), Split(digits.val), Recipe(epochs=2, batch_size=64, amp="bf16"))
    assert res.best_val_top1 > 0.5


def test_channels_last_on_weights_and_inputs(digits):
    net = build_model("cnn", 10, digits.input_shape)
    assert build(net, Recipe()).channels_last  # auto: on for a CNN
    assert not build(net, Recipe(channels_last="off")).channels_last
    assert not build(build_model("vit_tiny", 10, digits.input_shape), Recipe()).channels_last
    net = build_model("cnn", 10, digits.input_shape)
    seen = []
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_pre_hook(lambda m, a: seen.append(
        (a[0].is_contiguous(memory_format=torch.channels_last),
         m.weight.is_contiguous(memory_format=torch.channels_last))))
    c = build(net, Recipe(channels_last="on"))
    assert c.channels_last and c.inputs(torch.randn(4, *digits.input_shape)).is_contiguous(
        memory_format=torch.channels_last)
    train(net, Split(digits.train), Split(digits.val), Recipe(epochs=1, batch_size=256, channels_last="on"))
    assert seen and all(a and w for a, w in seen)  # every forward (train and eval)
    # the returned weights are plain contiguous again (safetensors needs it)
    assert all(p.is_contiguous() for p in net.parameters())


def test_compile_once_reused_across_imp_rounds(digits, monkeypatch):
    """A counting torch.compile backend: the first round compiles (train, last batch, eval);
    later rounds with new model objects and new masks compile nothing."""
    import torch._dynamo

    torch._dynamo.reset()
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward
    monkeypatch.setattr(T, "COMPILE_BACKEND", counting)
    r = Recipe(epochs=1, batch_size=128, lr=0.05, compile=True)
    counts = []
    for rnd in range(3):
        torch.manual_seed(rnd)
        net = build_model("cnn", 10, digits.input_shape)
        mask = magnitude_prune(net, Mask.ones(net, prunable_names(net)), 0.3 * (rnd + 1))
        train(net, Split(digits.train), Split(digits.val), r, mask=mask, seed=rnd)
        params = dict(net.named_parameters())
        assert all(torch.all(params[n][~m] == 0) for n, m in mask.items())
        counts.append(len(graphs))
    assert counts[0] > 0 and counts[1] == counts[0] and counts[2] == counts[0], counts
    torch._dynamo.reset()


# -- the persistent loader -------------------------------------------------------------------------
def _image_dataset(root: Path):
    from torchvision import transforms as tv

    from dilt.data.imagefolders import FileImages

    rng = np.random.default_rng(0)
    paths = []
    for i in range(22):
        p = root / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    aug = tv.Compose([tv.RandomResizedCrop(8, scale=(0.3, 1.0)), tv.RandomHorizontalFlip(),
                      tv.ToTensor()])
    return FileImages(paths, [i % 3 for i in range(22)], aug)


REPLAY = """
import sys, torch
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.test_gpu_path import _image_dataset, _epoch
torch.save(_epoch(_image_dataset(Path({dir!r})), 2, 7), {out!r})
"""


def _epoch(ds, workers, seed, loader=None):
    loader = loader or Loader(ds, np.arange(3, 22), 5, num_workers=workers)
    return [(x.clone(), y.clone()) for x, y in loader.epoch(seed)]


def _same(a, b):
    return len(a) == len(b) and all(torch.equal(x, u) and torch.equal(y, v) for (x, y), (u, v) in zip(a, b))


def test_persistent_loader_replays_batches_for_seed_and_epoch(tmp_path):
    ds = _image_dataset(tmp_path)
    loader = Loader(ds, np.arange(3, 22), 5, num_workers=2)
    a = _epoch(ds, 2, 7, loader)
    it = loader._dl._iterator  # the worker processes of the first epoch...
    b = _epoch(ds, 2, 8, loader)
    c = _epoch(ds, 2, 7, loader)
    assert loader._dl._iterator is it  # ...serve every later epoch
    assert [len(y) for _, y in a] == [5, 5, 5, 4]
    assert _same(a, c) and not _same(a, b)
    assert sorted(torch.cat([y for _, y in b]).tolist()) == sorted(ds.targets[3:].tolist())
    assert _same(a, _epoch(ds, 0, 7))  # the same whatever the number of workers
    out = tmp_path / "fresh.pt"
    subprocess.run([sys.executable, "-c", REPLAY.format(root=str(ROOT), dir=str(tmp_path), out=str(out))],
                   check=True, cwd=ROOT, timeout=120)
    assert _same(a, torch.load(out))  # a fresh process (a resumed run) replays the epoch
    loader.close()


def test_optimizers_use_fused_kernels_where_parameters_allow(digits):
    net = build_model("mlp", 10, digits.input_shape)
    for name in ("sgd", "adamw"):
        assert build(net, Recipe(optimizer=name)).optimizer.defaults["fused"]
    # a non-floating parameter (impossible to fuse) falls back to the plain kernels
    from dilt.train import make_optimizer

    odd = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))]
    assert not make_optimizer(odd, Recipe()).defaults["fused"]


@pytest.mark.parametrize("native, want", [(True, torch.bfloat16), (False, None)])
def test_auto_amp_takes_bf16_only_where_the_gpu_computes_it_natively(monkeypatch, native, want):
    """A pre-Ampere GPU (V100, T4) only emulates bf16, slower than fp32: `amp: auto` keeps fp32
    there; `amp: bf16` still forces it."""
    from dilt.train import amp_dtype

    asked = []

    def supported(including_emulation=True):  # every GPU emulates bf16; only some compute it
        asked.append(including_emulation)
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    cuda = torch.device("cuda", 0)
    assert amp_dtype(Recipe(amp="auto"), cuda) == want and asked == [False]
    assert amp_dtype(Recipe(amp="bf16"), cuda) == torch.bfloat16
    assert amp_dtype(Recipe(amp="auto"), torch.device("cpu")) is None


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_decay_norms_and_biases_off_leaves_them_undecayed(optimizer):
    """With ``decay_norms_and_biases: false`` (DeiT's and Goyal's recipes) a step on a zero
    gradient shrinks the weight matrices by weight decay and leaves biases, LayerNorm weights,
    the position embedding and the class token as they were; by default everything decays."""
    from dilt.train import build

    for decay_all in (True, False):
        torch.manual_seed(0)
        net = build_model("vit_tiny", 10, (1, 8, 8))
        with torch.no_grad():  # no all-zero parameter (decay would leave it as it is)
            for p in net.parameters():
                p.add_(0.1)
        recipe = Recipe(optimizer=optimizer, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.5,
                        decay_norms_and_biases=decay_all)
        before = {n: p.detach().clone() for n, p in net.named_parameters()}
        c = build(net, recipe)
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        c.optimizer.step()
        for n, p in net.named_parameters():
            exempt = p.ndim <= 1 or n in ("pos_embed", "cls_token")
            moved = not torch.equal(p.detach(), before[n])
            assert moved == (decay_all or not exempt), (decay_all, n)
        assert {"pos_embed", "cls_token"} <= set(net.no_weight_decay())
