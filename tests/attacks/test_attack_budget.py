"""The perturbation budget every attack keeps (tfrobseg.attacks.budget): ε = 0, the L∞ ball, clip."""

import numpy as np
import pytest
from attack_cases import all_attacks, disk_batch, tiny_net

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")


def test_epsilon_zero_returns_the_input(net, batch):
    x, y = batch
    for name, adv in all_attacks(net, x, y, 0.0).items():
        np.testing.assert_array_equal(adv.numpy(), x, err_msg=name)


@pytest.mark.parametrize("clip", [None, (-1.5, 1.5)])
def test_every_attack_stays_in_the_linf_ball(net, batch, clip):
    x, y = batch
    if clip is not None:
        x = np.clip(x, *clip)
    for name, adv in all_attacks(net, x, y, 0.3, clip=clip).items():
        adv = adv.numpy()
        assert np.abs(adv - x).max() <= 0.3 + 1e-6, name
        assert np.abs(adv - x).max() > 0.29, name  # and actually perturbs
        if clip is not None:
            assert adv.min() >= clip[0] and adv.max() <= clip[1], name
