"""The loss registry (tfrobseg.losses): names, get_loss, validation, and properties every loss shares."""

from functools import partial

import keras
import numpy as np
import pytest
import tensorflow as tf
from loss_cases import (
    fg_mask,
    inputs_for,
    np_bce,
    np_dice,
    np_focal,
    np_logit,
    np_tversky,
    rand_case,
    val,
)

from tfrobseg import losses as L


def test_registry_names_and_display():
    assert L.STUDY_LOSSES == ("bce", "dice", "tversky", "bce_dice", "bce_tversky", "dice_tversky")
    assert set(L.STUDY_LOSSES) <= set(L.LOSS_NAMES)
    assert set(L.LOSS_DISPLAY_NAMES) == set(L.LOSS_NAMES)
    assert [L.LOSS_DISPLAY_NAMES[n] for n in L.STUDY_LOSSES] == [
        "BCE", "Dice", "Tversky", "BCE-Dice", "BCE-Tversky", "Dice-Tversky"]
    for n in L.LOSS_NAMES:
        loss = L.get_loss(n)
        assert isinstance(loss, keras.losses.Loss) and loss.name == n


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: bce, dice"):
        L.get_loss("dcie")
    with pytest.raises(ValueError, match="invalid arguments for loss 'dice'"):
        L.get_loss("dice", alpha=0.3)


@pytest.mark.parametrize("name, kwargs, match", [
    ("tversky", {"alpha": 1.5}, "alpha must be <= 1"),
    ("tversky", {"beta": -0.1}, "beta must be >= 0"),
    ("tversky", {"alpha": 0.0, "beta": 0.0}, "alpha \\+ beta"),
    ("bce_dice", {"bce_weight": -1.0}, "bce_weight must be >= 0"),
    ("dice_tversky", {"dice_weight": 0.0, "tversky_weight": 0.0}, "at least one"),
    ("focal", {"gamma": -1.0}, "gamma must be >= 0"),
    ("focal", {"alpha": 2.0}, "alpha must be <= 1"),
    ("soft_dice_distillation", {"temperature": 0.0}, "temperature must be > 0"),
    ("dice", {"smooth": float("nan")}, "finite"),
    ("adaptive_focal", {"kernel_size": 4}, "odd"),
    ("adaptive_focal", {"min_gamma": 0.0}, "min_gamma must be > 0"),
    ("ag_bce", {"hard_weight": float("inf")}, "finite"),
    ("adaptive_tversky_ce", {"initial_tversky_weight": 1.2}, "<= 1"),
    ("bce", {"from_logits": "yes"}, "bool"),
])
def test_constructor_validation(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        L.get_loss(name, **kwargs)


#: Each loss (non-default keyword arguments where given) and its NumPy reference on a random binary case.
REFERENCES = [
    pytest.param(L.BCELoss, np_bce, id="bce"),
    pytest.param(L.DiceLoss, np_dice, id="dice"),
    pytest.param(L.TverskyLoss, lambda g, p: np_tversky(g, p, 0.3, 0.7), id="tversky"),
    pytest.param(L.FocalLoss, lambda g, p: np_focal(g, p, 0.25, 2.0), id="focal"),
    pytest.param(L.BCEDiceLoss, lambda g, p: 0.5 * np_bce(g, p) + 0.5 * np_dice(g, p), id="bce_dice"),
    pytest.param(partial(L.BCETverskyLoss, bce_weight=0.2, tversky_weight=0.8, alpha=0.4, beta=0.6),
                 lambda g, p: 0.2 * np_bce(g, p) + 0.8 * np_tversky(g, p, 0.4, 0.6), id="bce_tversky"),
    pytest.param(L.DiceTverskyLoss, lambda g, p: 0.5 * np_dice(g, p) + 0.5 * np_tversky(g, p, 0.3, 0.7),
                 id="dice_tversky"),
    pytest.param(L.DiceFocalLoss, lambda g, p: np_dice(g, p, 1e-6) + np_focal(g, p, None, 2.0), id="dice_focal"),
    # Without its callback the adaptive loss keeps the initial Tversky weight 0.5.
    pytest.param(L.AdaptiveTverskyCELoss, lambda g, p: 0.5 * np_tversky(g, p, 0.5, 0.5) + 0.5 * np_bce(g, p),
                 id="adaptive_tversky_ce"),
]


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("loss, reference", REFERENCES)
def test_single_losses_match_numpy(loss, reference, from_logits):
    g, p = rand_case()
    x = np_logit(p.astype(np.float64)).astype(np.float32) if from_logits else p
    kw = {"from_logits": from_logits, "reduction": None}
    np.testing.assert_allclose(val(loss(**kw), g, x), reference(g, p), rtol=1e-5)


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_gradients_finite_and_no_nan_on_empty_masks(name):
    empty, full = fg_mask(0, 8), fg_mask(64, 8)
    cases = [(empty, empty), (empty, np.full_like(empty, 0.3)), (fg_mask(20, 8), empty), (full, full),
             (fg_mask(20, 8), 1 - fg_mask(20, 8))]
    for from_logits in (False, True):
        loss = L.get_loss(name, from_logits=from_logits)
        for g, p in cases:
            y, x = inputs_for(name, g, p)
            x = tf.Variable(np.where(x > 0.5, 8.0, -8.0).astype(np.float32) if from_logits else x)
            with tf.GradientTape() as tape:
                value = loss(tf.constant(y), x)
            grad = tape.gradient(value, x)
            assert np.isfinite(float(value)), (name, from_logits)
            assert grad is not None and np.all(np.isfinite(grad.numpy())), (name, from_logits)


def test_reduction_is_mean_of_per_sample_values():
    g, p = rand_case()
    for name in L.LOSS_NAMES:
        y, x = inputs_for(name, g, p)
        per_sample = val(L.get_loss(name, reduction=None), y, x)
        assert per_sample.shape == (len(g),)
        assert float(L.get_loss(name)(y, x)) == pytest.approx(per_sample.mean(), rel=1e-5)


def test_mixed_float16_policy_keeps_float32():
    g, p = rand_case((2, 16, 16, 1))
    y2 = np.concatenate([g, g], -1)
    reference = {n: float(L.get_loss(n)(*inputs_for(n, g, p))) for n in L.LOSS_NAMES}
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        for n in L.LOSS_NAMES:
            loss = L.get_loss(n)  # constructed under the mixed policy
            y = y2 if n in L.SECOND_READER_LOSSES else g
            value = loss(tf.constant(y, tf.float16), tf.constant(p, tf.float16))
            assert value.dtype == tf.float32, n
            # Inputs are rounded to float16 once; the loss itself is computed in float32.
            assert float(value) == pytest.approx(reference[n], rel=2e-3), n
            fn_value = L.dice_loss(tf.constant(g, tf.float16), tf.constant(p, tf.float16))
            assert fn_value.dtype == tf.float32
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.config.dtype_policy().name == previous.name


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_serialize_round_trip(name):
    kwargs = {"from_logits": True}
    loss = L.get_loss(name, **kwargs)
    blob = keras.saving.serialize_keras_object(loss)
    assert blob["registered_name"].startswith("tfrobseg>")
    back = keras.saving.deserialize_keras_object(blob)
    assert type(back) is type(loss)
    assert back.get_config() == loss.get_config()
    g, p = rand_case()
    y, x = inputs_for(name, g, np_logit(p))
    np.testing.assert_allclose(float(back(y, x)), float(loss(y, x)), rtol=1e-6)


def test_functional_forms_return_per_sample_values():
    g, p = rand_case()
    y2 = np.concatenate([g, g], -1)
    fns = [L.bce_loss, L.dice_loss, L.tversky_loss, L.bce_dice_loss, L.bce_tversky_loss, L.dice_tversky_loss,
           L.focal_loss, L.dice_focal_loss, L.tversky_ce_loss]
    for fn in fns:
        assert tuple(fn(g, p).shape) == (3,), fn.__name__
    assert tuple(L.ag_bce_loss(y2, p).shape) == (3,)
    assert tuple(L.adaptive_focal_loss(y2, p).shape) == (3,)
    assert tuple(L.soft_dice_distillation_loss(p, p).shape) == (3,)
