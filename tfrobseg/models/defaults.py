"""Shared architecture defaults and the validated configuration every model builder receives.

The study (Apostolidis et al., Sec. II-H) fixes "encoder-decoder depth, number of filters per level and
activation functions" across the five models so that only each model's own component differs. Those shared
choices live here, in one place, and every builder reads them from here.

Defaults and why:

* ``FILTERS`` (:data:`tfrobseg.study.FILTERS`) - five levels (four poolings), doubling per level as in
  Ronneberger's U-Net but starting at 16 instead of 64, the budget Wang & Xu use for the same U-Net family
  on MRI; depth = ``len(filters)``.
* ``KERNEL_SIZE = 3`` - Ronneberger's 3x3 convolutions (3x3x3 in 3D, as Çiçek et al.), "same" padding so
  any size divisible by 2^(depth-1) works and skips need no cropping.
* ``ACTIVATION = "relu"`` - the activation of all five reference architectures.
* ``NORMALIZATION = "batch"`` - batch norm after every convolution (Oktay, Alom and ResU-Net all use it;
  it makes the plain U-Net trainable at the study's learning rate). Convolutions followed by a
  normalization carry no bias because the normalization's offset makes it redundant.
* ``KERNEL_INITIALIZER = "he_normal"`` - He initialization matches ReLU-family activations (He et al. 2015).
* Up-sampling: 2x2 transposed convolution with stride 2 (Ronneberger's "up-convolution"; 2x2x2 in 3D).

The input is a slice ``(H, W, C)`` or a volume ``(D, H, W, C)``; :attr:`BuildConfig.spatial_rank` (2 or 3)
tells the blocks which Keras layers to use, so one skeleton builds both the 2D and the 3D networks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import keras

from tfrobseg import study

#: The study's filters per level (stated once, in :mod:`tfrobseg.study`), the builders' default.
FILTERS: tuple[int, ...] = study.FILTERS
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
    """The arguments shared by every builder, validated when the config is made.

    :func:`tfrobseg.models.build_model` makes one and hands it to the registered builder, so a builder
    never sees an invalid value. Construction normalises ``filters`` and ``input_shape`` to tuples and
    raises ``ValueError`` naming the bad argument: ``input_shape`` is ``(height, width, channels)`` or
    ``(depth, height, width, channels)``, each spatial size ``None`` or divisible by 2^(depth-1) (one
    halving per pooling; the message names the axis), ``filters`` positive integers with at least two levels, ``normalization`` one of
    :data:`NORMALIZATIONS`, ``output`` one of :data:`OUTPUTS`, ``activation`` a Keras activation name.
    """

    input_shape: tuple[int | None, ...]
    filters: tuple[int, ...]
    activation: str
    normalization: str
    n_classes: int
    output: str
    kernel_size: int = KERNEL_SIZE
    kernel_initializer: str = KERNEL_INITIALIZER

    def __post_init__(self) -> None:
        # Frozen: the normalised tuples can only be stored through object.__setattr__.
        object.__setattr__(self, "filters", _checked_filters(self.filters))
        object.__setattr__(self, "input_shape", _checked_input_shape(self.input_shape, self.filters))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if not isinstance(self.n_classes, int) or self.n_classes < 1:
            raise ValueError(f"n_classes must be a positive integer, got {self.n_classes!r}")
        _check_activation(self.activation)

    @property
    def depth(self) -> int:
        """Levels of the encoder-decoder (``len(filters)``): ``depth - 1`` poolings."""
        return len(self.filters)

    @property
    def spatial_rank(self) -> int:
        """2 for slices ``(H, W, C)``, 3 for volumes ``(D, H, W, C)``: picks Conv2D or Conv3D and so on."""
        return len(self.input_shape) - 1


def _checked_filters(filters: Sequence[int]) -> tuple[int, ...]:
    try:
        filters = tuple(int(f) for f in filters)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"filters must be a sequence of positive integers, got {filters!r}") from exc
    if len(filters) < 2 or any(f < 1 for f in filters):
        raise ValueError(f"filters must hold at least two positive integers (depth >= 2), got {filters!r}")
    return filters


#: Axis names of the spatial sizes, by spatial rank (error messages name the axis).
SPATIAL_AXES: dict[int, tuple[str, ...]] = {2: ("height", "width"), 3: ("depth", "height", "width")}


def _checked_input_shape(input_shape: Sequence[int | None], filters: tuple[int, ...]) -> tuple:
    input_shape = tuple(input_shape)
    if len(input_shape) - 1 not in SPATIAL_AXES:
        raise ValueError(
            f"input_shape must be (height, width, channels) or (depth, height, width, channels), got {input_shape!r}"
        )
    *sizes, channels = input_shape
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"input_shape channels must be a positive integer, got {channels!r}")
    factor = 2 ** (len(filters) - 1)
    for axis, size in zip(SPATIAL_AXES[len(sizes)], sizes):
        if size is None:
            continue
        if not isinstance(size, int) or size < 1 or size % factor:
            raise ValueError(
                f"input {axis} {size!r} must be a positive multiple of 2^(depth-1) = {factor} "
                f"for a network of depth {len(filters)} (filters={filters})"
            )
    return input_shape


def _check_activation(activation: str) -> None:
    # A name (not a callable) keeps the model serializable with safe_mode on.
    known = isinstance(activation, str)
    if known:
        try:
            keras.activations.get(activation)
        except ValueError:
            known = False
    if not known:
        raise ValueError(f"unknown activation {activation!r}: give a Keras activation name such as 'relu'")


def group_count(channels: int) -> int:
    """Groups used by ``normalization="group"``: ``gcd(channels, MAX_GROUPS)``, so groups always divide channels."""
    return math.gcd(channels, MAX_GROUPS)
