"""3D U-Net and dilated 3D U-Net: the 2D U-Net's layers in 3D, the dilated bottleneck against NumPy, a toy fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from model_helpers import FILTERS, bn, fit_toy, unet_params

from tfrobseg.models import BuildConfig, build_model
from tfrobseg.models.blocks import dilated_bottleneck


def test_unet_3d_is_the_2d_unet_in_3d():
    """Same layers, names and order as the 2D U-Net, each the 3D counterpart; parameters counted by hand."""
    unet = build_model("unet", (32, 32, 1), filters=FILTERS)
    unet_3d = build_model("unet_3d", (8, 32, 32, 2), filters=FILTERS, n_classes=3)
    assert [layer.name for layer in unet_3d.layers] == [layer.name for layer in unet.layers]
    to_3d = {"InputLayer": "InputLayer", "Conv2D": "Conv3D", "Conv2DTranspose": "Conv3DTranspose",
             "MaxPooling2D": "MaxPooling3D"}
    kinds = [(type(a).__name__, type(b).__name__) for a, b in zip(unet.layers, unet_3d.layers)]
    assert all(to_3d.get(k2, k2) == k3 for k2, k3 in kinds)
    assert unet_3d.count_params() == unet_params(FILTERS, 2, 3, rank=3)
    assert unet_3d.output_shape == (None, 8, 32, 32, 3)
    assert build_model("unet_3d", (16, 16, 16, 1), filters=(16, 32, 64, 128, 256)).count_params() == 5_649_329
    # 3D max-pooling computes in float32 (no float16 CPU kernel); the convolutions follow the policy.
    assert unet_3d.get_layer("enc0_pool").dtype_policy.name == "float32"


def test_dilated_unet_3d_is_unet_3d_plus_the_dilated_bottleneck():
    unet_3d = build_model("unet_3d", (8, 16, 16, 1), filters=FILTERS)
    dilated = build_model("dilated_unet_3d", (8, 16, 16, 1), filters=FILTERS)
    own = [layer for layer in dilated.layers if layer.name.startswith("dilated")]
    shared = {layer.name: layer.count_params() for layer in dilated.layers if layer not in own}
    assert shared == {layer.name: layer.count_params() for layer in unet_3d.layers}
    convs = [layer for layer in own if isinstance(layer, keras.layers.Conv3D)]
    assert [c.dilation_rate for c in convs] == [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    # three 3x3x3 convs at the bottleneck width (16), no bias, each with a batch norm
    assert dilated.count_params() - unet_3d.count_params() == 3 * (27 * 16 * 16 + bn(16))
    # the sum sits between the bottleneck block and the decoder
    assert dilated.get_layer("dilated_sum").input[0] is dilated.get_layer("bottleneck_2_act").output
    wider = build_model("dilated_unet_3d", (8, 16, 16, 1), filters=FILTERS, dilation_rates=[1, 3])
    assert wider.get_layer("dilated2_conv").dilation_rate == (3, 3, 3) and "dilated3_conv" not in {
        layer.name for layer in wider.layers
    }


def correlate_3d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, rate: int) -> np.ndarray:
    """Dilated 3x3x3 cross-correlation with zero "same" padding: sum over taps of shifted inputs."""
    p = rate  # (k // 2) * rate for k = 3
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (p, p), (0, 0)))
    d, h, w = x.shape[1:4]
    out = np.zeros((*x.shape[:4], kernel.shape[-1]))
    for a in range(3):
        for b in range(3):
            for c in range(3):
                tap = xp[:, a * rate : a * rate + d, b * rate : b * rate + h, c * rate : c * rate + w]
                out += np.einsum("bdhwc,co->bdhwo", tap, kernel[a, b, c])
    return out + bias


def test_dilated_bottleneck_matches_numpy():
    """x + c1 + c2 with c_k = relu(dilated conv(c_{k-1}) + b), rates (1, 3), against NumPy (no norm)."""
    cfg = BuildConfig((8, 8, 8, 3), (4, 8), "relu", "none", 1, "probabilities")
    inputs = keras.Input((5, 6, 7, 3))
    block = keras.Model(inputs, dilated_bottleneck(inputs, cfg=cfg, dilation_rates=(1, 3)))
    rng = np.random.default_rng(0)
    for w in block.weights:
        w.assign(rng.normal(0.0, 0.3, tuple(w.shape)).astype("float32"))
    x = rng.normal(size=(2, 5, 6, 7, 3)).astype("float32")

    c1 = np.maximum(correlate_3d(x, *block.get_layer("dilated1_conv").get_weights(), rate=1), 0)
    c2 = np.maximum(correlate_3d(c1, *block.get_layer("dilated2_conv").get_weights(), rate=3), 0)
    expected = x + c1 + c2
    np.testing.assert_allclose(block(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert np.abs(c2).max() > 0.1  # the rate-3 branch contributes


@pytest.mark.parametrize("rates", [(), (1, 0), (1, 2.0), (True, 2), 2])
def test_dilation_rates_are_checked(rates):
    with pytest.raises(ValueError, match="dilated_unet_3d: dilation_rates must be a non-empty sequence"):
        build_model("dilated_unet_3d", (8, 16, 16, 1), filters=FILTERS, dilation_rates=rates)


def toy_volume(shape=(16, 32, 32)):
    """A bright ellipsoid (foreground) in a noisy 16 x 32 x 32 volume, and its mask."""
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    mask = ((zz - 7.5) / 5) ** 2 + ((yy - 14) / 9) ** 2 + ((xx - 17) / 7) ** 2 < 1
    y = mask.astype("float32")[None, ..., None]
    noise = np.random.default_rng(0).normal(0, 0.5, y.shape)
    return (y + noise).astype("float32"), y


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unet_3d", "dilated_unet_3d"])
def test_overfits_toy_volume(name):
    """Each 3D model fits a 16 x 32 x 32 toy volume to Dice > 0.9 within 60 Adam steps (BCE + soft Dice).

    Group norm behaves the same in training and at inference, so the Dice is that of the inference output.
    """
    keras.utils.set_random_seed(0)
    model = build_model(name, (16, 32, 32, 1), filters=FILTERS, normalization="group")
    x, y = toy_volume()
    scores = fit_toy(model, x, y, rounds=6)
    assert scores[-1] > 0.9, f"{name}: Dice every 10 steps {np.round(scores, 3)}"
