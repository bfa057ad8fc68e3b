"""Annotation-guided losses (tfrobseg.losses.annotation) against NumPy/SciPy references."""

import numpy as np
import pytest
from loss_cases import (
    fg_mask,
    np_adaptive_focal,
    np_ag_bce,
    np_logit,
    rand_case,
    two_reader,
    val,
)

from tfrobseg import losses as L


def test_two_reader_layout_is_checked():
    g, p = rand_case()
    with pytest.raises(ValueError, match="2 channels"):
        L.get_loss("ag_bce")(g, p)
    with pytest.raises(ValueError, match="does not match"):
        L.get_loss("dice")(g[:, :6], p)


@pytest.mark.parametrize("from_logits", [False, True])
def test_two_reader_losses_match_numpy(from_logits):
    y2, p = two_reader((3, 16, 16, 1))
    x = np_logit(p.astype(np.float64)).astype(np.float32) if from_logits else p
    kw = {"from_logits": from_logits, "reduction": None}
    np.testing.assert_allclose(val(L.AGBCELoss(**kw), y2, x), np_ag_bce(y2, p), rtol=1e-5)
    np.testing.assert_allclose(val(L.AGBCELoss(hard_weight=2.0, easy_weight=0.5, kernel_size=3, **kw), y2, x),
                               np_ag_bce(y2, p, 2.0, 0.5, 3), rtol=1e-5)
    np.testing.assert_allclose(val(L.AdaptiveFocalLoss(**kw), y2, x), np_adaptive_focal(y2, p), rtol=1e-5)
    np.testing.assert_allclose(val(L.AdaptiveFocalLoss(kernel_size=5, gamma=1.0, **kw), y2, x),
                               np_adaptive_focal(y2, p, 1.0, 5), rtol=1e-5)


def test_adaptive_focal_gamma_floor():
    # Foreground predicted everywhere, readers agree: difficulty 0, variability 0 -> gamma floor.
    e = np.zeros((1, 8, 8, 1), np.float32)
    e[0, 2:6, 2:6] = 1
    y2 = np.concatenate([e, e], -1)
    p = np.full_like(e, 1 - 1e-6)
    got = float(L.AdaptiveFocalLoss(min_gamma=0.5)(y2, p))
    np.testing.assert_allclose(got, np_adaptive_focal(y2, p, min_gamma=0.5)[0], rtol=1e-4)
    assert np.isfinite(got)


def test_ag_bce_hand_case():
    e = fg_mask(4)
    r = fg_mask(6)  # readers disagree on 2 pixels
    y2 = np.concatenate([e, r], -1)
    p = np.full_like(e, 0.5)
    # Every pixel costs log 2; 2 hard pixels weigh 4, 14 easy ones 1.
    assert float(L.AGBCELoss()(y2, p)) == pytest.approx((2 * 4 + 14) * np.log(2) / 16, rel=1e-5)
    # Readers agree: plain BCE.
    agree = np.concatenate([e, e], -1)
    np.testing.assert_allclose(float(L.AGBCELoss()(agree, p)), float(L.BCELoss()(e, p)), rtol=1e-6)
