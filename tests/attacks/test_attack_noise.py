"""The sign-noise control (tfrobseg.attacks.noise)."""

import numpy as np
import pytest
from attack_cases import disk_batch

from tfrobseg.attacks import sign_noise

batch = pytest.fixture(disk_batch, scope="module", name="batch")


def test_sign_noise_is_seeded_plus_minus_eps(batch):
    x, _ = batch
    noise = sign_noise(x, 0.5, seed=3).numpy() - x
    np.testing.assert_allclose(np.abs(noise), 0.5, atol=1e-6)
    assert 0.45 < (noise > 0).mean() < 0.55
    np.testing.assert_array_equal(sign_noise(x, 0.5, seed=3).numpy() - x, noise)
    assert not np.array_equal(sign_noise(x, 0.5, seed=4).numpy() - x, noise)
