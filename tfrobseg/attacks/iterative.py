"""Iterative FGSM (i-FGSM) and targeted iterative FGSM (ti-FGSM), with target-mask helpers.

i-FGSM (Kurakin et al.; Liu et al. eq. 2) repeats small FGSM steps of size α and projects every
iterate back onto the L∞ ball of radius ε around the clean image x (and onto ``clip``):

    x₀ = x,   x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k + α · sign(∇ₓ L(model(x_k), y)) )

ti-FGSM (Liu et al. eq. 3) steps *down* the loss towards a target mask, so the prediction moves
towards the target:

    x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k − α · sign(∇ₓ L(model(x_k), y_target)) )

Liu et al. choose α and the number of steps N with α · N = ε; that is the default α = ε / steps.
They use the soft-Dice loss for the targeted attack, the default ``loss="dice"`` here.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from tfrobseg.attacks.budget import check_epsilon, clip_bounds, epsilon_scale, project
from tfrobseg.attacks.gradient import DEFAULT_LOSS_SCALE, LossLike, gradient_sign

TargetLike = str | int | tuple[int, int] | Callable[[tf.Tensor], tf.Tensor] | tf.Tensor


def check_steps(steps: int) -> int:
    """Validate the number of iterations (a positive int)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return steps


def iterate(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    eps: float,
    *,
    steps: int,
    alpha: float,
    direction: float,
    delta0: tf.Tensor | None,
    loss: LossLike,
    clip: tuple[float, float] | None,
    relative_to: str | None,
    loss_scale: float,
    jit_compile: bool,
) -> tf.Tensor:
    """Projected signed-gradient iterations shared by i-FGSM, ti-FGSM and PGD.

    ``direction`` is +1 to ascend the loss (untargeted) and −1 to descend it (targeted); ``delta0``
    is the starting offset from x (``None``: start at x). α is in the units of ε.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    scale = epsilon_scale(x, relative_to)
    eps_b, alpha_b = eps * scale, alpha * scale
    lo, hi = clip_bounds(clip)
    delta = tf.zeros_like(x) if delta0 is None else delta0
    x_adv, delta = project(x, delta, eps_b, lo, hi)
    for _ in range(steps):
        sign, _ = gradient_sign(model, x_adv, y, loss=loss, loss_scale=loss_scale, jit_compile=jit_compile)
        x_adv, delta = project(x, delta + direction * alpha_b * sign, eps_b, lo, hi)
    return x_adv


def ifgsm(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    loss: LossLike = "bce",
    clip: tuple[float, float] | None = None,
    relative_to: str | None = None,
    loss_scale: float = DEFAULT_LOSS_SCALE,
    jit_compile: bool = True,
) -> tf.Tensor:
    """Iterative FGSM: ``steps`` projected steps of size ``alpha`` (default ε / steps).

    Arguments are as in :func:`tfrobseg.attacks.fgsm`; ``alpha`` is in the units of ε (a fraction
    too when ``relative_to`` is set). With ``steps=1, alpha=eps`` this is exactly FGSM.
    Returns the adversarial batch with ``‖x_adv − x‖∞ ≤ ε``; ``eps = 0`` returns ``x``.
    """
    eps = check_epsilon(eps)
    steps = check_steps(steps)
    alpha = eps / steps if alpha is None else check_epsilon(alpha, "alpha")
    if eps == 0:
        return tf.convert_to_tensor(x, tf.float32)
    return iterate(
        model, x, y, eps, steps=steps, alpha=alpha, direction=1.0, delta0=None, loss=loss, clip=clip,
        relative_to=relative_to, loss_scale=loss_scale, jit_compile=jit_compile,
    )


def targeted_ifgsm(
    model: keras.Model,
    x: tf.Tensor,
    target: tf.Tensor,
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    loss: LossLike = "dice",
    clip: tuple[float, float] | None = None,
    relative_to: str | None = None,
    loss_scale: float = DEFAULT_LOSS_SCALE,
    jit_compile: bool = True,
) -> tf.Tensor:
    """Targeted i-FGSM (ti-FGSM): projected steps that *decrease* ``loss(target, model(x))``.

    Args:
        target: the mask the attacker wants predicted, shaped like the model output; build one
            with :func:`background_target`, :func:`foreground_target` or :func:`shifted_target`.
        loss: defaults to the soft-Dice loss, as in Liu et al.
        Other arguments as in :func:`ifgsm` (default α = ε / steps).
    """
    eps = check_epsilon(eps)
    steps = check_steps(steps)
    alpha = eps / steps if alpha is None else check_epsilon(alpha, "alpha")
    if eps == 0:
        return tf.convert_to_tensor(x, tf.float32)
    return iterate(
        model, x, target, eps, steps=steps, alpha=alpha, direction=-1.0, delta0=None, loss=loss, clip=clip,
        relative_to=relative_to, loss_scale=loss_scale, jit_compile=jit_compile,
    )


def background_target(mask: tf.Tensor) -> tf.Tensor:
    """Target "all background": the attacker wants the organ to vanish."""
    return tf.zeros_like(tf.convert_to_tensor(mask, tf.float32))


def foreground_target(mask: tf.Tensor) -> tf.Tensor:
    """Target "all foreground" (Liu et al.'s ti-FGSM target: every pixel labelled)."""
    return tf.ones_like(tf.convert_to_tensor(mask, tf.float32))


def shifted_target(mask: tf.Tensor, shift: int | tuple[int, int]) -> tf.Tensor:
    """The true mask moved by ``shift`` pixels, vacated pixels set to background.

    ``shift`` is ``(dy, dx)`` along (H, W) of a ``(B, H, W, C)`` mask; an int ``k`` means
    ``(0, k)`` (k pixels to the right). Positive values move down/right. Unlike ``tf.roll``
    nothing wraps around the border.
    """
    if isinstance(shift, int) and not isinstance(shift, bool):
        dy, dx = 0, shift
    else:
        try:
            dy, dx = (int(s) for s in shift)
        except (TypeError, ValueError):
            raise ValueError(f"shift must be an int or a pair (dy, dx), got {shift!r}") from None
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


def make_target(mask: tf.Tensor, target: TargetLike) -> tf.Tensor:
    """Build a target mask from the true mask: ``"background"``, ``"foreground"``, a shift
    (int or ``(dy, dx)``, see :func:`shifted_target`), a callable ``mask -> target``, or a tensor."""
    if isinstance(target, str):
        builders = {"background": background_target, "foreground": foreground_target}
        if target not in builders:
            raise ValueError(f"target must be 'background', 'foreground', a shift, a callable or a mask, got {target!r}")
        return builders[target](mask)
    if isinstance(target, (int, tuple)) and not isinstance(target, bool):
        return shifted_target(mask, target)
    if callable(target):
        return tf.convert_to_tensor(target(mask), tf.float32)
    return tf.convert_to_tensor(target, tf.float32)
