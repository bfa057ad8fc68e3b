"""CosPGD (tfrobseg.attacks.cospgd), untargeted and targeted: the cosine weights by hand, the weighted
objectives and two update steps against NumPy on a closed-form model, one step against FGSM, seeding,
the L∞ ball and the runner."""

import numpy as np
import pytest
import tensorflow as tf
from attack_cases import dice_np, disk_batch, tiny_net
from closed_form import (
    SIZE,
    bce_np,
    input_gradient_np,
    pair_model,
    predict_np,
    project_np,
    sample,
)

from tfrobseg.attacks import (
    ATTACKS,
    attack_dataset,
    background_target,
    cospgd,
    fgsm,
    predict,
    targeted_cospgd,
    targeted_ifgsm,
)
from tfrobseg.attacks.cospgd import (
    cosine_similarity,
    cospgd_objective,
    targeted_cospgd_objective,
)
from tfrobseg.attacks.gradient import objective_gradient
from tfrobseg.attacks.iterative import restart_seed

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")
model = pytest.fixture(pair_model, scope="module", name="model")
RUN = {"jit_compile": False}


def cos_np(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """cos((1 − y, y), (1 − p, p)) per pixel."""
    a = np.stack([1 - y, y], -1)
    b = np.stack([1 - p, p], -1)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def cospgd_np(x, y, eps, steps, alpha, start, targeted=False, weighted=True):
    """x_t = Π(x_{t−1} ± α·sign(∇ mean(w·BCE(y, p)))), w = cos(p, y) (untargeted, +) or 1 − cos(p, y)
    (targeted, −), w constant, on the pair model (``weighted=False``: w = 1, plain BCE)."""
    x64 = x.astype(np.float64)
    adv = x64 + start
    for _ in range(steps):
        p = predict_np(adv)
        w = 1 - cos_np(y, p) if targeted else cos_np(y, p)
        w = w if weighted else np.ones_like(w)
        grad = input_gradient_np(w * (p - y) / (SIZE * SIZE))
        adv = project_np(adv + (-1 if targeted else 1) * alpha * np.sign(grad), x64, eps)
    return adv


def test_cosine_by_hand():
    y = np.array([1.0, 0.0, 1.0, 0.5, 0.0])
    p = np.array([0.8, 0.8, 0.5, 0.5, 0.0])
    # (1−y)(1−p) + y·p over ‖(1−p, p)‖·‖(1−y, y)‖
    expected = [0.8 / np.hypot(0.2, 0.8), 0.2 / np.hypot(0.2, 0.8), 0.5 / np.hypot(0.5, 0.5), 1.0, 1.0]
    got = cosine_similarity(tf.constant(y, tf.float32), tf.constant(p, tf.float32)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    np.testing.assert_allclose(got, cos_np(y, p), rtol=1e-6)


@pytest.mark.parametrize("targeted", [False, True])
def test_objectives_and_gradients_in_closed_form(model, targeted):
    x, y = sample()
    objective = targeted_cospgd_objective if targeted else cospgd_objective
    grad, _, values = objective_gradient(model, x, y, objective, **RUN)
    p = predict_np(x)
    w = 1 - cos_np(y, p) if targeted else cos_np(y, p)
    np.testing.assert_allclose(values, (w * bce_np(y, p)).mean(axis=(1, 2, 3)), rtol=1e-5)
    # The weight is a constant (stop-gradient): ∂/∂x mean(w·BCE) = w·(p − y)/(H·W) through the convolution.
    expected = input_gradient_np(w * (p - y) / (SIZE * SIZE))
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-9)
    # Premise: differentiating through the weight would give another gradient.
    dw_dp = (cos_np(y, p + 1e-6) - cos_np(y, p - 1e-6)) / 2e-6 * (-1 if targeted else 1)
    full = input_gradient_np((dw_dp * bce_np(y, p) * p * (1 - p) + w * (p - y)) / (SIZE * SIZE))
    assert not np.allclose(full, expected, rtol=1e-2)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
def test_two_steps_match_numpy(model, targeted, random_start):
    x, y = sample(1)
    eps = np.array([0.2, 0.5, 0.8], np.float32)
    eps_b = eps[:, None, None, None]
    start = np.zeros_like(x)
    if random_start:
        start = tf.random.stateless_uniform(x.shape, seed=restart_seed(3, 0), minval=-1.0, maxval=1.0).numpy() * eps_b
    attack = targeted_cospgd if targeted else cospgd
    adv = attack(model, x, y, eps, steps=2, seed=3, random_start=random_start, **RUN).numpy()
    expected = cospgd_np(x, y, eps_b, 2, 2.5 * eps_b / 2, start, targeted)
    np.testing.assert_allclose(adv, expected, atol=2e-6)
    # Premise: the cosine weights change the steps (plain BCE steps elsewhere).
    assert not np.allclose(cospgd_np(x, y, eps_b, 2, 2.5 * eps_b / 2, start, targeted, weighted=False), expected,
                           atol=1e-3)


def test_one_step_relations_to_fgsm(model, net, batch):
    # The weights are positive, so on a model where each output pixel sees one input pixel (the pair
    # model's K1 set aside) they cannot flip a sign: there one CosPGD step with α = ε is FGSM with BCE.
    # Through a convolution they reweight the sum, and the step differs from FGSM's.
    x, y = sample(2)
    pixel = pair_model()
    kernel, bias = pixel.get_weights()
    pixel.set_weights([kernel * np.array([1.0, 0.0], np.float32).reshape(1, 2, 1, 1), bias])
    np.testing.assert_array_equal(cospgd(pixel, x, y, 0.3, steps=1, alpha=0.3, random_start=False, **RUN),
                                  fgsm(pixel, x, y, 0.3, **RUN))
    np.testing.assert_array_equal(
        targeted_cospgd(pixel, x, y, 0.3, steps=1, alpha=0.3, random_start=False, **RUN),
        targeted_ifgsm(pixel, x, y, 0.3, steps=1, alpha=0.3, loss="bce", **RUN))
    one = cospgd(model, x, y, 0.3, steps=1, alpha=0.3, random_start=False, **RUN).numpy()
    assert not np.array_equal(one, fgsm(model, x, y, 0.3, **RUN).numpy())
    xb, yb = batch
    assert not np.array_equal(cospgd(net, xb, yb, 0.3, steps=1, alpha=0.3, random_start=False, **RUN).numpy(),
                              fgsm(net, xb, yb, 0.3, **RUN).numpy())


@pytest.mark.parametrize("attack", [cospgd, targeted_cospgd])
def test_seeding_and_linf_ball(net, batch, attack):
    x, y = batch
    x = np.clip(x, -1.5, 1.5)
    eps = np.array([0.1, 0.3, 0.6], np.float32)
    a = attack(net, x, y, eps, steps=2, seed=5, clip=(-1.5, 1.5), **RUN).numpy()
    np.testing.assert_array_equal(a, attack(net, x, y, eps, steps=2, seed=5, clip=(-1.5, 1.5), **RUN).numpy())
    assert not np.array_equal(a, attack(net, x, y, eps, steps=2, seed=6, clip=(-1.5, 1.5), **RUN).numpy())
    for adv in (a, attack(net, x, y, eps, steps=2, restarts=2, best_iterate=True, **RUN).numpy()):
        dist = np.abs(adv - x).max(axis=(1, 2, 3))
        assert np.all(dist <= eps + 1e-6) and np.all(dist > eps - 0.01)
    assert a.min() >= -1.5 and a.max() <= 1.5


def test_targeted_selections_keep_the_highest_dice_with_the_target(net, batch):
    x, y = batch
    target = background_target(y).numpy() + np.pad(np.ones((3, 8, 8, 1)), [(0, 0), (12, 12), (12, 12), (0, 0)])

    def dice_to_target(adv):
        return np.array([dice_np(p, t) for p, t in zip(predict(net, adv).numpy(), target, strict=True)])

    last = dice_to_target(targeted_cospgd(net, x, target, 0.5, steps=3, seed=1, **RUN))
    assert np.all(dice_to_target(targeted_cospgd(net, x, target, 0.5, steps=3, seed=1, best_iterate=True, **RUN))
                  >= last)
    assert np.all(dice_to_target(targeted_cospgd(net, x, target, 0.5, steps=3, seed=1, restarts=3, **RUN)) >= last)


def test_runner_runs_both_with_the_batch_seed_and_target(net, batch):
    x, y = batch
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "mask": y})
    for name, direct in (("cospgd", lambda: cospgd(net, x, y, 0.3, steps=2, seed=(4, 0), **RUN)),
                         ("targeted_cospgd",
                          lambda: targeted_cospgd(net, x, np.ones_like(y), 0.3, steps=2, seed=(4, 0), **RUN))):
        extra = {"target": "foreground"} if name == "targeted_cospgd" else {}
        rows = list(attack_dataset(net, ds, [0.3], attack=name, batch_size=3, steps=2, seed=4, return_images=True,
                                   **extra, **RUN))
        np.testing.assert_allclose(np.stack([r["adversarial"] for r in rows]), direct().numpy(), atol=1e-6)
        assert "loss" not in ATTACKS[name].options
    assert {"target", "restarts", "best_iterate", "step_factor"} <= ATTACKS["targeted_cospgd"].options
    with pytest.raises(ValueError, match="cospgd takes no loss"):
        cospgd(net, x, y, 0.3, loss="bce")
