"""CAP: the OBS step against its closed form, the Fisher against per-example gradients written
out by hand, exact sparsities, global allocation, and a find() smoke on the tiny suite."""

import numpy as np
import pytest
import torch
import yaml
from conftest import init_and_dense, tiny_config
from torch import nn

from dilt.masks import Mask
from dilt.prune.cap import (
    allocate,
    block_size,
    cap_prune,
    empirical_fisher,
    fisher_inverse,
    obs_eliminate,
    sparsity_schedule,
)
from dilt.prune.magnitude import keep_count


def _spd(rng, n, scale=1.0):
    a = rng.standard_normal((n, n))
    return scale * (a @ a.T / n + 0.1 * np.eye(n))


def _obs_np(w, f, removed):
    """One OBS removal over the weights not in ``removed``, from a numpy inverse of the Fisher
    restricted to them: (q, new w, saliency)."""
    keep = [i for i in range(len(w)) if i not in removed]
    hinv = np.linalg.inv(f[np.ix_(keep, keep)])
    sal = w[keep] ** 2 / (2 * np.diag(hinv))
    j = int(np.argmin(sal))
    out = w.copy()
    out[keep] = w[keep] - w[keep][j] / hinv[j, j] * hinv[:, j]
    out[keep[j]] = 0.0
    return keep[j], out, sal[j]


def test_obs_steps_equal_the_closed_form_with_numpy_inverses():
    rng = np.random.default_rng(0)
    size = 6
    f = _spd(rng, size)
    w = rng.standard_normal(size)
    alive = torch.ones(1, size, dtype=torch.bool)
    finv = fisher_inverse(torch.tensor(f)[None], alive, 0.0)
    assert np.allclose(finv[0].numpy(), np.linalg.inv(f))
    removed, cur, total = [], w.copy(), 0.0
    for k in range(1, size):
        q, cur, sal = _obs_np(cur, f, removed)
        removed.append(q)
        total += sal
        got_w, got_alive, loss = obs_eliminate(torch.tensor(w)[None], finv, alive, torch.tensor([k]))
        assert np.allclose(got_w[0].numpy(), cur, atol=1e-10)
        assert sorted(np.flatnonzero(~got_alive[0].numpy())) == sorted(removed)
        assert np.isclose(float(loss[0, k - 1]), total)
        # each step starts from a constrained minimum, so the summed saliencies are the
        # quadratic loss of the final point
        d = cur - w
        assert np.isclose(0.5 * d @ f @ d, total)
    # the saliency of the first step is the minimum over all single removals
    first = min(w[q] ** 2 / (2 * np.linalg.inv(f)[q, q]) for q in range(size))
    assert np.isclose(float(loss[0, 0]), first)


def test_first_obs_step_solves_the_kkt_system():
    rng = np.random.default_rng(1)
    f, w = _spd(rng, 5), rng.standard_normal(5)
    alive = torch.ones(1, 5, dtype=torch.bool)
    got, _, loss = obs_eliminate(torch.tensor(w)[None], fisher_inverse(torch.tensor(f)[None], alive, 0.0),
                                 alive, torch.tensor([1]))
    q = int(np.flatnonzero(got[0].numpy() == 0)[0])
    kkt = np.block([[f, np.eye(5)[:, [q]]], [np.eye(5)[[q]], np.zeros((1, 1))]])
    delta = np.linalg.solve(kkt, np.r_[np.zeros(5), -w[q]])[:5]
    assert np.allclose(got[0].numpy(), w + delta)
    assert np.isclose(float(loss[0, 0]), 0.5 * delta @ f @ delta)


def test_fisher_is_the_mean_outer_product_of_per_example_gradients():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3, bias=False).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    fisher = empirical_fisher(lin, ["weight"], ((x[i:i + 1], y[i:i + 1]) for i in range(10)), 6,
                              dtype=torch.float64)["weight"]
    p = torch.softmax(x @ lin.weight.T, 1).detach().numpy()
    g = (p - np.eye(3)[y.numpy()])[:, :, None] * x.numpy()[:, None, :]   # dCE/dW per example
    g = g.reshape(10, -1)
    full = g.T @ g / 10
    want = np.stack([full[b * 6:(b + 1) * 6, b * 6:(b + 1) * 6] for b in range(3)])
    assert fisher.shape == (3, 6, 6)
    assert np.allclose(fisher.numpy(), want)
    # a removed weight has no gradient, so no Fisher row
    mask = {"weight": torch.ones(3, 6, dtype=torch.bool)}
    mask["weight"][1, 2] = False
    fm = empirical_fisher(lin, ["weight"], ((x[i:i + 1], y[i:i + 1]) for i in range(10)), 6, mask,
                          dtype=torch.float64)["weight"]
    assert torch.all(fm[1, 2] == 0) and torch.all(fm[1, :, 2] == 0)


def _correlated_layer(seed=0, n=400, d_in=16, d_out=8):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 3))
    x = z @ rng.standard_normal((3, d_in)) + 0.05 * rng.standard_normal((n, d_in))
    w = rng.standard_normal((d_out, d_in))
    return x, w


def _layer(w):
    lin = nn.Linear(w.shape[1], w.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w))
    return lin


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_obs_beats_magnitude_on_the_layerwise_loss_with_correlated_inputs(sparsity):
    x, w = _correlated_layer()
    lin = _layer(w)
    mask = Mask.ones(lin, ["weight"])
    h = torch.tensor(x.T @ x / len(x))                 # every row's Hessian of ||x w^T||^2 / n
    fisher = {"weight": h.expand(w.shape[0], -1, -1).clone()}
    new, _ = cap_prune(lin, mask, fisher, sparsity, damp=1e-6)
    k = keep_count(w.size, sparsity)
    assert new.kept == k
    w_cap = lin.weight.detach().numpy()
    keep = np.zeros(w.size, bool)
    keep[np.argsort(-np.abs(w).ravel(), kind="stable")[:k]] = True
    w_mag = np.where(keep.reshape(w.shape), w, 0.0)
    loss = lambda v: float(np.sum((x @ (w - v).T) ** 2))  # noqa: E731
    assert np.all(w_cap[~new["weight"].numpy()] == 0)
    assert loss(w_cap) < 0.25 * loss(w_mag)


def _two_layer_net(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 12, bias=False), nn.Linear(12, 8, bias=False)).double()
    with torch.no_grad():
        net[1].weight.copy_(net[0].weight.T)           # the same weights in both layers
    return net, ["0.weight", "1.weight"]


def test_global_allocation_follows_sensitivity_and_matches_brute_force():
    net, names = _two_layer_net()
    mask = Mask.ones(net, names)
    b = 8
    c = {"0.weight": 1.0, "1.weight": 100.0}           # layer 1 is 100x more sensitive
    fisher = {n: c[n] * torch.eye(b, dtype=torch.float64).expand(96 // b, b, b).clone() for n in names}
    w0 = {n: p.detach().clone() for n, p in net.named_parameters()}
    new, _ = cap_prune(net, mask, fisher, 0.5, damp=0.0)
    dens = new.layer_density()
    assert new.kept == keep_count(mask.numel, 0.5)
    assert dens["0.weight"] < 0.5 < dens["1.weight"]
    # brute force: with F = c I a block's loss for its first k removals is c/2 * (k smallest w^2)
    prefix = []
    for n in names:
        sq = np.sort(w0[n].numpy().reshape(-1, b) ** 2, axis=1)
        prefix.append(0.5 * c[n] * np.cumsum(sq, axis=1))
    flat = np.concatenate([p.ravel() for p in prefix])
    chosen = np.zeros(flat.size, bool)
    chosen[np.argsort(flat, kind="stable")[:mask.numel // 2]] = True
    per_block = chosen.reshape(-1, b).sum(1)
    got = np.concatenate([(~new[n]).numpy().reshape(-1, b).sum(1) for n in names])
    assert np.array_equal(got, per_block)
    # a diagonal Fisher couples nothing: OBS removes the smallest weights and moves no other
    for n in names:
        kept = new[n]
        assert torch.equal(dict(net.named_parameters())[n].detach()[kept], w0[n][kept])


def test_allocate_takes_prefixes_and_refuses_too_many():
    losses = {"a": torch.tensor([[1.0, 5.0, float("inf")], [2.0, 3.0, 4.0]])}
    assert allocate(losses, 3)["a"].tolist() == [1, 2]
    with pytest.raises(ValueError, match="cannot remove 6 weights: 5"):
        allocate(losses, 6)


def _tiny_vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=32,
                             depth=2, num_heads=4, mlp_ratio=4.0)


def test_gradual_cap_on_a_tiny_vit_hits_every_sparsity_exactly():
    from dilt.models import prunable_names

    vit = _tiny_vit()
    names = prunable_names(vit)
    assert all(n.split(".")[-2] in ("qkv", "proj", "fc1", "fc2") for n in names) and len(names) == 8
    x, y = torch.randn(24, 1, 8, 8), torch.randint(0, 10, (24,))
    mask = Mask.ones(vit, names)
    prev = mask
    for s in sparsity_schedule([0.8], 0.5, 2):
        fisher = empirical_fisher(vit, names, ((x[i:i + 1], y[i:i + 1]) for i in range(24)), 32, mask)
        assert all(f.shape[1:] == (32, 32) for f in fisher.values())
        mask, est = cap_prune(vit, mask, fisher, s, damp=1e-4)
        assert mask.kept == keep_count(mask.numel, s)
        assert mask <= prev
        params = dict(vit.named_parameters())
        assert all(torch.all(params[n].detach()[~mask[n]] == 0) for n in names)
        assert all(np.isfinite(v) and v >= 0 for v in est.values())
        prev = mask
    assert len(set(round(d, 3) for d in mask.layer_density().values())) > 1   # not uniform


def test_block_size_and_schedule():
    assert block_size(3072, 192) == 192 and block_size(100, 192) == 100 and block_size(98, 8) == 14
    # the authors' DeiT-S recipe, steps every 20 epochs: 0.5, 0.6, 0.75 and 0.9 at steps 0, 1, 4, 13
    plan = sparsity_schedule([0.5, 0.7, 0.8, 0.9], 0.5, 13)
    recipe = [0.5, 0.6, 0.65, 0.7] + [0.75 + 0.15 * k / 9 for k in range(10)]
    assert len(plan) == 14 and np.allclose(plan, recipe, atol=1e-12)
    assert {0.5, 0.7, 0.8, 0.9} <= set(plan)                     # every target is a step of the run
    assert np.allclose(sparsity_schedule([0.9], 0.5, 13), plan)
    # other ranges keep the shape; targets off the ladder become steps of their own
    short = sparsity_schedule([0.98, 0.9, 0.95], 0.5, 2)
    assert np.allclose(short, [0.5, 0.5 + 0.48 * (0.625 + 0.375 * (0.5 - 4 / 13) / (9 / 13)),
                               0.9, 0.95, 0.98])
    assert all(b > a for p in (plan, short) for a, b in zip(p, p[1:]))
    assert sparsity_schedule([0.4], 0.5, 13) == [0.4]
    assert sparsity_schedule([0.6, 0.8], 0.5, 0) == [0.6, 0.8]     # steps 0: one-shot per target
    with pytest.raises(ValueError, match="target sparsities"):
        sparsity_schedule([0.5, 1.0], 0.5, 13)


def test_cap_refuses_a_lower_sparsity_than_the_mask_has():
    net, names = _two_layer_net()
    mask = Mask({n: torch.zeros_like(p, dtype=torch.bool) for n, p in net.named_parameters()})
    fisher = {n: torch.eye(8, dtype=torch.float64).expand(12, 8, 8).clone() for n in names}
    with pytest.raises(ValueError, match="cannot prune to sparsity 0.5"):
        cap_prune(net, mask, fisher, 0.5, damp=1e-8)


# -- the method job ---------------------------------------------------------------------------
SMOKE = {"num_grads": 16, "grad_batch": 1, "fisher_block": 16, "damp": 1e-6, "init_sparsity": 0.5,
         "steps": 1, "prune_every": 1, "lr": None}


@pytest.fixture
def cap_job(tmp_path):
    from dilt import config
    from dilt.methods.job import MaskJob

    path = tmp_path / "config.yaml"
    cfg = tiny_config(method_options={"cap": dict(SMOKE)})
    path.write_text(yaml.safe_dump(cfg))
    suite = config.load(path)
    theta0, dense = init_and_dense(suite, "mlp", tmp_path)
    out = tmp_path / "cap"
    out.mkdir()
    return MaskJob(suite=suite, method="cap", model="mlp", dataset="digits", seed=0, out_dir=out,
                   theta0=theta0, dense=dense)


def test_find_writes_exact_masks_and_own_results(cap_job):
    from dilt.io import read_json
    from dilt.methods import get_method
    from dilt.methods.job import read_manifest

    method = get_method("cap")
    assert (method.kind, method.display, method.needs) == ("post-training", "CAP", ("theta0", "dense"))
    method.find(cap_job)
    manifest = read_manifest(cap_job.out_dir)
    assert [e["target_sparsity"] for e in manifest["masks"]] == [0.5, 0.8]
    dense_epochs = cap_job.recipe.epochs
    for e in manifest["masks"]:
        m = Mask.load(cap_job.out_dir / e["file"])
        assert m.kept == keep_count(m.numel, e["target_sparsity"])
        assert list(m) == cap_job.prunable
        assert e["epochs"] == dense_epochs + len(e["schedule"])    # one fine-tuning epoch per step
        own = read_json(cap_job.out_dir / e["own_result"])
        assert 0.0 <= own["test"]["full"] <= 1.0
    assert manifest["masks"][0]["schedule"] == [0.5] and manifest["masks"][1]["schedule"] == [0.5, 0.8]


@pytest.mark.parametrize("key,value", [("num_grads", 0), ("damp", -1.0), ("init_sparsity", 1.0),
                                       ("steps", 1.5), ("lr", "fast")])
def test_bad_option_is_one_line_naming_the_key(cap_job, key, value):
    from dilt.methods import get_method

    cap_job.suite.spec["method_options"]["cap"][key] = value
    with pytest.raises(ValueError, match=rf"method_options\.cap\.{key}"):
        get_method("cap").find(cap_job)


def test_rank_deficient_fisher_of_large_gradients_inverts_in_float64():
    """Fewer gradients than a block's weights, of a trained model's size: accumulated in float32
    the block has eigenvalues below -damp and Cholesky fails; CAP on a CPU accumulates in
    float64 (dilt.methods.cap), where the paper's damp suffices."""
    torch.manual_seed(0)
    lin = nn.Linear(64, 4, bias=False)
    with torch.no_grad():
        lin.weight.mul_(300.0)
    x, y = torch.randn(6, 64) * 30, torch.randint(0, 4, (6,))
    batches = [(x[i:i + 1], y[i:i + 1]) for i in range(6)]
    alive = torch.ones(8, 32, dtype=torch.bool)
    f32 = empirical_fisher(lin, ["weight"], batches, 32, dtype=torch.float32)["weight"]
    f64 = empirical_fisher(lin, ["weight"], batches, 32, dtype=torch.float64)["weight"]
    with pytest.raises(ValueError, match="damp"):
        fisher_inverse(f32, alive, 1e-8)
    inv = fisher_inverse(f64, alive, 1e-8)
    assert torch.isfinite(inv).all()


def test_under_ddp_each_rank_takes_its_share_of_the_gradients_and_the_sums_are_the_fisher(
        cap_job, monkeypatch):
    """Under DDP each rank computes the gradients of its own share of the batches (the same
    batches as one process, none twice) and the all-reduced sums are the single-process Fisher."""
    from dilt import platform
    from dilt.methods.cap import gradient_batches

    split = cap_job.splits()[0]
    model = cap_job.dense_model()
    names = cap_job.prunable
    single = list(gradient_batches(split, 7, 3, seed=5))
    fisher = empirical_fisher(model, names, single, 16, dtype=torch.float64)
    parts = []
    monkeypatch.setattr(platform, "world_size", lambda: 2)
    monkeypatch.setattr(platform, "all_reduce_sum", lambda t: parts.append(t.clone()) or t)
    shares = [list(gradient_batches(split, 7, 3, seed=5, shard=(r, 2))) for r in (0, 1)]
    assert [len(s) for s in shares] == [4, 3]
    for (x, y), (xs, ys) in zip(single, shares[0] + shares[1]):
        assert torch.equal(x, xs) and torch.equal(y, ys)
    for share in shares:
        empirical_fisher(model, names, share, 16, dtype=torch.float64)
    k = len(names) + 1                 # each rank reduces one sum per tensor, then its count
    assert [float(parts[len(names)]), float(parts[k + len(names)])] == [4.0, 3.0]
    for i, n in enumerate(names):
        assert torch.allclose((parts[i] + parts[k + i]) / 7, fisher[n], rtol=1e-10, atol=1e-14)


def test_a_restarted_job_resumes_after_its_last_finished_step(cap_job, monkeypatch):
    """A job killed in step 2's fine-tuning and started again does not compute step 1's Fisher
    again (it loads the model and mask kept after that step), ends with the files of an
    uninterrupted run, and leaves no resume file behind once complete."""
    from conftest import assert_same_files

    from dilt.methods import cap as method
    from dilt.methods.job import MaskJob

    fishers, trains = [], []
    real_fisher, real_train = method.empirical_fisher, MaskJob.train
    monkeypatch.setattr(method, "empirical_fisher", lambda *a, **k: fishers.append(1) or real_fisher(*a, **k))

    def killed_in_step2(job, model, *, name, **kw):
        trains.append(name)
        if name == "step1":
            raise KeyboardInterrupt
        return real_train(job, model, name=name, **kw)

    monkeypatch.setattr(MaskJob, "train", killed_in_step2)
    with pytest.raises(KeyboardInterrupt):
        method.find(cap_job)
    assert trains == ["step0", "step1"] and len(fishers) == 2
    assert (cap_job.out_dir / "step_0.pt").exists() and not (cap_job.out_dir / "ckpt_step0.pt").exists()
    monkeypatch.setattr(MaskJob, "train", real_train)
    cap_job._entries.clear()
    method.find(cap_job)
    assert len(fishers) == 3                                   # step 1's Fisher only
    assert not list(cap_job.out_dir.glob("step_*.pt")) and not list(cap_job.out_dir.glob("ckpt_*.pt"))
    clean = MaskJob(suite=cap_job.suite, method="cap", model="mlp", dataset="digits", seed=0,
                    out_dir=cap_job.out_dir.parent / "clean", theta0=cap_job.theta0, dense=cap_job.dense)
    clean.out_dir.mkdir()
    method.find(clean)
    files = {d: {p.name: p for p in d.iterdir()} for d in (cap_job.out_dir, clean.out_dir)}
    assert_same_files(*files.values())
