"""ResU-Net: U-Net whose encoder and decoder level blocks are residual blocks.

The study cites Diakogiannis et al. (ResUNet-a, 2020) and He et al.'s ResNets for this model. Each level
block is He et al.'s (CVPR 2016) post-activation residual unit: U-Net's two conv-norm layers with the
second activation moved after the addition of a 1x1 projection shortcut
(:func:`tfrobseg.models.blocks.residual_block`); the skeleton, pooling, up-sampling and head are U-Net's.
"""

from __future__ import annotations

import keras

from tfrobseg.models.blocks import residual_block, skeleton_model
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


@register_model("resunet", display_name="ResU-Net")
def build_resunet(cfg: BuildConfig) -> keras.Model:
    """Build a ResU-Net: U-Net with a residual block at every level."""
    return skeleton_model("resunet", cfg, residual_block)
