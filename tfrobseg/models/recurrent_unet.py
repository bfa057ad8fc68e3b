"""Recurrent U-Net (RU-Net) and Recurrent Residual U-Net (R2U-Net) of Alom et al. (J. Med. Imaging 2019).

Each level's two convolutions are replaced by a recurrent convolutional unit: a 1x1 projection to the
level's width followed by two recurrent convolutional layers whose convolution is shared across the ``t``
unrolled steps (:class:`tfrobseg.models.layers.RecurrentConv2D`). R2U-Net adds the projected input to the
unit's output (residual shortcut); RU-Net does not.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras

from tfrobseg.models.blocks import recurrent_block, skeleton_model
from tfrobseg.models.defaults import (
    ACTIVATION,
    FILTERS,
    INPUT_SHAPE,
    NORMALIZATION,
    make_config,
)


def _build(name: str, residual: bool, input_shape, filters, activation, normalization, n_classes, output, t):
    if not isinstance(t, int) or t < 1:
        raise ValueError(f"{name}: t (applications of the shared recurrent conv) must be an int >= 1, got {t!r}")
    cfg = make_config(input_shape, filters, activation, normalization, n_classes, output)
    return skeleton_model(name, cfg, functools.partial(recurrent_block, t=t, residual=residual))


def build_recurrent_unet(
    input_shape: Sequence[int | None] = INPUT_SHAPE,
    *,
    filters: Sequence[int] = FILTERS,
    activation: str = ACTIVATION,
    normalization: str = NORMALIZATION,
    n_classes: int = 1,
    output: str = "probabilities",
    t: int = 2,
) -> keras.Model:
    """Build an RU-Net; ``t`` = applications of each shared recurrent conv (1 = plain conv)."""
    return _build("recurrent_unet", False, input_shape, filters, activation, normalization, n_classes, output, t)


def build_recurrent_residual_unet(
    input_shape: Sequence[int | None] = INPUT_SHAPE,
    *,
    filters: Sequence[int] = FILTERS,
    activation: str = ACTIVATION,
    normalization: str = NORMALIZATION,
    n_classes: int = 1,
    output: str = "probabilities",
    t: int = 2,
) -> keras.Model:
    """Build an R2U-Net (RU-Net plus the residual shortcut around each recurrent unit)."""
    return _build(
        "recurrent_residual_unet", True, input_shape, filters, activation, normalization, n_classes, output, t
    )
