"""Projected gradient descent (Madry et al.), the L∞ attack of adversarial-training practice.

PGD is i-FGSM from a random point of the ε-ball:

    x₀ = x + U(−ε, ε),   x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k + α · sign(∇ₓ L(model(x_k), y)) )

The random start avoids the degenerate gradient at the clean point and makes restarts differ.
The default step α = 2.5 · ε / steps (Madry et al.'s rule) lets the iterate cross the ball. The
options of the PGD family (``restarts``, ``best_iterate``, ``momentum``, ``step_factor``) are those of
:func:`~tfrobseg.attacks.iterative.projected_attack`.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfrobseg.attacks.iterative import projected_attack


def pgd(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float, *, steps: int = 10, alpha: float | None = None,
    step_factor: float | None = None, random_start: bool = True, seed: int | tuple[int, int] = 0,
    restarts: int = 1, best_iterate: bool = False, momentum: float = 0.0, **options: Any,
) -> tf.Tensor:
    """PGD: uniform random start in the ε-ball (stateless, from ``seed``), then projected steps.

    Arguments are as in :func:`tfrobseg.attacks.ifgsm`; ``alpha`` defaults to ``step_factor · ε / steps``
    with step_factor 2.5. ``random_start=False`` starts at x (then PGD is i-FGSM with this α).
    ``restarts`` runs from that many random starts (restart 0 from ``seed``) and keeps, per image, the
    one with the lowest Dice; ``best_iterate`` keeps each image's lowest-Dice iterate; ``momentum`` > 0
    steps along MI-FGSM's accumulated direction. The same seed gives the same result; returns the
    adversarial batch with ``‖x_adv − x‖∞ ≤ ε``.
    """
    return projected_attack(
        model, x, y, eps, steps=steps, alpha=alpha, step_factor=step_factor, default_step_factor=2.5,
        direction=1.0, random_start=random_start, seed=seed, restarts=restarts, best_iterate=best_iterate,
        momentum=momentum, **options,
    )
