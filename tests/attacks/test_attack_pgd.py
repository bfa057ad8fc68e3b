"""PGD (tfrobseg.attacks.pgd): seeded random start; without it, i-FGSM. The PGD-family options (momentum,
best iterate, restarts, step rule) against NumPy on a closed-form model."""

import numpy as np
import pytest
import tensorflow as tf
from attack_cases import disk_batch, tiny_net
from closed_form import (
    SIZE,
    image_dice_np,
    input_gradient_np,
    pair_model,
    predict_np,
    project_np,
    sample,
)

from tfrobseg.attacks import fgsm, ifgsm, pgd, predict
from tfrobseg.attacks.gradient import gradient_count
from tfrobseg.attacks.iterative import restart_seed

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")


def test_pgd_seeding_and_without_random_start_is_ifgsm(net, batch):
    x, y = batch
    a, b = pgd(net, x, y, 0.3, steps=2, seed=5), pgd(net, x, y, 0.3, steps=2, seed=5)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), pgd(net, x, y, 0.3, steps=2, seed=6).numpy())
    np.testing.assert_array_equal(
        pgd(net, x, y, 0.3, steps=2, alpha=0.1, random_start=False).numpy(),
        ifgsm(net, x, y, 0.3, steps=2, alpha=0.1).numpy(),
    )


# --- PGD-family options: momentum, best iterate, restarts, step rule ---------------------------


def near_threshold(y_true, y_pred):
    """−mean((p − c)²) with c = 0.55 − 0.1·y just on the wrong side of 0.5: ascending it pulls p to c, and
    sign steps overshoot, so p swings across the threshold — gradients flip sign and the Dice is not
    monotone over the iterates (what momentum and best_iterate act on)."""
    c = 0.55 - 0.1 * y_true
    return -tf.reduce_mean((y_pred - c) ** 2)


def near_threshold_gradient(adv, y):
    """∂/∂x of each image's near_threshold loss on the pair model: ∂/∂z = −2(p − c)·p(1 − p)/(H·W)."""
    p = predict_np(adv)
    return input_gradient_np(-2 * (p - (0.55 - 0.1 * y)) * p * (1 - p) / (SIZE * SIZE))


def pgd_np(x, y, eps, steps, alpha, *, momentum=0.0, normalise=True, best_iterate=False):
    """x_{k+1} = Π(x_k + α·sign(g_{k+1})), g_{k+1} = μ·g_k + ∇ₖ/‖∇ₖ‖₁ per image (μ = 0: sign(∇ₖ));
    best_iterate: per image the iterate x₀ … x_T of lowest Dice, ties to the later one."""
    x64 = x.astype(np.float64)
    adv, accumulated, iterates = x64, 0.0, [x64]
    for _ in range(steps):
        grad = near_threshold_gradient(adv, y)
        if momentum:
            accumulated = momentum * accumulated + (
                grad / np.abs(grad).sum(axis=(1, 2, 3), keepdims=True) if normalise else grad)
            step = np.sign(accumulated)
        else:
            step = np.sign(grad)
        adv = project_np(adv + alpha * step, x64, eps)
        iterates.append(adv)
    if not best_iterate:
        return adv
    dice = np.stack([image_dice_np(predict_np(it), y) for it in iterates])  # (T + 1, B)
    pick = len(iterates) - 1 - np.argmin(dice[::-1], axis=0)  # the last of the lowest
    return np.stack([iterates[k][i] for i, k in enumerate(pick)]), dice, pick


@pytest.fixture(scope="module")
def model():
    return pair_model()


def test_momentum_two_steps_match_numpy(model):
    x, y = sample(3)
    adv = pgd(model, x, y, 1.0, steps=2, alpha=0.3, random_start=False, momentum=0.9, loss=near_threshold,
              jit_compile=False).numpy()
    expected = pgd_np(x, y, 1.0, 2, 0.3, momentum=0.9)
    np.testing.assert_allclose(adv, expected, atol=2e-6)
    # Premise: the accumulation and its L1 normalisation both change the second step.
    assert not np.allclose(pgd_np(x, y, 1.0, 2, 0.3), expected)
    assert not np.allclose(pgd_np(x, y, 1.0, 2, 0.3, momentum=0.9, normalise=False), expected)
    # And without momentum the loop is plain sign steps.
    np.testing.assert_allclose(pgd(model, x, y, 1.0, steps=2, alpha=0.3, random_start=False, loss=near_threshold,
                                   jit_compile=False), pgd_np(x, y, 1.0, 2, 0.3), atol=2e-6)


@pytest.mark.parametrize("seed", [3, 0])
def test_best_iterate_matches_numpy(model, seed):
    x, y = sample(seed)
    adv = pgd(model, x, y, 1.0, steps=3, alpha=0.3, random_start=False, best_iterate=True, loss=near_threshold,
              jit_compile=False).numpy()
    expected, dice, pick = pgd_np(x, y, 1.0, 3, 0.3, best_iterate=True)
    np.testing.assert_allclose(adv, expected, atol=2e-6)
    assert np.any(pick < 3) and np.any(dice.min(axis=0) < dice[-1])  # premise: not always the last iterate
    if seed == 0:  # premise: an image with its lowest Dice at two iterates before the last (the later is kept)
        assert any((dice[:, i] == dice[:, i].min()).sum() > 1 and dice[-1, i] > dice[:, i].min()
                   for i in range(len(x)))


def test_restarts_keep_per_image_the_lowest_dice_run(net, batch):
    x, y = batch
    runs = [pgd(net, x, y, 0.5, steps=2, seed=tuple(int(s) for s in restart_seed(9, r)), jit_compile=False).numpy()
            for r in range(3)]
    dice = np.stack([image_dice_np(predict(net, run).numpy(), y) for run in runs])  # (restarts, B)
    assert len({tuple(d) for d in dice}) > 1  # premise: the restarts differ
    best = np.argmin(dice, axis=0)  # the first of the lowest
    expected = np.stack([runs[r][i] for i, r in enumerate(best)])
    got = pgd(net, x, y, 0.5, steps=2, seed=9, restarts=3, jit_compile=False).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(runs[0], pgd(net, x, y, 0.5, steps=2, seed=9, jit_compile=False).numpy())


def test_selections_never_raise_the_dice(net, batch):
    x, y = batch

    def dice(adv):
        return image_dice_np(predict(net, adv).numpy(), y)

    run = {"steps": 3, "seed": 2, "jit_compile": False}
    last = dice(pgd(net, x, y, 0.5, **run))
    assert np.all(dice(pgd(net, x, y, 0.5, restarts=3, **run)) <= last)
    assert np.all(dice(pgd(net, x, y, 0.5, best_iterate=True, **run)) <= last)
    last_ifgsm = dice(ifgsm(net, x, y, 0.5, steps=3, jit_compile=False))
    assert np.all(dice(ifgsm(net, x, y, 0.5, steps=3, best_iterate=True, jit_compile=False)) <= last_ifgsm)


def test_step_rule_and_one_step_momentum_is_fgsm(net, batch):
    x, y = batch
    run = {"steps": 3, "jit_compile": False}
    np.testing.assert_array_equal(ifgsm(net, x, y, 0.3, step_factor=2.5, **run),
                                  ifgsm(net, x, y, 0.3, alpha=2.5 * 0.3 / 3, **run))
    np.testing.assert_array_equal(pgd(net, x, y, 0.3, step_factor=1.0, seed=1, **run),
                                  pgd(net, x, y, 0.3, alpha=0.3 / 3, seed=1, **run))
    assert not np.array_equal(pgd(net, x, y, 0.3, seed=1, **run), pgd(net, x, y, 0.3, alpha=0.3 / 3, seed=1, **run))
    # One step of α = ε from x: the direction ∇/‖∇‖₁ has the gradient's sign, so MI-FGSM's first step is FGSM.
    np.testing.assert_array_equal(ifgsm(net, x, y, 0.4, steps=1, alpha=0.4, momentum=0.9),
                                  fgsm(net, x, y, 0.4))
    np.testing.assert_array_equal(pgd(net, x, y, 0.4, steps=1, alpha=0.4, random_start=False), fgsm(net, x, y, 0.4))


def test_gradient_cost_is_steps_times_restarts(net, batch):
    x, y = batch
    before = gradient_count()
    pgd(net, x, y, 0.3, steps=3, restarts=2, best_iterate=True, jit_compile=False)
    assert gradient_count() - before == 3 * 2 * len(x)


class ExplodingModel:
    def __call__(self, *args, **kwargs):
        raise AssertionError("the model was called before the arguments were checked")


@pytest.mark.parametrize("kwargs, match", [
    ({"momentum": 1.5}, "momentum"),
    ({"restarts": 0}, "restarts"),
    ({"best_iterate": "yes"}, "best_iterate"),
    ({"step_factor": 0.0}, "step_factor"),
    ({"step_factor": 2.5, "alpha": 0.1}, "not both"),
    ({"restarts": 2, "random_start": False}, "needs random_start"),
])
def test_bad_options_fail_before_any_work(batch, kwargs, match):
    x, y = batch
    with pytest.raises(ValueError, match=match):
        pgd(ExplodingModel(), x, y, 0.3, **kwargs)
