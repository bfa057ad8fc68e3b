"""ResU-Net: U-Net whose encoder and decoder level blocks are residual blocks.

The study cites Diakogiannis et al. (ResUNet-a, 2020) and He et al.'s ResNets for this model. Each level
block is the U-Net double conv plus a 1x1 projection shortcut added to its output
(:func:`tfrobseg.models.blocks.residual_block`); the skeleton, pooling, up-sampling and head are U-Net's.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tfrobseg.models.blocks import residual_block, skeleton_model
from tfrobseg.models.defaults import (
    ACTIVATION,
    FILTERS,
    INPUT_SHAPE,
    NORMALIZATION,
    make_config,
)


def build_resunet(
    input_shape: Sequence[int | None] = INPUT_SHAPE,
    *,
    filters: Sequence[int] = FILTERS,
    activation: str = ACTIVATION,
    normalization: str = NORMALIZATION,
    n_classes: int = 1,
    output: str = "probabilities",
) -> keras.Model:
    """Build a ResU-Net; arguments as in :func:`tfrobseg.models.build_model`."""
    cfg = make_config(input_shape, filters, activation, normalization, n_classes, output)
    return skeleton_model("resunet", cfg, residual_block)
