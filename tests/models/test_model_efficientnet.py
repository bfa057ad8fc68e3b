"""EfficientNet-encoder U-Net and UNet++: encoder features, what the stem sees, decoders counted by hand, options."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_helpers import FILTERS, small_model

from tfrobseg.models import BuildConfig, build_model, efficientnet

#: EfficientNet-B0's feature widths at 1/2, 1/4, 1/8, 1/16 and 1/32 (the last block of each resolution).
B0_CHANNELS = (16, 24, 40, 112, 320)
WIDTHS = (4, 8, 16, 16, 16)  # decoder widths at 1/1 ... 1/16 from FILTERS = (4, 8, 16): the last one repeats


def bn(c: int) -> int:  # gamma, beta, moving mean, moving variance
    return 4 * c


def double_conv(c_in: int, f: int) -> int:
    return 9 * c_in * f + bn(f) + 9 * f * f + bn(f)


def up(c_in: int, f: int) -> int:  # 2x2 transposed conv with bias
    return 4 * c_in * f + f


def test_encoder_is_efficientnet_b0_without_its_top():
    model = small_model("unet_efficientnet")
    encoder = model.get_layer("efficientnetb0_encoder")
    assert [tuple(t.shape[1:]) for t in encoder.outputs] == [
        (32 // 2**k, 32 // 2**k, c) for k, c in zip(range(1, 6), B0_CHANNELS)
    ]
    reference = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    top = reference.get_layer("top_conv").count_params() + reference.get_layer("top_bn").count_params()
    assert encoder.count_params() == reference.count_params() - top  # only the 1x1 top conv and its norm cut
    assert [layer.name for layer in model.layers[:4]] == ["image", "image_rgb", "efficientnet_input", encoder.name]
    assert efficientnet.decoder_widths(model_cfg()) == WIDTHS
    assert efficientnet.decoder_widths(model_cfg((16, 32, 64, 128, 256))) == (16, 32, 64, 128, 256)


def model_cfg(filters=FILTERS):
    return BuildConfig((32, 32, 1), filters, "relu", "batch", 1, "probabilities")


def test_unet_efficientnet_decoder_counted_by_hand():
    """Level i: up-conv to WIDTHS[i], concat with the 1/2^i encoder feature (none at full resolution), double conv."""
    model = small_model("unet_efficientnet")
    encoder = model.get_layer("efficientnetb0_encoder")
    skips = (0, *B0_CHANNELS[:4])  # encoder channels concatenated at 1/1 ... 1/16
    decoder, prev = 0, B0_CHANNELS[4]
    for i in reversed(range(5)):
        decoder += up(prev, WIDTHS[i]) + double_conv(skips[i] + WIDTHS[i], WIDTHS[i])
        prev = WIDTHS[i]
    assert model.count_params() - encoder.count_params() == decoder + WIDTHS[0] + 1  # + 1x1 head with bias
    assert model.get_layer("dec1_concat").output.shape == (None, 16, 16, B0_CHANNELS[0] + WIDTHS[1])
    assert "dec0_concat" not in {layer.name for layer in model.layers}


def test_unet_plus_plus_efficientnet_decoder_counted_by_hand():
    """Rows r = 1..5 at 1/2^r, column 0 the encoder; X[r][j] = double_conv(concat(X[r][0..j-1], up(X[r+1][j-1])))."""
    model = small_model("unet_plus_plus_efficientnet")
    encoder = model.get_layer("efficientnetb0_encoder")
    channels = dict(zip(range(1, 6), B0_CHANNELS))
    decoder = 0
    for j in range(1, 5):
        for r in range(1, 6 - j):
            w = WIDTHS[r]
            below = channels[r + 1] if j == 1 else WIDTHS[r + 1]  # X[r+1][j-1]: the encoder node, or a decoder node
            decoder += up(below, w) + double_conv(channels[r] + (j - 1) * w + w, w)
    decoder += up(WIDTHS[1], WIDTHS[0]) + double_conv(WIDTHS[0], WIDTHS[0])  # x0_5: full resolution, no skip
    assert model.count_params() - encoder.count_params() == decoder + WIDTHS[0] + 1
    assert model.get_layer("x1_3_concat").output.shape == (None, 16, 16, B0_CHANNELS[0] + 3 * WIDTHS[1])
    assert model.get_layer("x0_5_2_act").output.shape == (None, 32, 32, WIDTHS[0])


def stem_input(model: keras.Model) -> keras.Model:
    """The model's input -> what EfficientNet's stem convolution gets (after its own rescaling + normalisation)."""
    encoder = model.get_layer("efficientnetb0_encoder")
    inner = keras.Model(encoder.input, encoder.get_layer("stem_conv_pad").input)
    return keras.Model(model.input, inner(model.get_layer("efficientnet_input").output))


def test_stem_sees_the_zscored_image():
    """1-channel z-scores reach the stem unchanged, repeated to 3 channels (no weights: its norm is identity)."""
    model = small_model("unet_efficientnet")
    z = np.random.default_rng(0).normal(size=(2, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(stem_input(model)(z).numpy(), np.repeat(z, 3, -1), atol=1e-5)


def test_stem_input_follows_the_loaded_normalisation(monkeypatch):
    """With non-trivial per-channel statistics in the Normalization (as ImageNet weights load them), the fixed
    input layer still undoes EfficientNet's rescaling and normalisation: the stem sees the z-scores."""
    make = keras.applications.EfficientNetB0
    mean, variance = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225]) ** 2

    def with_statistics(**kwargs):
        base = make(**kwargs)
        norm = next(layer for layer in base.layers if isinstance(layer, keras.layers.Normalization))
        norm.set_weights([mean, variance, norm.get_weights()[2]])
        norm.finalize_state()  # what Keras' weight loaders do after assigning the statistics
        return base

    monkeypatch.setattr(keras.applications, "EfficientNetB0", with_statistics)
    model = build_model("unet_efficientnet", (32, 32, 3), filters=FILTERS)
    rescale = model.get_layer("efficientnet_input").get_config()
    np.testing.assert_allclose(rescale["scale"], 255 * np.sqrt(variance), rtol=1e-6)
    np.testing.assert_allclose(rescale["offset"], 255 * mean, rtol=1e-6)
    z = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(stem_input(model)(z).numpy(), z, atol=1e-4)
    assert "image_rgb" not in {layer.name for layer in model.layers}  # 3 channels go in as they are


def test_encoder_can_be_frozen():
    model = build_model("unet_efficientnet", (32, 32, 1), filters=FILTERS)
    encoder = model.get_layer("efficientnetb0_encoder")
    encoder.trainable = False
    assert model.trainable_weights and all(w.path.startswith(("dec", "logits")) for w in model.trainable_weights)


@pytest.mark.parametrize(
    "shape, options, message",
    [
        ((32, 32, 1), {"variant": "b8"}, "variant must be one of b0, b1, b2, b3, b4, b5, b6, b7, got 'b8'"),
        ((32, 32, 1), {"weights": "random"}, "weights must be None or 'imagenet', got 'random'"),
        ((32, 32, 2), {"weights": "imagenet"}, "ImageNet weights need 1 or 3 input channels, got 2"),
        ((48, 32, 1), {}, "input height 48 must be a multiple of 32"),
        ((32, 80, 1), {}, "input width 80 must be a multiple of 32"),
    ],
)
@pytest.mark.parametrize("name", ["unet_efficientnet", "unet_plus_plus_efficientnet"])
def test_bad_options_are_refused_before_anything_is_built(name, shape, options, message, monkeypatch):
    """Checked before Keras builds (or downloads) anything: the ImageNet case must not reach the network."""

    def no_build(**kwargs):
        raise AssertionError(f"EfficientNet built with {kwargs}")

    monkeypatch.setattr(keras.applications, "EfficientNetB0", no_build)
    with pytest.raises(ValueError, match=f"^{name}: {message}"):
        build_model(name, shape, filters=FILTERS, **options)
