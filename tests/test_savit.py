"""SAViT: FLOPs counting, FLOPs targets, physical shrinking and the second-order joint importance,
on tiny timm ViTs (8x8 one-channel images, 2x2 patches, 32-d, 2 blocks of 4 heads)."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch.utils.flop_counter import FlopCounterMode

from dilt.prune import savit as sv

L, H, HD, M, D, K = 2, 4, 8, 32, 32, 5     # blocks, heads, head dim, hidden, embed, classes


def tiny_vit(seed=0, dtype=torch.float32, **kw):
    torch.manual_seed(seed)
    m = VisionTransformer(img_size=8, patch_size=2, in_chans=1, num_classes=K, embed_dim=D,
                          depth=L, num_heads=H, mlp_ratio=M / D, **kw)
    with torch.no_grad():            # non-trivial norms, embeddings and head
        for name, p in m.named_parameters():
            if "norm" in name or name in ("pos_embed", "cls_token") or name.endswith("bias"):
                p.add_(0.3 * torch.randn_like(p))
        m.head.weight.mul_(20)
    return m.eval().to(dtype)


def idx(kind, block=0, i=0):
    """Flat gate index of a head / neuron (of ``block``) or an embedding dim."""
    return {"head": block * H + i, "neuron": L * H + block * M + i, "dim": L * H + L * M + i}[kind]


def gates_closed(model, closed, t=1.0):
    """Gates of ``model`` with the flat indices ``closed`` lowered by ``t``."""
    a = torch.ones(L * H + L * M + D, dtype=next(model.parameters()).dtype)
    a[list(closed)] -= t
    h, m, e = torch.split(a, [L * H, L * M, D])
    return h.view(L, H), m.view(L, M), e


def loss_at(model, batch, loss_fn, closed, t=1.0):
    x, y = batch
    with torch.no_grad(), sv.gated(model, *gates_closed(model, closed, t)):
        return float(loss_fn(model(x), y))


def unfused(model):
    for blk in model.blocks:
        blk.attn.fused_attn = False
    return model


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(24, 1, 8, 8, generator=g), torch.randint(0, K, (24,), generator=g)


@pytest.fixture(scope="module")
def scored(data):
    model = tiny_vit()
    x, y = data
    g, h = sv.gate_taylor(model, [(x[:12], y[:12]), (x[12:], y[12:])])
    return model, g, h


# -- FLOPs ------------------------------------------------------------------------------------------
def hand_count(tokens, patches, heads, hidden, d):
    """Multiply-accumulates x 2, written out layer by layer."""
    total = 2 * patches * d * (1 * 2 * 2)                        # patch embedding conv
    for h, m in zip(heads, hidden):
        total += 2 * tokens * d * (3 * h * HD)                   # qkv
        total += 2 * h * tokens * tokens * HD                    # q @ k^T
        total += 2 * h * tokens * tokens * HD                    # attn @ v
        total += 2 * tokens * (h * HD) * d                       # proj
        total += 2 * tokens * d * m + 2 * tokens * m * d         # fc1, fc2
    return total + 2 * d * K                                     # classifier head


@pytest.mark.parametrize("kw,tokens", [({}, 17), ({"global_pool": "avg", "class_token": False}, 16)])
def test_flops_counter_matches_hand_count_and_torch(kw, tokens):
    model = unfused(tiny_vit(**kw))
    assert sv.vit_flops(model) == hand_count(tokens, 16, [H] * L, [M] * L, D)
    with FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 1, 8, 8))
    assert sv.vit_flops(model) == fc.get_total_flops()
    keep = sv.Structure.full(model)
    keep.heads[0, 1:3] = False
    keep.hidden[1, :20] = False
    keep.embed[::4] = False
    small = unfused(sv.shrink(model, keep))
    expected = hand_count(tokens, 16, [2, 4], [32, 12], 24)
    assert sv.vit_flops(model, keep) == sv.vit_flops(small) == expected
    with FlopCounterMode(display=False) as fc:
        small(torch.zeros(1, 1, 8, 8))
    assert fc.get_total_flops() == expected


# -- FLOPs targets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("keep_frac", [0.8, 0.5, 0.3])
def test_select_lands_on_the_flops_target(scored, keep_frac):
    model, g, h = scored
    keep = sv.select(model, g, h, keep_frac)
    ratio = sv.vit_flops(model, keep) / sv.vit_flops(model)
    assert abs(ratio - keep_frac) <= 0.02 * keep_frac
    assert keep.heads.sum(1).min() >= 1 and keep.hidden.sum(1).min() >= 1
    assert int((~keep.flat()).sum()) > 0


def test_select_rejects_a_bad_target(scored):
    model, g, h = scored
    with pytest.raises(sv.SAViTError, match="flops_keep"):
        sv.select(model, g, h, 1.5)


# -- physical shrinking -----------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{}, {"global_pool": "avg", "class_token": False}])
def test_shrink_removes_whole_components_and_matches_the_masked_model(kw, data):
    model = tiny_vit(**kw)
    keep = sv.Structure.full(model)
    keep.heads[0, [0, 3]] = False
    keep.heads[1, 2] = False
    keep.hidden[0, ::3] = False
    keep.hidden[1, 5:] = False
    keep.embed[[1, 2, 7, 30]] = False
    small = sv.shrink(model, keep)
    d = 28
    assert small.patch_embed.proj.weight.shape == (d, 1, 2, 2)
    assert small.pos_embed.shape[-1] == d and small.head.weight.shape == (K, d)
    for l, (nh, nm) in enumerate([(2, 21), (3, 5)]):
        blk = small.blocks[l]
        assert blk.attn.qkv.weight.shape == (3 * nh * HD, d)
        assert blk.attn.proj.weight.shape == (d, nh * HD)
        assert blk.mlp.fc1.weight.shape == (nm, d) and blk.mlp.fc2.weight.shape == (d, nm)
    # the kept rows of qkv are whole heads: q, k and v of head 1 of block 0 come first
    q1 = model.blocks[0].attn.qkv.weight[HD:2 * HD][:, keep.embed]
    assert torch.equal(small.blocks[0].attn.qkv.weight[:HD], q1)
    x, _ = data
    with torch.no_grad():
        with sv.masked(model, keep):
            want = model(x)
        got = small(x)
        dense = model(x)
    assert torch.allclose(got, want, atol=1e-5)
    assert (got - dense).abs().max() > 1e-2          # the removal changed the function
    # the expanded weight mask keeps exactly the shrunk model's weights
    names = [n for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    mask = sv.weight_mask(model, keep, names)
    shrunk = dict(small.named_parameters())
    assert mask.kept == sum(shrunk[n].numel() for n in names)


# -- the joint importance ---------------------------------------------------------------------------
def test_taylor_terms_match_finite_differences_of_the_loss(data):
    model = tiny_vit(dtype=torch.float64)
    x, y = data
    batch = (x.double(), y)
    g, h = sv.gate_taylor(model, [batch])
    ce = sv.cross_entropy
    a, b = idx("head", 1, 2), idx("neuron", 0, 7)
    s = [a, b, idx("dim", i=5)]
    t = 1e-3
    f = lambda closed, tt: loss_at(model, batch, ce, closed, tt)  # noqa: E731
    f0 = f([], 0.0)
    # first and second derivative of the loss along "remove the set s"
    d1 = (f(s, t) - f(s, -t)) / (2 * t)
    d2 = (f(s, t) - 2 * f0 + f(s, -t)) / t ** 2
    r = torch.zeros_like(g)
    r[s] = 1.0
    assert d1 == pytest.approx(float(-g @ r), rel=1e-5, abs=1e-9)
    assert d2 == pytest.approx(float(r @ h @ r), rel=1e-4, abs=1e-7)
    # a cross term: the mixed second difference of two different components (the head and
    # the neuron it interacts with most)
    b = idx("neuron", 0, int(h[a, L * H:L * H + M].abs().argmax()))
    def two(ta, tb):
        gates = torch.ones_like(g)
        gates[a] -= ta
        gates[b] -= tb
        hh, mm, ee = torch.split(gates, [L * H, L * M, D])
        with torch.no_grad(), sv.gated(model, hh.view(L, H), mm.view(L, M), ee):
            return float(ce(model(batch[0]), y))
    mixed = (two(t, t) - two(t, -t) - two(-t, t) + two(-t, -t)) / (4 * t * t)
    assert mixed == pytest.approx(float(h[a, b]), rel=1e-3, abs=1e-7)
    assert abs(float(h[a, b])) > 1e-6                 # a real, non-zero interaction
    # to second order: the predicted change of a small removal, error O(t^3)
    for tt in (0.05, 0.025):
        r_t = tt * r
        pred = float(-g @ r_t + 0.5 * r_t @ h @ r_t)
        first = float(-g @ r_t)
        true = f(s, tt) - f0
        assert abs(true - pred) < 0.05 * abs(true - first)
    # the Fisher mode sees the same gradient and a positive semi-definite curvature
    gf, hf = sv.gate_taylor(model, [batch], curvature="fisher")
    assert torch.allclose(gf, g, atol=1e-10)
    assert torch.linalg.eigvalsh(hf).min() > -1e-10


def test_out_of_memory_halves_the_hessian_chunk_and_gives_the_same_hessian(data, monkeypatch, capsys):
    """Batched Hessian-vector products that run out of memory are retried in halves (not one at
    a time, silently, as for an op without a batching rule), and the Hessian is unchanged."""
    model = tiny_vit(dtype=torch.float64)
    batch = (data[0].double(), data[1])
    _, want = sv.gate_taylor(model, [batch], chunk=64)
    real, sizes = torch.autograd.grad, []

    def small_memory(*a, **k):  # room for at most 10 products at once
        if k.get("is_grads_batched"):
            sizes.append(len(k["grad_outputs"]))
            if sizes[-1] > 10:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(torch.autograd, "grad", small_memory)
    _, got = sv.gate_taylor(model, [batch], chunk=64)
    assert sizes[:4] == [64, 32, 16, 8] and max(sizes[3:]) == 8  # halved, then kept at 8
    assert torch.equal(got, want)
    assert "now 8 at a time" in capsys.readouterr().err

    def no_memory(*a, **k):  # not even for one product: the error stands
        if k.get("is_grads_batched"):
            sizes.append(len(k["grad_outputs"]))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*a, **k)

    sizes.clear()
    monkeypatch.setattr(torch.autograd, "grad", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        sv.gate_taylor(model, [batch], chunk=2)
    assert sizes == [2, 1]


def _duplicate_heads(model, src, dst, scale_other, other):
    """Head ``dst`` of block 0 becomes an identical copy of head ``src``; head ``other``'s output
    projection is multiplied by ``scale_other``."""
    attn = model.blocks[0].attn
    with torch.no_grad():
        for part in range(3):
            base = part * H * HD
            attn.qkv.weight[base + dst * HD: base + (dst + 1) * HD] = \
                attn.qkv.weight[base + src * HD: base + (src + 1) * HD]
            attn.qkv.bias[base + dst * HD: base + (dst + 1) * HD] = \
                attn.qkv.bias[base + src * HD: base + (src + 1) * HD]
        attn.proj.weight[:, dst * HD:(dst + 1) * HD] = attn.proj.weight[:, src * HD:(src + 1) * HD]
        attn.proj.weight[:, other * HD:(other + 1) * HD] *= scale_other


def test_interactions_change_the_ranking_of_two_identical_heads(data):
    """Heads a and b of block 0 are identical: each alone is cheap to remove, but removing both
    costs 2x the sum of their individual costs (the H_ab cross term); joint importance therefore
    removes a and another head c, the diagonal ranking a and b, and the direct loss agrees with
    the joint importance."""
    a, b, c = idx("head", 0, 0), idx("head", 0, 1), idx("head", 0, 2)
    x, _ = data
    x = x.double()
    mse = lambda out, target: ((out - target) ** 2).mean()  # noqa: E731
    scale = 1.0
    for _ in range(6):     # rescale head c until its own cost is ~1.3x that of a
        model = tiny_vit(seed=3, dtype=torch.float64)
        _duplicate_heads(model, 0, 1, scale, 2)
        with torch.no_grad():
            target = model(x)                       # self-distillation: g = 0 at alpha = 1
        g, h = sv.gate_taylor(model, [(x, target)], loss_fn=mse)
        ratio = float(h[c, c] / h[a, a])
        if 1.1 < ratio < 1.5:
            break
        scale *= (1.3 / ratio) ** 0.5
    assert 1.1 < ratio < 1.5
    assert g.abs().max() < 1e-10
    assert float(h[a, b]) == pytest.approx(float(h[a, a]), rel=1e-6)
    assert float(h[b, b]) == pytest.approx(float(h[a, a]), rel=1e-6)

    def pair(i, j):
        r = torch.zeros_like(g)
        r[[i, j]] = True
        return r.bool()
    individual = 0.5 * h.diagonal()
    assert individual[a] < individual[c] and individual[b] < individual[c]     # diagonal: a, b
    assert sv.joint_cost(g, h, pair(a, c)) < sv.joint_cost(g, h, pair(a, b))    # joint: a, c
    direct = lambda i, j: loss_at(model, (x, target), mse, [i, j])  # noqa: E731
    assert direct(a, c) < direct(a, b)

    # the greedy FLOPs-targeted selection, restricted to a, b, c and asked for two heads' FLOPs
    h_sel = h.clone()
    others = torch.ones(len(g), dtype=torch.bool)
    others[[a, b, c]] = False
    h_sel[others, others] = 1e6
    dense = sv.vit_flops(model)
    two_heads = dense - sv.vit_flops(model, sv.Structure.from_flat(model, ~pair(a, b)))
    frac = (dense - two_heads) / dense
    joint = sv.select(model, g, h_sel, frac, tolerance=1e-6, chunk=0.0)
    diag = sv.select(model, g, h_sel, frac, tolerance=1e-6, chunk=0.0, interactions=False)
    removed = lambda keep: set(torch.nonzero(~keep.flat()).flatten().tolist())  # noqa: E731
    assert removed(diag) == {a, b}
    assert removed(joint) in ({a, c}, {b, c})


def test_unsupported_models_and_options_are_one_line_errors():
    model = tiny_vit(init_values=1e-5)                       # layer scale
    with pytest.raises(sv.SAViTError, match=r"blocks\.0\.ls1"):
        sv.check_vit(model)
    with pytest.raises(sv.SAViTError, match="curvature"):
        sv.gate_taylor(tiny_vit(), [], curvature="newton")
    g_sum, h_sum, count = sv.gate_taylor_sums(tiny_vit(), [])  # a DDP rank with no share: zeros
    assert count == 0 and not g_sum.any() and not h_sum.any() and h_sum.shape == (len(g_sum),) * 2
    with pytest.raises(sv.SAViTError, match="no scoring batches"):
        sv.gate_taylor(tiny_vit(), [])
    with pytest.raises(sv.SAViTError, match="model Linear"):
        sv.check_vit(torch.nn.Linear(2, 2))


def test_under_ddp_each_rank_scores_its_share_and_the_sums_are_the_whole_batchs(tmp_path, monkeypatch):
    """Under DDP each rank loads and scores only its share of the scoring batch; the ranks'
    summed parts are the single-process scores."""
    import yaml
    from conftest import init_and_dense, tiny_config

    from dilt import config, platform
    from dilt.methods import savit as method
    from dilt.methods.job import MaskJob

    opts = {**method.OPTIONS, "per_class": 3, "curvature": "fisher"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(models={"vit_tiny": {}}, methods=["savit"],
                                                method_options={"savit": opts})))
    suite = config.load(path)
    theta0, dense_path = init_and_dense(suite, "vit_tiny", tmp_path)
    job = MaskJob(suite=suite, method="savit", model="vit_tiny", dataset="digits", seed=0,
                  out_dir=tmp_path, theta0=theta0, dense=dense_path)
    dense = job.dense_model()
    g, h, n = method._scores(job, dense, opts)
    assert n == 30 and h.shape == (len(g), len(g)) == (sv.gate_count(dense),) * 2

    loaded, parts = [], []
    real = MaskJob.class_balanced_batch

    def spy(self, *a, **k):
        x, y = real(self, *a, **k)
        loaded.append(len(y))
        return x, y

    monkeypatch.setattr(MaskJob, "class_balanced_batch", spy)
    monkeypatch.setattr(platform, "world_size", lambda: 2)
    monkeypatch.setattr(platform, "all_reduce_sum", lambda t: parts.append(t.clone()) or t)
    for r in (0, 1):
        monkeypatch.setattr(platform, "rank", lambda r=r: r)
        method._scores(job, dense, opts)
    assert loaded == [15, 15]
    g_sum, h_sum, count = (parts[k] + parts[k + 3] for k in range(3))
    assert int(count) == n
    assert torch.allclose(g_sum / count, g, rtol=1e-9, atol=1e-12)
    assert torch.allclose(h_sum / count, h, rtol=1e-9, atol=1e-12)


def test_a_restarted_job_reuses_its_scores(tmp_path, monkeypatch):
    """The scores (the exact Hessian: most of a DeiT-S job) are kept in the run directory until
    the run completes: a job killed in its fine-tuning and started again does not compute them
    again and ends as an uninterrupted one; scores of other settings are never used."""
    import yaml
    from conftest import init_and_dense, tiny_config

    from dilt import config
    from dilt.methods import savit as method
    from dilt.methods.job import MANIFEST, MaskJob

    opts = {**method.OPTIONS, "per_class": 3, "curvature": "fisher", "finetune_epochs": 1}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(models={"vit_tiny": {}}, methods=["savit"],
                                                method_options={"savit": opts})))
    suite = config.load(path)
    theta0, dense = init_and_dense(suite, "vit_tiny", tmp_path)
    calls = []
    real = method._scores
    monkeypatch.setattr(method, "_scores", lambda *a: calls.append(1) or real(*a))
    real_train = MaskJob.train

    def run(out="run", provenance="p1", killed=False):
        job = MaskJob(suite=suite, method="savit", model="vit_tiny", dataset="digits", seed=0,
                      out_dir=tmp_path / out, theta0=theta0, dense=dense, provenance=provenance)
        job.out_dir.mkdir(exist_ok=True)
        if killed:
            monkeypatch.setattr(MaskJob, "train", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
            with pytest.raises(KeyboardInterrupt):
                method.find(job)
            monkeypatch.setattr(MaskJob, "train", real_train)
            return None
        method.find(job)
        return (job.out_dir / MANIFEST).read_text()

    scores = tmp_path / "run" / method.SCORES
    run(killed=True)
    assert scores.exists() and len(calls) == 1
    resumed = run()
    assert len(calls) == 1 and not scores.exists()      # reused, then removed with the run done
    assert resumed == run(out="clean") and len(calls) == 2
    run(out="other", killed=True)
    run(out="other", provenance="p2")                   # other settings: scored again
    assert len(calls) == 4
