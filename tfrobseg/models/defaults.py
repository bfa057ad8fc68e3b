"""Shared architecture defaults and argument validation for every model builder.

The study (Apostolidis et al., Sec. II-H) fixes "encoder-decoder depth, number of filters per level and
activation functions" across the five models so that only each model's own component differs. Those shared
choices live here, in one place, and every builder reads them from here.

Defaults and why:

* ``FILTERS = (16, 32, 64, 128, 256)`` - five levels (four poolings), doubling per level as in
  Ronneberger's U-Net but starting at 16 instead of 64, the budget Wang & Xu use for the same U-Net family
  on MRI; depth = ``len(filters)``.
* ``KERNEL_SIZE = 3`` - Ronneberger's 3x3 convolutions, "same" padding so any size divisible by
  2^(depth-1) works and skips need no cropping.
* ``ACTIVATION = "relu"`` - the activation of all five reference architectures.
* ``NORMALIZATION = "batch"`` - batch norm after every convolution (Oktay, Alom and ResU-Net all use it;
  it makes the plain U-Net trainable at the study's learning rate). Convolutions followed by a
  normalization carry no bias because the normalization's offset makes it redundant.
* ``KERNEL_INITIALIZER = "he_normal"`` - He initialization matches ReLU-family activations (He et al. 2015).
* Up-sampling: 2x2 transposed convolution with stride 2 (Ronneberger's "up-convolution").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras

FILTERS: tuple[int, ...] = (16, 32, 64, 128, 256)
INPUT_SHAPE: tuple[int, int, int] = (256, 256, 1)
KERNEL_SIZE: int = 3
ACTIVATION: str = "relu"
NORMALIZATION: str = "batch"
KERNEL_INITIALIZER: str = "he_normal"
UP_KERNEL_SIZE: int = 2
NORMALIZATIONS: tuple[str, ...] = ("batch", "group", "instance", "none")
OUTPUTS: tuple[str, ...] = ("probabilities", "logits")
#: Upper bound on the number of groups for ``normalization="group"`` (Wu & He use 32 with wider layers;
#: 8 keeps at least 2 channels per group at the 16-filter first level).
MAX_GROUPS: int = 8


@dataclass(frozen=True)
class BuildConfig:
    """Validated common arguments of every builder (see :func:`make_config`)."""

    input_shape: tuple[int | None, int | None, int]
    filters: tuple[int, ...]
    activation: str
    normalization: str
    n_classes: int
    output: str
    kernel_size: int = KERNEL_SIZE
    kernel_initializer: str = KERNEL_INITIALIZER

    @property
    def depth(self) -> int:
        return len(self.filters)


def make_config(
    input_shape: Sequence[int | None] = INPUT_SHAPE,
    filters: Sequence[int] = FILTERS,
    activation: str = ACTIVATION,
    normalization: str = NORMALIZATION,
    n_classes: int = 1,
    output: str = "probabilities",
) -> BuildConfig:
    """Validate the arguments shared by all builders and freeze them into a :class:`BuildConfig`.

    Raises ``ValueError`` naming the bad argument: spatial sizes must be divisible by 2^(depth-1) (one
    halving per pooling), ``filters`` positive integers with at least two levels, ``normalization`` one of
    :data:`NORMALIZATIONS`, ``output`` one of :data:`OUTPUTS`, ``activation`` a Keras activation name.
    """
    try:
        filters = tuple(int(f) for f in filters)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"filters must be a sequence of positive integers, got {filters!r}") from exc
    if len(filters) < 2 or any(f < 1 for f in filters):
        raise ValueError(f"filters must hold at least two positive integers (depth >= 2), got {filters!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
    height, width, channels = input_shape
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"input_shape channels must be a positive integer, got {channels!r}")
    factor = 2 ** (len(filters) - 1)
    for axis, size in (("height", height), ("width", width)):
        if size is None:
            continue
        if not isinstance(size, int) or size < 1 or size % factor:
            raise ValueError(
                f"input {axis} {size!r} must be a positive multiple of 2^(depth-1) = {factor} "
                f"for depth {len(filters)} (filters={filters})"
            )
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    # A name (not a callable) keeps the model serializable with safe_mode on.
    known = isinstance(activation, str)
    if known:
        try:
            keras.activations.get(activation)
        except ValueError:
            known = False
    if not known:
        raise ValueError(f"unknown activation {activation!r}: give a Keras activation name such as 'relu'")
    return BuildConfig(
        input_shape=(height, width, channels),
        filters=filters,
        activation=activation,
        normalization=normalization,
        n_classes=n_classes,
        output=output,
    )


def group_count(channels: int) -> int:
    """Groups used by ``normalization="group"``: ``gcd(channels, MAX_GROUPS)``, so groups always divide channels."""
    return math.gcd(channels, MAX_GROUPS)
