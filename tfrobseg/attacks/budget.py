"""The perturbation budget: ε in input units or relative to the image, valid range, L∞ projection.

ε is in the units of the model input. In the study (Apostolidis et al.) the inputs are slices
of a volume z-scored with the mean and std of the whole N4-corrected volume, and ε ∈ {0.1, …, 1.0}
is added directly, so ε is in standard deviations of the patient's volume intensity (one std per
volume, not per slice). Two relative conventions are offered through ``relative_to``:

* ``"range"``: ε is a fraction of each image's intensity range, ``ε_i = ε · (max xᵢ − min xᵢ)``;
* ``"max"``: ε is a fraction of each image's maximum pixel magnitude, ``ε_i = ε · max |xᵢ|``
  (Liu et al.: "5 % of the maximum pixel magnitude", ε = 0.05 on images scaled to [0, 1]).

Both are computed per image (over all its pixels and channels), so a batch may mix budgets. ε itself
may also be given per image (a vector of length B, :func:`check_budget`): the runner stacks the copies
of a batch for every ε of the grid into one batch, so that one gradient call serves all of them.
``clip=(lo, hi)`` bounds the adversarial image when the input has a valid range; it is applied after
the L∞ projection, so ``‖x_adv − x‖∞ ≤ ε`` always holds for inputs inside the range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

RELATIVE_TO = (None, "range", "max")


def check_epsilon(eps: float, name: str = "eps") -> float:
    """Validate one ε: a finite number ≥ 0."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {eps!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {eps!r}")
    return value


def check_epsilons(epsilons: Sequence[float]) -> list[float]:
    """Validate a non-empty sequence of ε values."""
    if isinstance(epsilons, (int, float)):
        epsilons = [epsilons]
    values = [check_epsilon(e, "epsilons") for e in epsilons]
    if not values:
        raise ValueError("epsilons must contain at least one value")
    return values


def check_budget(eps: float | Sequence[float], name: str = "eps") -> float | np.ndarray:
    """Validate ε given for the whole batch (a number) or per image (a 1-D sequence, each finite ≥ 0)."""
    if np.ndim(eps) == 0:
        return check_epsilon(eps, name)
    values = np.asarray([check_epsilon(e, name) for e in np.ravel(eps)], np.float32)
    if np.ndim(eps) != 1 or not values.size:
        raise ValueError(f"{name} must be a number or a non-empty 1-D sequence (one per image), got shape {np.shape(eps)}")
    return values


def budget(x: tf.Tensor, eps: float | np.ndarray, relative_to: str | None) -> tf.Tensor:
    """The per-image L∞ radius in input units, shaped ``(B, 1, …, 1)``: ε (a number, or one per image)
    times :func:`epsilon_scale`."""
    scale = epsilon_scale(x, relative_to)
    if np.ndim(eps) == 0:
        return float(eps) * scale
    eps = np.asarray(eps, np.float32)
    if x.shape[0] is not None and eps.shape[0] != x.shape[0]:
        raise ValueError(f"per-image eps has {eps.shape[0]} values for a batch of {x.shape[0]} images")
    return tf.reshape(tf.constant(eps), [-1] + [1] * (scale.shape.rank - 1)) * scale


def batch_dice(pred: tf.Tensor, y: tf.Tensor, threshold: float = 0.5) -> tf.Tensor:
    """``(B,)`` Dice of each image's thresholded prediction (p > threshold) against its mask (y > 0.5);
    an image where both are empty scores 1. What "worst" means when an attack keeps, per image, the
    restart or iterate that hurts the segmentation most."""
    axes = list(range(1, pred.shape.rank))
    p = tf.cast(pred > threshold, tf.float32)
    t = tf.cast(y > 0.5, tf.float32)
    inter = tf.reduce_sum(p * t, axes)
    total = tf.reduce_sum(p, axes) + tf.reduce_sum(t, axes)
    return tf.where(total > 0, 2.0 * inter / tf.maximum(total, 1.0), 1.0)


def check_relative_to(relative_to: str | None) -> str | None:
    """Validate the ε convention: one of :data:`RELATIVE_TO`."""
    if relative_to not in RELATIVE_TO:
        raise ValueError(f"relative_to must be one of {RELATIVE_TO}, got {relative_to!r}")
    return relative_to


def check_clip(clip: tuple[float, float] | None) -> tuple[float, float] | None:
    """Validate the valid input range: ``None`` (unbounded) or a pair ``(lo, hi)`` with ``lo < hi``."""
    if clip is None:
        return None
    try:
        lo, hi = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"clip must be None or a pair (lo, hi), got {clip!r}") from None
    if not lo < hi:
        raise ValueError(f"clip must satisfy lo < hi, got {clip!r}")
    return lo, hi


def epsilon_scale(x: tf.Tensor, relative_to: str | None) -> tf.Tensor:
    """Per-image factor turning a (relative) ε into input units, shaped ``(B, 1, …, 1)``."""
    relative_to = check_relative_to(relative_to)
    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape.rank is None or x.shape.rank < 2:
        raise ValueError(f"x must be a batch (B, H, W, C), got shape {x.shape}")
    axes = list(range(1, x.shape.rank))
    if relative_to is None:
        return tf.ones([tf.shape(x)[0]] + [1] * len(axes), tf.float32)
    if relative_to == "range":
        return tf.reduce_max(x, axes, keepdims=True) - tf.reduce_min(x, axes, keepdims=True)
    return tf.reduce_max(tf.abs(x), axes, keepdims=True)


def clip_bounds(clip: tuple[float, float] | None) -> tuple[tf.Tensor, tf.Tensor]:
    """``(lo, hi)`` as float32 tensors; ``None`` means unbounded (±inf leaves values untouched)."""
    clip = check_clip(clip)
    if clip is None:
        return tf.constant(-math.inf), tf.constant(math.inf)
    return tf.constant(clip[0], tf.float32), tf.constant(clip[1], tf.float32)


def signed_step(
    x: tf.Tensor, eps: float, direction: tf.Tensor, clip: tuple[float, float] | None, relative_to: str | None
) -> tf.Tensor:
    """``clip(x + ε · direction)``: one step of size ε (per image, see ``relative_to``) along a ±1 direction.

    FGSM steps along the gradient sign, the sign-noise control along a random sign.
    """
    lo, hi = clip_bounds(clip)
    return tf.clip_by_value(x + eps * epsilon_scale(x, relative_to) * direction, lo, hi)


def project(x: tf.Tensor, delta: tf.Tensor, eps: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Project ``delta`` onto the L∞ ball of radius ``eps`` and ``x + delta`` onto ``[lo, hi]``.

    Returns ``(x_adv, delta)`` with ``delta`` updated to the clipped image's actual offset, so the
    next iterate starts from the image the model really saw.
    """
    delta = tf.clip_by_value(delta, -eps, eps)
    x_adv = tf.clip_by_value(x + delta, lo, hi)
    if math.isinf(float(lo)) and math.isinf(float(hi)):
        # Unclipped: keep delta exact so that one step with α = ε reproduces FGSM bit for bit.
        return x_adv, delta
    return x_adv, x_adv - x
