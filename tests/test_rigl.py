"""RigL: exact drop / grow updates, the cosine drop schedule, zeroed optimizer state, the end of
updates at 75% of the steps, and an exact resume of a killed run."""

import io
import math

import pytest
import torch
import yaml
from conftest import tiny_config
from torch import nn

from dilt.masks import Mask
from dilt.prune.erk import erk_counts
from dilt.prune.rigl import RigL
from dilt.train import Recipe, Split, make_optimizer, train

NAMES = ["0.weight", "2.weight", "4.weight"]
TOTAL_STEPS, DELTA_T, ALPHA = 20, 2, 0.3
T_END = int(0.75 * TOTAL_STEPS)  # 15


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 3))


def _cosine(t):
    return ALPHA / 2 * (1 + math.cos(math.pi * t / T_END))


def _brute_force(w, g, m, k):
    """The new mask by hand: keep the active weights of largest |w| but k, grow the k of largest
    |g| among the positions not kept (ties: lower index first)."""
    w, g, m = w.flatten().tolist(), g.flatten().tolist(), m.flatten().tolist()
    active = [i for i in range(len(m)) if m[i]]
    kept = set(sorted(active, key=lambda i: (-abs(w[i]), i))[:len(active) - k])
    grown = sorted((i for i in range(len(m)) if i not in kept), key=lambda i: (-abs(g[i]), i))[:k]
    out = torch.zeros(len(m), dtype=torch.bool)
    out[sorted(kept | set(grown))] = True
    return out


def _drive(optimizer, grad_of, density=0.5):
    """Run the hooks for TOTAL_STEPS steps with hand-set gradients ``grad_of(step, p, mask)`` and
    check every update against the brute force; returns the steps that updated."""
    net = _net()
    opt = make_optimizer(net.parameters(), Recipe(optimizer=optimizer, lr=0.1, weight_decay=1e-3))
    s = RigL(NAMES, density, delta_t=DELTA_T, drop_fraction=ALPHA, end_fraction=0.75, seed=0)
    s.setup(net, opt, TOTAL_STEPS)
    s.after_step(-1)
    params = dict(net.named_parameters())
    counts = erk_counts({n: tuple(params[n].shape) for n in NAMES}, density)
    assert {n: int(m.sum()) for n, m in s.mask.items()} == counts
    gen = torch.Generator().manual_seed(1)
    updated = []
    for step in range(TOTAL_STEPS):
        old = s.mask
        for n, p in net.named_parameters():
            p.grad = grad_of(gen, p, old.get(n))
        before = {n: p.detach().clone() for n, p in params.items()}
        grads = {n: params[n].grad.clone() for n in NAMES}
        states = {n: {k: v.clone() for k, v in opt.state.get(params[n], {}).items()
                      if torch.is_tensor(v) and v.shape == params[n].shape} for n in NAMES}
        stepped = s.after_backward(step)
        t = step + 1
        is_update = t % DELTA_T == 0 and t < T_END
        assert stepped is not is_update
        if stepped:
            opt.step()
        else:
            updated.append(step)
            new = s.mask
            for n in NAMES:
                k = int(_cosine(t) * int(old[n].sum()))  # truncated, as in the original
                want = _brute_force(before[n], grads[n], old[n], k)
                assert torch.equal(new[n].flatten(), want), (step, n)
                grown, stay = new[n] & ~old[n], new[n] & old[n]
                p = params[n].detach()
                assert torch.all(p[grown] == 0)                       # grown weights start at zero
                assert torch.equal(p[stay], before[n][stay])          # no optimizer step here
                for key, v in opt.state[params[n]].items():
                    if torch.is_tensor(v) and v.shape == p.shape:
                        assert torch.all(v[~stay] == 0), key          # grown / dropped: zero state
                        assert torch.equal(v[stay], states[n][key][stay])
            for n, p in params.items():                               # biases untouched
                if n not in NAMES:
                    assert torch.equal(p.detach(), before[n])
        s.after_step(step)
        assert {n: int(m.sum()) for n, m in s.mask.items()} == counts  # exact sparsity, per layer
        for n in NAMES:
            assert torch.all(params[n].detach()[~s.mask[n]] == 0)
        if step + 1 >= T_END:
            assert s.mask == old                                      # no update from T_end on
    return updated, s


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_updates_match_brute_force_and_reset_optimizer_state(optimizer):
    updated, s = _drive(optimizer, lambda gen, p, m: torch.randn(p.shape, generator=gen))
    assert updated == [1, 3, 5, 7, 9, 11, 13]      # every 2nd step while t < 15
    assert s.updates == 7


def test_drop_count_follows_the_cosine_schedule(monkeypatch):
    # Zero gradient on the active weights: the dropped ones are never regrown, so exactly
    # floor(f_t * active) weights leave and as many enter every layer.
    changes = []

    def grad_of(gen, p, m):
        g = torch.rand(p.shape, generator=gen) + 0.1
        return g if m is None else torch.where(m, torch.zeros_like(g), g)

    net_masks = []
    orig = RigL.update

    def spy(self, fraction):
        old = self.mask
        orig(self, fraction)
        net_masks.append((fraction, old, self.mask))
    monkeypatch.setattr(RigL, "update", spy)
    updated, _ = _drive("sgd", grad_of, density=0.3)
    for step, (fraction, old, new) in zip(updated, net_masks):
        assert fraction == pytest.approx(_cosine(step + 1), abs=1e-15)
        for n in NAMES:
            k = int(_cosine(step + 1) * int(old[n].sum()))
            changes.append(k)
            assert int((~old[n]).sum()) >= k  # enough inactive positions to grow into
            assert int((old[n] & ~new[n]).sum()) == k and int((new[n] & ~old[n]).sum()) == k
    assert len(net_masks) == 7 and max(changes) > 0


def test_state_dict_is_plain_data_and_round_trips():
    net = _net()
    opt = make_optimizer(net.parameters(), Recipe())
    s = RigL(NAMES, 0.3, delta_t=1, seed=5)
    s.setup(net, opt, 100)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    s.after_backward(0)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    other = RigL(NAMES, 0.3, delta_t=1, seed=6)  # another initial mask, replaced by the state
    other.setup(net, opt, 100)
    assert other.mask != s.mask
    other.load_state_dict(state)
    assert other.mask == s.mask and other.updates == s.updates == 1 and other.step == 0


def _digits_run(tmp_path=None, kill_at=None):
    from dilt.data import load_dataset
    from dilt.models import build_model, prunable_names

    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    net = build_model("mlp", 10, data.input_shape, hidden=(32, 16))
    s = RigL(prunable_names(net, prune_first=True), 0.2, delta_t=4, seed=0)
    recipe = Recipe(epochs=4, batch_size=128, lr=0.05)

    def kill(epoch, model):
        if epoch == kill_at:
            raise RuntimeError("killed")
    ckpt = tmp_path / "ckpt.pt" if tmp_path else None
    train(net, Split(data.train), Split(data.val), recipe, sparsifier=s, seed=3,
          checkpoint=ckpt, on_epoch_end=kill if kill_at is not None else None)
    return net, s


def test_killed_and_resumed_training_is_identical(tmp_path):
    ref_net, ref = _digits_run()
    assert ref.updates > 0
    first = RigL(ref.names, 0.2, delta_t=4, seed=0)
    first.setup(ref_net, torch.optim.SGD(ref_net.parameters(), lr=0.1), 36)
    assert first.mask != ref.mask                    # the topology did change during training
    params = dict(ref_net.named_parameters())
    for n, m in ref.mask.items():                    # the mask is the one of the returned weights
        assert torch.all(params[n].detach()[~m] == 0)
    assert ref.mask.kept == round(0.2 * ref.mask.numel)
    with pytest.raises(RuntimeError, match="killed"):
        _digits_run(tmp_path, kill_at=2)
    assert (tmp_path / "ckpt.pt").exists()
    net, s = _digits_run(tmp_path)                   # a fresh process resumes from epoch 2
    assert s.mask == ref.mask and s.updates == ref.updates
    for (n, a), b in zip(ref_net.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), n


def test_rigl_method_writes_masks_and_own_results(tmp_path):
    from dilt import config, jobs
    from dilt.io import read_json
    from dilt.methods import get_method
    from dilt.methods.job import MaskJob, read_manifest

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    suite = config.load(path)
    suite.spec["method_options"] = {"rigl": {"delta_t": 3}}
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(suite, "mlp", "digits", 0, str(theta0))
    job = MaskJob(suite=suite, method="rigl", model="mlp", dataset="digits", seed=0,
                  out_dir=tmp_path, theta0=theta0)
    assert job.options == {"delta_t": 3, "drop_fraction": 0.3, "end_fraction": 0.75, "erk": True}
    get_method("rigl").find(job)
    manifest = read_manifest(tmp_path)
    assert [e["target_sparsity"] for e in manifest["masks"]] == [0.5, 0.8]
    for e in manifest["masks"]:
        mask = Mask.load(tmp_path / e["file"])
        assert mask.kept == round((1 - e["target_sparsity"]) * mask.numel)
        assert e["epochs"] == job.recipe.epochs and e["mask_updates"] > 0
        own = read_json(tmp_path / e["own_result"])
        assert own["actual_sparsity"] == pytest.approx(mask.sparsity)
        assert 0 <= own["test"]["full"] <= 1


def test_bad_option_is_one_line_error(tmp_path):
    from dilt.methods.rigl import checked_options

    with pytest.raises(ValueError, match="method_options.rigl.drop_fraction"):
        checked_options({"delta_t": 3, "drop_fraction": 1.5, "end_fraction": 0.75, "erk": True})
    with pytest.raises(ValueError, match="method_options.rigl.delta_t"):
        checked_options({"delta_t": 0, "drop_fraction": 0.3, "end_fraction": 0.75, "erk": True})
