"""tfrobseg.models.complexity (MACs counted by hand, from the layers and from the traced graph) and the
``python -m tfrobseg.models`` table."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import FILTERS, SMALL

from tfrobseg import models
from tfrobseg.models import build_model, count_macs, layer_macs, traced_macs
from tfrobseg.models.__main__ import main

UNET_64 = 6_324_224  # the U-Net at 64 x 64 with FILTERS, counted by hand in test_count_macs_unet_by_hand


def unet_3d_macs(depth: int, size: int = 32) -> int:
    """The 3D U-Net with FILTERS on a (depth, size, size) volume by hand: 27-tap convs, 8-tap up-convs, the head."""
    v0, v1, v2 = depth * size * size, depth * size * size // 8, depth * size * size // 64
    return (v0 * 27 * (1 * 4 + 4 * 4) + v1 * 27 * (4 * 8 + 8 * 8) + v2 * 27 * (8 * 16 + 16 * 16)
            + v2 * 8 * 16 * 8 + v1 * 27 * (16 * 8 + 8 * 8) + v1 * 8 * 8 * 4 + v0 * 27 * (8 * 4 + 4 * 4) + v0 * 4)


def functional(shape: tuple[int, ...], layer: keras.layers.Layer) -> keras.Model:
    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def test_count_macs_unet_by_hand():
    """U-Net at 64 x 64, filters (4, 8, 16): every conv counted by hand."""
    model = build_model("unet", (64, 64, 1), filters=FILTERS)
    enc = 64 * 64 * 9 * (1 * 4 + 4 * 4) + 32 * 32 * 9 * (4 * 8 + 8 * 8)
    bottleneck = 16 * 16 * 9 * (8 * 16 + 16 * 16)
    # up-convs: every input pixel times 2x2 kernel times C_in x C_out
    dec1 = 16 * 16 * 4 * 16 * 8 + 32 * 32 * 9 * (16 * 8 + 8 * 8)
    dec0 = 32 * 32 * 4 * 8 * 4 + 64 * 64 * 9 * (8 * 4 + 4 * 4)
    head = 64 * 64 * 4 * 1
    assert count_macs(model) == enc + bottleneck + dec1 + dec0 + head == UNET_64


def test_count_macs_components():
    unet = count_macs(build_model("unet", (64, 64, 1), filters=FILTERS))
    # Alom's t = 2 (the default): the feed-forward conv and two recurrent steps, 3 convs per RCL; t = 0: one.
    r2 = build_model("recurrent_unet", (64, 64, 1), filters=FILTERS)
    r0 = build_model("recurrent_unet", (64, 64, 1), filters=FILTERS, t=0)
    rcl_t0 = sum(layer_macs(layer) for layer in r0.layers if "_rcl" in layer.name)
    # two 3x3 RCLs per level block at the block's width and resolution (64, 32, 16, 32, 64 px)
    assert rcl_t0 == 2 * 9 * (64 * 64 * 16 * 2 + 32 * 32 * 64 * 2 + 16 * 16 * 256)
    assert sum(layer_macs(layer) for layer in r2.layers if "_rcl" in layer.name) == 3 * rcl_t0
    assert count_macs(r0) - rcl_t0 == count_macs(r2) - 3 * rcl_t0  # the rest does not depend on t
    vit = build_model("unet_vit", (64, 64, 1), filters=FILTERS, **SMALL["unet_vit"])
    n, e, mlp = 16 * 16, 16, 32  # tokens at the 16 x 16 bottleneck, width, MLP width
    blocks = 2 * (4 * n * e * e + 2 * n * n * e + 2 * n * e * mlp)
    assert count_macs(vit) - unet == blocks + 2 * n * 16 * e  # + patch embedding and projection back


def test_model_table_rows(capsys):
    """One row per asked model: display name, parameters, difference to U-Net, MACs, output shape."""
    main(["--size", "64", "--filters", *map(str, FILTERS), "--models", "unet", "resunet"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("input (64, 64, 1), filters (4, 8, 16);")
    unet, resunet = lines[-2].split(), lines[-1].split()
    unet_params = build_model("unet", (64, 64, 1), filters=FILTERS).count_params()
    resunet_params = build_model("resunet", (64, 64, 1), filters=FILTERS).count_params()
    assert unet[:4] == ["unet", "U-Net", f"{unet_params:,}", "+0"]
    assert resunet[:4] == ["resunet", "ResU-Net", f"{resunet_params:,}", f"{resunet_params - unet_params:+,}"]
    assert unet[5] == f"{6_324_224 / 1e9:.3f}"  # the hand count of test_count_macs_unet_by_hand


def test_count_macs_unet_3d_and_dilated_by_hand():
    """3D U-Net at 8 x 32 x 32, filters (4, 8, 16): 27-tap convs, 8-tap up-convs; the dilated 3D U-Net adds
    three 27-tap convs at the 2 x 8 x 8 bottleneck (dilation changes no count)."""
    unet_3d = build_model("unet_3d", (8, 32, 32, 1), filters=FILTERS)
    v0, v1, v2 = 8 * 32 * 32, 4 * 16 * 16, 2 * 8 * 8  # voxels per level
    enc = v0 * 27 * (1 * 4 + 4 * 4) + v1 * 27 * (4 * 8 + 8 * 8)
    bottleneck = v2 * 27 * (8 * 16 + 16 * 16)
    dec1 = v2 * 8 * 16 * 8 + v1 * 27 * (16 * 8 + 8 * 8)
    dec0 = v1 * 8 * 8 * 4 + v0 * 27 * (8 * 4 + 4 * 4)
    head = v0 * 4 * 1
    assert count_macs(unet_3d) == enc + bottleneck + dec1 + dec0 + head
    dilated = build_model("dilated_unet_3d", (8, 32, 32, 1), filters=FILTERS)
    assert count_macs(dilated) - count_macs(unet_3d) == 3 * v2 * 27 * 16 * 16


def test_count_macs_depthwise_and_nested():
    """A depthwise conv counts kernel x C_in x depth multiplier per output pixel; a nested model its layers."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.DepthwiseConv2D(5, strides=2, padding="same", depth_multiplier=2)(inputs)
    inner = keras.Model(inputs, keras.layers.Conv2D(4, 1)(x))
    outer_in = keras.Input((16, 16, 3))
    outer = keras.Model(outer_in, keras.layers.Conv2D(2, 3, padding="same")(keras.layers.UpSampling2D(2)(inner(outer_in))))
    depthwise = 8 * 8 * 25 * 3 * 2
    assert layer_macs(inner.layers[1]) == depthwise
    assert count_macs(outer) == depthwise + 8 * 8 * 6 * 4 + 16 * 16 * 9 * 4 * 2


def test_model_table_3d_rows_and_models_that_cannot_be_built(capsys):
    main(["--size", "32", "--slices", "8", "--filters", *map(str, FILTERS), "--models", "unet_3d", "dilated_unet_3d"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "3D models: input (8, 32, 32, 1), MACs per volume, '+ U-Net' against the 3D U-Net"
    unet_3d, dilated = lines[-2].split(), lines[-1].split()
    assert unet_3d[:3] == ["unet_3d", "3D", "U-Net"] and unet_3d[4] == "+0"
    assert dilated[5] == f"{3 * (27 * 16 * 16 + 4 * 16):+,}"  # the dilated bottleneck's parameters
    assert unet_3d[-5:] == ["(None,", "8,", "32,", "32,", "1)"]
    main(["--size", "48", "--models", "unet_efficientnet"])
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.split()[:3] == ["unet_efficientnet", "EfficientNet", "U-Net"]
    assert "not built: unet_efficientnet: input height 48 must be a multiple of 32" in last


# ------------------------------------------------------------------------------ traced_macs (the graph's ops)
def test_traced_macs_of_single_layers_by_hand():
    # Conv2D: output pixels x kernel x input channels per group x output channels
    assert traced_macs(functional((8, 8, 3), keras.layers.Conv2D(5, 3, padding="same")), (8, 8, 3)) == 8 * 8 * 9 * 3 * 5
    grouped = keras.layers.Conv2D(4, 3, strides=2, padding="same", groups=2)
    assert traced_macs(functional((8, 8, 6), grouped), (8, 8, 6)) == 4 * 4 * 9 * 3 * 4
    # transposed: every input pixel scatters kernel x output channels
    transposed = keras.layers.Conv2DTranspose(5, 2, strides=2)
    assert traced_macs(functional((4, 4, 3), transposed), (4, 4, 3)) == 4 * 4 * 3 * 4 * 5
    assert traced_macs(functional((6,), keras.layers.Dense(7)), (6,)) == 6 * 7
    assert traced_macs(functional((10, 6), keras.layers.Dense(7)), (10, 6)) == 10 * 6 * 7  # per token
    depthwise = keras.layers.DepthwiseConv2D(5, strides=2, padding="same", depth_multiplier=2)
    assert traced_macs(functional((16, 16, 3), depthwise), (16, 16, 3)) == 8 * 8 * 25 * 3 * 2
    assert traced_macs(functional((4, 8, 8, 2), keras.layers.Conv3D(3, 3, padding="same")), (4, 8, 8, 2)) \
        == 4 * 8 * 8 * 27 * 2 * 3


def test_traced_macs_of_multi_head_attention_by_hand():
    n, d, heads, key = 10, 8, 2, 4  # tokens, width, heads, head size
    inputs = keras.Input((n, d))
    model = keras.Model(inputs, keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key)(inputs, inputs))
    projections = 4 * n * d * heads * key  # query, key, value and output projections
    scores_and_sum = 2 * heads * n * n * key  # Q K^T and the weighted sum of V
    assert traced_macs(model, (n, d)) == projections + scores_and_sum == 4160


def test_traced_macs_of_a_tiny_unet_by_hand():
    assert traced_macs(models.build_model("unet", (64, 64, 1), filters=FILTERS), (64, 64, 1)) == UNET_64 == 6_324_224
    # a 3D network built with free sizes is counted at the shape asked
    unet_3d = models.build_model("unet_3d", (None, None, None, 1), filters=FILTERS)
    assert traced_macs(unet_3d, (8, 32, 32, 1)) == unet_3d_macs(8)
    assert traced_macs(unet_3d, (12, 32, 32, 1)) == unet_3d_macs(12)


@pytest.mark.parametrize("name", models.MODEL_NAMES)
def test_traced_macs_agrees_with_the_layer_count_for_every_model(name):
    """Against :func:`tfrobseg.models.count_macs`, which counts from the layers' attributes (independent of the
    graph), at 32 px (8 x 32 x 32 for the 3D models)."""
    shape = (32, 32, 1) if models.model_spatial_rank(name) == 2 else (8, 32, 32, 1)
    model = models.build_model(name, shape, filters=FILTERS, **SMALL.get(name, {}))
    extra = 0
    if name == "dilated_unet_3d":
        # TensorFlow computes the rate-4 convolution of the 2 x 8 x 8 bottleneck on a space-to-batch copy padded
        # to 64 blocks of 3 x 4 x 4: 64 x 1 x 2 x 2 = 256 output positions where the layer has 128.
        extra = (256 - 128) * 27 * 16 * 16
    assert traced_macs(model, shape) == models.count_macs(model) + extra


class _Nested(keras.Model):
    """A subclassed model whose convolution runs inside a tf.function called from another one."""

    def __init__(self):
        super().__init__(name="nested")
        self.conv = keras.layers.Conv2D(4, 3, padding="same")
        self.inner = tf.function(lambda x: self.conv(x))
        self.outer = tf.function(lambda x: self.inner(x))

    def call(self, x):
        return self.outer(x)


def test_traced_macs_counts_the_bodies_of_function_calls():
    model = _Nested()
    model(np.zeros((1, 8, 8, 1), "float32"))  # traced at batch 1: the bodies have static shapes
    assert traced_macs(model, (8, 8, 1)) == 8 * 8 * 9 * 1 * 4


class _Traced(keras.layers.Layer):
    def build(self, shape):
        self.kernel = self.add_weight(shape=(3, 3, 1, 4))

    @tf.function
    def call(self, x):
        return tf.nn.conv2d(x, self.kernel, 1, "SAME")


def test_traced_macs_refuses_unknown_shapes_loops_and_bad_input():
    # A functional model traces the layer's tf.function with a free batch: its body's shapes are unknown.
    with pytest.raises(ValueError, match="unknown shape"):
        traced_macs(functional((8, 8, 1), _Traced(name="traced")), (8, 8, 1))
    with pytest.raises(ValueError, match="While"):
        traced_macs(functional((5, 3), keras.layers.LSTM(4)), (5, 3))
    for bad in ((), (8, 0, 1), (8.0, 8, 1)):
        with pytest.raises(ValueError, match="input_shape"):
            traced_macs(functional((8, 8, 1), keras.layers.Conv2D(1, 1)), bad)
