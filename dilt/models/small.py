"""Small CPU models for the smoke suite (8x8 digits)."""

from __future__ import annotations

import math

import torch
from torch import nn

from dilt.models import register_model


@register_model("mlp")
class MLP(nn.Module):
    """LeNet-300-100: two hidden ReLU layers on the flattened image."""

    head_name = "head"

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], hidden=(300, 100)):
        super().__init__()
        dims = [math.prod(input_shape), *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


@register_model("cnn")
class SmallCNN(nn.Module):
    """Eight 3x3 conv layers in three stages (pooling between), then one hidden linear layer and
    the head: ten weight layers, eight of them prunable by default."""

    head_name = "head"

    def __init__(self, num_classes: int, input_shape: tuple[int, ...], widths=(16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        cin = input_shape[0]
        self.features = nn.Sequential(
            _conv_bn(cin, w1), _conv_bn(w1, w1), _conv_bn(w1, w1), nn.MaxPool2d(2),
            _conv_bn(w1, w2), _conv_bn(w2, w2), _conv_bn(w2, w2), nn.MaxPool2d(2),
            _conv_bn(w2, w3), _conv_bn(w3, w3),
        )
        self.fc = nn.Linear(w3, w3)
        self.head = nn.Linear(w3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))
        return self.head(torch.relu(self.fc(x)))
