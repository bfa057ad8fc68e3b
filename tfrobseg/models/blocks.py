"""Building blocks shared by the model builders, and the common U-shaped encoder-decoder skeleton.

Every block is a function ``block(x, filters, cfg, name) -> tensor`` over Keras functional tensors. Layer
names follow one scheme so that the parameter counts of the models can be compared component by component
(``tests/models/test_model_parameters.py`` does): ``enc{i}``/``bottleneck``/``dec{i}`` for the level blocks,
``enc{i}_pool``, ``dec{i}_up``, ``dec{i}_concat`` for the skeleton, ``attention{i}_*`` for attention gates,
``vit_*`` for the transformer bottleneck, ``*_shortcut_*`` for residual projections, ``logits`` and
``probabilities`` for the head.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from tfrobseg.models.defaults import UP_KERNEL_SIZE, BuildConfig
from tfrobseg.models.layers import (
    PositionEmbedding,
    RecurrentConv2D,
    make_normalization,
)

Block = Callable[..., "keras.KerasTensor"]


def conv_norm_act(
    x,
    filters: int,
    cfg: BuildConfig,
    name: str,
    *,
    kernel_size: int | None = None,
    strides: int = 1,
    activate: bool = True,
):
    """Conv ("same") -> normalization -> activation; the conv has a bias only without a norm.

    ``kernel_size`` defaults to ``cfg.kernel_size``; ``activate=False`` stops after the normalization
    (residual units, shortcut projections, the attention gate's linear maps). Layers: ``{name}_conv``,
    ``{name}_norm``, ``{name}_act``.
    """
    x = keras.layers.Conv2D(
        filters,
        cfg.kernel_size if kernel_size is None else kernel_size,
        strides=strides,
        padding="same",
        use_bias=cfg.normalization == "none",
        kernel_initializer=cfg.kernel_initializer,
        name=f"{name}_conv",
    )(x)
    norm = make_normalization(cfg.normalization, filters, name=f"{name}_norm")
    if norm is not None:
        x = norm(x)
    if activate:
        x = keras.layers.Activation(cfg.activation, name=f"{name}_act")(x)
    return x


def double_conv(x, filters: int, cfg: BuildConfig, name: str):
    """Ronneberger's level block: two conv-norm-activation layers (``{name}_1``, ``{name}_2``)."""
    x = conv_norm_act(x, filters, cfg, f"{name}_1")
    return conv_norm_act(x, filters, cfg, f"{name}_2")


def residual_block(x, filters: int, cfg: BuildConfig, name: str):
    """He et al.'s residual unit with a projection shortcut, the ResU-Net level block::

        y = act( N(conv(act(N(conv(x))))) + N(conv1x1(x)) )

    This is the (post-activation) building block of He et al., "Deep Residual Learning for Image
    Recognition" (CVPR 2016, Fig. 2 and Eq. 2; the study's ref. [12]): conv-norm-act (``{name}_1``),
    conv-norm (``{name}_2``, no activation), the shortcut added (``{name}_add``), then the activation after
    the addition (``{name}_act``), so the residual can correct the shortcut in both directions. The shortcut
    is He's projection (option B: 1x1 conv + norm, ``{name}_shortcut_*``), always present because every
    level changes the width (input channels -> ``filters``). The convolutions and norms are those of
    U-Net's :func:`double_conv`; only the shortcut and the place of the second activation differ.
    """
    y = conv_norm_act(x, filters, cfg, f"{name}_1")
    y = conv_norm_act(y, filters, cfg, f"{name}_2", activate=False)
    # "same" padding changes nothing for a 1x1 kernel: the shortcut keeps the size like the main path.
    shortcut = conv_norm_act(x, filters, cfg, f"{name}_shortcut", kernel_size=1, activate=False)
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    return keras.layers.Activation(cfg.activation, name=f"{name}_act")(y)


def recurrent_block(x, filters: int, cfg: BuildConfig, name: str, *, t: int = 2, residual: bool = False):
    """Alom's recurrent convolutional unit: 1x1 projection, then two RCLs (``t`` recurrent steps each).

    RU-Net: ``y = RCL(RCL(P(x)))``; R2U-Net (``residual=True``) adds the projected input back:
    ``y = P(x) + RCL(RCL(P(x)))``. ``P`` (``{name}_proj``, 1x1 conv with bias) only matches the width so that
    the RCL can form ``x + h`` (Alom et al. 2019, Fig. 4; :class:`RecurrentConv2D`). Each RCL applies its
    shared conv-norm-activation ``t + 1`` times (Alom's ``t``: recurrent steps after the feed-forward one).
    """
    x = keras.layers.Conv2D(filters, 1, kernel_initializer=cfg.kernel_initializer, name=f"{name}_proj")(x)
    y = x
    for k in (1, 2):
        y = RecurrentConv2D(
            filters,
            kernel_size=cfg.kernel_size,
            t=t,
            activation=cfg.activation,
            normalization=cfg.normalization,
            kernel_initializer=cfg.kernel_initializer,
            name=f"{name}_rcl{k}",
        )(y)
    if residual:
        y = keras.layers.Add(name=f"{name}_add")([x, y])
    return y


def up_conv(x, filters: int, cfg: BuildConfig, name: str):
    """Ronneberger's up-convolution: 2x2 transposed conv, stride 2, with bias (no norm/activation)."""
    return keras.layers.Conv2DTranspose(
        filters, UP_KERNEL_SIZE, strides=2, kernel_initializer=cfg.kernel_initializer, name=name
    )(x)


def attention_gate(skip, gating, cfg: BuildConfig, name: str):
    """Oktay's additive attention gate on a skip connection; returns the gated, transformed skip.

    With ``x`` the skip (H x W x C) and ``g`` the coarser decoder feature (H/2 x W/2) as gating signal::

        q = N(psi * relu(N(theta * x) + N(phi * g))),   alpha = up2(sigmoid(q)),   out = N(W * (x * alpha))

    following Oktay et al. (Attention U-Net, MIDL 2018, Fig. 2) and their reference code
    (ozan-oktay/Attention-Gated-Networks, ``_GridAttentionBlockND``, mode "concatenation"): ``theta`` is a
    2x2 stride-2 conv that brings ``x`` to the gating resolution, ``phi`` and ``psi`` are 1x1 convs, the
    intermediate width is ``C // 2``, ``up2`` is bilinear resampling, and the gated skip goes through the
    output transform ``W`` (1x1 conv C -> C + norm) before it is concatenated. The norms ``N`` after
    ``theta``, ``phi`` and ``psi`` are those of the widely used implementation of
    LeeJunHyun/Image_Segmentation (``Attention_block``); Oktay's code normalizes only in ``W``. Every ``N``
    is ``cfg.normalization`` (none with ``"none"``), and a conv has a bias only when no norm follows it
    (so with ``"none"`` the biases of ``theta`` and ``phi`` together are Oktay's ``b_g``). Bilinear weights
    are convex, so ``alpha`` stays in [0, 1]; the coefficients are the output of the layer named
    ``{name}_coefficients`` (shape H x W x 1) and the gated skip ``x * alpha`` that of ``{name}_gated``.
    """
    channels = skip.shape[-1]
    inter = max(channels // 2, 1)
    # A 2x2 stride-2 kernel on an even size needs no padding, so "same" equals Oktay's "valid" here.
    theta_x = conv_norm_act(skip, inter, cfg, f"{name}_theta_x", kernel_size=2, strides=2, activate=False)
    phi_g = conv_norm_act(gating, inter, cfg, f"{name}_phi_g", kernel_size=1, activate=False)
    f = keras.layers.Add(name=f"{name}_add")([theta_x, phi_g])
    f = keras.layers.Activation("relu", name=f"{name}_relu")(f)
    q = conv_norm_act(f, 1, cfg, f"{name}_psi", kernel_size=1, activate=False)
    q = keras.layers.Activation("sigmoid", name=f"{name}_sigmoid")(q)
    alpha = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_coefficients")(q)
    gated = keras.layers.Multiply(name=f"{name}_gated")([skip, alpha])
    return conv_norm_act(gated, channels, cfg, f"{name}_output", kernel_size=1, activate=False)


def vit_bottleneck(
    x,
    *,
    patch_size: int,
    embed_dim: int,
    num_heads: int,
    num_layers: int,
    mlp_dim: int,
    dropout: float,
    name: str = "vit",
):
    """Vision Transformer over the bottleneck feature map (Dosovitskiy et al. 2021; TransUNet-style).

    ``(h, w, c)`` -> patch embedding (``patch_size`` conv, stride ``patch_size``, to ``embed_dim``) ->
    ``N = (h/p)(w/p)`` tokens + learned position embedding -> ``num_layers`` pre-norm blocks
    ``z = z + MHSA(LN(z)); z = z + MLP(LN(z))`` (MLP: Dense(mlp_dim, GELU) -> Dense(embed_dim)) -> LN ->
    reshape to ``(h/p, w/p, embed_dim)`` -> back to ``c`` channels at ``(h, w)`` (1x1 conv for ``p = 1``,
    ``p x p`` transposed conv with stride ``p`` otherwise). Every layer is named ``{name}_*``.
    """
    height, width, channels = x.shape[1:]
    if height is None or width is None:
        raise ValueError("unet_vit needs a static input size: the position embedding has one entry per token")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"unet_vit: bottleneck {height}x{width} is not divisible by patch_size={patch_size}"
        )
    grid_h, grid_w = height // patch_size, width // patch_size
    z = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, name=f"{name}_patch_embed")(x)
    z = keras.layers.Reshape((grid_h * grid_w, embed_dim), name=f"{name}_tokens")(z)
    z = PositionEmbedding(name=f"{name}_position")(z)
    for k in range(num_layers):
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_block{k}_norm1")(z)
        y = keras.layers.MultiHeadAttention(
            num_heads, key_dim=embed_dim // num_heads, dropout=dropout, name=f"{name}_block{k}_attention"
        )(y, y)
        z = keras.layers.Add(name=f"{name}_block{k}_add1")([z, y])
        y = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_block{k}_norm2")(z)
        y = keras.layers.Dense(mlp_dim, activation="gelu", name=f"{name}_block{k}_mlp1")(y)
        if dropout > 0:
            y = keras.layers.Dropout(dropout, name=f"{name}_block{k}_dropout")(y)
        y = keras.layers.Dense(embed_dim, name=f"{name}_block{k}_mlp2")(y)
        z = keras.layers.Add(name=f"{name}_block{k}_add2")([z, y])
    z = keras.layers.LayerNormalization(epsilon=1e-6, name=f"{name}_norm")(z)
    z = keras.layers.Reshape((grid_h, grid_w, embed_dim), name=f"{name}_grid")(z)
    if patch_size == 1:
        return keras.layers.Conv2D(channels, 1, name=f"{name}_project")(z)
    return keras.layers.Conv2DTranspose(channels, patch_size, strides=patch_size, name=f"{name}_project")(z)


def segmentation_head(x, cfg: BuildConfig, name: str = ""):
    """1x1 conv to ``n_classes`` logits, then sigmoid (1 class) or softmax (> 1), both in float32.

    ``dtype="float32"`` keeps the head out of ``mixed_float16`` so probabilities and logits are float32
    (the loss and the attack gradients are computed from them). With ``output="logits"`` the activation is
    left out. Layer names: ``logits{name}``, ``probabilities{name}``.
    """
    logits = keras.layers.Conv2D(cfg.n_classes, 1, dtype="float32", name=f"logits{name}")(x)
    if cfg.output == "logits":
        return logits
    activation = "sigmoid" if cfg.n_classes == 1 else "softmax"
    return keras.layers.Activation(activation, dtype="float32", name=f"probabilities{name}")(logits)


def encoder_decoder(
    inputs,
    cfg: BuildConfig,
    block: Block,
    *,
    gate: Callable | None = None,
    bottleneck: Callable | None = None,
):
    """The U-shaped skeleton shared by the study models; returns the last decoder feature map.

    Encoder level ``i < depth-1``: ``block`` -> skip, 2x2 max-pool. Bottleneck: ``block`` at ``filters[-1]``
    (then the optional ``bottleneck`` transform). Decoder level ``i``: 2x2 up-conv to ``filters[i]``, the
    skip (optionally ``gate(skip, coarser_decoder_feature, cfg, name)``) concatenated before the up-sampled
    features (Ronneberger's order), ``block``. Only ``block``, ``gate`` and ``bottleneck`` differ between
    the study models, which is the study's fairness rule (Apostolidis et al., Sec. II-H).
    """
    skips = []
    x = inputs
    for i, f in enumerate(cfg.filters[:-1]):
        x = block(x, f, cfg, f"enc{i}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{i}_pool")(x)
    x = block(x, cfg.filters[-1], cfg, "bottleneck")
    if bottleneck is not None:
        x = bottleneck(x)
    for i in reversed(range(cfg.depth - 1)):
        skip = skips[i]
        if gate is not None:
            skip = gate(skip, x, cfg, f"attention{i}")
        x = up_conv(x, cfg.filters[i], cfg, f"dec{i}_up")
        x = keras.layers.Concatenate(name=f"dec{i}_concat")([skip, x])
        x = block(x, cfg.filters[i], cfg, f"dec{i}")
    return x


def skeleton_model(
    name: str,
    cfg: BuildConfig,
    block: Block,
    *,
    gate: Callable | None = None,
    bottleneck: Callable | None = None,
) -> keras.Model:
    """A study model: image input, :func:`encoder_decoder` with the model's own parts, the shared head.

    Every study model is built here, so they can differ only in ``block``, ``gate`` and ``bottleneck``
    (the study's fairness rule: fixed depth, filters per level and activation).
    """
    inputs = keras.Input(cfg.input_shape, name="image")
    x = encoder_decoder(inputs, cfg, block, gate=gate, bottleneck=bottleneck)
    return keras.Model(inputs, segmentation_head(x, cfg), name=name)
