"""UNet++ (Zhou et al., DLMIA 2018): U-Net with nested, dense skip pathways.

Node ``X[i][j]`` (level ``i``, column ``j``): ``X[i][0]`` is the encoder (double conv, then pool), and for
``j >= 1``::

    X[i][j] = double_conv(concat(X[i][0], ..., X[i][j-1], up(X[i+1][j-1])))   at filters[i]

with ``up`` the 2x2 transposed conv of U-Net. The output is the head on ``X[0][depth-1]``; with
``deep_supervision=True`` the model instead has ``depth-1`` outputs, heads on ``X[0][1..depth-1]``
(``logits_{j}``/``probabilities_{j}``), for training with a summed loss (Zhou's deep supervision). Wang &
Xu evaluate UNet++ under FGSM without deep supervision, hence the default. The nesting is
:func:`tfrobseg.models.blocks.nested_skip_pathways`, shared with the EfficientNet-encoder UNet++.
"""

from __future__ import annotations

import keras

from tfrobseg.models.blocks import (
    double_conv,
    max_pool,
    nested_skip_pathways,
    segmentation_head,
)
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model


@register_model("unet_plus_plus", display_name="UNet++")
def build_unet_plus_plus(cfg: BuildConfig, *, deep_supervision: bool = False) -> keras.Model:
    """Build a UNet++; ``deep_supervision=True`` gives one output per nested decoder column."""
    inputs = keras.Input(cfg.input_shape, name="image")
    columns = []
    x = inputs
    for i, f in enumerate(cfg.filters):
        if i > 0:
            x = max_pool(x, cfg, f"x{i - 1}_0_pool")
        x = double_conv(x, f, cfg, f"x{i}_0")
        columns.append(x)
    nodes = nested_skip_pathways(columns, cfg.filters, cfg)
    if deep_supervision:
        outputs = [segmentation_head(nodes[0][j], cfg, name=f"_{j}") for j in range(1, cfg.depth)]
    else:
        outputs = segmentation_head(nodes[0][-1], cfg)
    return keras.Model(inputs, outputs, name="unet_plus_plus")
