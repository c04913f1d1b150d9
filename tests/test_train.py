"""The training loop: masks stay applied, runs are deterministic, a killed run resumes exactly."""

import pytest
import torch

from dilt import jobs
from dilt.data import load_dataset
from dilt.masks import Mask
from dilt.models import build_model, prunable_names
from dilt.prune.imp import all_masks
from dilt.prune.magnitude import magnitude_prune
from dilt.train import Recipe, Split, train

RECIPE = Recipe(epochs=4, batch_size=128, lr=0.05)


def _setup():
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    net = build_model("cnn", 10, data.input_shape)
    mask = magnitude_prune(net, Mask.ones(net, prunable_names(net)), 0.5)
    return data, net, mask


class Killed(RuntimeError):
    pass


def test_mask_stays_applied_and_model_learns():
    data, net, mask = _setup()
    res = train(net, Split(data.train), Split(data.val), RECIPE, mask=mask, seed=0)
    params = dict(net.named_parameters())
    for name, m in mask.items():
        assert torch.all(params[name][~m] == 0)
    assert res.best_val_top1 > 0.5  # far above chance (0.1) after 4 epochs
    assert res.best_val_top1 == max(h["val_top1"] for h in res.history)


def test_killed_run_resumes_to_identical_weights(tmp_path):
    data, net, mask = _setup()
    ref = build_model("cnn", 10, data.input_shape)
    ref.load_state_dict(net.state_dict())
    train(ref, Split(data.train), Split(data.val), RECIPE, mask=mask, seed=3)

    def kill(epoch, model):
        if epoch == 1:
            raise Killed
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        train(net, Split(data.train), Split(data.val), RECIPE, mask=mask, seed=3, checkpoint=ckpt, on_epoch_end=kill)
    assert ckpt.exists()
    fresh = build_model("cnn", 10, data.input_shape)  # the restarted process builds a new model
    train(fresh, Split(data.train), Split(data.val), RECIPE, mask=mask, seed=3, checkpoint=ckpt)
    for (n, a), b in zip(ref.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), n


def test_checkpoint_interval_spaces_checkpoints_and_changes_no_result(tmp_path):
    """``checkpoint_interval`` seconds apart (a short training writes none after epoch 0's
    clock start), every epoch at 0; the trained weights are the same either way."""
    import dataclasses

    data, net, mask = _setup()
    twin = build_model("cnn", 10, data.input_shape)
    twin.load_state_dict(net.state_dict())
    seen = {}

    def watch(path, key):
        return lambda epoch, model: seen.setdefault(key, []).append(path.exists())
    every, spaced = tmp_path / "every.pt", tmp_path / "spaced.pt"
    train(net, Split(data.train), Split(data.val), RECIPE, mask=mask, seed=3, checkpoint=every,
          on_epoch_end=watch(every, "every"))
    slow = dataclasses.replace(RECIPE, checkpoint_interval=3600.0)
    train(twin, Split(data.train), Split(data.val), slow, mask=mask, seed=3, checkpoint=spaced,
          on_epoch_end=watch(spaced, "spaced"))
    assert seen["every"] == [False] + [True] * (RECIPE.epochs - 1)  # written after each epoch
    assert seen["spaced"] == [False] * RECIPE.epochs and not spaced.exists()
    for (n, a), b in zip(net.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), n


def test_killed_imp_job_resumes_to_identical_masks(tiny_suite, tmp_path, monkeypatch):
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(tiny_suite, "mlp", "digits", 0, str(theta0))
    jobs.imp(tiny_suite, "mlp", "digits", 0, "lth", "full", None, str(theta0), str(tmp_path / "ref"))

    import dilt.prune.imp as imp
    real_train = imp.train
    calls = {"n": 0}

    def crashing_train(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:  # die in the middle of round 1, after one epoch was checkpointed
            def die(epoch, model):  # the hook runs before the epoch's checkpoint: epoch 0 is saved
                if epoch == 1:
                    raise Killed
            kw["on_epoch_end"] = die
        return real_train(*args, **kw)
    monkeypatch.setattr(imp, "train", crashing_train)
    with pytest.raises(Killed):
        jobs.imp(tiny_suite, "mlp", "digits", 0, "lth", "full", None, str(theta0), str(tmp_path / "run"))
    assert not (tmp_path / "run" / "imp_summary.json").exists()
    assert (tmp_path / "run" / "ckpt_r1.pt").exists()
    monkeypatch.setattr(imp, "train", real_train)
    jobs.imp(tiny_suite, "mlp", "digits", 0, "lth", "full", None, str(theta0), str(tmp_path / "run"))
    assert all_masks(tmp_path / "run") == all_masks(tmp_path / "ref")
    from dilt.models.state import load_state
    last = len(all_masks(tmp_path / "ref")) - 1
    a = load_state(tmp_path / "ref" / f"weights_r{last}.safetensors")[0]
    b = load_state(tmp_path / "run" / f"weights_r{last}.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_retrain_killed_past_its_commit_leaves_no_checkpoint(tmp_path):
    """A kill between writing a retrained mask's result and removing its checkpoint: the rerun
    keeps the result (no second training) and removes the leftover checkpoint."""
    data, net, mask = _setup()
    recipe = Recipe(epochs=1, batch_size=128, lr=0.05)
    theta0 = {k: v.clone() for k, v in net.state_dict().items()}

    def make():
        m = build_model("cnn", 10, data.input_shape)
        m.load_state_dict(theta0)
        return m
    entry = jobs.Entry("lth", "lth", "source-matched", "none", 0.5, 1, 2, 2.0, "lth_r1", mask)
    kw = dict(model="cnn", make_model=make, bundle=data, eval_splits={"full": Split(data.test)},
              recipe=recipe, seed=0, work_dir=tmp_path, log=None, experiment="E1", partition="full",
              source_dataset="digits", provenance="p")
    first = jobs.train_entries([entry], **kw)
    (done,) = tmp_path.glob("*.json")
    leftover = done.with_suffix(".ckpt")
    leftover.write_bytes(b"left by a kill after the commit")
    assert jobs.train_entries([entry], make_model=None, **{k: v for k, v in kw.items() if k != "make_model"}) == first
    assert not leftover.exists()


def test_same_seed_same_weights_different_seed_different():
    data, net, mask = _setup()
    a, b, c = (build_model("cnn", 10, data.input_shape) for _ in range(3))
    for m in (a, b, c):
        m.load_state_dict(net.state_dict())
    short = Recipe(epochs=1, batch_size=128, lr=0.05)
    train(a, Split(data.train), Split(data.val), short, mask=mask, seed=1)
    train(b, Split(data.train), Split(data.val), short, mask=mask, seed=1)
    train(c, Split(data.train), Split(data.val), short, mask=mask, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))


def test_killed_run_with_mixup_and_ema_resumes_to_identical_weights(tmp_path):
    """The EMA copy and the mixup draws are part of what a resumed run must replay."""
    data, net, mask = _setup()
    recipe = Recipe(epochs=3, batch_size=128, lr=0.05, mixup_alpha=0.8, cutmix_alpha=1.0,
                    label_smoothing=0.1, ema_decay=0.9, ema_select=True, grad_clip=2.0)
    ref = build_model("cnn", 10, data.input_shape)
    ref.load_state_dict(net.state_dict())
    res_ref = train(ref, Split(data.train), Split(data.val), recipe, mask=mask, seed=5)

    def kill(epoch, model):
        if epoch == 1:
            raise Killed
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Killed):
        train(net, Split(data.train), Split(data.val), recipe, mask=mask, seed=5, checkpoint=ckpt, on_epoch_end=kill)
    fresh = build_model("cnn", 10, data.input_shape)
    res = train(fresh, Split(data.train), Split(data.val), recipe, mask=mask, seed=5, checkpoint=ckpt)
    assert [h["val_top1_ema"] for h in res.history] == [h["val_top1_ema"] for h in res_ref.history]
    for (n, a), b in zip(ref.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), n


def test_gradient_clipping_measures_the_sparse_networks_gradient():
    """One SGD step (no momentum, no decay) with grad_clip: the update is the active weights'
    gradient scaled by grad_clip / its norm; pruned weights' gradients count for nothing."""
    import numpy as np
    import torch.nn.functional as F

    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    net = build_model("mlp", 10, data.input_shape, hidden=(32, 16))
    names = prunable_names(net, prune_first=True)
    mask = magnitude_prune(net, Mask.ones(net, names), 0.9)
    mask.apply_(net)
    idx = np.arange(64)
    x, y = (torch.stack([data.train[int(i)][0] for i in idx]),
            torch.tensor([int(data.train[int(i)][1]) for i in idx]))
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    grads = {n: p.grad.clone() * (mask[n] if n in mask else 1) for n, p in net.named_parameters()}
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads.values()))
    dense = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    clip = float(norm) / 4          # clipping is active, and far from the dense norm's clip
    assert float(dense) > 1.5 * float(norm)
    net.load_state_dict(ref)
    net.zero_grad(set_to_none=True)
    recipe = Recipe(epochs=1, batch_size=64, lr=0.1, momentum=0.0, weight_decay=0.0,
                    grad_clip=clip, checkpoint_interval=30)
    train(net, Split(data.train, idx), Split(data.val, np.arange(32)), recipe, mask=mask, seed=0)
    coef = clip / (float(norm) + 1e-6)
    for n, p in net.named_parameters():
        torch.testing.assert_close(p.detach(), ref[n] - 0.1 * coef * grads[n], rtol=1e-4, atol=1e-6)


def test_training_from_a_rewind_epoch_continues_the_schedule():
    """``start_epoch=k`` trains epochs k..T-1 with their learning rates and data order: with no
    optimizer state to lose (SGD without momentum) it repeats exactly the epochs k..T-1 of a
    run trained from epoch 0 and rewound to the end of epoch k-1; before k nothing is trained."""
    from dilt.train import RecipeError

    data, net, mask = _setup()
    recipe = Recipe(epochs=4, batch_size=128, lr=0.05, momentum=0.0, nesterov=False, warmup_epochs=2)
    start = build_model("cnn", 10, data.input_shape)
    start.load_state_dict(net.state_dict())
    points = {}
    full = train(net, Split(data.train), Split(data.val), recipe, mask=mask, seed=3,
                 on_epoch_end=lambda e, m: points.setdefault(e, {k: v.clone() for k, v in m.state_dict().items()}))
    start.load_state_dict(points[1])  # the rewind point: after epochs 0 and 1
    rest = train(start, Split(data.train), Split(data.val), recipe, mask=mask, seed=3, start_epoch=2)
    assert rest.epochs_run == 2 and full.epochs_run == 4
    assert [h["epoch"] for h in rest.history] == [2, 3]
    assert [h["lr"] for h in rest.history] == [recipe.lr_at(2), recipe.lr_at(3)]
    assert recipe.lr_at(2) != recipe.lr_at(0)  # (past the warm-up: a restart would differ)
    for got, want in zip(rest.history, full.history[2:]):
        assert (got["train_loss"], got["val_top1"]) == (want["train_loss"], want["val_top1"])
    with pytest.raises(RecipeError, match="start epoch 4 is not below recipe.epochs"):
        train(start, Split(data.train), Split(data.val), recipe, mask=mask, start_epoch=4)
