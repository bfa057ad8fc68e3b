"""Tiny networks and batches for the defenses' tests, with the NumPy references of their losses and gradients.

``pixel_net``: p = σ(w·x + b) per pixel (a 1×1 ``logits`` convolution, then a sigmoid ``probabilities``),
whose BCE, KL and soft-Dice gradients have closed forms. ``bn_net``: convolution → batch norm → ReLU →
``logits`` → sigmoid, with moving statistics far from any batch's own (inference and training mode differ).
"""

import keras
import numpy as np

W, B = 1.7, -0.4
SIZE = 16


def pixel_net(w: float = W, b: float = B, size: int = SIZE, name: str = "pixel") -> keras.Model:
    inp = keras.Input((size, size, 1))
    conv = keras.layers.Conv2D(1, 1, dtype="float32", name="logits")
    out = keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(conv(inp))
    model = keras.Model(inp, out, name=name)
    conv.set_weights([np.full((1, 1, 1, 1), w, np.float32), np.array([b], np.float32)])
    return model


def bn_net(size: int = SIZE, filters: int = 3, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1))
    norm = keras.layers.BatchNormalization(name="norm")
    h = keras.layers.Activation("relu")(norm(keras.layers.Conv2D(filters, 3, padding="same", name="conv")(inp)))
    z = keras.layers.Conv2D(1, 1, dtype="float32", name="logits")(h)
    model = keras.Model(inp, keras.layers.Activation("sigmoid", dtype="float32", name="probabilities")(z),
                        name="bn_net")
    gamma, beta, _, _ = norm.get_weights()
    rng = np.random.default_rng(seed)
    norm.set_weights([gamma, beta, rng.normal(0.5, 0.5, filters).astype("float32"),
                      rng.uniform(2, 4, filters).astype("float32")])
    return model


def batch(n: int = 4, size: int = SIZE, seed: int = 0, soft: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images and masks; ``soft`` targets in (0, 1) make the sign of the BCE gradient (p − y)·w of the pixel
    net depend on the point where it is taken (with 0/1 masks it is the sign of w·(1 − 2y) everywhere)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, size, size, 1)).astype(np.float32)
    u = rng.uniform(size=x.shape).astype(np.float32)
    return x, u if soft else (u > 0.6).astype(np.float32)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def bce(y: np.ndarray, p: np.ndarray) -> float:
    """The batch's BCE: the mean over images of each image's mean over pixels (equal sizes: the mean)."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def bce_weight_gradient(x: np.ndarray, y: np.ndarray, w: float, b: float, temperature: float = 1.0) -> np.ndarray:
    """∂/∂(w, b) of the batch's BCE of σ((w·x + b) / T): ∂BCE/∂z = (σ(z/T) − y) / T per pixel."""
    g = (sigmoid((w * x + b) / temperature) - y) / temperature / x.size
    return np.array([np.sum(g * x), np.sum(g)])


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-pixel Bernoulli KL(p‖q), probabilities clipped to [1e-7, 1 − 1e-7]."""
    p, q = np.clip(p, 1e-7, 1 - 1e-7), np.clip(q, 1e-7, 1 - 1e-7)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def pixel_weights(model: keras.Model) -> np.ndarray:
    kernel, bias = model.get_layer("logits").get_weights()
    return np.array([kernel.item(), bias.item()])
