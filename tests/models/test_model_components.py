"""Each model's own component: attention coefficients, the ViT bottleneck, UNet++'s nested outputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import FILTERS, SIZE, SMALL, batch, small_model

from tfrobseg.models import attention_maps_model, build_model


def test_attention_coefficients_shape_range_and_gating():
    model = small_model("attention_unet")
    maps = attention_maps_model(model)(batch(3, seed=5))
    assert len(maps) == len(FILTERS) - 1
    for i, alpha in enumerate(maps):
        alpha = alpha.numpy()
        assert alpha.shape == (3, SIZE // 2**i, SIZE // 2**i, 1)
        assert alpha.min() >= 0 and alpha.max() <= 1 and np.ptp(alpha) > 0
    probe = keras.Model(
        model.input,
        [model.get_layer(n).output for n in ("enc0_2_act", "attention0_coefficients", "attention0_gated")],
    )
    skip, alpha, gated = (t.numpy() for t in probe(batch(seed=5)))
    np.testing.assert_allclose(gated, skip * alpha, rtol=1e-6)
    with pytest.raises(ValueError, match="no attention gates"):
        attention_maps_model(small_model("unet"))


@pytest.mark.parametrize("patch_size, tokens", [(1, 64), (2, 16), (4, 4)])
def test_vit_bottleneck_token_count(patch_size, tokens):
    # 64 x 64 input, depth 4 -> 8 x 8 bottleneck -> (8 / p)^2 tokens
    model = build_model(
        "unet_vit", (64, 64, 1), filters=(4, 8, 16, 32), patch_size=patch_size, **SMALL["unet_vit"]
    )
    assert model.get_layer("vit_tokens").output.shape == (None, tokens, 16)
    assert tuple(model.get_layer("vit_position").embedding.shape) == (tokens, 16)
    assert model.get_layer("vit_project").output.shape == (None, 8, 8, 32)
    assert model(batch(1, 64), training=False).shape == (1, 64, 64, 1)


def test_unet_vit_defaults():
    model = build_model("unet_vit", (256, 256, 1))
    assert model.get_layer("vit_tokens").output.shape == (None, 256, 128)
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.MultiHeadAttention)]) == 2
    assert model.get_layer("vit_block0_attention").num_heads == 4


def test_unet_plus_plus_deep_supervision():
    model = build_model("unet_plus_plus", (SIZE, SIZE, 1), filters=FILTERS, deep_supervision=True)
    outs = model(batch(), training=False)
    assert len(outs) == len(FILTERS) - 1
    assert all(tuple(o.shape) == (2, SIZE, SIZE, 1) and o.dtype == tf.float32 for o in outs)
    # nested node x0_2 concatenates x0_0, x0_1 and the up-sampled x1_1
    assert model.get_layer("x0_2_concat").output.shape[-1] == 3 * FILTERS[0]
