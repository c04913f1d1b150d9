"""Model registry and the rule that decides which weights are prunable.

Prunable = the weights of conv and linear layers. Biases and normalisation layers are never
pruned. The output head is excluded by default (its shape differs between partition models:
|Y_k| outputs) and the first layer is kept dense by default (global magnitude pruning leaves it
almost dense anyway, and a specialist ticket m_1 minus m_2 would otherwise empty it).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def register_model(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


def model_names() -> list[str]:
    _import_models()
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], **options) -> nn.Module:
    """Build a freshly initialised model (initialise under ``torch.manual_seed`` for theta_0)."""
    _import_models()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](num_classes=num_classes, input_shape=tuple(input_shape), **options)


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the conv / linear modules in registration order (the model's layers)."""
    return [name for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)]


def head_name(model: nn.Module) -> str:
    """The output layer: ``model.head_name`` when the model declares one, else the last layer."""
    declared = getattr(model, "head_name", None)
    if declared:
        return declared
    layers = weight_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no conv or linear layer")
    return layers[-1]


def prunable_names(model: nn.Module, *, prune_first: bool = False, prune_head: bool = False) -> list[str]:
    """Parameter names of the prunable weights, in model order."""
    layers = weight_layers(model)
    head = head_name(model)
    keep = [l for i, l in enumerate(layers)
            if (prune_first or i > 0) and (prune_head or l != head)]
    return [f"{l}.weight" for l in keep]


def head_parameters(model: nn.Module) -> list[str]:
    """Parameter names of the output head (reinitialised when the label space changes)."""
    head = head_name(model)
    return [n for n, _ in model.named_parameters() if n == head or n.startswith(head + ".")]


def _import_models() -> None:
    from dilt.models import small  # noqa: F401
    from dilt.models import timm_models  # noqa: F401
    from dilt.models import colt_models  # noqa: F401
    from dilt.models import vit  # noqa: F401
