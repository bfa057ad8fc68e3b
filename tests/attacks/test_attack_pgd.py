"""PGD (tfrobseg.attacks.pgd): seeded random start; without it, i-FGSM."""

import numpy as np
import pytest
from attack_cases import disk_batch, tiny_net

from tfrobseg.attacks import ifgsm, pgd

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
