"""Models, data and references shared by the attack tests."""

import functools

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks import (
    fgsm,
    fgsm_sweep,
    foreground_target,
    ifgsm,
    pgd,
    sign_noise,
    targeted_ifgsm,
)

SIZE = 32
GRID = [0.0, 0.1, 0.25, 0.5, 1.0]


def tiny_net(seed: int = 0, size: int = SIZE) -> keras.Model:
    """Two 3×3 convolutions and a sigmoid head: enough to have a non-trivial input gradient."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(h)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(h)
    return keras.Model(inp, out)


@functools.cache
def trained_net() -> keras.Model:
    """A tiny net trained to segment the disks (a few seconds on CPU), trained once per test process."""
    model = tiny_net(seed=3)
    x, y = disks(96, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=25, verbose=0)
    return model


def reference_sign(model, x, y, loss) -> np.ndarray:
    """sign(∇ₓ loss(y, model(x))) of each image on its own (eq. 1), by an eager tape in inference mode,
    outside tfrobseg's cache."""
    signs = []
    for i in range(len(x)):
        xi = tf.constant(x[i:i + 1])
        with tf.GradientTape() as tape:
            tape.watch(xi)
            value = tf.reduce_sum(loss(tf.constant(y[i:i + 1]), model(xi, training=False)))
        signs.append(np.sign(tape.gradient(value, xi).numpy()))
    return np.concatenate(signs)


def disks(n: int, seed: int, size: int = SIZE):
    """Noisy bright disks at random places (image) and the disk (mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(9, size - 9, (2, n))
    r = rng.uniform(4, 7, n)
    mask = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 <= r[:, None, None] ** 2)
    image = mask * 2.0 - 1.0 + rng.normal(0, 0.5, mask.shape)
    return image[..., None].astype(np.float32), mask[..., None].astype(np.float32)


def disk_batch():
    """The default batch of the attack tests: three noisy disks."""
    return disks(3, seed=1)


def soft_dice_loss(y_true, y_pred):
    """1 − soft Dice per sample, mean over the batch (Liu et al. eq. 5 with γ = 1)."""
    inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
    total = tf.reduce_sum(y_true, axis=[1, 2, 3]) + tf.reduce_sum(y_pred, axis=[1, 2, 3])
    return tf.reduce_mean(1.0 - (2.0 * inter + 1.0) / (total + 1.0))


def bce_np(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def dice_np(a, b):
    a, b = a > 0.5, b > 0.5
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def all_attacks(model, x, y, eps, clip=None):
    return {
        "fgsm": fgsm(model, x, y, eps, clip=clip),
        "sweep": fgsm_sweep(model, x, y, [eps], clip=clip, return_images=True)[1][0],
        "ifgsm": ifgsm(model, x, y, eps, steps=3, clip=clip),
        "ifgsm_big_alpha": ifgsm(model, x, y, eps, steps=3, alpha=eps, clip=clip),
        "targeted": targeted_ifgsm(model, x, foreground_target(y), eps, steps=3, loss=soft_dice_loss, clip=clip),
        "pgd": pgd(model, x, y, eps, steps=3, seed=1, clip=clip),
        "noise": sign_noise(x, eps, seed=1, clip=clip),
    }
