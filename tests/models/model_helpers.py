"""Shared helpers of the model tests: the tiny sizes they use, one cached model per name, random batches.

A plain module (not a conftest.py, whose name every test folder would share): the model test files import
it as ``from model_helpers import ...``, which works because pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

import keras
import numpy as np

from tfrobseg.models import build_model

SIZE = 32
FILTERS = (4, 8, 16)
# A small transformer keeps the unet_vit tests fast; its defaults are exercised by test_unet_vit_defaults.
SMALL = {"unet_vit": {"embed_dim": 16, "num_heads": 2, "mlp_dim": 32}}
_CACHE: dict[str, keras.Model] = {}


def small_model(name: str) -> keras.Model:
    """One tiny model per name, shared by the per-name tests (building dominates their cost)."""
    if name not in _CACHE:
        keras.utils.set_random_seed(0)
        _CACHE[name] = build_model(name, (SIZE, SIZE, 1), filters=FILTERS, **SMALL.get(name, {}))
    return _CACHE[name]


def batch(n: int = 2, size: int = SIZE, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype("float32")
