"""The three CNNs of COLT (Hossain et al., 2025): ResNet-18, MobileNetV2 and Conv-3.

ResNet-18 and MobileNetV2 are timm's, with the usual CIFAR changes as options (on by default for
images of at most 32 px, as in COLT's CIFAR code). Conv-3 follows COLT's released ``conv3``.
"""

from __future__ import annotations

import torch
from torch import nn

from dilt.models import register_model
from dilt.models.timm_models import small_image, timm_model, timm_resnet


@register_model("resnet18")
def resnet18(num_classes: int, input_shape, *, cifar_stem: bool | None = None,
             zero_init_last: bool = False, **kw) -> nn.Module:
    """timm ResNet-18. ``cifar_stem``: 3x3 stride-1 stem conv and no max-pool, so a 32x32 image
    stays 32x32 after the stem. ``zero_init_last`` is off as in COLT (plain BN init in every block)."""
    return timm_resnet("resnet18", num_classes, input_shape, cifar_stem,
                       zero_init_last=zero_init_last, **kw)


def cifar_strides_(model: nn.Module) -> nn.Module:
    """Stride 1 in timm MobileNetV2's stem and first 24-channel block: total stride 8 instead of
    32, so a 32x32 image ends on a 4x4 map (the usual CIFAR MobileNetV2)."""
    model.conv_stem.stride = (1, 1)
    model.blocks[1][0].conv_dw.stride = (1, 1)
    return model


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int, input_shape, *, cifar_stride: bool | None = None, **kw) -> nn.Module:
    """timm ``mobilenetv2_100`` (width 1.0); head ``classifier``. ``cifar_stride``: see
    :func:`cifar_strides_`."""
    model = timm_model("mobilenetv2_100", num_classes, input_shape, **kw)
    return cifar_strides_(model) if small_image(input_shape, cifar_stride) else model


def _conv_bn_pool(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True))


@register_model("conv3")
class Conv3(nn.Module):
    """COLT's Conv-3: three 3x3 conv layers (``width``, 2x, 4x channels), each followed by batch
    norm, ReLU and 2x2 max-pooling, then global average pooling and one linear head ``fc``."""

    head_name = "fc"

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], width: int = 64):
        super().__init__()
        w = [input_shape[0], width, 2 * width, 4 * width]
        self.features = nn.Sequential(*(_conv_bn_pool(a, b) for a, b in zip(w[:-1], w[1:])))
        self.fc = nn.Linear(w[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))
