"""Fixtures shared by the attack tests."""

import keras
import pytest
from attack_cases import disks, tiny_net


@pytest.fixture(scope="session")
def trained() -> keras.Model:
    """A tiny net trained to segment the disks (a few seconds on CPU), once for all attack tests."""
    model = tiny_net(seed=3)
    x, y = disks(96, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=25, verbose=0)
    return model
