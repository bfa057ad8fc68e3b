"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): the study's baseline.

Per level two 3x3 conv-norm-activation layers; 2x2 max-pool down; 2x2 transposed-conv up; the encoder
feature map of each level is concatenated with the up-sampled decoder features; 1x1 conv head.
"""

from __future__ import annotations

import keras

from tfrobseg.models.blocks import double_conv, skeleton_model
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


@register_model("unet", display_name="U-Net")
def build_unet(cfg: BuildConfig) -> keras.Model:
    """Build a U-Net: the shared skeleton with Ronneberger's double conv as every level block."""
    return skeleton_model("unet", cfg, double_conv)
