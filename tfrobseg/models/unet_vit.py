"""UNet-ViT: U-Net with a Vision Transformer at the bottleneck (study model (e); Dosovitskiy et al. 2021).

The bottleneck feature map is cut into ``patch_size`` x ``patch_size`` patches, embedded to ``embed_dim``,
given a learned position embedding, passed through ``num_layers`` pre-norm transformer blocks and reshaped
back to the bottleneck grid and width (:func:`tfrobseg.models.blocks.vit_bottleneck`); everything else is
U-Net. Defaults are small (2 blocks, 4 heads, width 128, MLP 256, patch 1: at 256 x 256 input and depth 5
the transformer sees 16 x 16 = 256 tokens) so the transformer adds 0.36 M parameters to the 1.95 M U-Net.
"""

from __future__ import annotations

import functools

import keras

from tfrobseg.models.blocks import (
    double_conv,
    skeleton_model,
    vit_bottleneck,
)
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


@register_model("unet_vit", display_name="UNet-ViT")
def build_unet_vit(
    cfg: BuildConfig,
    *,
    patch_size: int = 1,
    embed_dim: int = 128,
    num_heads: int = 4,
    num_layers: int = 2,
    mlp_dim: int = 256,
    dropout: float = 0.0,
) -> keras.Model:
    """Build a UNet-ViT; the keyword arguments configure the bottleneck transformer (module docstring)."""
    for arg, value in (("patch_size", patch_size), ("embed_dim", embed_dim), ("num_heads", num_heads),
                       ("num_layers", num_layers), ("mlp_dim", mlp_dim)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"unet_vit: {arg} must be a positive integer, got {value!r}")
    if embed_dim % num_heads:
        raise ValueError(f"unet_vit: embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"unet_vit: dropout must be in [0, 1), got {dropout!r}")
    transformer = functools.partial(
        vit_bottleneck,
        patch_size=patch_size,
        embed_dim=embed_dim,
        num_heads=num_heads,
        num_layers=num_layers,
        mlp_dim=mlp_dim,
        dropout=dropout,
    )
    return skeleton_model("unet_vit", cfg, double_conv, bottleneck=transformer)
