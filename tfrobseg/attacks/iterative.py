"""Iterative FGSM (i-FGSM) and targeted iterative FGSM (ti-FGSM), on the projected iterations they share with PGD.

i-FGSM (Kurakin et al.; Liu et al. eq. 2) repeats small FGSM steps of size α and projects every
iterate back onto the L∞ ball of radius ε around the clean image x (and onto ``clip``):

    x₀ = x,   x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k + α · sign(∇ₓ L(model(x_k), y)) )

ti-FGSM (Liu et al. eq. 3) steps *down* the loss towards a target mask (:mod:`.targets`), so the
prediction moves towards the target:

    x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k − α · sign(∇ₓ L(model(x_k), y_target)) )

Liu et al. choose α and the number of steps N with α · N = ε; that is the default α = ε / steps.
They use the soft-Dice loss for the targeted attack, the default ``loss="dice"`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import budget, check_budget, clip_bounds, project
from tfrobseg.attacks.gradient import LossLike
from tfrobseg.attacks.params import AttackOptions, check_alpha, check_steps

#: PGD's random start: ``start(x, ε, relative_to)`` is the offset from x of the first iterate
#: (ε a number or one per image).
StartFn = Callable[[tf.Tensor, float | np.ndarray, str | None], tf.Tensor]


def iterate(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    eps: float | np.ndarray,
    *,
    steps: int,
    alpha: float | np.ndarray,
    direction: float,
    delta0: tf.Tensor | None,
    options: AttackOptions,
) -> tf.Tensor:
    """Projected signed-gradient iterations shared by i-FGSM, ti-FGSM and PGD.

    ``direction`` is +1 to ascend the loss (untargeted) and −1 to descend it (targeted); ``delta0``
    is the starting offset from x (``None``: start at x). α is in the units of ε; both may be given
    per image.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    eps_b, alpha_b = budget(x, eps, options.relative_to), budget(x, alpha, options.relative_to)
    lo, hi = clip_bounds(options.clip)
    delta = tf.zeros_like(x) if delta0 is None else delta0
    x_adv, delta = project(x, delta, eps_b, lo, hi)
    for _ in range(steps):
        sign, _ = options.gradient_sign(model, x_adv, y)
        x_adv, delta = project(x, delta + direction * alpha_b * sign, eps_b, lo, hi)
    return x_adv


def projected_attack(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    eps: float | np.ndarray,
    *,
    steps: int,
    alpha: float | None,
    step_factor: float,
    direction: float,
    start: StartFn | None = None,
    **options: Any,
) -> tf.Tensor:
    """Check every argument, then :func:`iterate`: the common body of i-FGSM, ti-FGSM and PGD.

    ``alpha=None`` takes the attack's default step ``step_factor · ε / steps``; ``start``, when
    given, draws the starting offset. ε (a number, or one per image) = 0 returns ``x`` (no attack).
    """
    eps, steps, alpha = check_budget(eps), check_steps(steps), check_alpha(alpha)
    checked = AttackOptions.of(**options)
    x = tf.convert_to_tensor(x, tf.float32)
    if np.all(eps == 0):
        return x
    alpha = step_factor * eps / steps if alpha is None else alpha
    delta0 = None if start is None else start(x, eps, checked.relative_to)
    return iterate(model, x, y, eps, steps=steps, alpha=alpha, direction=direction, delta0=delta0, options=checked)


def ifgsm(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float, *, steps: int = 10, alpha: float | None = None,
    **options: Any,
) -> tf.Tensor:
    """Iterative FGSM: ``steps`` projected steps of size ``alpha`` (default ε / steps).

    Arguments are as in :func:`tfrobseg.attacks.fgsm`; ``alpha`` is in the units of ε (a fraction
    too when ``relative_to`` is set). With ``steps=1, alpha=eps`` this is exactly FGSM.
    Returns the adversarial batch with ``‖x_adv − x‖∞ ≤ ε``; ``eps = 0`` returns ``x``.
    """
    return projected_attack(model, x, y, eps, steps=steps, alpha=alpha, step_factor=1.0, direction=1.0, **options)


def targeted_ifgsm(
    model: keras.Model, x: tf.Tensor, target: tf.Tensor, eps: float, *, steps: int = 10,
    alpha: float | None = None, loss: LossLike = "dice", **options: Any,
) -> tf.Tensor:
    """Targeted i-FGSM (ti-FGSM): projected steps that *decrease* ``loss(target, model(x))``.

    Args:
        target: the mask the attacker wants predicted, shaped like the model output; build one
            with :func:`~tfrobseg.attacks.make_target` (background, foreground, a shifted mask).
        loss: defaults to the soft-Dice loss, as in Liu et al.
        Other arguments as in :func:`ifgsm` (default α = ε / steps).
    """
    return projected_attack(
        model, x, target, eps, steps=steps, alpha=alpha, step_factor=1.0, direction=-1.0, loss=loss, **options
    )
