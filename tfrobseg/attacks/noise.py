"""Random sign noise of the attack's size: the control that separates an attack from mere noise.

    x_noise = clip(x + ε · s),   s ∈ {−1, +1} per pixel, independent and equally likely

It has the same L∞ (and L2) norm as an FGSM perturbation of strength ε but no gradient information,
so a model that fails under FGSM and not under sign noise is attacked, not just noisy.
"""

from __future__ import annotations

import tensorflow as tf

from tfrobseg.attacks.budget import check_epsilon, clip_bounds, epsilon_scale


def stateless_seed(seed: int | tuple[int, int]) -> tf.Tensor:
    """A stateless-RNG seed from an int or a pair (e.g. ``(seed, batch_number)``)."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        seed = (seed, 0)
    try:
        pair = [int(s) for s in seed]
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an int or a pair of ints, got {seed!r}") from None
    if len(pair) != 2:
        raise ValueError(f"seed must be an int or a pair of ints, got {seed!r}")
    return tf.constant(pair, tf.int64)


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
    eps = check_epsilon(eps)
    x = tf.convert_to_tensor(x, tf.float32)
    if eps == 0:
        return x
    lo, hi = clip_bounds(clip)
    bits = tf.random.stateless_uniform(tf.shape(x), seed=stateless_seed(seed), minval=0, maxval=2, dtype=tf.int32)
    sign = tf.cast(2 * bits - 1, tf.float32)
    return tf.clip_by_value(x + eps * epsilon_scale(x, relative_to) * sign, lo, hi)
