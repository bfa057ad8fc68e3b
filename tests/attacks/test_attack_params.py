"""Parameter validation of the attacks (tfrobseg.attacks.params): every bad argument is a ValueError."""

import pytest
from attack_cases import disk_batch, tiny_net

from tfrobseg.attacks.fgsm import fgsm, fgsm_sweep
from tfrobseg.attacks.gradient import gradient_sign
from tfrobseg.attacks.iterative import ifgsm, targeted_ifgsm
from tfrobseg.attacks.noise import sign_noise
from tfrobseg.attacks.params import AttackOptions, check_params, keyword_options
from tfrobseg.attacks.pgd import pgd

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")


def test_bad_arguments_raise_value_error(net, batch):
    x, y = batch
    for call in (
        lambda: fgsm(net, x, y, -0.1),
        lambda: fgsm(net, x, y, float("nan")),
        lambda: fgsm(net, x, y, 0.1, clip=(1.0, -1.0)),
        lambda: fgsm(net, x, y, 0.1, relative_to="median"),
        lambda: fgsm_sweep(net, x, y, []),
        lambda: fgsm_sweep(net, x, y, [0.1], forward_batch=0),
        lambda: ifgsm(net, x, y, 0.1, steps=0),
        lambda: pgd(net, x, y, 0.1, seed=(1, 2, 3)),
        lambda: gradient_sign(net, x, y, loss_scale=0.0),
    ):
        with pytest.raises(ValueError):
            call()


class ExplodingModel:
    """Stands in for a model: calling it is an error, so a check that comes after any work fails the test."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model was called before the arguments were checked")


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: fgsm(m, x, y, 0.1, relative_to="median"), "relative_to"),
    (lambda m, x, y: fgsm(m, x, y, 0.0, clip=(1.0, -1.0)), "clip"),  # checked even when ε = 0 skips the attack
    (lambda m, x, y: fgsm(m, x, y, 0.1, loss="no_such_loss"), "no_such_loss"),
    (lambda m, x, y: fgsm(m, x, y, 0.1, loss_scale=-1.0), "loss_scale"),
    (lambda m, x, y: fgsm(m, x, y, 0.1, steps=3), "unknown attack option.*steps"),
    (lambda m, x, y: fgsm_sweep(m, x, y, [0.1], forward_batch=0), "forward_batch"),
    (lambda m, x, y: ifgsm(m, x, y, 0.1, steps=0), "steps"),
    (lambda m, x, y: ifgsm(m, x, y, 0.1, alpha=-0.1), "alpha"),
    (lambda m, x, y: targeted_ifgsm(m, x, y, 0.0, relative_to="median"), "relative_to"),
    (lambda m, x, y: pgd(m, x, y, 0.1, seed=(1, 2, 3)), "seed"),
    (lambda m, x, y: pgd(m, x, y, 0.1, random_start="yes"), "random_start"),
    (lambda m, x, y: pgd(m, x, y, 0.1, jit_compile="no"), "jit_compile"),
    (lambda m, x, y: sign_noise(x, 0.0, relative_to="median"), "relative_to"),
])
def test_attacks_check_every_argument_before_any_work(batch, call, match):
    x, y = batch
    with pytest.raises(ValueError, match=match):
        call(ExplodingModel(), x, y)


def test_attack_options_are_validated_on_construction():
    assert AttackOptions() == AttackOptions(loss="bce", clip=None, relative_to=None, loss_scale=2.0**15,
                                            jit_compile=True)
    assert AttackOptions.of(clip=(-1, 2)).clip == (-1.0, 2.0)
    with pytest.raises(ValueError, match="unknown attack option.*alpha.*valid: loss, clip"):
        AttackOptions.of(alpha=0.1)
    with pytest.raises(ValueError, match="relative_to"):
        AttackOptions(relative_to="median")


def test_check_params_by_name():
    assert check_params(steps=3, alpha=None, seed=4, clip=(0, 1)) == {
        "steps": 3, "alpha": None, "seed": (4, 0), "clip": (0.0, 1.0)}
    with pytest.raises(ValueError, match="unknown attack argument.*stesp"):
        check_params(stesp=3)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        check_params(steps=True)


def test_keyword_options_of_an_attack():
    assert keyword_options(ifgsm) == {"steps", "alpha", "step_factor", "momentum", "best_iterate", "loss", "clip",
                                      "relative_to", "loss_scale", "jit_compile"}
    assert keyword_options(sign_noise) == {"seed", "clip", "relative_to"}
