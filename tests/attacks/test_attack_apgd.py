"""APGD (tfrobseg.attacks.apgd) against an independent NumPy implementation of Croce & Hein's Algorithm 1.

The model is the 1×1-convolution sigmoid p = σ(W·x + B) of test_attack_objective, whose input gradients
have a closed form, so the reference needs no TensorFlow: for the mean BCE sign ∇f = sign((p − y)·W),
and for the "centre" objective f = −mean((p − ½)²) (maximal at p = ½, i.e. x* = −B/W, inside the ball
for most pixels, so the iterates overshoot and come back and the step-size rules are exercised)
sign ∇f = sign((½ − p)·W).
"""

import math
from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf
from attack_cases import disks, tiny_net, trained_net
from test_attack_objective import B, W, pixel_model
from test_attack_params import ExplodingModel

from tfrobseg.attacks import (
    ATTACKS,
    apgd,
    apgd_checkpoints,
    attack_dataset,
    fgsm,
    predict,
)
from tfrobseg.attacks.apgd import checkpoint_halves
from tfrobseg.attacks.budget import batch_dice
from tfrobseg.attacks.gradient import gradient_count
from tfrobseg.losses import get_loss

RUN = {"jit_compile": False}
EPS = np.array([0.2, 0.35, 0.5], np.float32)

trained = pytest.fixture(trained_net, scope="module", name="trained")


def centre_loss(y_true, y_pred):
    """−mean((p − ½)²): the attack objective that drives every pixel to p = ½ (an interior maximum)."""
    return -tf.reduce_mean(tf.square(y_pred - 0.5))


def sigmoid(x):
    return 1 / (1 + np.exp(-(W * x.astype(np.float64) + B)))


def bce_np(x, y):
    p = np.clip(sigmoid(x), 1e-7, 1 - 1e-7)
    return np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)), axis=(1, 2, 3))


OBJECTIVES = {  # name: (f per image, sign of ∇f)
    "ce": (bce_np, lambda x, y: np.sign((sigmoid(x) - y) * W)),
    "centre": (lambda x, y: -np.mean((sigmoid(x) - 0.5) ** 2, axis=(1, 2, 3)),
               lambda x, y: np.sign((0.5 - sigmoid(x)) * W)),
}


def checkpoints_np(n):
    """W = {⌈p_j n⌉} in exact fractions: p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) ≤ 1."""
    p = [Fraction(0), Fraction(22, 100)]
    while p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({math.ceil(q * n) for q in p})


def apgd_np(x, y, x0, eps, steps, objective, clip=(-np.inf, np.inf)):
    """Algorithm 1 of Croce & Hein in float64, every image on its own; returns x_max and what happened.

    The checkpoint test at w_j runs once x⁽ʷʲ⁾ exists; a halving image restarts there from x_max.
    """
    f, sign_grad = OBJECTIVES[objective]
    x, x0 = x.astype(np.float64), x0.astype(np.float64)
    eps = np.broadcast_to(np.asarray(eps, np.float64).reshape(-1, 1, 1, 1), (len(x), 1, 1, 1))

    def proj(v):
        return np.clip(np.clip(v, x - eps, x + eps), *clip)

    xs, fs = [proj(x0)], [f(proj(x0), y)]
    eta = 2 * eps
    x_max, f_max = xs[0].copy(), fs[0].copy()
    log = {"momentum": False, "condition_1": False, "condition_2_alone": False, "best_not_last": False}
    check, eta_at_check, f_max_at_check = 0, eta.copy(), f_max.copy()
    for k in range(steps):
        z = proj(xs[-1] + eta * sign_grad(xs[-1], y))
        new = z if k == 0 else proj(xs[-1] + 0.75 * (z - xs[-1]) + 0.25 * (xs[-1] - xs[-2]))
        log["momentum"] |= k > 0 and not np.allclose(new, z)
        xs.append(new)
        fs.append(f(new, y))
        better = fs[-1] > f_max
        x_max[better], f_max = new[better], np.where(better, fs[-1], f_max)
        if k + 1 in checkpoints_np(steps) and k + 1 < steps:
            increases = sum((fs[i + 1] > fs[i]).astype(int) for i in range(check, k + 1))
            condition_1 = increases < 0.75 * (k + 1 - check)
            condition_2 = (eta_at_check == eta).ravel() & (f_max_at_check == f_max)
            halve = condition_1 | condition_2
            log["condition_1"] |= condition_1.any()
            log["condition_2_alone"] |= (condition_2 & ~condition_1).any()
            check, eta_at_check, f_max_at_check = k + 1, eta.copy(), f_max.copy()
            eta = np.where(halve[:, None, None, None], eta / 2, eta)
            xs[-1] = np.where(halve[:, None, None, None], x_max, xs[-1])
            fs[-1] = np.where(halve, f_max, fs[-1])
    log["best_not_last"] = not np.array_equal(x_max, xs[-1])
    return x_max, log


def case(seed: int = 0, size: int = 8):
    """Pixels around x* = −B/W (where the centre objective peaks), random masks."""
    rng = np.random.default_rng(seed)
    x = (-B / W + rng.normal(0, 0.4, (3, size, size, 1))).astype(np.float32)
    y = (rng.uniform(size=x.shape) > 0.5).astype(np.float32)
    return x, y


def random_start(x, eps, seed):
    """The documented start: x + U(−1, 1)·ε from TensorFlow's stateless RNG (the stream, not the algorithm)."""
    unit = tf.random.stateless_uniform(x.shape, seed=(seed, 0), minval=-1.0, maxval=1.0).numpy()
    return x + unit * np.reshape(eps, (-1, 1, 1, 1))


def attack_loss(objective):
    return "ce" if objective == "ce" else centre_loss


@pytest.fixture(scope="module")
def model():
    return pixel_model()


def test_checkpoints_by_hand():
    # p_j: 0, 0.22, 0.22 + max(0.22 − 0 − 0.03, 0.06) = 0.41, 0.41 + max(0.19 − 0.03, 0.06) = 0.57,
    # 0.57 + 0.13 = 0.70, 0.70 + 0.10 = 0.80, 0.80 + 0.07 = 0.87, 0.87 + max(0.04, 0.06) = 0.93, 0.99 (1.05 > 1).
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    # N = 20: ⌈4.4⌉, ⌈8.2⌉, ⌈11.4⌉, 14, 16, ⌈17.4⌉, ⌈18.6⌉, ⌈19.8⌉ (0.70 · 20 is 14 exactly, not 15).
    assert apgd_checkpoints(20) == [0, 5, 9, 12, 14, 16, 18, 19, 20]
    # N = 5: ⌈1.1⌉ = 2, ⌈2.05⌉ = ⌈2.85⌉ = 3, ⌈3.5⌉ = ⌈4.0⌉ = 4, then 5 (repeats merge).
    assert apgd_checkpoints(5) == [0, 2, 3, 4, 5]
    assert apgd_checkpoints(1) == [0, 1]
    assert all(apgd_checkpoints(n) == checkpoints_np(n) for n in range(1, 120))


def test_checkpoint_halving_conditions_by_hand():
    # window 4 → ρ·4 = 3: condition 1 is "fewer than 3 of the 4 steps raised f".
    increases = [1, 3, 3, 2, 4]
    halved_before = [False, False, True, False, False]
    f_max_before = np.array([1.0, 2.0, 2.0, 1.0, 1.0], np.float32)
    f_max = np.array([1.0, 2.0, 2.0, 1.5, 1.5], np.float32)
    # cond 1: T F F T F;  cond 2 (not halved before, no gain): T T F F F
    halves = checkpoint_halves(tf.constant(increases), 4, tf.constant(halved_before), f_max_before, f_max)
    np.testing.assert_array_equal(halves, [True, True, False, True, False])


@pytest.mark.parametrize("objective, steps, start_seed, clip, exercises", [
    ("ce", 1, 3, None, "first step"),
    ("centre", 1, 3, None, "first step"),
    ("centre", 3, None, None, "momentum"),
    ("centre", 5, 1, None, "condition_1"),
    ("centre", 20, 1, (-0.1, 0.5), "condition_2_alone"),
    ("centre", 12, 4, (-0.1, 0.5), "best_not_last"),
    ("ce", 6, 5, (-0.5, 0.7), "condition_1"),
])
def test_apgd_equals_numpy_algorithm(model, objective, steps, start_seed, clip, exercises):
    x, y = case()
    x0 = x if start_seed is None else random_start(x, EPS, start_seed)
    options = {} if clip is None else {"clip": clip}
    adv = apgd(model, x, y, EPS, steps=steps, loss=attack_loss(objective), random_start=start_seed is not None,
               seed=start_seed or 0, **options, **RUN).numpy()
    expected, log = apgd_np(x, y, x0, EPS, steps, objective, (-np.inf, np.inf) if clip is None else clip)
    if exercises != "first step":
        assert log[exercises]  # the case does exercise the rule it is here for
    np.testing.assert_allclose(adv, expected, atol=2e-6)


def test_first_step_is_two_epsilon_sign_step(model):
    # From a random x⁽⁰⁾ in the ball, η = 2ε along the sign lands on the face x + ε·sign ∇f(x⁽⁰⁾); x⁽¹⁾ is
    # kept where it raised f (all images here).
    x, y = case()
    x0 = random_start(x, EPS, 3)
    adv = apgd(model, x, y, EPS, steps=1, loss=centre_loss, seed=3, **RUN).numpy()
    f, sign_grad = OBJECTIVES["centre"]
    x1 = np.clip(x0 + 2 * EPS[:, None, None, None] * sign_grad(x0, y), x - EPS[:, None, None, None],
                 x + EPS[:, None, None, None])
    assert (f(x1, y) > f(x0, y)).all()
    np.testing.assert_allclose(adv, x1, atol=2e-6)


def within_box(adv, x, eps, clip=None):
    """|x_adv − x| ≤ ε up to the one float32 rounding of x + δ, and x_adv inside clip exactly."""
    eps = np.reshape(np.asarray(eps, np.float32), (-1, 1, 1, 1))
    assert (np.abs(adv.astype(np.float64) - x) <= eps + np.spacing(np.abs(x) + eps)).all()
    if clip is not None:
        assert adv.min() >= clip[0] and adv.max() <= clip[1]


def test_per_image_budgets_bounds_and_seeds(model):
    x, y = case(1)
    x = np.clip(x, -0.2, 0.6)  # a clean image inside its valid range
    batch = apgd(model, x, y, EPS, steps=6, loss=centre_loss, random_start=False, clip=(-0.2, 0.6), **RUN).numpy()
    within_box(batch, x, EPS, (-0.2, 0.6))
    # Every quantity is per image: the batch equals each image attacked alone with its own ε.
    for i in range(len(x)):
        alone = apgd(model, x[i:i + 1], y[i:i + 1], EPS[i], steps=6, loss=centre_loss, random_start=False,
                     clip=(-0.2, 0.6), **RUN).numpy()
        np.testing.assert_allclose(batch[i:i + 1], alone, atol=1e-6)
    a = apgd(model, x, y, 0.3, steps=3, seed=7, **RUN).numpy()
    np.testing.assert_array_equal(a, apgd(model, x, y, 0.3, steps=3, seed=7, **RUN).numpy())
    assert not np.array_equal(a, apgd(model, x, y, 0.3, steps=3, seed=8, loss=centre_loss, **RUN).numpy())
    assert not np.array_equal(apgd(model, x, y, 0.3, steps=3, seed=8, loss=centre_loss, **RUN).numpy(),
                              apgd(model, x, y, 0.3, steps=3, seed=7, loss=centre_loss, **RUN).numpy())
    within_box(a, x, 0.3)
    np.testing.assert_array_equal(apgd(model, x, y, 0.0, **RUN).numpy(), x)


def test_gradient_count_is_steps_per_image(model):
    x, y = case()
    before = gradient_count()
    apgd(model, x, y, 0.3, steps=4, **RUN)
    assert gradient_count() - before == 4 * len(x)  # x⁽⁰⁾ … x⁽³⁾; f(x⁽⁴⁾) is a forward pass


def test_losses(model):
    x, y = case()
    ce = apgd(model, x, y, 0.3, steps=4, loss="ce", **RUN).numpy()
    np.testing.assert_array_equal(ce, apgd(model, x, y, 0.3, steps=4, loss="bce", **RUN).numpy())
    # dice_ce: each image's soft Dice (s = 1) plus its mean BCE, against NumPy.
    from tfrobseg.attacks.apgd import apgd_objective

    pred = sigmoid(x)
    dice = 1 - (2 * (pred * y).sum(axis=(1, 2, 3)) + 1) / (pred.sum(axis=(1, 2, 3)) + y.sum(axis=(1, 2, 3)) + 1)
    values = apgd_objective("dice_ce")(tf.constant(y), tf.constant(pred, tf.float32), tf.constant(0.0))
    np.testing.assert_allclose(values, dice + bce_np(x, y), rtol=1e-5)
    within_box(apgd(model, x, y, 0.3, steps=3, loss="dice_ce", **RUN).numpy(), x, 0.3)
    within_box(apgd(model, x, y, 0.3, steps=3, loss="tversky", **RUN).numpy(), x, 0.3)
    within_box(apgd(model, x, y, 0.3, steps=3, loss=get_loss("focal"), **RUN).numpy(), x, 0.3)


@pytest.mark.parametrize("options, match", [
    ({"loss": "dlr"}, "dlr.*not defined for a one-channel sigmoid head"),
    ({"loss": "DLR"}, "dlr"),
    ({"loss": "no_such_loss"}, "no_such_loss"),
    ({"steps": 0}, "steps"),
    ({"random_start": "yes"}, "random_start"),
    ({"seed": (1, 2, 3)}, "seed"),
    ({"clip": (1.0, 0.0)}, "clip"),
    ({"alpha": 0.1}, "alpha"),
])
def test_arguments_are_checked_before_any_work(options, match):
    x, y = case()
    with pytest.raises(ValueError, match=match):
        apgd(ExplodingModel(), x, y, 0.1, **options)


def test_runner(model):
    x, y = case()
    assert ATTACKS["apgd"].options == {"steps", "loss", "random_start", "seed", "clip", "relative_to",
                                       "loss_scale", "jit_compile"}
    data = tf.data.Dataset.from_tensor_slices({"image": x, "mask": y})
    rows = list(attack_dataset(model, data, [0.0, 0.2, 0.4], attack="apgd", loss="bce", steps=3,
                               batch_size=3, return_images=True, **RUN))
    assert len(rows) == 9
    for row in rows:
        within_box(row["adversarial"][None], row["image"][None], row["epsilon"])
    np.testing.assert_array_equal(rows[0]["adversarial"], x[0])
    # Batch b starts from the stream (seed, b): the runner's ε = 0.4 copy is apgd with seed (0, 0)
    # on the stacked batch of both ε.
    stacked = apgd(model, np.concatenate([x, x]), np.concatenate([y, y]), np.repeat([0.2, 0.4], 3), steps=3,
                   loss="bce", seed=(0, 0), **RUN).numpy()
    np.testing.assert_allclose(rows[2]["adversarial"], stacked[3], atol=1e-6)


def test_under_xla_and_mixed_precision():
    x, y = disks(2, seed=4)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = tiny_net(seed=1)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    adv = apgd(net, x, y, 0.3, steps=3).numpy()  # jit_compile=True by default
    assert np.isfinite(adv).all()
    within_box(adv, x, 0.3)
    clean = bce_of(net, x, y)
    assert bce_of(net, adv, y) > clean


def bce_of(net, x, y):
    p = np.clip(predict(net, x).numpy(), 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))



def test_apgd_reaches_dice_at_most_fgsms_on_a_trained_model(trained):
    # Dice: the mean over images of each image's hard Dice (prediction > 0.5 against the mask), batch_dice.
    x, y = disks(8, seed=9)
    clean = float(np.mean(batch_dice(predict(trained, x), tf.constant(y))))
    assert clean > 0.8
    for eps in (0.1, 0.25, 0.5, 1.0):
        dice_fgsm = float(np.mean(batch_dice(predict(trained, fgsm(trained, x, y, eps)), tf.constant(y))))
        dice_apgd = float(np.mean(batch_dice(predict(trained, apgd(trained, x, y, eps, steps=10)), tf.constant(y))))
        assert dice_apgd <= dice_fgsm, (eps, dice_apgd, dice_fgsm)
