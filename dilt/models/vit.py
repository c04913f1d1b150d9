"""A tiny Vision Transformer for the CPU smoke suite (timm's ``VisionTransformer``, no weights).

Its conv / linear layers in forward order: ``patch_embed.proj`` (first layer, dense by default),
then ``qkv``, ``proj``, ``fc1``, ``fc2`` of every block (the prunable weights), then ``head``.
"""

from __future__ import annotations

from torch import nn

from dilt.models import register_model

POOLS = ("avg", "token")


@register_model("vit_tiny")
def vit_tiny(num_classes: int, input_shape, *, patch_size: int = 4, embed_dim: int = 64,
             depth: int = 4, num_heads: int = 4, mlp_ratio: float = 2.0, global_pool: str = "avg",
             drop_path_rate: float = 0.0) -> nn.Module:
    """ViT sized for 8x8 digits: 4x4 patches, 64-d tokens, 4 blocks of 4 heads, MLP ratio 2.

    ``global_pool="avg"`` averages the patch tokens (no class token), which learned faster than a
    class token on digits; ``"token"`` gives DeiT's class-token layout. Images smaller than
    ``patch_size`` use one patch covering the whole image."""
    from timm.models.vision_transformer import VisionTransformer

    if global_pool not in POOLS:
        raise ValueError(f"vit_tiny: global_pool {global_pool!r} is not one of {', '.join(POOLS)}")
    size = tuple(input_shape[1:])
    patch = min(patch_size, *size)
    if any(s % patch for s in size):
        raise ValueError(f"vit_tiny: patch_size {patch} does not divide the image size {size}")
    model = VisionTransformer(img_size=size, patch_size=patch, in_chans=input_shape[0],
                              num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                              num_heads=num_heads, mlp_ratio=mlp_ratio, global_pool=global_pool,
                              class_token=global_pool == "token", drop_path_rate=drop_path_rate)
    model.head_name = "head"
    return model
