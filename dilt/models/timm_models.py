"""Paper-scale models from timm, built without pretrained weights (no downloads)."""

from __future__ import annotations

from torch import nn

from dilt.models import register_model

SMALL_IMAGE = 32  # sides up to this many pixels get the CIFAR variants by default


def timm_model(arch: str, num_classes: int, input_shape, **kw) -> nn.Module:
    """``timm.create_model(arch)`` untrained, with ``head_name`` set from timm's classifier name
    (``fc`` for ResNets, ``head`` for ViTs, ``classifier`` for MobileNetV2)."""
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                              in_chans=input_shape[0], **kw)
    model.head_name = model.pretrained_cfg.get("classifier", "fc")
    return model


def small_image(input_shape, flag: bool | None) -> bool:
    """``flag`` when given, else whether the image is CIFAR-sized (side at most 32 px)."""
    return max(input_shape[1:]) <= SMALL_IMAGE if flag is None else bool(flag)


def cifar_stem_(model: nn.Module) -> nn.Module:
    """Swap a timm ResNet's 7x7 stride-2 stem conv and its max-pool for a 3x3 stride-1 conv and no
    pooling (the usual CIFAR ResNet), initialised like timm initialises the other convs."""
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def timm_resnet(arch: str, num_classes: int, input_shape, cifar_stem: bool | None = None, **kw) -> nn.Module:
    model = timm_model(arch, num_classes, input_shape, **kw)
    return cifar_stem_(model) if small_image(input_shape, cifar_stem) else model


@register_model("resnet50")
def resnet50(num_classes: int, input_shape, *, cifar_stem: bool | None = None,
             zero_init_last: bool = False, **kw):
    """timm ResNet-50; ``cifar_stem`` (default: images of at most 32 px) as for resnet18.
    ``zero_init_last`` is off, as in torchvision's ResNet-50 of the LTH papers and COLT's
    ResNets: timm's default zeroes each block's last BatchNorm, so at theta_0 no gradient reaches
    the blocks' convolutions and pruning at initialisation (SNIP, GraSP) has nothing to rank."""
    return timm_resnet("resnet50", num_classes, input_shape, cifar_stem,
                       zero_init_last=zero_init_last, **kw)


@register_model("deit_s")
def deit_small(num_classes: int, input_shape, *, patch_size: int = 16, drop_path_rate: float = 0.0, **kw):
    """timm DeiT-S (``deit_small_patch16_224``) at the input's resolution; images smaller than the
    patch get one patch covering the image. Other timm VisionTransformer options pass through."""
    size = tuple(input_shape[1:])
    return timm_model("deit_small_patch16_224", num_classes, input_shape, img_size=size,
                      patch_size=min(patch_size, *size), drop_path_rate=drop_path_rate, **kw)
