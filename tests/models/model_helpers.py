"""Shared helpers of the model tests: the tiny sizes they use, one cached model per name, random batches.

A plain module (not a conftest.py, whose name every test folder would share): the model test files import
it as ``from model_helpers import ...``, which works because pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

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


def hard_dice(prob: np.ndarray, gt: np.ndarray) -> float:
    """Dice of the prediction thresholded at 0.5 against a binary ``gt``."""
    pred = prob > 0.5
    return 2 * np.logical_and(pred, gt > 0).sum() / (pred.sum() + (gt > 0).sum())


def fit_toy(model: keras.Model, x: np.ndarray, y: np.ndarray, rounds: int, steps: int = 10) -> list[float]:
    """Adam (1e-2) on BCE + soft Dice, ``steps`` steps per round, until the inference Dice exceeds 0.9 or
    ``rounds`` rounds are done; returns the Dice after each round (the models' toy-fit tests)."""
    optimizer = keras.optimizers.Adam(1e-2)
    bce = keras.losses.BinaryCrossentropy()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            prob = model(x, training=True)
            soft_dice = (2 * tf.reduce_sum(prob * y) + 1) / (tf.reduce_sum(prob) + tf.reduce_sum(y) + 1)
            loss = bce(y, prob) + 1 - soft_dice
        optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)

    scores: list[float] = []
    for _ in range(rounds):
        for _ in range(steps):
            step()
        scores.append(hard_dice(model(x, training=False).numpy(), y))
        if scores[-1] > 0.9:
            break
    return scores


def bn(c: int) -> int:  # gamma, beta, moving mean, moving variance
    return 4 * c


def unet_params(filters, c_in=1, n_classes=1, rank=2) -> int:
    """Hand count of a U-Net of ``rank`` 2 or 3: 3^rank-voxel convs without bias + BN, 2^rank-voxel transposed
    convs with bias, 1-voxel head with bias."""
    k, up = 3**rank, 2**rank
    total, prev = 0, c_in
    for f in filters:  # encoder levels and bottleneck
        total += k * prev * f + bn(f) + k * f * f + bn(f)
        prev = f
    for f in reversed(filters[:-1]):  # decoder: up-conv, then double conv on the 2f-channel concat
        total += up * prev * f + f + k * 2 * f * f + bn(f) + k * f * f + bn(f)
        prev = f
    return total + prev * n_classes + n_classes
