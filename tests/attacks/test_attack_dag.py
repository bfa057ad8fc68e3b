"""DAG for a sigmoid head (tfrobseg.attacks.dag) against an independent NumPy implementation of its steps.

The model is a per-pixel quadratic logit z = A·x + C·x² + B, p = σ(z) (a 1×1 convolution over (x, x²)),
so the DAG gradient has a closed form whose magnitude varies from pixel to pixel and image to image:
∇ₓ Σ_{n∈T} (1 − 2yₙ) zₙ = (1 − 2y)·(A + 2C·x)·1[n ∈ T], and the normalised step α·r/‖r‖∞ is not a sign step.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from attack_cases import disks, tiny_net, trained_net
from test_attack_apgd import within_box
from test_attack_params import ExplodingModel

from tfrobseg.attacks import ATTACKS, attack_dataset, dag, predict
from tfrobseg.attacks.budget import batch_dice
from tfrobseg.attacks.gradient import gradient_count

A, C, B = 1.7, 0.8, -0.4
RUN = {"jit_compile": False}
EPS = np.array([0.3, 0.5, 0.8], np.float32)

trained = pytest.fixture(trained_net, scope="module", name="trained")


def quadratic_model(size: int = 8) -> keras.Model:
    inp = keras.Input((size, size, 1))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(inp, conv(keras.layers.Concatenate()([inp, keras.ops.square(inp)])))
    conv.set_weights([np.array([A, C], np.float32).reshape(1, 1, 2, 1), np.array([B], np.float32)])
    return model


def logit_np(x):
    return A * x + C * x**2 + B


def dag_np(x, y, eps, alpha, steps, clip=(-np.inf, np.inf)):
    """DAG in float64: the still-correct set T of the current iterate, r = (1 − 2y)(A + 2Cx)·1[T],
    x ← clip(clip(x + α r/‖r‖∞ per image, x₀ ± ε)); stop when every T is empty. Returns the image and the T sets."""
    x0, t = x.astype(np.float64), y > 0.5
    eps, alpha = (np.reshape(np.asarray(v, np.float64), (-1, 1, 1, 1)) for v in (eps, alpha))
    adv, sets = x0.copy(), []
    for _ in range(steps):
        still = (logit_np(adv) > 0) == t
        sets.append(still)
        if not still.any():
            break
        r = (1 - 2 * t) * (A + 2 * C * adv) * still
        largest = np.abs(r).max(axis=(1, 2, 3), keepdims=True)
        step = np.divide(alpha * r, largest, out=np.zeros_like(r), where=largest > 0)
        adv = np.clip(np.clip(adv + step, x0 - eps, x0 + eps), *clip)
    return adv, sets


def case(seed: int = 0, size: int = 8):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.5, (3, size, size, 1)).astype(np.float32)
    y = (rng.uniform(size=x.shape) > 0.5).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def model():
    return quadratic_model()


@pytest.mark.parametrize("steps, alpha, clip", [(1, 0.2, None), (2, 0.2, None), (2, 0.5, (-0.5, 1.0)), (5, 0.15, None)])
def test_dag_equals_numpy_steps(model, steps, alpha, clip):
    x, y = case()
    x = x if clip is None else np.clip(x, *clip)  # a clean image inside its valid range
    options = {} if clip is None else {"clip": clip}
    adv = dag(model, x, y, EPS, steps=steps, alpha=alpha, **options, **RUN).numpy()
    expected, sets = dag_np(x, y, EPS, alpha, steps, (-np.inf, np.inf) if clip is None else clip)
    np.testing.assert_allclose(adv, expected, atol=1e-5)
    if steps > 1:  # T of the current iterate: some pixels have left it after the first step, others remain
        assert (sets[1] != sets[0]).any() and sets[1].any()
    within_box(adv, x, EPS, clip)


def test_normalised_step_moves_the_most_sensitive_pixel_by_alpha(model):
    x, y = case(1)
    adv = dag(model, x, y, 0.5, steps=1, alpha=0.2, **RUN).numpy()
    moved = np.abs(adv - x).max(axis=(1, 2, 3))
    np.testing.assert_allclose(moved, 0.2, rtol=1e-5)
    still = (logit_np(x.astype(np.float64)) > 0) == (y > 0.5)
    assert (adv[~still] == x[~still]).all()  # only still-correct pixels move
    assert len(np.unique(np.round(np.abs(adv - x)[still], 6))) > 10  # not a sign step


def test_image_without_correct_pixels_stops_and_fewer_gradients_are_counted(model):
    x, y = case(2)
    wrong = (logit_np(x.astype(np.float64)) <= 0).astype(np.float32)  # the flipped prediction: no pixel correct
    # All images stopped at the first check: one gradient call, nothing moves.
    before = gradient_count()
    np.testing.assert_array_equal(dag(model, x, wrong, 0.5, steps=5, **RUN).numpy(), x)
    assert gradient_count() - before == len(x)
    # One image without a correct pixel stays, the others move; all steps are taken.
    y_mixed = y.copy()
    y_mixed[1] = wrong[1]
    before = gradient_count()
    adv = dag(model, x, y_mixed, 0.5, steps=3, alpha=0.1, **RUN).numpy()
    assert gradient_count() - before == 3 * len(x)
    np.testing.assert_array_equal(adv[1], x[1])
    assert (np.abs(adv[[0, 2]] - x[[0, 2]]).max(axis=(1, 2, 3)) > 0).all()
    np.testing.assert_allclose(adv, dag_np(x, y_mixed, 0.5, 0.1, 3)[0], atol=1e-5)


def test_stops_when_every_pixel_has_flipped(model):
    # Pixels in [0, 1]: one step of α = 3 flips every still-correct pixel; the second call finds every T
    # empty and the loop ends: 2 gradients per image instead of 5.
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (2, 8, 8, 1)).astype(np.float32)
    y = (rng.uniform(size=x.shape) > 0.5).astype(np.float32)
    expected, sets = dag_np(x, y, 3.0, 3.0, 5)
    assert len(sets) == 2 and not sets[1].any()
    before = gradient_count()
    adv = dag(model, x, y, 3.0, steps=5, alpha=3.0, **RUN).numpy()
    assert gradient_count() - before == 2 * len(x)
    np.testing.assert_allclose(adv, expected, atol=1e-5)


def test_step_rule_defaults(model):
    x, y = case()
    # α = 2.5·ε/steps, per image when ε is.
    default = dag(model, x, y, EPS, steps=4, **RUN).numpy()
    np.testing.assert_allclose(default, dag_np(x, y, EPS, 2.5 * EPS / 4, 4)[0], atol=1e-5)
    np.testing.assert_array_equal(default, dag(model, x, y, EPS, steps=4, step_factor=2.5, **RUN).numpy())
    assert not np.array_equal(default, dag(model, x, y, EPS, steps=4, step_factor=1.0, **RUN).numpy())
    np.testing.assert_array_equal(dag(model, x, y, 0.4, steps=4, **RUN).numpy(),
                                  dag(model, x, y, 0.4, steps=4, alpha=0.25, **RUN).numpy())
    np.testing.assert_array_equal(dag(model, x, y, 0.0, **RUN).numpy(), x)


@pytest.mark.parametrize("options, match", [
    ({"loss": "bce"}, "dag takes no loss"),
    ({"alpha": 0.1, "step_factor": 2.0}, r"give alpha \(the step\) or step_factor .*, not both"),
    ({"steps": 0}, "steps"),
    ({"alpha": -0.1}, "alpha"),
    ({"step_factor": 0.0}, "step_factor"),
    ({"clip": (1.0, 0.0)}, "clip"),
    ({"seed": 1}, "unknown attack option.*seed"),
])
def test_arguments_are_checked_before_any_work(options, match):
    x, y = case()
    with pytest.raises(ValueError, match=match):
        dag(ExplodingModel(), x, y, 0.1, **options)


def test_runner(model):
    x, y = case()
    assert ATTACKS["dag"].options == {"steps", "alpha", "step_factor", "clip", "relative_to", "loss_scale",
                                      "jit_compile"}
    data = tf.data.Dataset.from_tensor_slices({"image": x, "mask": y})
    # The runner's loss (here the default "bce") is not passed to DAG.
    rows = list(attack_dataset(model, data, [0.0, 0.3, 0.6], attack="dag", steps=3, batch_size=3,
                               return_images=True, **RUN))
    assert len(rows) == 9
    np.testing.assert_array_equal(rows[0]["adversarial"], x[0])
    expected = dag_np(np.concatenate([x, x]), np.concatenate([y, y]), np.repeat([0.3, 0.6], 3),
                      np.repeat([0.3, 0.6], 3) * 2.5 / 3, 3)[0]
    for i in range(3):
        for e in (1, 2):
            np.testing.assert_allclose(rows[3 * i + e]["adversarial"], expected[3 * (e - 1) + i], atol=1e-5)


def test_under_xla_and_mixed_precision():
    x, y = disks(2, seed=4)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = tiny_net(seed=1)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    adv = dag(net, x, y, 0.5, steps=3).numpy()  # jit_compile=True by default
    assert np.isfinite(adv).all()
    within_box(adv, x, 0.5)
    assert not np.array_equal(adv, x)


def test_dag_lowers_dice_of_a_trained_model(trained):
    x, y = disks(8, seed=9)
    clean = float(np.mean(batch_dice(predict(trained, x), tf.constant(y))))
    attacked = float(np.mean(batch_dice(predict(trained, dag(trained, x, y, 1.0, steps=10)), tf.constant(y))))
    assert attacked < clean - 0.2, (clean, attacked)
