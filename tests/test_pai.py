"""SNIP and GraSP: scores against direct autograd / Hessian computations, the end of the score
each removes, exact keep counts, and the method jobs' mask-run layout."""

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import tiny_config
from torch import nn
from torch.func import functional_call

from dilt.masks import Mask
from dilt.models import build_model, prunable_names
from dilt.prune.magnitude import keep_count
from dilt.prune.pai import grasp_batches, grasp_scores, mask_from_scores, require_signal, snip_scores


def _mlp(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return build_model("mlp", 3, (1, 3, 3), hidden=(5, 4)).to(dtype)


def _data(n, classes=3, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 3, 3, generator=g, dtype=dtype), torch.arange(n) % classes


class _BNNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> Linear: its scores differ between train and eval mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 2, bias=False)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(12, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.head(torch.relu(self.fc(h)))


def _bn_net(seed=0):
    torch.manual_seed(seed)
    net = _BNNet().double()
    with torch.no_grad():  # running stats far from the batch's, so the mode matters
        net.bn.running_mean.fill_(0.7)
        net.bn.running_var.fill_(3.0)
    return net


def _hvp_scores(model, batches, T, wrt, names):
    """-theta * (H g) with g, H of sum_b CE(f(x_b) / T, y_b) over the weights ``wrt``, computed
    independently with torch.autograd.functional.hvp."""
    params = dict(model.named_parameters())
    w0 = tuple(params[n].detach().clone() for n in wrt)

    def f(*ws):
        p = {**{k: v.detach() for k, v in params.items()}, **dict(zip(wrt, ws))}
        return sum(F.cross_entropy(functional_call(model, p, (x,)) / T, y) for x, y in batches)

    g = torch.autograd.grad(f(*[w.requires_grad_() for w in w0]), w0)
    _, hv = torch.autograd.functional.hvp(f, tuple(w.detach() for w in w0), g)
    return {n: -(w0[wrt.index(n)] * hv[wrt.index(n)]).detach() for n in names}


# -- SNIP ------------------------------------------------------------------------------------
def test_snip_scores_are_grad_times_weight_and_mask_sensitivity():
    model = _mlp()
    x, y = _data(12)
    names = prunable_names(model, prune_first=True)
    got = snip_scores(model, x, y, names)
    params = dict(model.named_parameters())
    ws = [params[n] for n in names]
    g = torch.autograd.grad(F.cross_entropy(model(x), y), ws)
    # dL/dc at c = 1, with the weights replaced by c * w
    cs = [torch.ones_like(w, requires_grad=True) for w in ws]
    p = {**dict(model.named_parameters()), **{n: c * w.detach() for n, c, w in zip(names, cs, ws)}}
    dc = torch.autograd.grad(F.cross_entropy(functional_call(model, p, (x,)), y), cs)
    for n, gi, w, d in zip(names, g, ws, dc):
        torch.testing.assert_close(got[n], (gi * w).abs().float())
        torch.testing.assert_close(got[n], d.abs().float())
    # chunked forward passes give the same full-batch mean
    chunked = snip_scores(model, x, y, names, chunk=5)
    for n in names:
        torch.testing.assert_close(chunked[n], got[n])


def test_snip_scores_in_eval_mode_and_leave_model_untouched():
    net = _bn_net()
    x, y = _data(8)
    names = ["conv.weight", "fc.weight"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = snip_scores(net, x, y, names)
    assert net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    ws = [dict(net.named_parameters())[n] for n in names]

    def direct(train):
        net.train(train)
        g = torch.autograd.grad(F.cross_entropy(net(x), y), ws)
        return [(a * w).abs().float() for a, w in zip(g, ws)]

    ev, tr = direct(False), direct(True)
    for n, e, t in zip(names, ev, tr):
        torch.testing.assert_close(got[n], e)
        assert not torch.allclose(e, t)  # the mode matters here, so the check bites


# -- GraSP -----------------------------------------------------------------------------------
def test_grasp_scores_match_hvp_over_all_weights():
    model = _mlp()
    x, y = _data(12)
    batches = [(x[:6], y[:6]), (x[6:], y[6:])]
    wrt = ["hidden.0.weight", "hidden.1.weight", "head.weight"]
    names = ["hidden.1.weight"]  # scored subset; Hg still runs over every layer's weight
    got = grasp_scores(model, batches, names, T=200.0)
    want = _hvp_scores(model, batches, 200.0, wrt, names)
    torch.testing.assert_close(got["hidden.1.weight"], want["hidden.1.weight"].float(),
                               rtol=1e-4, atol=1e-12)
    # restricting H and g to the scored tensor gives other numbers: the weight set matters
    sub = _hvp_scores(model, batches, 200.0, names, names)
    assert not torch.allclose(sub["hidden.1.weight"].float(), got["hidden.1.weight"], rtol=1e-3)


def test_grasp_hg_equals_explicit_hessian_times_gradient():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Tanh(), nn.Linear(2, 3, bias=False)).double()
    x, y = _data(6)
    x = x.flatten(1)[:, :3]
    T = 2.0
    shapes = [p.shape for p in net.parameters()]
    theta = torch.cat([p.detach().flatten() for p in net.parameters()])

    def loss(flat):
        a, b = flat[:6].view(shapes[0]), flat[6:].view(shapes[1])
        return F.cross_entropy(torch.tanh(x @ a.T) @ b.T / T, y)

    H = torch.autograd.functional.hessian(loss, theta)
    g = torch.autograd.functional.jacobian(loss, theta)
    want = -theta * (H @ g)
    got = grasp_scores(net, [(x, y)], ["0.weight", "2.weight"], T=T)
    torch.testing.assert_close(torch.cat([got["0.weight"].flatten(), got["2.weight"].flatten()]),
                               want.float(), rtol=1e-5, atol=1e-10)


def test_grasp_chunks_reassemble_the_unchunked_scores():
    """Without batch-dependent layers, chunked forward passes give the same scores (each batch's
    mean loss is the share-weighted sum of its chunks'); with BatchNorm in train mode each chunk
    is normalised by its own statistics, so they differ."""
    model = _mlp()
    x, y = _data(12)
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    names = ["hidden.1.weight", "head.weight"]
    whole = grasp_scores(model, batches, names, T=200.0)
    for chunk in (1, 3, 7):
        got = grasp_scores(model, batches, names, T=200.0, chunk=chunk)
        for n in names:
            torch.testing.assert_close(got[n], whole[n], rtol=1e-5, atol=1e-12)
    net, bn_batches = _bn_net(), [(x[:8], y[:8])]
    a = grasp_scores(net, bn_batches, ["fc.weight"], T=5.0)["fc.weight"]
    b = grasp_scores(net, bn_batches, ["fc.weight"], T=5.0, chunk=4)["fc.weight"]
    assert not torch.allclose(a, b, rtol=1e-3)


def test_grasp_scores_without_stochastic_depth_or_dropout():
    """A DeiT with drop path: GraSP's BatchNorm-style train mode must not also drop residual
    branches at random, so the scores do not depend on the random state and equal those of the
    same weights built without drop path."""
    torch.manual_seed(0)
    noisy = build_model("vit_tiny", 3, (1, 8, 8), drop_path_rate=0.3)
    plain = build_model("vit_tiny", 3, (1, 8, 8))
    plain.load_state_dict(noisy.state_dict())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 1, 8, 8, generator=g), torch.arange(12) % 3
    names = prunable_names(noisy)
    runs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        runs.append(grasp_scores(noisy, [(x, y)], names, T=200.0))
    want = grasp_scores(plain, [(x, y)], names, T=200.0)
    for n in names:
        assert torch.equal(runs[0][n], runs[1][n]) and torch.equal(runs[0][n], want[n]), n


def test_chunks_of_a_class_ordered_batch_are_dealt_round_robin_over_its_classes():
    """GraSP's halves are ordered by class; cut into chunks as they are, a chunk's BatchNorm
    statistics would see one or two classes. Dealt round-robin, every chunk of K examples holds
    K classes (while they last), each class's examples keep their order, and nothing is lost."""
    from dilt.prune.pai import _round_robin

    y = torch.tensor([0] * 5 + [1] * 5 + [2] * 3 + [3] * 5)
    order = _round_robin(y)
    assert sorted(order.tolist()) == list(range(len(y)))
    dealt = y[order]
    assert [len(set(dealt[i:i + 4].tolist())) for i in (0, 4, 8)] == [4, 4, 4]
    for c in range(4):
        pos = order[dealt == c]
        assert torch.equal(pos, torch.sort(pos).values)


def test_grasp_runs_in_train_mode_and_leaves_model_untouched():
    net = _bn_net()
    x, y = _data(8)
    names = ["conv.weight", "fc.weight"]
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = grasp_scores(net, [(x[:4], y[:4]), (x[4:], y[4:])], names, T=5.0)
    assert not net.training and all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    wrt = ["conv.weight", "fc.weight", "head.weight"]
    net.train()
    want = _hvp_scores(net, [(x[:4], y[:4]), (x[4:], y[4:])], 5.0, wrt, names)
    net.eval()
    want_eval = _hvp_scores(net, [(x[:4], y[:4]), (x[4:], y[4:])], 5.0, wrt, names)
    for n in names:
        torch.testing.assert_close(got[n], want[n].float(), rtol=1e-4, atol=1e-12)
        assert not torch.allclose(got[n], want_eval[n].float(), rtol=1e-3)


def test_grasp_removes_the_largest_scores_as_the_original():
    """The authors' thresholding, written out: normalise by |sum|, take the int(n * ratio)-th
    largest score as the threshold, keep ``score <= threshold``."""
    torch.manual_seed(0)
    s = torch.randn(40) * torch.linspace(0.1, 3.0, 40)  # distinct, both signs
    like = Mask({"a": torch.ones(4, 5, dtype=torch.bool), "b": torch.ones(20, dtype=torch.bool)})
    scores = {"a": s[:20].view(4, 5), "b": s[20:]}
    ratio = 0.75
    norm = s / (s.sum().abs() + 1e-10)
    thr = torch.topk(norm, int(len(s) * ratio)).values[-1]
    orig = norm <= thr                       # keeps one more: the threshold itself
    ours = mask_from_scores(scores, like, ratio, keep="smallest")
    flat = torch.cat([ours["a"].flatten(), ours["b"].flatten()])
    assert int(flat.sum()) == keep_count(40, ratio) == int(orig.sum()) - 1
    assert bool((flat <= orig).all()) and int((orig & ~flat).sum()) == 1
    assert bool(norm[orig & ~flat] == thr)
    # the other ends would be different masks
    for other in (torch.topk(s, 10).indices, torch.topk(-s.abs(), 10).indices, torch.topk(s.abs(), 10).indices):
        alt = torch.zeros(40, dtype=torch.bool)
        alt[other] = True
        assert not torch.equal(alt, flat)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("keep", ["largest", "smallest"])
def test_masks_keep_exactly_keep_count(sparsity, keep):
    like = Mask({"a": torch.ones(7, 9, dtype=torch.bool), "b": torch.ones(3, 11, dtype=torch.bool)})
    torch.manual_seed(1)
    scores = {"a": torch.randn(7, 9), "b": torch.zeros(3, 11)}  # many ties
    m = mask_from_scores(scores, like, sparsity, keep=keep)
    assert m.kept == keep_count(like.numel, sparsity) and m.shapes == like.shapes
    flat = torch.cat([scores[n].flatten() for n in like])
    kept = torch.cat([m[n].flatten() for n in like])
    if 0 < kept.sum() < len(kept):
        lo, hi = (flat[~kept].max(), flat[kept].min()) if keep == "largest" else (flat[kept].max(), flat[~kept].min())
        assert lo <= hi


def test_mask_from_scores_rejects_bad_input():
    like = Mask({"a": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError, match="keep"):
        mask_from_scores({"a": torch.zeros(4)}, like, 0.5, keep="top")
    with pytest.raises(ValueError, match="NaN"):
        mask_from_scores({"a": torch.tensor([1.0, float("nan"), 0.0, 2.0])}, like, 0.5)
    with pytest.raises(KeyError, match="'a'"):
        mask_from_scores({}, like, 0.5)


@pytest.mark.parametrize("zero_init_last", [True, False])
def test_a_layer_without_gradient_at_theta0_is_refused_not_ranked_by_ties(zero_init_last):
    """timm's zero_init_last leaves ResNet-50's block convolutions no gradient at theta_0 (their
    SNIP and GraSP scores are all 0); the scoring refuses that, naming a layer, and the builder's
    default (off, as torchvision's) gives every prunable layer a signal."""
    torch.manual_seed(0)
    net = build_model("resnet50", 4, (3, 16, 16), zero_init_last=zero_init_last)
    names = prunable_names(net)
    x, y = torch.randn(8, 3, 16, 16), torch.arange(8) % 4
    scores = snip_scores(net, x, y, names)
    dead = [n for n in names if not scores[n].any()]
    if zero_init_last:
        assert "layer1.0.conv3.weight" in dead and len(dead) == 48  # 16 blocks x 3 convs
        with pytest.raises(ValueError, match=r"^snip: every score of 'layer1\.0\.conv1\.weight' is 0"):
            require_signal(scores, "snip")
    else:
        assert dead == []
        require_signal(scores, "snip")
    assert not build_model("resnet50", 4, (3, 16, 16)).layer1[0].bn3.weight.eq(0).any()


def test_grasp_batches_split_like_the_original():
    y = torch.arange(40) % 4                 # 10 per class, interleaved
    x = torch.arange(40).float()[:, None]
    out = grasp_batches(x, y, 2)
    assert len(out) == 4
    seen = torch.cat([b[0][:, 0] for b in out]).long()
    assert sorted(seen.tolist()) == list(range(40))
    for it in range(2):
        (x1, y1), (_, y2) = out[2 * it], out[2 * it + 1]
        assert len(y1) == len(y2) == 10
        assert torch.equal(torch.bincount(torch.cat([y1, y2]), minlength=4), torch.full((4,), 5))
        both = torch.cat([y1, y2])
        assert torch.equal(both, both.sort().values)  # ordered by class, cut at N // 2
        assert torch.equal(y[x1[:, 0].long()], y1)


# -- the method jobs -------------------------------------------------------------------------
@pytest.fixture
def job_factory(tmp_path):
    from dilt import config, jobs
    from dilt.methods.job import MaskJob

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    suite = config.load(path)
    theta0 = tmp_path / "theta0.safetensors"
    jobs.init(suite, "mlp", "digits", 0, str(theta0))

    def make(method, options=None):
        if options is not None:
            suite.spec["method_options"] = {method: options}
        out = tmp_path / method
        out.mkdir(exist_ok=True)
        return MaskJob(suite=suite, method=method, model="mlp", dataset="digits", seed=0,
                       out_dir=out, theta0=theta0)
    return make


def test_class_balanced_batch_has_per_class_of_every_class(job_factory):
    job = job_factory("snip")
    x, y = job.class_balanced_batch(7)
    counts = torch.bincount(y, minlength=job.bundle.num_classes)
    assert torch.equal(counts, torch.full((job.bundle.num_classes,), 7))
    assert len(x) == len(y)


def test_methods_are_registered():
    from dilt.methods import get_method

    for name, display in (("snip", "SNIP"), ("grasp", "GraSP")):
        m = get_method(name)
        assert (m.kind, m.display, m.needs) == ("one-shot", display, ("theta0",)) and m.cite
    assert get_method("grasp").options == {"samples_per_class": 10, "num_iters": 1, "T": 200.0,
                                           "chunk": 0}


def _independent_scores(job, method):
    """The job's scores recomputed directly (autograd / hvp), with its own batch."""
    model = job.theta0_model().double()
    names = job.prunable
    if method == "snip":
        x, y = job.class_balanced_batch(job.options["per_class"])
        ws = [dict(model.named_parameters())[n] for n in names]
        g = torch.autograd.grad(F.cross_entropy(model.eval()(x.double()), y), ws)
        return {n: (a * w).abs().detach() for n, a, w in zip(names, g, ws)}, "largest"
    x, y = job.class_balanced_batch(job.options["samples_per_class"])
    order = torch.argsort(y, stable=True)
    x, y = x[order].double(), y[order]
    h = len(y) // 2
    wrt = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    return _hvp_scores(model.train(), [(x[:h], y[:h]), (x[h:], y[h:])], 200.0, wrt, names), "smallest"


@pytest.mark.parametrize("method", ["snip", "grasp"])
def test_find_writes_one_mask_per_target(job_factory, method):
    from dilt.methods import get_method
    from dilt.methods.job import read_manifest

    job = job_factory(method)
    theta0 = {k: v.clone() for k, v in job.theta0_model().state_dict().items()}
    get_method(method).find(job)
    manifest = read_manifest(job.out_dir)
    assert manifest["method"] == method
    assert [e["target_sparsity"] for e in manifest["masks"]] == sorted(job.targets)
    want, keep = _independent_scores(job, method)
    flat = torch.cat([want[n].flatten() for n in job.prunable])
    for e in manifest["masks"]:
        assert e["epochs"] == 0
        m, meta = Mask.load_with_metadata(job.out_dir / e["file"])
        assert list(m) == job.prunable
        assert m.kept == keep_count(m.numel, e["target_sparsity"])
        assert abs(e["actual_sparsity"] - m.sparsity) < 1e-12
        assert meta["method"] == method and float(meta["target"]) == e["target_sparsity"]
        kept = torch.cat([m[n].flatten() for n in job.prunable])
        tol = 1e-5 * float(flat.abs().max())
        if keep == "largest":
            assert float(flat[kept].min()) >= float(flat[~kept].max()) - tol
        else:
            assert float(flat[kept].max()) <= float(flat[~kept].min()) + tol
    assert all(torch.equal(theta0[k], v) for k, v in job.theta0_model().state_dict().items())


def test_bad_option_is_one_line_naming_the_key(job_factory):
    from dilt.methods import get_method

    job = job_factory("grasp", {"samples_per_class": 0})
    with pytest.raises(ValueError, match=r"method_options\.grasp\.samples_per_class"):
        get_method("grasp").find(job)
