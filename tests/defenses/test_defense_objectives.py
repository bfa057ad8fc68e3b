"""The in-graph pieces of the defenses (tfrobseg.defenses.objectives) against NumPy: the adversarial examples
on p = σ(w·x + b), whose input gradients have closed forms, the per-pixel KL, the mixing and the noise."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from defense_cases import B, W, batch, kl, pixel_net, sigmoid

from tfrobseg.attacks.gradient import input_gradient, loss_objective
from tfrobseg.defenses import objectives as obj

EPS = 0.3


@pytest.fixture(scope="module")
def net():
    return pixel_net()


@pytest.fixture(scope="module")
def xy():
    return batch(soft=True)


def _uniform(shape, radius, seed):
    return keras.ops.convert_to_numpy(keras.random.uniform(shape, -radius, radius, dtype="float32",
                                                           seed=keras.random.SeedGenerator(seed)))


def _sign_steps(x, start, direction, alpha, steps):
    """NumPy PGD: ``steps`` steps of α·sign(direction(x_k)) from ``start``, each projected onto the ε-ball."""
    x_k = start
    for _ in range(steps):
        x_k = x + np.clip(x_k + alpha * np.sign(direction(x_k)) - x, -EPS, EPS)
    return x_k


def test_fgsm_example_is_the_closed_form_sign_step(net, xy):
    x, y = xy
    x_adv = obj.fgsm_example(net, tf.constant(x), tf.constant(y), loss_objective("bce"), EPS)
    # ∂BCE/∂x = (p − y)·w per pixel (over the image's pixel count, which does not change the sign).
    expected = x + EPS * np.sign((sigmoid(W * x + B) - y) * W)
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_fast_fgsm_example_steps_once_from_a_uniform_start_and_stays_in_the_ball(net, xy):
    x, y = xy
    x_adv = obj.fast_fgsm_example(net, tf.constant(x), tf.constant(y), loss_objective("bce"), EPS, 1.25,
                                  keras.random.SeedGenerator(7)).numpy()
    start = x + _uniform(x.shape, EPS, 7)
    expected = x + np.clip(start - x + 1.25 * EPS * np.sign((sigmoid(W * start + B) - y) * W), -EPS, EPS)
    np.testing.assert_allclose(x_adv, expected, atol=1e-5)
    assert np.abs(x_adv - x).max() <= EPS + 1e-6
    assert np.abs(x_adv - x).max() > 0.99 * EPS  # 1.25 ε steps reach the border


def test_pgd_example_is_projected_sign_ascent_from_a_uniform_start(net, xy):
    x, y = xy
    x_adv = obj.pgd_example(net, tf.constant(x), tf.constant(y), loss_objective("bce"), EPS, 3, 2.5,
                            keras.random.SeedGenerator(5)).numpy()
    expected = _sign_steps(x, x + _uniform(x.shape, EPS, 5), lambda x_k: (sigmoid(W * x_k + B) - y) * W,
                           2.5 * EPS / 3, 3)
    np.testing.assert_allclose(x_adv, expected, atol=1e-5)
    assert np.abs(x_adv - x).max() <= EPS + 1e-6


def test_trades_example_ascends_the_kl_from_a_small_gaussian_start(net, xy):
    x, _ = xy
    x_adv = obj.trades_example(net, tf.constant(x), EPS, 4, 2.5, keras.random.SeedGenerator(3)).numpy()
    noise = keras.ops.convert_to_numpy(keras.random.normal(x.shape, dtype="float32",
                                                           seed=keras.random.SeedGenerator(3)))
    p = sigmoid(W * x + B)
    # ∂KL(p‖q)/∂x' = (q − p)·w per pixel, q = σ(w·x' + b).
    expected = _sign_steps(x, x + 0.001 * noise, lambda x_k: (sigmoid(W * x_k + B) - p) * W, 2.5 * EPS / 4, 4)
    np.testing.assert_allclose(x_adv, expected, atol=1e-5)
    assert np.abs(x_adv - x).max() <= EPS + 1e-6


def test_pixel_kl_one_channel_and_categorical():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(2, 4, 4, 1)).astype(np.float32)
    q = rng.uniform(size=(2, 4, 4, 1)).astype(np.float32)
    p[0, 0, 0, 0], q[0, 0, 1, 0], p[1, 1, 1, 0] = 0.0, 1.0, 1.0  # clipped, finite
    np.testing.assert_allclose(obj.pixel_kl(p, q), kl(p, q).mean(axis=(1, 2, 3)), rtol=1e-5)
    assert np.all(obj.pixel_kl(p, p).numpy() == 0)
    logits = rng.normal(size=(2, 4, 4, 3, 2))
    pc, qc = (np.exp(logits[..., i]) / np.exp(logits[..., i]).sum(-1, keepdims=True) for i in (0, 1))
    expected = (pc * np.log(pc / qc)).sum(-1).mean(axis=(1, 2))
    np.testing.assert_allclose(obj.pixel_kl(pc.astype(np.float32), qc.astype(np.float32), softmax=True), expected,
                               rtol=1e-4)


def test_mix_and_trades_loss_by_hand():
    assert float(obj.mix(0.25, tf.constant(2.0), tf.constant(6.0))) == pytest.approx(0.25 * 2 + 0.75 * 6)
    p = np.full((2, 2, 2, 1), 0.5, np.float32)
    q = np.array([0.5, 0.9], np.float32).reshape(2, 1, 1, 1) * np.ones_like(p)
    kl_mean = (0 + (0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))) / 2
    assert float(obj.trades_loss(tf.constant(0.7), p, q, 6.0)) == pytest.approx(0.7 + 6.0 * kl_mean, rel=1e-5)


def test_noise_is_bounded_seeded_and_fresh_every_draw():
    x = tf.zeros((8, 32, 32, 1))
    seed = keras.random.SeedGenerator(0)
    first, second = obj.uniform_noise(x, 0.01, seed).numpy(), obj.uniform_noise(x, 0.01, seed).numpy()
    assert np.abs(first).max() <= 0.01 and np.abs(first).max() > 0.0099
    assert abs(first.mean()) < 0.001 and not np.array_equal(first, second)
    np.testing.assert_array_equal(obj.uniform_noise(x, 0.01, keras.random.SeedGenerator(0)), first)
    gauss = obj.gaussian_noise(x + 1.0, 0.01, keras.random.SeedGenerator(0)).numpy() - 1.0
    assert gauss.std() == pytest.approx(0.01, rel=0.03) and abs(gauss.mean()) < 0.0005


def test_soft_labels_are_the_outputs_at_temperature():
    z = np.array([-300.0, -2.0, 0.0, 3.0, 250.0], np.float32).reshape(1, 1, 5, 1)
    np.testing.assert_allclose(obj.soft_labels(z, 100.0), sigmoid(z / 100.0), rtol=1e-6)
    zc = np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32) * 50
    e = np.exp(zc / 20.0)
    np.testing.assert_allclose(obj.soft_labels(zc, 20.0), e / e.sum(-1, keepdims=True), rtol=1e-5)


def _huge(y, pred, param):
    """An objective whose scaled gradient overflows float32 (1e35 · 2^15 > 3.4e38) while the unscaled one does not."""
    return 1e35 * tf.reduce_mean(pred, axis=[1, 2, 3])


def test_an_overflowing_scaled_gradient_is_taken_again_unscaled(net, xy):
    x, y = (tf.constant(a) for a in xy)
    zero = tf.constant(0.0)
    scaled, _, _ = input_gradient(net, x, y, _huge, zero, tf.constant(obj.ATTACK_LOSS_SCALE))
    unscaled, _, _ = input_gradient(net, x, y, _huge, zero, tf.constant(1.0))
    assert not np.all(np.isfinite(scaled)) and np.all(np.isfinite(unscaled))
    np.testing.assert_array_equal(obj.attack_gradient(net, x, y, _huge, obj.ATTACK_LOSS_SCALE), unscaled)
    graph = tf.function(lambda a, b: obj.attack_gradient(net, a, b, _huge, obj.ATTACK_LOSS_SCALE), jit_compile=True)
    np.testing.assert_allclose(graph(x, y), unscaled, rtol=1e-5)  # XLA fuses differently


def test_the_attack_is_loss_scaled_only_for_float16_networks(net):
    inp = keras.Input((4, 4, 1))
    half = keras.Model(inp, keras.layers.Conv2D(1, 1, dtype="mixed_float16")(inp))
    assert obj.attack_loss_scale(half) == 2.0**15
    assert obj.attack_loss_scale(net) == 1.0
