"""Soft Dice and Tversky (tfrobseg.losses.overlap) against NumPy references and hand computations."""

import keras
import numpy as np
import pytest
from loss_cases import RNG, fg_mask, np_dice, np_tversky, rand_case, val

from tfrobseg import losses as L


def test_multiclass_softmax_forms():
    labels = RNG.integers(0, 3, (2, 10, 10))
    g = np.eye(3, dtype=np.float32)[labels]
    z = RNG.normal(size=(2, 10, 10, 3)).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    ce = -(g * np.log(p)).sum(-1).mean((1, 2))
    for from_logits, x in ((False, p), (True, z)):
        kw = {"softmax": True, "from_logits": from_logits, "reduction": None}
        np.testing.assert_allclose(val(L.BCELoss(**kw), g, x), ce, rtol=1e-5)
        np.testing.assert_allclose(val(L.DiceLoss(**kw), g, x), np_dice(g, p), rtol=1e-5)
        np.testing.assert_allclose(val(L.TverskyLoss(**kw), g, x), np_tversky(g, p, 0.3, 0.7), rtol=1e-5)
        np.testing.assert_allclose(val(L.DiceLoss(include_background=False, **kw), g, x),
                                   np_dice(g[..., 1:], p[..., 1:]), rtol=1e-5)
    np.testing.assert_allclose(float(L.BCELoss(softmax=True)(g, p)),
                               float(keras.losses.CategoricalCrossentropy()(g, p)), rtol=1e-5)


def test_pooled_counts_are_one_sample_made_of_the_whole_batch():
    """Pooled (default): the loss of a batch equals the per-sample loss of one image holding all of its
    slices side by side; pooled=False: each sample's own value (the NumPy per-sample reference)."""
    g = (RNG.random((3, 8, 8, 1)) > 0.7).astype(np.float32)
    p = RNG.random((3, 8, 8, 1)).astype(np.float32)
    g[1] = 0.0  # an empty slice: where pooling and per-sample differ most
    wide_g, wide_p = np.concatenate(list(g), axis=1)[None], np.concatenate(list(p), axis=1)[None]
    for make, ref in ((L.DiceLoss, lambda gg, pp, **k: np_dice(gg, pp, **k)),
                      (L.TverskyLoss, lambda gg, pp, **k: np_tversky(gg, pp, 0.3, 0.7, **k))):
        pooled = val(make(reduction=None), g, p)
        np.testing.assert_allclose(pooled, np.full(3, val(make(pooled=False, reduction=None), wide_g, wide_p)[0]),
                                   rtol=1e-5)
        np.testing.assert_allclose(pooled, ref(g, p), rtol=1e-5)
        per_sample = val(make(pooled=False, reduction=None), g, p)
        np.testing.assert_allclose(per_sample, ref(g, p, pooled=False), rtol=1e-5)
        assert not np.allclose(per_sample, pooled)


def test_tversky_half_half_equals_dice():
    g, p = rand_case()
    g[0] = 0  # an empty mask, where the smoothing matters
    for s in (0.0, 1.0, 1e-6):
        np.testing.assert_allclose(val(L.TverskyLoss(0.5, 0.5, smooth=s), g, p),
                                   val(L.DiceLoss(smooth=s), g, p), rtol=1e-6)


def test_tversky_convention_alpha_weights_false_positives():
    g = np.zeros((1, 4, 4, 1), np.float32)
    g[0, :2] = 1  # 8 foreground pixels
    fp_only = g.copy()
    fp_only[0, 2, :2] = 1  # 2 extra false positives, TP = 8
    fn_only = g.copy()
    fn_only[0, 1, :2] = 0  # 2 missed pixels, TP = 6
    loss = L.TverskyLoss(alpha=1.0, beta=0.0, smooth=0.0)
    np.testing.assert_allclose(float(loss(g, fp_only)), 1 - 8 / (8 + 2), rtol=1e-6)
    np.testing.assert_allclose(float(loss(g, fn_only)), 0.0, atol=1e-7)
    default = L.TverskyLoss(smooth=0.0)  # alpha=0.3, beta=0.7
    np.testing.assert_allclose(float(default(g, fp_only)), 1 - 8 / (8 + 0.3 * 2), rtol=1e-6)
    np.testing.assert_allclose(float(default(g, fn_only)), 1 - 6 / (6 + 0.7 * 2), rtol=1e-6)


def test_keras_tversky_swaps_alpha_and_beta():
    """Documents the keras.losses.Tversky behaviour (Keras 3.15) that made us write our own."""
    if not keras.__version__.startswith("3.15."):
        pytest.skip(f"checked against Keras 3.15, found {keras.__version__}")
    g = np.array([[1, 1, 0, 0]], np.float32)
    p = np.array([[1, 0, 1, 1]], np.float32)  # TP = 1, FN = 1, FP = 2
    assert float(keras.losses.Tversky(alpha=1.0, beta=0.0)(g, p)) == pytest.approx(1 - 1 / (1 + 1))  # alpha on FN
    ours = L.TverskyLoss(alpha=1.0, beta=0.0, smooth=0.0)(g[:, :, None, None], p[:, :, None, None])
    assert float(ours) == pytest.approx(1 - 1 / (1 + 2))  # alpha on FP


@pytest.mark.parametrize("name", ["dice", "tversky", "dice_tversky"])
def test_region_hand_cases(name):
    loss = L.get_loss(name)  # s = 1, 16 pixels
    g = fg_mask(6)
    assert float(loss(g, g)) == pytest.approx(0.0, abs=1e-7)  # perfect
    assert float(loss(fg_mask(0), fg_mask(0))) == pytest.approx(0.0, abs=1e-7)  # both empty
    wrong = 1 - g
    if name == "dice":
        assert float(loss(g, wrong)) == pytest.approx(1 - 1 / (16 + 1))  # Σp + Σg = 16
        assert float(loss(fg_mask(0), fg_mask(16))) == pytest.approx(1 - 1 / 17)  # empty truth
        assert float(loss(fg_mask(6), fg_mask(0))) == pytest.approx(1 - 1 / 7)  # empty prediction
    if name == "tversky":  # (2TP + s)/(2TP + 2αFP + 2βFN + s), TP = 0, FP = 10, FN = 6
        assert float(loss(g, wrong)) == pytest.approx(1 - 1 / (0.6 * 10 + 1.4 * 6 + 1))
        assert float(loss(fg_mask(0), fg_mask(16))) == pytest.approx(1 - 1 / (0.6 * 16 + 1))
        assert float(loss(fg_mask(6), fg_mask(0))) == pytest.approx(1 - 1 / (1.4 * 6 + 1))


@pytest.mark.parametrize("name", ["dice", "tversky", "bce_dice", "bce_tversky", "dice_tversky",
                                  "adaptive_tversky_ce"])
def test_perfect_empty_prediction_is_zero_region_loss(name):
    # Both masks empty and prediction exactly 0: region terms are 0, so only the BCE part may remain.
    loss = L.get_loss(name)
    empty = fg_mask(0, 8)
    assert float(loss(empty, empty)) == pytest.approx(0.0, abs=1e-5)
