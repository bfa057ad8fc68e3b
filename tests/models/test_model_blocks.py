"""tfrobseg.models.blocks: ResU-Net's residual unit and Oktay's attention gate against NumPy, fixed weights."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfrobseg.models import BuildConfig
from tfrobseg.models.blocks import attention_gate, residual_block

EPS = 1e-3  # Keras' BatchNormalization epsilon


def config(normalization: str = "batch") -> BuildConfig:
    return BuildConfig((8, 8, 1), (4, 8), "relu", normalization, 1, "probabilities")


def randomize(model: keras.Model, seed: int) -> None:
    """Random values for every weight, batch-norm statistics included (positive variances)."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if w.path.endswith("moving_variance"):
            w.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        else:
            w.assign(rng.normal(0.0, 0.5, shape).astype("float32"))


def bn(model: keras.Model, name: str, z: np.ndarray) -> np.ndarray:
    """Batch norm at inference: gamma (z - moving mean) / sqrt(moving variance + eps) + beta."""
    gamma, beta, mean, var = model.get_layer(name).get_weights()
    return gamma * (z - mean) / np.sqrt(var + EPS) + beta


def conv_same(model: keras.Model, name: str, x: np.ndarray) -> np.ndarray:
    """Stride-1 cross-correlation with zero "same" padding (odd kernel), no bias."""
    (kernel,) = model.get_layer(name).get_weights()
    k = kernel.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1:3]
    return sum(
        np.einsum("bhwc,co->bhwo", xp[:, di : di + h, dj : dj + w], kernel[di, dj])
        for di in range(k)
        for dj in range(k)
    )


def relu(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0)


def test_residual_block_is_he_post_activation_unit():
    """relu(BN(conv(relu(BN(conv x)))) + BN(conv1x1 x)): the activation comes after the addition."""
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, residual_block(inputs, 3, config(), "blk"))
    randomize(model, seed=1)
    x = np.random.default_rng(2).normal(size=(2, 6, 6, 2)).astype("float32")

    main = relu(bn(model, "blk_1_norm", conv_same(model, "blk_1_conv", x)))
    main = bn(model, "blk_2_norm", conv_same(model, "blk_2_conv", main))
    shortcut = bn(model, "blk_shortcut_norm", conv_same(model, "blk_shortcut_conv", x))
    expected = relu(main + shortcut)
    np.testing.assert_allclose(model(x, training=False).numpy(), expected, rtol=1e-5, atol=1e-5)
    # the residual branch changes the output in both directions (a negative correction reaches it)
    assert (main < 0).any() and (expected > 0).any()
    names = {layer.name for layer in model.layers}
    assert {"blk_1_act", "blk_add", "blk_act"} <= names and "blk_2_act" not in names
    assert model.layers[-1].name == "blk_act"


def bilinear_up2(n: int) -> np.ndarray:
    """(2n x n) matrix of 2x bilinear up-sampling with half-pixel centres and edge clamping."""
    a = np.zeros((2 * n, n))
    for i in range(2 * n):
        src = min(max((i + 0.5) / 2 - 0.5, 0.0), n - 1)
        lo = int(np.floor(src))
        hi = min(lo + 1, n - 1)
        a[i, lo] += 1 - (src - lo)
        a[i, hi] += src - lo
    return a


def test_attention_gate_matches_oktay_with_norms_and_output_transform():
    skip_in, gate_in = keras.Input((4, 4, 4)), keras.Input((2, 2, 6))
    model = keras.Model([skip_in, gate_in], attention_gate(skip_in, gate_in, config(), "att"))
    randomize(model, seed=3)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, 4, 4)).astype("float32")
    g = rng.normal(size=(2, 2, 2, 6)).astype("float32")

    (theta,) = model.get_layer("att_theta_x_conv").get_weights()  # 2x2, stride 2, C -> C/2
    blocks = x.reshape(2, 2, 2, 2, 2, 4)  # (b, i, di, j, dj, c)
    theta_x = bn(model, "att_theta_x_norm", np.einsum("bipjqc,pqco->bijo", blocks, theta))
    phi_g = bn(model, "att_phi_g_norm", g @ model.get_layer("att_phi_g_conv").get_weights()[0][0, 0])
    f = relu(theta_x + phi_g)
    q = bn(model, "att_psi_norm", f @ model.get_layer("att_psi_conv").get_weights()[0][0, 0])
    coarse = 1 / (1 + np.exp(-q[..., 0]))
    up = bilinear_up2(2)
    alpha = np.einsum("hi,bij,wj->bhw", up, coarse, up)[..., None]
    w = model.get_layer("att_output_conv").get_weights()[0][0, 0]  # output transform W, 1x1 C -> C
    expected = bn(model, "att_output_norm", (x * alpha) @ w)

    probe = keras.Model(model.inputs, [model.get_layer("att_coefficients").output, model.output])
    got_alpha, got = (t.numpy() for t in probe([x, g], training=False))
    np.testing.assert_allclose(got_alpha, alpha, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    norms = {layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert norms == {"att_theta_x_norm", "att_phi_g_norm", "att_psi_norm", "att_output_norm"}


@pytest.mark.parametrize("normalization", ["group", "none"])
def test_attention_gate_follows_the_normalization(normalization):
    skip_in, gate_in = keras.Input((4, 4, 4)), keras.Input((2, 2, 6))
    model = keras.Model([skip_in, gate_in], attention_gate(skip_in, gate_in, config(normalization), "att"))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "BatchNormalization" not in kinds
    assert kinds.count("GroupNormalization") == (4 if normalization == "group" else 0)
    # without a norm the convs carry the biases (theta's and phi's together are Oktay's b_g)
    convs = [model.get_layer(f"att_{n}_conv") for n in ("theta_x", "phi_g", "psi", "output")]
    assert all(conv.use_bias == (normalization == "none") for conv in convs)
    assert model.get_layer("att_output_conv").filters == 4
