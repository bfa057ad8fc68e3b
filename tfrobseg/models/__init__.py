"""Segmentation model zoo: the five networks of the study (Apostolidis et al.) plus R2U-Net and UNet++.

``build_model(name, input_shape, *, filters, activation, normalization, n_classes, output, **model_specific)``
returns a functional ``keras.Model`` mapping ``(B, H, W, C)`` images to ``(B, H, W, n_classes)`` float32
probabilities (sigmoid for one class, softmax otherwise) or logits. All models share one U-shaped skeleton
and the defaults of :mod:`tfrobseg.models.defaults`, so only each model's own component differs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import keras

from tfrobseg.models.attention_unet import attention_maps_model, build_attention_unet
from tfrobseg.models.complexity import count_macs, layer_macs
from tfrobseg.models.defaults import ACTIVATION, FILTERS, INPUT_SHAPE, NORMALIZATION
from tfrobseg.models.layers import PositionEmbedding, RecurrentConv2D
from tfrobseg.models.recurrent_unet import (
    build_recurrent_residual_unet,
    build_recurrent_unet,
)
from tfrobseg.models.resunet import build_resunet
from tfrobseg.models.unet import build_unet
from tfrobseg.models.unet_plus_plus import build_unet_plus_plus
from tfrobseg.models.unet_vit import build_unet_vit

_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "unet": build_unet,
    "attention_unet": build_attention_unet,
    "recurrent_unet": build_recurrent_unet,
    "resunet": build_resunet,
    "unet_vit": build_unet_vit,
    "recurrent_residual_unet": build_recurrent_residual_unet,
    "unet_plus_plus": build_unet_plus_plus,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)
STUDY_MODELS: tuple[str, ...] = ("unet", "attention_unet", "recurrent_unet", "resunet", "unet_vit")
#: Display names; the study's five equal the names in ``published_tables.csv``.
MODEL_DISPLAY_NAMES: dict[str, str] = {
    "unet": "U-Net",
    "attention_unet": "Attention U-Net",
    "recurrent_unet": "Recurrent U-Net",
    "resunet": "ResU-Net",
    "unet_vit": "UNet-ViT",
    "recurrent_residual_unet": "R2U-Net",
    "unet_plus_plus": "UNet++",
}
_COMMON = ("input_shape", "filters", "activation", "normalization", "n_classes", "output")


def model_options(name: str) -> dict[str, object]:
    """The model-specific keyword arguments of ``name`` and their defaults (e.g. ``{"t": 2}``)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    params = inspect.signature(_BUILDERS[name]).parameters
    return {k: p.default for k, p in params.items() if k not in _COMMON}


def build_model(
    name: str,
    input_shape: Sequence[int | None] = INPUT_SHAPE,
    *,
    filters: Sequence[int] = FILTERS,
    activation: str = ACTIVATION,
    normalization: str = NORMALIZATION,
    n_classes: int = 1,
    output: str = "probabilities",
    **model_specific,
) -> keras.Model:
    """Build the segmentation model ``name`` (one of :data:`MODEL_NAMES`).

    Args:
        name: registry name, e.g. ``"unet"``, ``"attention_unet"``, ``"recurrent_unet"``, ``"resunet"``,
            ``"unet_vit"``, ``"recurrent_residual_unet"``, ``"unet_plus_plus"``.
        input_shape: ``(H, W, C)``; ``H`` and ``W`` multiples of 2^(depth-1) (``None`` allowed except for
            ``unet_vit``, whose position embedding needs a fixed token count).
        filters: channels per level, encoder top to bottleneck; depth = ``len(filters)``.
        activation: Keras activation name of every conv block.
        normalization: ``"batch"``, ``"group"``, ``"instance"`` or ``"none"``.
        n_classes: 1 -> sigmoid head, > 1 -> softmax head.
        output: ``"probabilities"`` or ``"logits"`` (pre-activation).
        **model_specific: see :func:`model_options` (``t`` for the recurrent models; ``patch_size``,
            ``embed_dim``, ``num_heads``, ``num_layers``, ``mlp_dim``, ``dropout`` for ``unet_vit``;
            ``deep_supervision`` for ``unet_plus_plus``).

    Returns:
        A functional ``keras.Model`` with float32 output ``(B, H, W, n_classes)`` (even under
        ``mixed_float16``), named ``name``.
    """
    options = model_options(name)
    unknown = sorted(set(model_specific) - set(options))
    if unknown:
        accepted = ", ".join(options) or "none"
        raise ValueError(f"{name}: unknown option(s) {unknown}; model-specific options accepted: {accepted}")
    return _BUILDERS[name](
        input_shape,
        filters=filters,
        activation=activation,
        normalization=normalization,
        n_classes=n_classes,
        output=output,
        **model_specific,
    )


__all__ = [
    "MODEL_DISPLAY_NAMES",
    "MODEL_NAMES",
    "STUDY_MODELS",
    "PositionEmbedding",
    "RecurrentConv2D",
    "attention_maps_model",
    "build_model",
    "count_macs",
    "layer_macs",
    "model_options",
]
