"""SegPGD (Gu et al., "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating and Boosting
Segmentation Robustness", ECCV 2022): PGD on a per-pixel loss that shifts its weight, over the
iterations, from the pixels still classified correctly to those already fooled.

Plain PGD on the mean cross-entropy keeps pushing pixels that are already wrong (their loss grows
without bound) while correct pixels contribute little; SegPGD weights them apart. At iteration
t = 1 … T (T = ``steps``), with p the current prediction and ``correct = ((p > 0.5) == (y > 0.5))``
(not differentiated):

    λ(t) = (t − 1) / (2T)
    L_t(x) = 1/(H·W) · [ (1 − λ(t)) · Σ_{correct} BCE(y, p) + λ(t) · Σ_{wrong} BCE(y, p) ]
    x₀ = x + U(−ε, ε),   x_t = Π_{‖·−x‖∞ ≤ ε} ( x_{t−1} + α · sign(∇ₓ L_t(x_{t−1})) )

so the first step attacks only the correct pixels (λ = 0) and the weights approach ½ / ½ at the
last. The binary head's cross-entropy is :func:`~tfrobseg.attacks.gradient.pixel_bce`; the default
step is α = 2.5 · ε / T (``step_factor=2.5``), T = 20.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfrobseg.attacks.gradient import pixel_bce
from tfrobseg.attacks.iterative import no_loss_option, projected_attack


def segpgd_lambdas(steps: int) -> list[float]:
    """λ(t) = (t − 1) / (2T) for t = 1 … T: the weight of the already-wrong pixels at each step."""
    return [(t - 1) / (2 * steps) for t in range(1, steps + 1)]


def segpgd_objective(y: tf.Tensor, pred: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """``(B,)``: each image's mean over its pixels of the BCE weighted ``1 − λ`` where the thresholded
    prediction is right and ``λ`` where it is wrong (the weights are not differentiated)."""
    correct = tf.cast((pred > 0.5) == (y > 0.5), tf.float32)
    weight = tf.stop_gradient(correct * (1.0 - lam) + (1.0 - correct) * lam)
    return tf.reduce_mean(weight * pixel_bce(y, pred), axis=list(range(1, pred.shape.rank)))


def segpgd(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float, *, steps: int = 20, alpha: float | None = None,
    step_factor: float | None = None, random_start: bool = True, seed: int | tuple[int, int] = 0,
    restarts: int = 1, best_iterate: bool = False, **options: Any,
) -> tf.Tensor:
    """SegPGD: ``steps`` projected sign steps on the λ(t)-weighted BCE of the module doc.

    Args:
        model, x, y: as in :func:`tfrobseg.attacks.fgsm` (``y`` the true mask).
        eps: L∞ radius ≥ 0 (input units, or a fraction with ``relative_to``), a number or one per image.
        steps: T, the number of iterations (and gradients).
        alpha: step size in the units of ε; ``None``: ``step_factor · ε / steps`` (step_factor 2.5).
        random_start, seed: uniform start in the ε-ball from a stateless seed (an int or a pair).
        restarts, best_iterate: keep per image the restart / iterate with the lowest Dice
            (:func:`~tfrobseg.attacks.iterative.projected_attack`).
        **options: ``clip``, ``relative_to``, ``loss_scale``, ``jit_compile`` (no ``loss``: the
            objective is fixed).

    Returns:
        The adversarial batch, ``‖x_adv − x‖∞ ≤ ε``; ``eps = 0`` returns ``x``.
    """
    no_loss_option("segpgd", options)
    return projected_attack(
        model, x, y, eps, steps=steps, alpha=alpha, step_factor=step_factor, default_step_factor=2.5, direction=1.0,
        objective=segpgd_objective, schedule=segpgd_lambdas,
        random_start=random_start, seed=seed, restarts=restarts, best_iterate=best_iterate, **options,
    )
