"""Attention U-Net (Oktay et al., MIDL 2018): U-Net with additive attention gates on the skips.

Each skip is multiplied by per-pixel coefficients ``alpha in [0, 1]`` computed from the skip and the coarser
decoder feature map, then passed through the gate's output transform (1x1 conv + norm), before it is
concatenated (:func:`tfrobseg.models.blocks.attention_gate`). The gate of
level ``i`` exposes its coefficients as the layer ``attention{i}_coefficients``;
:func:`attention_maps_model` collects them into a model for figures.
"""

from __future__ import annotations

import keras

from tfrobseg.models.blocks import (
    attention_gate,
    double_conv,
    skeleton_model,
)
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


@register_model("attention_unet", display_name="Attention U-Net")
def build_attention_unet(cfg: BuildConfig) -> keras.Model:
    """Build an Attention U-Net: U-Net with an additive attention gate on every skip."""
    return skeleton_model("attention_unet", cfg, double_conv, gate=attention_gate)


def attention_maps_model(model: keras.Model) -> keras.Model:
    """Model mapping the input to ``[alpha_0, ..., alpha_{depth-2}]``, the gate coefficients per level.

    ``alpha_i`` has shape ``(B, H / 2^i, W / 2^i, 1)`` (the spatial size of skip ``i``) and values in [0, 1];
    level 0 is the full-resolution skip. Works on a loaded model too (it reads the layer names).
    """
    layers = sorted(
        (layer for layer in model.layers if layer.name.endswith("_coefficients")),
        key=lambda layer: int(layer.name[len("attention") : -len("_coefficients")]),
    )
    if not layers:
        raise ValueError(f"model '{model.name}' has no attention gates (no '*_coefficients' layers)")
    return keras.Model(model.input, [layer.output for layer in layers], name=f"{model.name}_attention_maps")
