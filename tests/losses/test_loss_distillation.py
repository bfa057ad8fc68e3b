"""Soft-Dice distillation loss (tfrobseg.losses.distillation) against a NumPy reference."""

import numpy as np
from loss_cases import np_dice, np_logit, np_sigmoid, rand_case, val

from tfrobseg import losses as L


def test_soft_dice_distillation_matches_numpy():
    _, teacher = rand_case()
    _, student = rand_case()
    t = 4.0
    soft_t, soft_s = np_sigmoid(np_logit(teacher) / t), np_sigmoid(np_logit(student) / t)
    expected = np_dice(soft_t, soft_s)
    kw = {"temperature": t, "reduction": None}
    np.testing.assert_allclose(val(L.SoftDiceDistillationLoss(**kw), teacher, student), expected, rtol=1e-5)
    logits = L.SoftDiceDistillationLoss(from_logits=True, **kw)
    np.testing.assert_allclose(val(logits, np_logit(teacher), np_logit(student)), expected, rtol=1e-4)
    # p^(1/T) / (p^(1/T) + (1-p)^(1/T)) is the same map written on probabilities.
    closed = student ** (1 / t) / (student ** (1 / t) + (1 - student) ** (1 / t))
    np.testing.assert_allclose(closed, soft_s, rtol=1e-5)
    # Already-softened teacher taken as is; T = 1 is the plain soft Dice.
    pre = L.SoftDiceDistillationLoss(soften_teacher=False, **kw)
    np.testing.assert_allclose(val(pre, soft_t, student), expected, rtol=1e-5)
    np.testing.assert_allclose(val(L.SoftDiceDistillationLoss(reduction=None), teacher, student),
                               np_dice(teacher, student), rtol=1e-5)
