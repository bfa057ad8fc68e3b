"""U-Net and UNet++ with an EfficientNet encoder (Wang & Xu, paper 001: their EfficientNet-B7 models).

Wang & Xu replace the encoder of U-Net and of UNet++ by a pre-trained EfficientNet-B7 (Tan & Le 2019); those
two were their best models on clean images and the most vulnerable to FGSM. Here the encoder is
``keras.applications.EfficientNetB0`` ... ``B7`` (option ``variant``, default ``"b0"``: the smallest, for
CPU runs; ``"b7"`` is the paper's), randomly initialised unless ``weights="imagenet"`` is asked for (Keras
then downloads the ImageNet weights once; the tests never do).

**Encoder features.** The EfficientNet halves the resolution in five stages; the decoder reads the feature
map at 1/2, 1/4, 1/8 and 1/16 of the input (the skips) and at 1/32 (the bottleneck), each the output of the
last block of its resolution, i.e. the input of the first layer of the next stage (``block2a_expand_conv``,
``block3a_expand_conv``, ``block4a_expand_conv``, ``block6a_expand_conv``, ``top_conv``; for B0 16, 24, 40,
112 and 320 channels, for B7 32, 48, 80, 224 and 640). The encoder is one nested model,
``efficientnet{variant}_encoder`` (e.g. ``efficientnetb0_encoder``), holding only the layers up to those
feature maps: the classification head and the 1x1 ``top_conv`` are left out, so every weight of the model is
trained. Freeze it with ``model.get_layer("efficientnetb0_encoder").trainable = False``. Height and width
must be multiples of 32 (``None`` is allowed); another size raises a ``ValueError`` naming it.

**Input channels and intensity.** A 1-channel image is repeated to three channels (``image_rgb``, a
``Concatenate`` layer) so that the ImageNet stem loads unchanged; 3-channel images are used as they are, and
other channel counts work only without ImageNet weights. The EfficientNet carries its own preprocessing: it
expects pixels in [0, 255], divides by 255 and standardises with its ``Normalization`` layer (the ImageNet
per-channel mean and variance with ImageNet weights, mean 0 and variance 1 without; with ImageNet weights
Keras then divides once more by the square root of the standard deviation, a correction for how the
original weights were trained). Our images are already z-scored per volume, so a fixed ``Rescaling`` layer
(``efficientnet_input``) maps them to ``255 * (mean + sqrt(variance) * z)``, the values the EfficientNet's
own rescaling and normalisation turn back into ``z``: the stem sees our z-scored image as it would see a
standardised natural image (times Keras' correction with ImageNet weights), and without ImageNet weights it
sees ``z`` itself. The mean and variance are read from the built encoder, so this holds for the weights
actually loaded. (Feeding z-scores straight in would divide them by 255: the stem convolution's output
variance then falls far below its batch norm's epsilon of 1e-3, and on a randomly initialised B0 at 64 x 64
the normalised stem output has a standard deviation of 0.054 instead of 0.996 in training mode.)

**Decoders.** Widths come from ``filters``: the decoder level at 1/2^i of the input (i = 0 ... 4, 0 = full
resolution) has ``filters[i]`` channels, and the levels past the last entry repeat it (``filters[min(i,
len(filters) - 1)]``). The default ``(16, 32, 64, 128, 256)`` gives 256, 128, 64, 32, 16 from the coarsest
decoder level to the finest, the decoder widths of the segmentation_models_pytorch U-Net and UNet++ that
EfficientNet U-Nets are usually built with. Every decoder block is U-Net's double conv with the model's
normalisation; the encoder keeps EfficientNet's batch norms and swish activations.

* ``unet_efficientnet``: U-Net's expanding path (:func:`tfrobseg.models.blocks.unet_decoder`): from the
  1/32 bottleneck, 2x2 up-convolution, concatenation with the encoder feature of that resolution, double
  conv, down to 1/2; the last level (full resolution) has no encoder feature to concatenate. Layers
  ``dec{i}_up``, ``dec{i}_concat``, ``dec{i}`` at 1/2^i.
* ``unet_plus_plus_efficientnet``: UNet++'s nested dense skip pathways
  (:func:`tfrobseg.models.blocks.nested_skip_pathways`, the nesting of ``unet_plus_plus``) over the five
  encoder feature maps as column 0 (rows 1 ... 5, row r at 1/2^r; nodes ``x{r}_{j}``), then the top node
  ``x1_4`` up-sampled to full resolution and a double conv (``x0_5``) before the head.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tfrobseg.models.blocks import (
    double_conv,
    nested_skip_pathways,
    segmentation_head,
    unet_decoder,
    up_conv,
)
from tfrobseg.models.defaults import BuildConfig
from tfrobseg.models.registry import register_model

#: ``variant`` -> the ``keras.applications`` constructor.
VARIANTS: dict[str, str] = {f"b{k}": f"EfficientNetB{k}" for k in range(8)}
#: Layers whose input is the encoder's feature map at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input size.
FEATURE_LAYERS: tuple[str, ...] = (
    "block2a_expand_conv",
    "block3a_expand_conv",
    "block4a_expand_conv",
    "block6a_expand_conv",
    "top_conv",
)
#: Stride-2 stages of the EfficientNet: the input size must be a multiple of 2^5.
STRIDE: int = 32
WEIGHTS: tuple[str | None, ...] = (None, "imagenet")


def decoder_widths(cfg: BuildConfig) -> tuple[int, ...]:
    """Width of the decoder level at 1/2^i of the input, i = 0 ... 4: ``filters[min(i, len(filters) - 1)]``."""
    return tuple(cfg.filters[min(i, cfg.depth - 1)] for i in range(len(FEATURE_LAYERS)))


def efficientnet_features(name: str, cfg: BuildConfig, variant: str, weights: str | None):
    """The image input and the encoder's five feature maps (1/2 ... 1/32), the checks of the module docstring."""
    if variant not in VARIANTS:
        raise ValueError(f"{name}: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"{name}: weights must be None or 'imagenet', got {weights!r}")
    *sizes, channels = cfg.input_shape
    for axis, size in zip(("height", "width"), sizes):
        if size is not None and size % STRIDE:
            raise ValueError(
                f"{name}: input {axis} {size} must be a multiple of {STRIDE} "
                "(the EfficientNet encoder halves it five times)"
            )
    encoder_channels = 3 if channels == 1 else channels
    if weights == "imagenet" and encoder_channels != 3:
        raise ValueError(f"{name}: ImageNet weights need 1 or 3 input channels, got {channels}")
    base = getattr(keras.applications, VARIANTS[variant])(
        include_top=False, weights=weights, input_shape=(*sizes, encoder_channels)
    )
    encoder = keras.Model(
        base.input, [base.get_layer(n).input for n in FEATURE_LAYERS], name=f"efficientnet{variant}_encoder"
    )
    (norm,) = (layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
    mean, variance = (np.asarray(w, dtype="float64").reshape(-1) for w in norm.get_weights()[:2])
    inputs = keras.Input(cfg.input_shape, name="image")
    x = inputs
    if channels == 1:
        x = keras.layers.Concatenate(name="image_rgb")([x, x, x])
    # 255 * (mean + sqrt(var) * z): EfficientNet's Rescaling(1/255) and Normalization give z back.
    scale = [255.0 * math.sqrt(v) for v in np.broadcast_to(variance, encoder_channels)]
    offset = [255.0 * m for m in np.broadcast_to(mean, encoder_channels)]
    x = keras.layers.Rescaling(scale, offset, name="efficientnet_input")(x)
    return inputs, encoder(x)


@register_model("unet_efficientnet", display_name="EfficientNet U-Net")
def build_unet_efficientnet(cfg: BuildConfig, *, variant: str = "b0", weights: str | None = None) -> keras.Model:
    """Build a U-Net with an EfficientNet encoder (``variant`` b0 ... b7; ``weights`` None or "imagenet")."""
    inputs, features = efficientnet_features("unet_efficientnet", cfg, variant, weights)
    skips = [None, *features[:-1]]  # no encoder feature at full resolution
    x = unet_decoder(features[-1], skips, decoder_widths(cfg), cfg, double_conv)
    return keras.Model(inputs, segmentation_head(x, cfg), name="unet_efficientnet")


@register_model("unet_plus_plus_efficientnet", display_name="EfficientNet UNet++")
def build_unet_plus_plus_efficientnet(
    cfg: BuildConfig, *, variant: str = "b0", weights: str | None = None
) -> keras.Model:
    """Build a UNet++ with an EfficientNet encoder (``variant`` b0 ... b7; ``weights`` None or "imagenet")."""
    inputs, features = efficientnet_features("unet_plus_plus_efficientnet", cfg, variant, weights)
    widths = decoder_widths(cfg)
    nodes = nested_skip_pathways(features, widths[1:], cfg, first_row=1)
    last = len(features)
    x = up_conv(nodes[0][-1], widths[0], cfg, f"x0_{last}_up")
    x = double_conv(x, widths[0], cfg, f"x0_{last}")
    return keras.Model(inputs, segmentation_head(x, cfg), name="unet_plus_plus_efficientnet")
