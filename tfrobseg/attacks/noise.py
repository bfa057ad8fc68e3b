"""Random sign noise of the attack's size: the control that separates an attack from mere noise.

    x_noise = clip(x + ε · s),   s ∈ {−1, +1} per pixel, independent and equally likely

It has the same L∞ (and L2) norm as an FGSM perturbation of strength ε but no gradient information,
so a model that fails under FGSM and not under sign noise is attacked, not just noisy.
"""

from __future__ import annotations

import tensorflow as tf

from tfrobseg.attacks.budget import (
    check_clip,
    check_epsilon,
    check_relative_to,
    signed_step,
)
from tfrobseg.attacks.params import check_seed


def stateless_seed(seed: int | tuple[int, int]) -> tf.Tensor:
    """A stateless-RNG seed from an int or a pair (e.g. ``(seed, batch_number)``)."""
    return tf.constant(check_seed(seed), tf.int64)


def sign_noise(
    x: tf.Tensor,
    eps: float,
    *,
    seed: int | tuple[int, int] = 0,
    clip: tuple[float, float] | None = None,
    relative_to: str | None = None,
) -> tf.Tensor:
    """``x`` plus ε times an independent random ±1 per pixel (reproducible for a given ``seed``).

    ε, ``clip`` and ``relative_to`` mean what they mean for :func:`tfrobseg.attacks.fgsm`.
    """
    eps, seed_pair = check_epsilon(eps), stateless_seed(seed)
    clip, relative_to = check_clip(clip), check_relative_to(relative_to)
    x = tf.convert_to_tensor(x, tf.float32)
    if eps == 0:
        return x
    bits = tf.random.stateless_uniform(tf.shape(x), seed=seed_pair, minval=0, maxval=2, dtype=tf.int32)
    sign = tf.cast(2 * bits - 1, tf.float32)
    return signed_step(x, eps, sign, clip, relative_to)
