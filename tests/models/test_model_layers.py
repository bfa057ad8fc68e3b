"""tfrobseg.models.layers: the recurrent convolutional layer against a plain conv block."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_helpers import batch

from tfrobseg.models import RecurrentConv2D


def plain_block(filters: int) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
        ]
    )


def test_recurrent_conv_shares_weights_and_reduces_to_plain_conv():
    x = batch(2, 16, 6, seed=4)
    layers = {t: RecurrentConv2D(6, t=t) for t in (1, 2, 3)}
    for layer in layers.values():
        layer(x, training=True)  # build + move BN statistics
    counts = {t: layer.count_params() for t, layer in layers.items()}
    assert counts[1] == counts[2] == counts[3] == 9 * 6 * 6 + 4 * 6
    assert len(layers[3].trainable_weights) == len(layers[1].trainable_weights) == 3  # kernel, gamma, beta

    plain = plain_block(6)
    plain.build(x.shape)
    for t, layer in layers.items():
        plain.set_weights(layer.get_weights())
        expected = plain(x, training=False)
        for _ in range(t - 1):  # h_k = F(x + h_{k-1}) with the same F
            expected = plain(x + expected, training=False)
        np.testing.assert_allclose(layer(x, training=False).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # t = 1 is exactly the plain block, also in training mode (batch statistics).
    plain.set_weights(layers[1].get_weights())
    np.testing.assert_allclose(layers[1](x, training=True).numpy(), plain(x, training=True).numpy(), atol=1e-5)


def test_recurrent_conv_rejects_width_mismatch():
    with pytest.raises(ValueError, match="equal widths"):
        RecurrentConv2D(8)(batch(1, 8, 4))
