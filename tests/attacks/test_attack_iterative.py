"""i-FGSM and ti-FGSM (tfrobseg.attacks.iterative): default steps, FGSM as one step, effect on a trained model."""

import numpy as np
import pytest
from attack_cases import (
    bce_np,
    dice_np,
    disk_batch,
    disks,
    reference_sign,
    soft_dice_loss,
    tiny_net,
    trained_net,
)

from tfrobseg.attacks import (
    fgsm,
    ifgsm,
    pgd,
    predict,
    resolve_loss,
    shifted_target,
    sign_noise,
    targeted_ifgsm,
)

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")


trained = pytest.fixture(trained_net, scope="module", name="trained")


def test_iterative_default_steps_and_alpha(net, batch):
    # i-FGSM: 10 steps of α = ε / steps (Liu et al.: α·N = ε). PGD: 10 steps of α = 2.5·ε / steps.
    x, y = batch
    eps = 0.3
    run = {"jit_compile": False}
    default = ifgsm(net, x, y, eps, **run).numpy()
    np.testing.assert_array_equal(default, ifgsm(net, x, y, eps, steps=10, alpha=eps / 10, **run).numpy())
    assert not np.array_equal(default, ifgsm(net, x, y, eps, steps=10, alpha=2 * eps / 10, **run).numpy())
    three = ifgsm(net, x, y, eps, steps=3, **run).numpy()
    np.testing.assert_array_equal(three, ifgsm(net, x, y, eps, steps=3, alpha=eps / 3, **run).numpy())
    assert not np.array_equal(three, ifgsm(net, x, y, eps, steps=3, alpha=2 * eps / 3, **run).numpy())
    # Against an eager re-implementation of the iteration x_{k+1} = Π(x_k + α·sign(∇L)).
    expected = x.copy()
    for _ in range(3):
        expected = np.clip(expected + eps / 3 * reference_sign(net, expected, y, resolve_loss("bce")), x - eps, x + eps)
    assert np.mean(np.isclose(three, expected, atol=1e-6)) > 0.995
    pgd_default = pgd(net, x, y, eps, seed=2, **run).numpy()
    np.testing.assert_array_equal(pgd_default, pgd(net, x, y, eps, steps=10, alpha=2.5 * eps / 10, seed=2, **run).numpy())
    assert not np.array_equal(pgd_default, pgd(net, x, y, eps, steps=10, alpha=eps / 10, seed=2, **run).numpy())


def test_ifgsm_one_step_alpha_eps_equals_fgsm(net, batch):
    x, y = batch
    np.testing.assert_array_equal(ifgsm(net, x, y, 0.4, steps=1, alpha=0.4).numpy(), fgsm(net, x, y, 0.4).numpy())
    # The default α is ε / steps (α·N = ε): one step is FGSM as well.
    np.testing.assert_array_equal(ifgsm(net, x, y, 0.4, steps=1).numpy(), fgsm(net, x, y, 0.4).numpy())


def test_attacks_raise_the_loss_of_a_trained_model(trained):
    x, y = disks(8, seed=9)
    clean = bce_np(y, predict(trained, x).numpy())
    noisy = bce_np(y, predict(trained, sign_noise(x, 0.3, seed=0)).numpy())
    adv_fgsm = bce_np(y, predict(trained, fgsm(trained, x, y, 0.3)).numpy())
    adv_ifgsm = bce_np(y, predict(trained, ifgsm(trained, x, y, 0.3, steps=5)).numpy())
    adv_pgd = bce_np(y, predict(trained, pgd(trained, x, y, 0.3, steps=5)).numpy())
    assert clean < 0.2
    # The gradient attacks beat random noise of the same L∞ size, which beats nothing.
    for adv in (adv_fgsm, adv_ifgsm, adv_pgd):
        assert adv > 2 * clean and adv > noisy


def test_targeted_attack_raises_dice_to_the_target(trained):
    x, y = disks(8, seed=9)
    target = shifted_target(y, (0, 6))
    clean = dice_np(predict(trained, x).numpy(), target.numpy())
    adv = targeted_ifgsm(trained, x, target, 1.0, steps=10, loss=soft_dice_loss)
    attacked = dice_np(predict(trained, adv).numpy(), target.numpy())
    assert attacked > clean + 0.2
    # An untargeted attack of the same size does not do that.
    assert dice_np(predict(trained, fgsm(trained, x, y, 1.0)).numpy(), target.numpy()) < clean
