"""BCE and focal loss (tfrobseg.losses.crossentropy) against NumPy, Keras and hand computations."""

import keras
import numpy as np
import pytest
from loss_cases import RNG, fg_mask, rand_case, val

from tfrobseg import losses as L


def test_bce_equals_keras_binary_crossentropy():
    g, p = rand_case()
    np.testing.assert_allclose(float(L.BCELoss()(g, p)), float(keras.losses.BinaryCrossentropy()(g, p)), rtol=1e-6)
    z = RNG.normal(scale=5, size=g.shape).astype(np.float32)
    np.testing.assert_allclose(float(L.BCELoss(from_logits=True)(g, z)),
                               float(keras.losses.BinaryCrossentropy(from_logits=True)(g, z)), rtol=1e-6)


def test_focal_gamma0_alpha_half_is_half_bce():
    g, p = rand_case()
    np.testing.assert_allclose(val(L.FocalLoss(alpha=0.5, gamma=0.0), g, p), val(L.BCELoss(), g, p) / 2, rtol=1e-6)
    z = RNG.normal(scale=3, size=g.shape).astype(np.float32)
    np.testing.assert_allclose(val(L.FocalLoss(alpha=0.5, gamma=0.0, from_logits=True), g, z),
                               val(L.BCELoss(from_logits=True), g, z) / 2, rtol=1e-6)


def test_pixel_losses_hand_cases():
    g = fg_mask(4)
    p = np.where(g == 1, 0.9, 0.2).astype(np.float32)  # confident and right
    bce = -(4 * np.log(0.9) + 12 * np.log(0.8)) / 16
    assert float(L.BCELoss()(g, p)) == pytest.approx(bce, rel=1e-5)
    wrong = np.where(g == 1, 0.1, 0.8).astype(np.float32)
    assert float(L.BCELoss()(g, wrong)) == pytest.approx(-(4 * np.log(0.1) + 12 * np.log(0.2)) / 16, rel=1e-5)
    focal = -(4 * 0.25 * 0.1 ** 2 * np.log(0.9) + 12 * 0.75 * 0.2 ** 2 * np.log(0.8)) / 16
    assert float(L.FocalLoss()(g, p)) == pytest.approx(focal, rel=1e-5)
    # Saturated logits: perfect -> ~0, all wrong -> |z| per pixel (stable logits form).
    z = np.where(g == 1, 30.0, -30.0).astype(np.float32)
    assert float(L.BCELoss(from_logits=True)(g, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.BCELoss(from_logits=True)(g, -z)) == pytest.approx(30.0, rel=1e-5)
    assert float(L.FocalLoss(from_logits=True)(g, -z)) == pytest.approx((4 * 0.25 + 12 * 0.75) * 30 / 16, rel=1e-5)
