"""Model registry and the rule that decides which weights are prunable.

Prunable = the weights of conv and linear layers. Biases and normalisation layers are never
pruned. The output head is excluded by default (its shape differs between partition models:
|Y_k| outputs) and the first layer is kept dense by default (global magnitude pruning leaves it
almost dense anyway, and a specialist ticket m_1 minus m_2 would otherwise empty it).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def register_model(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


# models built with timm / torchvision live in modules whose import costs seconds per job:
# they are imported only when one of their models is built
_LAZY = {"resnet18": "dilt.models.colt_models", "mobilenetv2": "dilt.models.colt_models",
         "conv3": "dilt.models.colt_models", "resnet50": "dilt.models.timm_models",
         "deit_s": "dilt.models.timm_models", "vit_tiny": "dilt.models.vit"}


def model_names() -> list[str]:
    _import_models()
    return sorted(set(_REGISTRY) | set(_LAZY))


def build_model(name: str, num_classes: int, input_shape: tuple[int, ...], **options) -> nn.Module:
    """Build a freshly initialised model (initialise under ``torch.manual_seed`` for theta_0)."""
    _import_models(name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(model_names())}")
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


def _import_models(name: str | None = None) -> None:
    """Import the modules that register models (the small ones always, a timm-based one when
    ``name`` needs it or ``name`` is "*")."""
    import importlib

    from dilt.models import small  # noqa: F401

    for module in sorted(set(_LAZY.values()) if name == "*" else {_LAZY.get(name)} - {None}):
        importlib.import_module(module)
