"""Overlap metrics and attack success (tfrobseg.metrics.overlap) against hand-derived values."""

import numpy as np
import pytest

from tfrobseg import metrics as M


def test_overlap_counts_by_hand():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 1], dtype=np.uint8)
    gt = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=np.uint8)
    # TP 2, FP 2, FN 1, TN 3
    assert M.confusion(pred, gt) == M.Confusion(tp=2, fp=2, fn=1, tn=3)
    assert M.dice(pred, gt) == pytest.approx(4 / 7)
    assert M.sensitivity(pred, gt) == pytest.approx(2 / 3)
    assert M.specificity(pred, gt) == pytest.approx(3 / 5)
    assert M.precision(pred, gt) == pytest.approx(2 / 4)
    assert M.f_beta(pred, gt, beta=2) == pytest.approx(5 * 2 / (5 * 2 + 4 * 1 + 2))
    assert M.f_beta(pred, gt, beta=1) == pytest.approx(M.dice(pred, gt))


def test_attack_success():
    assert M.attack_success(0.8, 0.2) == pytest.approx(0.75)
    assert M.attack_success(0.5, 0.6) == pytest.approx(-0.2)
    assert M.attack_success(0.0, 0.0) == 0.0
    assert M.attack_success(0.0, 0.3) == 0.0
    np.testing.assert_allclose(M.attack_success([1.0, 0.0, 0.5], [0.5, 0.1, 0.0]), [0.5, 0.0, 1.0])
    with pytest.raises(ValueError):
        M.attack_success(1.2, 0.5)
