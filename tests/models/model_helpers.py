"""Shared helpers of the model tests: the tiny sizes they use, one cached model per name, random batches.

A plain module (not a conftest.py, whose name every test folder would share): the model test files import
it as ``from model_helpers import ...``, which works because pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

import keras
import numpy as np

from tfrobseg.models import build_model, model_spatial_rank

SIZE = 32
#: Depth of the tiny volumes the 3D models get (a multiple of 2^(depth-1) = 4 for FILTERS).
SLICES = 8
FILTERS = (4, 8, 16)
# A small transformer keeps the unet_vit tests fast; its defaults are exercised by test_unet_vit_defaults.
SMALL = {"unet_vit": {"embed_dim": 16, "num_heads": 2, "mlp_dim": 32}}
_CACHE: dict[str, keras.Model] = {}


def input_shape(name: str, channels: int = 1) -> tuple[int, ...]:
    """The tiny input of model ``name``: a SIZE x SIZE slice, or a SLICES x SIZE x SIZE volume for 3D models."""
    spatial = (SIZE, SIZE) if model_spatial_rank(name) == 2 else (SLICES, SIZE, SIZE)
    return (*spatial, channels)


def small_model(name: str) -> keras.Model:
    """One tiny model per name, shared by the per-name tests (building dominates their cost)."""
    if name not in _CACHE:
        keras.utils.set_random_seed(0)
        _CACHE[name] = build_model(name, input_shape(name), filters=FILTERS, **SMALL.get(name, {}))
    return _CACHE[name]


def batch(n: int = 2, size: int = SIZE, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype("float32")


def inputs_for(model: keras.Model, n: int = 2, seed: int = 0) -> np.ndarray:
    """Random z-score-like inputs of ``model``'s (static) input shape: slices or volumes."""
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape[1:])).astype("float32")
