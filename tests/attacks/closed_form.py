"""A model whose input gradient has a closed form, and the NumPy pieces the attack references are built from.

``pair_model``: one (1, 2) convolution and a sigmoid, p_j = σ(K0·x_j + K1·x_{j+1} + BIAS) along the width
(x beyond the last column is 0, Keras' "same" padding of an even kernel). Every input pixel feeds two
output pixels with weights of opposite sign, so the input gradient of a weighted per-pixel loss is
a sum whose sign depends on the weights: for ∂L/∂z_j = r_j,

    ∂L/∂x_j = K0·r_j + K1·r_{j−1}      (r_{−1} = 0)

and a per-pixel weighting (SegPGD's λ, CosPGD's cosine) changes which way the attack steps.
"""

import keras
import numpy as np

K0, K1, BIAS = 1.7, -1.2, -0.4
SIZE = 8


def pair_model(size: int = SIZE) -> keras.Model:
    inp = keras.Input((size, size, 1))
    conv = keras.layers.Conv2D(1, (1, 2), padding="same", activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.array([K0, K1], np.float32).reshape(1, 2, 1, 1), np.array([BIAS], np.float32)])
    return model


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def predict_np(x: np.ndarray) -> np.ndarray:
    """p = σ(K0·x_j + K1·x_{j+1} + BIAS), in float64."""
    x = np.asarray(x, np.float64)
    right = np.zeros_like(x)
    right[:, :, :-1] = x[:, :, 1:]
    return sigmoid(K0 * x + K1 * right + BIAS)


def input_gradient_np(r: np.ndarray) -> np.ndarray:
    """∂L/∂x from the per-pixel ∂L/∂z = r: K0·r_j + K1·r_{j−1}."""
    left = np.zeros_like(r)
    left[:, :, 1:] = r[:, :, :-1]
    return K0 * r + K1 * left


def bce_np(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-pixel BCE, p clipped to [1e-7, 1 − 1e-7]."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def image_dice_np(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(B,)`` Dice of (p > 0.5) against (y > 0.5) per image, 1 where both are empty."""
    a, b = p > 0.5, y > 0.5
    inter = (a & b).sum(axis=(1, 2, 3))
    total = a.sum(axis=(1, 2, 3)) + b.sum(axis=(1, 2, 3))
    return np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)


def sample(seed: int = 0, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Inputs around the model's threshold and a random binary mask, float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 0.6, size=(n, SIZE, SIZE, 1)).astype(np.float32)
    y = (rng.uniform(size=x.shape) > 0.5).astype(np.float32)
    return x, y


def project_np(adv: np.ndarray, x: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    return np.clip(adv, x - eps, x + eps)
