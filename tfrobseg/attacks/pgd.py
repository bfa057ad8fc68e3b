"""Projected gradient descent (Madry et al.), the L∞ attack of adversarial-training practice.

PGD is i-FGSM from a random point of the ε-ball:

    x₀ = x + U(−ε, ε),   x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k + α · sign(∇ₓ L(model(x_k), y)) )

The random start avoids the degenerate gradient at the clean point and makes restarts differ.
The default step α = 2.5 · ε / steps (Madry et al.'s rule) lets the iterate cross the ball.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import budget
from tfrobseg.attacks.iterative import projected_attack
from tfrobseg.attacks.noise import stateless_seed
from tfrobseg.attacks.params import check_flag


def pgd(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float, *, steps: int = 10, alpha: float | None = None,
    random_start: bool = True, seed: int | tuple[int, int] = 0, **options: Any,
) -> tf.Tensor:
    """PGD: uniform random start in the ε-ball (stateless, from ``seed``), then projected steps.

    Arguments are as in :func:`tfrobseg.attacks.ifgsm`; ``alpha`` defaults to ``2.5 · ε / steps``.
    ``random_start=False`` starts at x (then PGD is i-FGSM with this α). The same seed gives the
    same start; returns the adversarial batch with ``‖x_adv − x‖∞ ≤ ε``.
    """
    seed_pair = stateless_seed(seed)

    def uniform_start(x: tf.Tensor, eps: float | np.ndarray, relative_to: str | None) -> tf.Tensor:
        unit = tf.random.stateless_uniform(tf.shape(x), seed=seed_pair, minval=-1.0, maxval=1.0)
        return unit * budget(x, eps, relative_to)

    start = uniform_start if check_flag("random_start", random_start) else None
    return projected_attack(
        model, x, y, eps, steps=steps, alpha=alpha, step_factor=2.5, direction=1.0, start=start, **options
    )
