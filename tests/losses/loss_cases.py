"""NumPy references, random cases and a tiny trainable model shared by the loss tests."""

import keras
import numpy as np
import scipy.ndimage as ndi
import tensorflow as tf

from tfrobseg import losses as L

RNG = np.random.default_rng(1234)

EPS = 1e-7


# ----------------------------------------------------------------------------- NumPy references
def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_logit(p):
    return np.log(p) - np.log1p(-p)


def np_bce(g, p):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    return -(g * np.log(p) + (1 - g) * np.log(1 - p)).reshape(len(g), -1).mean(1)


def _sums(x, pooled):
    """Per-sample, per-channel sums over (H, W); pooled: the batch's total, repeated for every sample."""
    per_sample = x.sum((1, 2))
    return np.broadcast_to(per_sample.sum(0, keepdims=True), per_sample.shape) if pooled else per_sample


def np_counts(g, p, pooled=True):
    return _sums(p * g, pooled), _sums(p * (1 - g), pooled), _sums((1 - p) * g, pooled)


def np_dice(g, p, s=1.0, pooled=True):
    num = 2 * _sums(p * g, pooled) + s
    den = _sums(p, pooled) + _sums(g, pooled) + s
    return (1 - num / den).mean(-1)


def np_tversky(g, p, a, b, s=1.0, pooled=True):
    tp, fp, fn = np_counts(g, p, pooled)
    return (1 - (2 * tp + s) / (2 * tp + 2 * a * fp + 2 * b * fn + s)).mean(-1)


def np_focal(g, p, alpha, gamma):
    p = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    pt = np.where(g == 1, p, 1 - p)
    w = 1.0 if alpha is None else np.where(g == 1, alpha, 1 - alpha)
    return (-w * (1 - pt) ** gamma * np.log(pt)).reshape(len(g), -1).mean(1)


def np_hard(e, r, k):
    xor = np.logical_xor(e > 0.5, r > 0.5)
    if k == 1:
        return xor.astype(float)
    struct = np.ones((1, k, k, 1), bool)
    return ndi.binary_dilation(xor, structure=struct).astype(float)


def np_ag_bce(y2, p, hw=4.0, ew=1.0, k=1):
    e, r = y2[..., :1], y2[..., 1:]
    hard = np_hard(e, r, k)
    w = hw * hard + ew * (1 - hard)
    pc = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    bce = -(e * np.log(pc) + (1 - e) * np.log(1 - pc))
    return (w * bce).reshape(len(p), -1).mean(1)


def np_adaptive_focal(y2, p, gamma=2.0, k=3, min_gamma=0.1):
    e, r = y2[..., :1], y2[..., 1:]
    hard = np_hard(e, r, k)
    pc = np.clip(p.astype(np.float64), EPS, 1 - EPS)
    pt = np.where(e == 1, pc, 1 - pc)
    f = -((1 - pt) ** gamma) * np.log(pt)
    out = []
    for i in range(len(p)):
        g_adapt = max(1 - p[i].mean() + np.logical_xor(e[i] > 0.5, r[i] > 0.5).mean(), min_gamma)
        out.append((g_adapt * (f[i] * hard[i]).sum() + (f[i] * (1 - hard[i])).sum() / g_adapt) / p[i].size)
    return np.array(out)


# ----------------------------------------------------------------------------- cases
def rand_case(shape=(3, 12, 12, 1)):
    g = (RNG.random(shape) > 0.6).astype(np.float32)
    p = RNG.uniform(0.02, 0.98, shape).astype(np.float32)
    return g, p


def two_reader(shape=(3, 12, 12, 1)):
    e, p = rand_case(shape)
    r = e.copy()
    flip = RNG.random(shape) > 0.85
    r[flip] = 1 - r[flip]
    return np.concatenate([e, r], -1), p


def val(loss, y, p):
    return np.asarray(loss(tf.constant(y), tf.constant(p)))


def fg_mask(n_fg, size=4):
    m = np.zeros((1, size, size, 1), np.float32)
    m.reshape(-1)[:n_fg] = 1
    return m


def inputs_for(name, g, p):
    if name in L.SECOND_READER_LOSSES:
        return np.concatenate([g, g], -1), p
    return g, p


# ----------------------------------------------------------------------------- training
def tiny_model(size, *, logits=False, seed=0):
    """Two 3x3 convolutions and a 1x1 head: enough to fit a mask, small enough for CPU tests."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    outputs = keras.layers.Conv2D(1, 1, activation=None if logits else "sigmoid")(h)
    return keras.Model(inputs, outputs)


def toy_batch(n=4, size=32, seed=0):
    """Noisy images of bright discs; second reader = expert mask dilated by one pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = []
    for _ in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.12, size * 0.25)
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32))
    mask = np.stack(masks)[..., None]
    image = (mask + 0.3 * rng.normal(size=mask.shape)).astype(np.float32)
    second = ndi.binary_dilation(mask > 0, structure=np.ones((1, 3, 3, 1), bool)).astype(np.float32)
    return image, mask, second
