"""Building blocks shared by the model builders, and the common U-shaped encoder-decoder skeleton.

Every block is a function ``block(x, filters, cfg, name) -> tensor`` over Keras functional tensors. Layer
names follow one scheme so that the parameter counts of the models can be compared component by component
(``tests/models/test_model_parameters.py`` does): ``enc{i}``/``bottleneck``/``dec{i}`` for the level blocks,
``enc{i}_pool``, ``dec{i}_up``, ``dec{i}_concat`` for the skeleton, ``attention{i}_*`` for attention gates,
``vit_*`` for the transformer bottleneck, ``*_shortcut_*`` for residual projections, ``logits`` and
``probabilities`` for the head; ``x{i}_{j}`` for the nodes of UNet++'s nested pathways.

The convolution, pooling and up-convolution blocks take their Keras layer from :func:`layer_for`, which
reads ``cfg.spatial_rank``: the same block builds a 2D network for ``(H, W, C)`` slices and a 3D one for
``(D, H, W, C)`` volumes (kernel 3 becomes 3x3x3, pooling 2x2x2). The attention gate, the recurrent unit
and the ViT bottleneck stay 2D (the registry only builds their models from slices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from tfrobseg.models.defaults import UP_KERNEL_SIZE, BuildConfig
from tfrobseg.models.layers import (
    PositionEmbedding,
    RecurrentConv2D,
    make_normalization,
)

Block = Callable[..., "keras.KerasTensor"]

#: Keras layer class names by kind; ``{r}`` is the spatial rank.
_LAYER_KINDS: dict[str, str] = {"Conv": "Conv{r}D", "ConvTranspose": "Conv{r}DTranspose", "MaxPooling": "MaxPooling{r}D"}


def layer_for(cfg: BuildConfig, kind: str) -> type[keras.layers.Layer]:
    """The Keras layer class of ``kind`` ("Conv", "ConvTranspose", "MaxPooling") for ``cfg.spatial_rank``.

    ``layer_for(cfg, "Conv")`` is ``Conv2D`` for slices and ``Conv3D`` for volumes; the 2D and 3D layers
    take the same arguments (an int kernel size or stride applies to every spatial axis), so a block
    written once serves both ranks.
    """
    if kind not in _LAYER_KINDS:
        raise ValueError(f"layer kind must be one of {tuple(_LAYER_KINDS)}, got {kind!r}")
    return getattr(keras.layers, _LAYER_KINDS[kind].format(r=cfg.spatial_rank))


def conv_norm_act(
    x,
    filters: int,
    cfg: BuildConfig,
    name: str,
    *,
    kernel_size: int | None = None,
    strides: int = 1,
    dilation_rate: int = 1,
    activate: bool = True,
):
    """Conv ("same") -> normalization -> activation; the conv has a bias only without a norm.

    ``kernel_size`` defaults to ``cfg.kernel_size``; ``activate=False`` stops after the normalization
    (residual units, shortcut projections, the attention gate's linear maps); ``dilation_rate`` spaces the
    kernel taps (the dilated bottleneck). Layers: ``{name}_conv``, ``{name}_norm``, ``{name}_act``.
    """
    x = layer_for(cfg, "Conv")(
        filters,
        cfg.kernel_size if kernel_size is None else kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
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


def max_pool(x, cfg: BuildConfig, name: str):
    """2x2 (2x2x2) max-pooling, stride 2. In 3D it computes in float32 whatever the dtype policy.

    TensorFlow has no float16 CPU kernel for 3D max-pooling, so a 3D model under ``mixed_float16`` would not
    run on a CPU. A maximum is exact in any precision and float16 -> float32 -> float16 casts are exact, so
    the float32 pooling changes no value; it only costs two casts of the pooled tensor.
    """
    dtype = "float32" if cfg.spatial_rank == 3 else None
    return layer_for(cfg, "MaxPooling")(2, dtype=dtype, name=name)(x)


def up_conv(x, filters: int, cfg: BuildConfig, name: str):
    """Ronneberger's up-convolution: 2x2 (2x2x2) transposed conv, stride 2, with bias (no norm/activation)."""
    return layer_for(cfg, "ConvTranspose")(
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


def dilated_bottleneck(x, *, cfg: BuildConfig, dilation_rates: Sequence[int], name: str = "dilated"):
    """Cascade of dilated conv-norm-activation layers whose outputs are summed with the input.

    ``c_0 = x``, ``c_k = conv_norm_act(c_{k-1})`` with dilation ``dilation_rates[k-1]`` at ``x``'s width
    (``{name}{k}_conv/_norm/_act``, k from 1), output ``x + c_1 + ... + c_K`` (``{name}_sum``): D-LinkNet's
    cascade-and-parallel centre (Zhou, Zhang & Wu, CVPRW 2018), used as the dilated bottleneck of the dilated
    3D U-Net (:mod:`tfrobseg.models.unet3d` says why these rates). Rank-generic like every conv block.
    """
    branches = [x]
    y = x
    for k, rate in enumerate(dilation_rates, start=1):
        y = conv_norm_act(y, x.shape[-1], cfg, f"{name}{k}", dilation_rate=rate)
        branches.append(y)
    return keras.layers.Add(name=f"{name}_sum")(branches)


def segmentation_head(x, cfg: BuildConfig, name: str = ""):
    """1x1 conv to ``n_classes`` logits, then sigmoid (1 class) or softmax (> 1), both in float32.

    ``dtype="float32"`` keeps the head out of ``mixed_float16`` so probabilities and logits are float32
    (the loss and the attack gradients are computed from them). With ``output="logits"`` the activation is
    left out. Layer names: ``logits{name}``, ``probabilities{name}``.
    """
    logits = layer_for(cfg, "Conv")(cfg.n_classes, 1, dtype="float32", name=f"logits{name}")(x)
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
        x = max_pool(x, cfg, f"enc{i}_pool")
    x = block(x, cfg.filters[-1], cfg, "bottleneck")
    if bottleneck is not None:
        x = bottleneck(x)
    return unet_decoder(x, skips, cfg.filters[:-1], cfg, block, gate=gate)


def unet_decoder(x, skips: Sequence, widths: Sequence[int], cfg: BuildConfig, block: Block, *, gate: Callable | None = None):
    """U-Net's expanding path from the coarsest feature map ``x``; returns the finest decoder feature map.

    Level ``i`` from ``len(skips) - 1`` down to 0: 2x2 up-conv to ``widths[i]`` (``dec{i}_up``), the skip
    ``skips[i]`` (optionally gated, ``gate(skip, x, cfg, "attention{i}")``) concatenated before the
    up-sampled features (``dec{i}_concat``, Ronneberger's order), then ``block`` (``dec{i}``). A ``None`` skip
    (a level the encoder has no feature map for, e.g. full resolution behind an EfficientNet) is left out.
    """
    for i in reversed(range(len(skips))):
        skip = skips[i]
        if skip is not None and gate is not None:
            skip = gate(skip, x, cfg, f"attention{i}")
        x = up_conv(x, widths[i], cfg, f"dec{i}_up")
        if skip is not None:
            x = keras.layers.Concatenate(name=f"dec{i}_concat")([skip, x])
        x = block(x, widths[i], cfg, f"dec{i}")
    return x


def nested_skip_pathways(columns: Sequence, widths: Sequence[int], cfg: BuildConfig, *, first_row: int = 0) -> list[list]:
    """UNet++'s nested dense skip pathways (Zhou et al. 2018) over the encoder nodes ``columns``.

    ``columns[i]`` is node ``X[i][0]`` (row ``i``, each row half the resolution of the one above); for
    ``j >= 1`` and ``i < len(columns) - j``::

        X[i][j] = double_conv(concat(X[i][0], ..., X[i][j-1], up(X[i+1][j-1])))   at widths[i]

    with ``up`` the 2x2 up-convolution to ``widths[i]``. Returns ``nodes`` with ``nodes[i][j] = X[i][j]``;
    the decoder output is ``nodes[0][-1]``. Layers are named ``x{r}_{j}``, ``x{r}_{j}_up``, ``x{r}_{j}_concat``
    with ``r = i + first_row`` (the resolution level, so names read the same whatever the encoder).
    """
    nodes: list[list] = [[node] for node in columns]
    for j in range(1, len(columns)):
        for i in range(len(columns) - j):
            r = i + first_row
            up = up_conv(nodes[i + 1][j - 1], widths[i], cfg, f"x{r}_{j}_up")
            merged = keras.layers.Concatenate(name=f"x{r}_{j}_concat")([*nodes[i][:j], up])
            nodes[i].append(double_conv(merged, widths[i], cfg, f"x{r}_{j}"))
    return nodes


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
