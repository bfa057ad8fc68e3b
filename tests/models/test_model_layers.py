"""tfrobseg.models.layers: the recurrent convolutional layer against Alom's recursion and a plain conv block."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_helpers import batch

from tfrobseg.models import RecurrentConv2D
from tfrobseg.models.layers import make_normalization


def plain_block(filters: int) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
        ]
    )


def test_recurrent_conv_follows_alom_recursion_with_t_recurrent_steps():
    """Linear 1x1 RCL against NumPy: Alom's t = 2 is h0 = F(x), then two steps h = F(x + h) (3 convs)."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 5, 5, 3)).astype("float32")
    kernel = rng.normal(scale=0.5, size=(1, 1, 3, 3)).astype("float32")
    bias = rng.normal(size=3).astype("float32")
    layer = RecurrentConv2D(3, kernel_size=1, activation="linear", normalization="none")
    assert layer.t == 2  # Alom's default
    layer.build(x.shape)
    layer.set_weights([kernel, bias])

    def f(z):  # the shared step: 1x1 conv with bias, no norm, linear activation
        return z @ kernel[0, 0] + bias

    expected = f(x)  # feed-forward step
    for _ in range(2):  # t = 2 recurrent steps
        expected = f(x + expected)
    np.testing.assert_allclose(layer(x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_recurrent_conv_shares_the_conv_with_one_norm_per_step_and_reduces_to_plain_conv():
    x = batch(2, 16, 6, seed=4)
    layers = {t: RecurrentConv2D(6, t=t) for t in (0, 1, 2)}
    for layer in layers.values():
        layer(x, training=True)  # build + move BN statistics
    # One kernel whatever t; gamma, beta (+ 2 running statistics) per step.
    assert {t: layer.count_params() for t, layer in layers.items()} == {t: 9 * 6 * 6 + 4 * 6 * (t + 1) for t in layers}
    assert [len(layers[t].trainable_weights) for t in layers] == [3, 5, 7]
    # Each step's norm keeps the running statistics of its own input distribution.
    means = [norm.moving_mean.numpy() for norm in layers[2].norms]
    assert not np.allclose(means[0], means[1]) and not np.allclose(means[1], means[2])

    plain = plain_block(6)
    plain.build(x.shape)
    for layer in layers.values():
        expected = None
        for norm in layer.norms:  # h_k = F_k(x + h_{k-1}): the same conv, norm k
            plain.set_weights(layer.conv.get_weights() + norm.get_weights())
            expected = plain(x if expected is None else x + expected, training=False)
        np.testing.assert_allclose(layer(x, training=False).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # t = 0 is exactly the plain block, also in training mode (batch statistics).
    plain.set_weights(layers[0].get_weights())
    np.testing.assert_allclose(layers[0](x, training=True).numpy(), plain(x, training=True).numpy(), atol=1e-5)


@pytest.mark.parametrize("t", [-1, 1.0, True])
def test_recurrent_conv_rejects_bad_t(t):
    with pytest.raises(ValueError, match="recurrent steps after the feed-forward one"):
        RecurrentConv2D(4, t=t)


def test_recurrent_conv_rejects_width_mismatch():
    with pytest.raises(ValueError, match="equal widths"):
        RecurrentConv2D(8)(batch(1, 8, 4))


@pytest.mark.parametrize("kind, groups", [("group", 8), ("instance", 16), ("batch", None)])
def test_normalizations_on_volumes_match_numpy(kind, groups):
    """5-D (B, D, H, W, C) feature maps: group (gcd(16, 8) = 8 groups) and instance norm per sample and channel
    group, batch norm (training) per channel over batch and all three spatial axes; gamma 1, beta 0 as
    initialised, Keras' epsilon 1e-3."""
    x = np.random.default_rng(3).normal(1.0, 2.0, size=(2, 3, 4, 5, 16)).astype("float32")
    layer = make_normalization(kind, 16)
    if groups is None:
        mean, var = x.mean(axis=(0, 1, 2, 3)), x.var(axis=(0, 1, 2, 3))
        expected = (x - mean) / np.sqrt(var + 1e-3)
        got = layer(x, training=True).numpy()
    else:
        g = x.reshape(2, 3, 4, 5, groups, 16 // groups)
        mean, var = g.mean(axis=(1, 2, 3, 5), keepdims=True), g.var(axis=(1, 2, 3, 5), keepdims=True)
        expected = ((g - mean) / np.sqrt(var + 1e-3)).reshape(x.shape)
        got = layer(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
