"""The objective gradient (tfrobseg.attacks.gradient.objective_gradient), per-image budgets and the stacked runner."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from attack_cases import disk_batch, tiny_net

from tfrobseg.attacks import attack_dataset
from tfrobseg.attacks.budget import batch_dice, budget, check_budget
from tfrobseg.attacks.gradient import (
    gradient_count,
    loss_objective,
    objective_gradient,
    pixel_bce,
)
from tfrobseg.attacks.iterative import ifgsm
from tfrobseg.attacks.runner import _each_epsilon, _on_batch, stacked

W, B = 1.7, -0.4


def pixel_model(size: int = 8) -> keras.Model:
    """p = σ(w·x + b) per pixel: ∂BCE/∂x = (p − y)·w in closed form."""
    inp = keras.Input((size, size, 1))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.full((1, 1, 1, 1), W, np.float32), np.array([B], np.float32)])
    return model


def _mean_bce(y, pred, param):
    return tf.reduce_mean(pixel_bce(y, pred), axis=[1, 2, 3])


def test_objective_gradient_matches_the_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    y = (rng.uniform(size=x.shape) > 0.5).astype(np.float32)
    grad, pred, values = objective_gradient(pixel_model(), x, y, _mean_bce, jit_compile=False)
    p = 1 / (1 + np.exp(-(W * x + B)))
    np.testing.assert_allclose(pred, p, rtol=1e-5)
    np.testing.assert_allclose(grad, (p - y) * W / 64, rtol=1e-4, atol=1e-8)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(values, bce.mean(axis=(1, 2, 3)), rtol=1e-5)


def test_loss_objective_is_each_images_own_loss():
    x, y = disk_batch()
    net = tiny_net()
    objective = loss_objective("dice")
    assert loss_objective("dice") is objective  # cached: compiled once
    _, _, values = objective_gradient(net, x, y, objective, jit_compile=False)
    from tfrobseg.losses import get_loss

    pred = net(x, training=False)
    expected = [float(get_loss("dice")(y[i:i + 1], pred[i:i + 1])) for i in range(len(x))]
    np.testing.assert_allclose(values, expected, rtol=1e-5)


def test_gradient_count_counts_images():
    x, y = disk_batch()
    before = gradient_count()
    objective_gradient(tiny_net(), x, y, _mean_bce, jit_compile=False)
    assert gradient_count() - before == len(x)


def test_per_image_budget():
    x = tf.constant(np.stack([np.full((2, 2, 1), v, np.float32) for v in (1.0, 2.0, 4.0)]))
    np.testing.assert_allclose(budget(x, 0.5, None).numpy().ravel(), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(budget(x, [0.1, 0.2, 0.3], "max").numpy().ravel(), [0.1, 0.4, 1.2], rtol=1e-6)
    with pytest.raises(ValueError, match="2 values for a batch of 3"):
        budget(x, [0.1, 0.2], None)
    for bad in ([0.1, -1.0], [[0.1]], []):
        with pytest.raises(ValueError, match="eps"):
            check_budget(bad)


def test_batch_dice_by_hand():
    pred = np.zeros((3, 2, 2, 1), np.float32)
    y = np.zeros_like(pred)
    pred[0, 0, 0] = pred[0, 0, 1] = 0.9  # 2 predicted, 1 of them true: 2·1/(2+1)
    y[0, 0, 0] = 1
    y[1, 1, 1] = 1  # nothing predicted: 0
    # image 2: both empty -> 1
    np.testing.assert_allclose(batch_dice(tf.constant(pred), tf.constant(y)), [2 / 3, 0.0, 1.0], rtol=1e-6)


def test_stacked_run_equals_one_attack_per_epsilon():
    x, y = (tf.constant(a) for a in disk_batch())
    net = tiny_net()
    eps = [0.0, 0.1, 0.3]
    each_p, each_x = _each_epsilon(_on_batch(ifgsm))(net, x, y, eps, 0, steps=3, jit_compile=False)
    st_p, st_x = stacked(_on_batch(ifgsm))(net, x, y, eps, 0, steps=3, jit_compile=False)
    np.testing.assert_array_equal(st_x[0], x)
    assert np.mean(np.isclose(st_x, each_x, atol=1e-6)) > 0.999
    assert np.abs(st_p - each_p).max() < 1e-3
    # and through the runner, the ε = 0 rows are the clean prediction
    rows = list(attack_dataset(net, tf.data.Dataset.from_tensor_slices({"image": x, "mask": y}), eps,
                               attack="ifgsm", steps=3, jit_compile=False))
    np.testing.assert_allclose(rows[0]["prediction"], net(x[:1], training=False)[0], atol=1e-6)
