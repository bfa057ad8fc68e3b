"""Formula tests for tfrobseg.losses against independent NumPy/SciPy references and hand computations."""

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf

from tfrobseg import losses as L

RNG = np.random.default_rng(1234)
EPS = 1e-7


# ----------------------------------------------------------------------------- NumPy references
def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_logit(p):
    return np.log(p) - np.log1p(-p)


def np_bce(g, p):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(g * np.log(p) + (1 - g) * np.log(1 - p)).reshape(len(g), -1).mean(1)


def np_counts(g, p):
    axes = (1, 2)
    return (p * g).sum(axes), (p * (1 - g)).sum(axes), ((1 - p) * g).sum(axes)


def np_dice(g, p, s=1.0):
    num = 2 * (p * g).sum((1, 2)) + s
    den = p.sum((1, 2)) + g.sum((1, 2)) + s
    return (1 - num / den).mean(-1)


def np_tversky(g, p, a, b, s=1.0):
    tp, fp, fn = np_counts(g, p)
    return (1 - (2 * tp + s) / (2 * tp + 2 * a * fp + 2 * b * fn + s)).mean(-1)


def np_focal(g, p, alpha, gamma):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    pt = np.where(g == 1, p, 1 - p)
    w = 1.0 if alpha is None else np.where(g == 1, alpha, 1 - alpha)
    return (-w * (1 - pt) ** gamma * np.log(pt)).reshape(len(g), -1).mean(1)


def np_hard(e, r, k):
    xor = np.logical_xor(e > 0.5, r > 0.5)
    if k == 1:
        return xor.astype(float)
    struct = np.ones((1, k, k, 1), bool)
    return ndi.binary_dilation(xor, structure=struct).astype(float)


def np_ag_bce(y2, p, hw=4.0, ew=1.0, k=1):
    e, r = y2[..., :1], y2[..., 1:]
    hard = np_hard(e, r, k)
    w = hw * hard + ew * (1 - hard)
    pc = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    bce = -(e * np.log(pc) + (1 - e) * np.log(1 - pc))
    return (w * bce).reshape(len(p), -1).mean(1)


def np_adaptive_focal(y2, p, gamma=2.0, k=3, min_gamma=0.1):
    e, r = y2[..., :1], y2[..., 1:]
    hard = np_hard(e, r, k)
    pc = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    pt = np.where(e == 1, pc, 1 - pc)
    f = -((1 - pt) ** gamma) * np.log(pt)
    out = []
    for i in range(len(p)):
        g_adapt = max(1 - p[i].mean() + np.logical_xor(e[i] > 0.5, r[i] > 0.5).mean(), min_gamma)
        out.append((g_adapt * (f[i] * hard[i]).sum() + (f[i] * (1 - hard[i])).sum() / g_adapt) / p[i].size)
    return np.array(out)


def rand_case(shape=(3, 12, 12, 1)):
    g = (RNG.random(shape) > 0.6).astype(np.float32)
    p = RNG.uniform(0.02, 0.98, shape).astype(np.float32)
    return g, p


def two_reader(shape=(3, 12, 12, 1)):
    e, p = rand_case(shape)
    r = e.copy()
    flip = RNG.random(shape) > 0.85
    r[flip] = 1 - r[flip]
    return np.concatenate([e, r], -1), p


def val(loss, y, p):
    return np.asarray(loss(tf.constant(y), tf.constant(p)))


# ----------------------------------------------------------------------------- registry
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


def test_two_reader_layout_is_checked():
    g, p = rand_case()
    with pytest.raises(ValueError, match="2 channels"):
        L.get_loss("ag_bce")(g, p)
    with pytest.raises(ValueError, match="does not match"):
        L.get_loss("dice")(g[:, :6], p)


# ----------------------------------------------------------------------------- values vs NumPy
@pytest.mark.parametrize("from_logits", [False, True])
def test_single_losses_match_numpy(from_logits):
    g, p = rand_case()
    x = np_logit(p.astype(np.float64)).astype(np.float32) if from_logits else p
    kw = {"from_logits": from_logits, "reduction": None}
    np.testing.assert_allclose(val(L.BCELoss(**kw), g, x), np_bce(g, p), rtol=1e-5)
    np.testing.assert_allclose(val(L.DiceLoss(**kw), g, x), np_dice(g, p), rtol=1e-5)
    np.testing.assert_allclose(val(L.TverskyLoss(**kw), g, x), np_tversky(g, p, 0.3, 0.7), rtol=1e-5)
    np.testing.assert_allclose(val(L.FocalLoss(**kw), g, x), np_focal(g, p, 0.25, 2.0), rtol=1e-5)
    np.testing.assert_allclose(val(L.BCEDiceLoss(**kw), g, x), 0.5 * np_bce(g, p) + 0.5 * np_dice(g, p), rtol=1e-5)
    np.testing.assert_allclose(val(L.BCETverskyLoss(bce_weight=0.2, tversky_weight=0.8, alpha=0.4, beta=0.6, **kw),
                                   g, x), 0.2 * np_bce(g, p) + 0.8 * np_tversky(g, p, 0.4, 0.6), rtol=1e-5)
    np.testing.assert_allclose(val(L.DiceTverskyLoss(**kw), g, x),
                               0.5 * np_dice(g, p) + 0.5 * np_tversky(g, p, 0.3, 0.7), rtol=1e-5)
    np.testing.assert_allclose(val(L.DiceFocalLoss(**kw), g, x),
                               np_dice(g, p, 1e-6) + np_focal(g, p, None, 2.0), rtol=1e-5)
    np.testing.assert_allclose(val(L.AdaptiveTverskyCELoss(**kw), g, x),
                               0.5 * np_tversky(g, p, 0.5, 0.5) + 0.5 * np_bce(g, p), rtol=1e-5)


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


# ----------------------------------------------------------------------------- identities
def test_tversky_half_half_equals_dice():
    g, p = rand_case()
    g[0] = 0  # an empty mask, where the smoothing matters
    for s in (0.0, 1.0, 1e-6):
        np.testing.assert_allclose(val(L.TverskyLoss(0.5, 0.5, smooth=s), g, p),
                                   val(L.DiceLoss(smooth=s), g, p), rtol=1e-6)


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


# ----------------------------------------------------------------------------- hand-computed cases
def _mask(n_fg, size=4):
    m = np.zeros((1, size, size, 1), np.float32)
    m.reshape(-1)[:n_fg] = 1
    return m


@pytest.mark.parametrize("name", ["dice", "tversky", "dice_tversky"])
def test_region_hand_cases(name):
    loss = L.get_loss(name)  # s = 1, 16 pixels
    g = _mask(6)
    assert float(loss(g, g)) == pytest.approx(0.0, abs=1e-7)  # perfect
    assert float(loss(_mask(0), _mask(0))) == pytest.approx(0.0, abs=1e-7)  # both empty
    wrong = 1 - g
    if name == "dice":
        assert float(loss(g, wrong)) == pytest.approx(1 - 1 / (16 + 1))  # Σp + Σg = 16
        assert float(loss(_mask(0), _mask(16))) == pytest.approx(1 - 1 / 17)  # empty truth
        assert float(loss(_mask(6), _mask(0))) == pytest.approx(1 - 1 / 7)  # empty prediction
    if name == "tversky":  # (2TP + s)/(2TP + 2αFP + 2βFN + s), TP = 0, FP = 10, FN = 6
        assert float(loss(g, wrong)) == pytest.approx(1 - 1 / (0.6 * 10 + 1.4 * 6 + 1))
        assert float(loss(_mask(0), _mask(16))) == pytest.approx(1 - 1 / (0.6 * 16 + 1))
        assert float(loss(_mask(6), _mask(0))) == pytest.approx(1 - 1 / (1.4 * 6 + 1))


def test_pixel_losses_hand_cases():
    g = _mask(4)
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


def test_ag_bce_hand_case():
    e = _mask(4)
    r = _mask(6)  # readers disagree on 2 pixels
    y2 = np.concatenate([e, r], -1)
    p = np.full_like(e, 0.5)
    # Every pixel costs log 2; 2 hard pixels weigh 4, 14 easy ones 1.
    assert float(L.AGBCELoss()(y2, p)) == pytest.approx((2 * 4 + 14) * np.log(2) / 16, rel=1e-5)
    # Readers agree: plain BCE.
    agree = np.concatenate([e, e], -1)
    np.testing.assert_allclose(float(L.AGBCELoss()(agree, p)), float(L.BCELoss()(e, p)), rtol=1e-6)


# ----------------------------------------------------------------------------- gradients, empty masks
def _inputs_for(name, g, p):
    if name in L.SECOND_READER_LOSSES:
        return np.concatenate([g, g], -1), p
    return g, p


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_gradients_finite_and_no_nan_on_empty_masks(name):
    empty, full = _mask(0, 8), _mask(64, 8)
    cases = [(empty, empty), (empty, np.full_like(empty, 0.3)), (_mask(20, 8), empty), (full, full),
             (_mask(20, 8), 1 - _mask(20, 8))]
    for from_logits in (False, True):
        loss = L.get_loss(name, from_logits=from_logits)
        for g, p in cases:
            y, x = _inputs_for(name, g, p)
            x = tf.Variable(np.where(x > 0.5, 8.0, -8.0).astype(np.float32) if from_logits else x)
            with tf.GradientTape() as tape:
                value = loss(tf.constant(y), x)
            grad = tape.gradient(value, x)
            assert np.isfinite(float(value)), (name, from_logits)
            assert grad is not None and np.all(np.isfinite(grad.numpy())), (name, from_logits)


@pytest.mark.parametrize("name", ["dice", "tversky", "bce_dice", "bce_tversky", "dice_tversky",
                                  "adaptive_tversky_ce"])
def test_perfect_empty_prediction_is_zero_region_loss(name):
    # Both masks empty and prediction exactly 0: region terms are 0, so only the BCE part may remain.
    loss = L.get_loss(name)
    empty = _mask(0, 8)
    assert float(loss(empty, empty)) == pytest.approx(0.0, abs=1e-5)


# ----------------------------------------------------------------------------- reduction, dtype
def test_reduction_is_mean_of_per_sample_values():
    g, p = rand_case()
    for name in L.LOSS_NAMES:
        y, x = _inputs_for(name, g, p)
        per_sample = val(L.get_loss(name, reduction=None), y, x)
        assert per_sample.shape == (len(g),)
        assert float(L.get_loss(name)(y, x)) == pytest.approx(per_sample.mean(), rel=1e-5)


def test_mixed_float16_policy_keeps_float32():
    g, p = rand_case((2, 16, 16, 1))
    y2 = np.concatenate([g, g], -1)
    reference = {n: float(L.get_loss(n)(*_inputs_for(n, g, p))) for n in L.LOSS_NAMES}
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


# ----------------------------------------------------------------------------- serialization
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
    y, x = _inputs_for(name, g, np_logit(p))
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
