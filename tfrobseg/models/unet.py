"""U-Net (Ronneberger, Fischer & Brox, MICCAI 2015): the study's baseline.

Per level two 3x3 conv-norm-activation layers; 2x2 max-pool down; 2x2 transposed-conv up; the encoder
feature map of each level is concatenated with the up-sampled decoder features; 1x1 conv head.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfrobseg.models.blocks import double_conv, skeleton_model
from tfrobseg.models.defaults import (
    ACTIVATION,
    FILTERS,
    INPUT_SHAPE,
    NORMALIZATION,
    make_config,
)


def build_unet(
    input_shape: Sequence[int | None] = INPUT_SHAPE,
    *,
    filters: Sequence[int] = FILTERS,
    activation: str = ACTIVATION,
    normalization: str = NORMALIZATION,
    n_classes: int = 1,
    output: str = "probabilities",
) -> keras.Model:
    """Build a U-Net; arguments as in :func:`tfrobseg.models.build_model`."""
    cfg = make_config(input_shape, filters, activation, normalization, n_classes, output)
    return skeleton_model("unet", cfg, double_conv)
