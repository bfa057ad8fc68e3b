"""Target masks of the targeted attack (ti-FGSM): what the attacker wants the model to predict.

Liu et al. use "every pixel labelled" (:func:`foreground_target`); "the organ vanishes"
(:func:`background_target`, the runner's default) and "the organ moves" (:func:`shifted_target`)
are the other natural goals. :func:`make_target` builds any of them from the true mask.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

TargetLike = str | int | tuple[int, int] | Callable[[tf.Tensor], tf.Tensor] | tf.Tensor


def background_target(mask: tf.Tensor) -> tf.Tensor:
    """Target "all background": the attacker wants the organ to vanish."""
    return tf.zeros_like(tf.convert_to_tensor(mask, tf.float32))


def foreground_target(mask: tf.Tensor) -> tf.Tensor:
    """Target "all foreground" (Liu et al.'s ti-FGSM target: every pixel labelled)."""
    return tf.ones_like(tf.convert_to_tensor(mask, tf.float32))


#: The targets named by a string.
NAMED_TARGETS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "background": background_target,
    "foreground": foreground_target,
}


def check_shift(shift: int | tuple[int, int]) -> tuple[int, int]:
    """``(dy, dx)`` from a shift given as ``(dy, dx)`` or as an int ``k``, meaning ``(0, k)``."""
    if isinstance(shift, int) and not isinstance(shift, bool):
        return 0, shift
    try:
        dy, dx = (int(s) for s in shift)
    except (TypeError, ValueError):
        raise ValueError(f"shift must be an int or a pair (dy, dx), got {shift!r}") from None
    return dy, dx


def shifted_target(mask: tf.Tensor, shift: int | tuple[int, int]) -> tf.Tensor:
    """The true mask moved by ``shift`` pixels, vacated pixels set to background.

    ``shift`` is ``(dy, dx)`` along (H, W) of a ``(B, H, W, C)`` mask; an int ``k`` means
    ``(0, k)`` (k pixels to the right). Positive values move down/right. Unlike ``tf.roll``
    nothing wraps around the border.
    """
    dy, dx = check_shift(shift)
    mask = tf.convert_to_tensor(mask, tf.float32)
    if mask.shape.rank != 4:
        raise ValueError(f"mask must be (B, H, W, C), got shape {mask.shape}")
    height, width = mask.shape[1], mask.shape[2]
    rolled = tf.roll(mask, shift=(dy, dx), axis=(1, 2))
    rows = tf.range(height) - dy
    cols = tf.range(width) - dx
    valid_rows = tf.cast((rows >= 0) & (rows < height), tf.float32)
    valid_cols = tf.cast((cols >= 0) & (cols < width), tf.float32)
    return rolled * valid_rows[None, :, None, None] * valid_cols[None, None, :, None]


def check_target(target: TargetLike) -> TargetLike:
    """Validate a target description (see :func:`make_target`) without building it."""
    if isinstance(target, str) and target not in NAMED_TARGETS:
        raise ValueError(
            f"target must be {' or '.join(map(repr, NAMED_TARGETS))}, a shift, a callable or a mask, got {target!r}"
        )
    if isinstance(target, tuple):
        check_shift(target)
    return target


def make_target(mask: tf.Tensor, target: TargetLike) -> tf.Tensor:
    """Build a target mask from the true mask: ``"background"``, ``"foreground"``, a shift
    (int or ``(dy, dx)``, see :func:`shifted_target`), a callable ``mask -> target``, or a tensor."""
    target = check_target(target)
    if isinstance(target, str):
        return NAMED_TARGETS[target](mask)
    if isinstance(target, (int, tuple)) and not isinstance(target, bool):
        return shifted_target(mask, target)
    if callable(target):
        return tf.convert_to_tensor(target(mask), tf.float32)
    return tf.convert_to_tensor(target, tf.float32)
