"""Segmentation model zoo: the five networks of the study (Apostolidis et al.) plus R2U-Net and UNet++, the
EfficientNet-encoder U-Net and UNet++ of Wang & Xu, and the 3D U-Net and dilated 3D U-Net of paper 003.

``build_model(name, input_shape, *, filters, activation, normalization, n_classes, output, **model_specific)``
returns a functional ``keras.Model`` mapping ``(B, H, W, C)`` images (``(B, D, H, W, C)`` volumes for the 3D
models, :func:`model_spatial_rank`) to ``(B, H, W, n_classes)`` (``(B, D, H, W, n_classes)``) float32
probabilities (sigmoid for one class, softmax otherwise) or logits. All models share one U-shaped skeleton
and the defaults of :mod:`tfrobseg.models.defaults`, so only each model's own component differs.

Each builder registers itself with :func:`register_model` (:mod:`tfrobseg.models.registry`); importing this
package imports every builder module, which fills the registry. :data:`MODEL_NAMES` and
:data:`MODEL_DISPLAY_NAMES` are read from the registry then (a model registered later is built by
:func:`build_model` but listed only by :func:`model_names`); :data:`STUDY_MODELS` is
:data:`tfrobseg.study.MODELS`.
"""

from __future__ import annotations

# Imported for their @register_model side effect; the models outside the study are listed in this order
# (the 3D models after the 2D ones).
from tfrobseg.models import (  # noqa: F401
    attention_unet,
    efficientnet,
    recurrent_unet,
    resunet,
    unet,
    unet3d,
    unet_plus_plus,
    unet_vit,
)
from tfrobseg.models.attention_unet import attention_maps_model
from tfrobseg.models.complexity import count_macs, layer_macs, traced_macs
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.layers import PositionEmbedding, RecurrentConv2D
from tfrobseg.models.registry import (
    build_model,
    display_names,
    model_names,
    model_options,
    model_spatial_rank,
    register_model,
)
from tfrobseg.study import MODELS as STUDY_MODELS

MODEL_NAMES: tuple[str, ...] = model_names()
#: Display names; the study's five equal the names in ``published_tables.csv``.
MODEL_DISPLAY_NAMES: dict[str, str] = display_names()

__all__ = [
    "MODEL_DISPLAY_NAMES",
    "MODEL_NAMES",
    "STUDY_MODELS",
    "BuildConfig",
    "PositionEmbedding",
    "RecurrentConv2D",
    "attention_maps_model",
    "build_model",
    "count_macs",
    "layer_macs",
    "model_names",
    "model_options",
    "model_spatial_rank",
    "register_model",
    "traced_macs",
]
