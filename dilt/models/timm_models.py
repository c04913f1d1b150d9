"""Paper-scale models from timm, built without pretrained weights (no downloads)."""

from __future__ import annotations

from dilt.models import register_model


def _timm(arch: str, num_classes: int, input_shape, **kw):
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                              in_chans=input_shape[0], **kw)
    # timm names the classifier ``fc`` (ResNet) or ``head`` (ViT); record it for prunable_names
    model.head_name = model.default_cfg.get("classifier", "fc") if hasattr(model, "default_cfg") else "fc"
    return model


@register_model("resnet18")
def resnet18(num_classes: int, input_shape, **kw):
    return _timm("resnet18", num_classes, input_shape, **kw)


@register_model("resnet50")
def resnet50(num_classes: int, input_shape, **kw):
    return _timm("resnet50", num_classes, input_shape, **kw)


@register_model("deit_s")
def deit_small(num_classes: int, input_shape, **kw):
    kw.setdefault("img_size", input_shape[-1])
    return _timm("deit_small_patch16_224", num_classes, input_shape, **kw)
