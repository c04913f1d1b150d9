"""The model registry: every model builds for digits- and CIFAR-sized inputs, names its head
right, lists its layers in forward order, has the expected prunable weights, gives (n, d)
features per layer, and keeps theta_0 outside the head when rebuilt for a partition."""

import numpy as np
import pytest
import torch
from torch import nn

from dilt.analysis.features import extract_features
from dilt.data import load_dataset
from dilt.models import LAYER_TYPES, build_model, head_name, model_names, prunable_names, weight_layers
from dilt.models.state import model_from_theta0, save_state
from dilt.train import Recipe, Split, train

DIGITS, CIFAR = (1, 8, 8), (3, 32, 32)
HEADS = {"mlp": "head", "cnn": "head", "vit_tiny": "head", "deit_s": "head", "resnet18": "fc",
         "resnet50": "fc", "mobilenetv2": "classifier", "conv3": "fc"}
# the recipe recommended for vit_tiny in the smoke suite (~0.25 s per epoch on one core)
VIT_RECIPE = Recipe(epochs=12, batch_size=32, optimizer="adamw", lr=2e-3, weight_decay=0.05)


def _build(name, shape, num_classes=7, seed=0, **options):
    torch.manual_seed(seed)
    return build_model(name, num_classes, shape, **options)


def _forward_order(model, shape):
    """Names of the conv / linear modules in the order a forward pass calls them."""
    order = []
    hooks = [m.register_forward_hook(lambda *_, n=n: order.append(n))
             for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    with torch.no_grad():
        model.eval()(torch.randn(2, *shape))
    for h in hooks:
        h.remove()
    return order


def test_every_known_model_is_registered():
    assert set(HEADS) <= set(model_names())


@pytest.mark.parametrize("shape", [DIGITS, CIFAR], ids=["digits", "cifar"])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_builds_with_right_output_head_and_layer_order(name, shape):
    model = _build(name, shape)
    with torch.no_grad():
        out = model.eval()(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert head_name(model) == HEADS[name]
    head = model.get_submodule(HEADS[name])
    assert isinstance(head, nn.Linear) and head.out_features == 7
    layers = weight_layers(model)
    assert layers == _forward_order(model, shape)
    assert layers[-1] == HEADS[name]


def _vit_blocks(depth=4):
    return [f"blocks.{i}.{part}.weight" for i in range(depth)
            for part in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]


def test_vit_tiny_prunable_weights():
    model = _build("vit_tiny", DIGITS)
    assert prunable_names(model) == _vit_blocks()
    assert prunable_names(model, prune_first=True) == ["patch_embed.proj.weight", *_vit_blocks()]
    assert prunable_names(model, prune_head=True) == [*_vit_blocks(), "head.weight"]
    assert prunable_names(_build("vit_tiny", DIGITS, depth=2)) == _vit_blocks(2)


def _resnet18_body():
    convs = [f"layer{s}.{b}.conv{c}.weight" for s in range(1, 5) for b in range(2) for c in (1, 2)]
    shortcuts = [f"layer{s}.0.downsample.0.weight" for s in range(2, 5)]
    return set(convs + shortcuts)


def test_cifar_resnet18_prunable_weights():
    model = _build("resnet18", CIFAR, cifar_stem=True)
    assert set(prunable_names(model)) == _resnet18_body()
    assert len(prunable_names(model)) == 19
    assert set(prunable_names(model, prune_first=True)) == _resnet18_body() | {"conv1.weight"}
    assert set(prunable_names(model, prune_head=True)) == _resnet18_body() | {"fc.weight"}
    conv1 = model.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)


def _map_after(model, module, shape):
    seen = []
    h = module.register_forward_hook(lambda _m, _i, out: seen.append(out.shape[-2:]))
    with torch.no_grad():
        model.eval()(torch.randn(1, *shape))
    h.remove()
    return tuple(seen[0])


def test_cifar_stem_keeps_resolution():
    cifar = _build("resnet18", CIFAR)  # default for 32 px images: CIFAR stem
    assert _map_after(cifar, cifar.maxpool, CIFAR) == (32, 32)
    assert _map_after(cifar, cifar.layer4, CIFAR) == (4, 4)
    imagenet = _build("resnet18", CIFAR, cifar_stem=False)
    assert _map_after(imagenet, imagenet.maxpool, CIFAR) == (8, 8)
    assert imagenet.conv1.kernel_size == (7, 7)
    big = _build("resnet18", (3, 64, 64))  # larger images keep the ImageNet stem by default
    assert _map_after(big, big.maxpool, (3, 64, 64)) == (16, 16)


def test_mobilenetv2_cifar_stride():
    cifar = _build("mobilenetv2", CIFAR)
    assert _map_after(cifar, cifar.conv_stem, CIFAR) == (32, 32)
    assert _map_after(cifar, cifar.conv_head, CIFAR) == (4, 4)  # total stride 8
    plain = _build("mobilenetv2", CIFAR, cifar_stride=False)
    assert _map_after(plain, plain.conv_head, CIFAR) == (1, 1)  # total stride 32
    assert plain.classifier.in_features == 1280  # width multiplier 1.0


def test_conv3_layout():
    model = _build("conv3", CIFAR)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 64, (3, 3)), (64, 128, (3, 3)), (128, 256, (3, 3))]
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] == ["fc"]
    assert model.fc.in_features == 256
    assert len(prunable_names(model)) == 2  # conv 2 and 3; conv 1 and the head stay dense


def test_deit_s_sizes_and_drop_path():
    small = _build("deit_s", CIFAR, drop_path_rate=0.1)
    assert small.patch_embed.grid_size == (2, 2) and small.embed_dim == 384 and len(small.blocks) == 12
    assert small.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    big = _build("deit_s", (3, 224, 224), num_classes=5)
    assert big.patch_embed.grid_size == (14, 14)
    with torch.no_grad():
        assert big.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 5)


def test_vit_tiny_option_errors_name_the_option():
    with pytest.raises(ValueError, match="patch_size"):
        _build("vit_tiny", (1, 8, 8), patch_size=3)
    with pytest.raises(ValueError, match="global_pool"):
        _build("vit_tiny", DIGITS, global_pool="max")


def _token_means(model, x, names):
    """Each layer's output, averaged over tokens (sequences) or positions (conv maps); where a
    BatchNorm takes exactly that output as its input, the BatchNorm's output instead (found by
    tensor identity during the forward pass, independently of the module tree)."""
    raw, own = {}, {}

    def layer_hook(_m, _i, out, n):
        own[id(out)] = (n, out)  # (the reference keeps the id from being reused)
        raw[n] = out.clone()

    def norm_hook(_m, inp, out):  # (copied: ReLUs after it act in place)
        if id(inp[0]) in own:
            raw[own[id(inp[0])][0]] = out.clone()

    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: layer_hook(m, i, o, n)) for n in names]
    hooks += [m.register_forward_hook(norm_hook) for m in model.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return {n: (o.mean(dim=(2, 3)) if o.ndim == 4 else o.mean(dim=1) if o.ndim == 3 else o)
            for n, o in raw.items()}


@pytest.mark.parametrize("name,shape", [("vit_tiny", DIGITS), ("resnet18", CIFAR),
                                        ("mobilenetv2", DIGITS), ("conv3", CIFAR)])
def test_features_per_layer_are_n_by_d(name, shape):
    model = _build(name, shape)
    x = torch.randn(5, *shape)
    names = weight_layers(model)
    feats = extract_features(model, x, names)
    expected = _token_means(model, x, names)
    assert list(feats) == names
    for n in names:
        m = model.get_submodule(n)
        width = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        assert feats[n].shape == (5, width), n
        assert torch.allclose(torch.from_numpy(feats[n]).float(), expected[n], atol=1e-5), n


def test_a_layer_followed_by_batchnorm_is_represented_after_it():
    """Rescaling a conv's output channels (and its BatchNorm's running statistics to match)
    leaves the network's function unchanged; the analysed features, taken after the
    BatchNorm, are unchanged too, while the conv's own outputs are not."""
    from dilt.analysis.features import representation_modules

    model = _build("cnn", DIGITS)
    names = weight_layers(model)
    rep = representation_modules(model, names)
    assert rep["features.0.0"] == "features.0.1" and rep["fc"] == "fc" and rep["head"] == "head"
    vit = _build("vit_tiny", DIGITS)  # no BatchNorm: every layer stands for itself
    assert all(k == v for k, v in representation_modules(vit, weight_layers(vit)).items())
    x = torch.randn(32, *DIGITS)
    with torch.no_grad():   # trained-looking statistics, then a per-channel rescaling
        bn = model.features[0][1]
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    before, out = extract_features(model, x, names), model.eval()(x)
    raw = _conv_out(model, x)
    scale = torch.linspace(0.2, 5.0, bn.num_features)
    with torch.no_grad():
        model.features[0][0].weight.mul_(scale.view(-1, 1, 1, 1))
        bn.running_mean.mul_(scale)
        bn.running_var.mul_(scale ** 2)
        bn.eps = 0.0
    after = extract_features(model, x, names)
    assert torch.allclose(model(x), out, atol=1e-4)
    for n in names:
        np.testing.assert_allclose(after[n], before[n], rtol=1e-3, atol=1e-4, err_msg=n)
    assert not torch.allclose(_conv_out(model, x), raw, atol=1e-2)


def _conv_out(model, x):
    got = []
    h = model.features[0][0].register_forward_hook(lambda _m, _i, o: got.append(o.clone()))
    with torch.no_grad():
        model.eval()(x)
    h.remove()
    return got[0]


@pytest.mark.parametrize("name", sorted(HEADS))
def test_model_from_theta0_reinitialises_only_the_head(name, tmp_path):
    shape = CIFAR if name in ("deit_s", "resnet50") else DIGITS
    theta0 = _build(name, shape, num_classes=10)
    path = tmp_path / "theta0.safetensors"
    digest = save_state(path, theta0)
    reference = theta0.state_dict()
    head = HEADS[name]

    part, got_hash = model_from_theta0(name, path, 4, shape, head_seed=3)
    assert got_hash == digest
    state = part.state_dict()
    assert set(state) == set(reference)
    for key, value in state.items():
        if key.startswith(head + "."):
            assert value.shape[0] == 4, key
        else:
            assert torch.equal(value, reference[key]), key

    same, _ = model_from_theta0(name, path, 10, shape, head_seed=3)
    for key, value in same.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_vit_tiny_learns_digits():
    data = load_dataset("digits", seed=0)
    model = _build("vit_tiny", data.input_shape, num_classes=data.num_classes)
    res = train(model, Split(data.train), Split(data.val), VIT_RECIPE, seed=0)
    assert res.best_val_top1 > 0.6  # chance is 0.1; measured ~0.97


def test_lazy_model_names_are_the_registered_ones():
    """The names listed without importing the timm-based modules are exactly those the modules
    register once imported."""
    import dilt.models as M

    M._import_models("*")
    assert set(M._REGISTRY) == set(M.model_names())


def test_lazy_dataset_names_are_the_registered_ones():
    import dilt.data as D

    D._import_loaders("*")
    assert set(D._REGISTRY) == set(D.dataset_names())
