"""Projected gradient descent (Madry et al.), the L∞ attack of adversarial-training practice.

PGD is i-FGSM from a random point of the ε-ball:

    x₀ = x + U(−ε, ε),   x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k + α · sign(∇ₓ L(model(x_k), y)) )

The random start avoids the degenerate gradient at the clean point and makes restarts differ.
The default step α = 2.5 · ε / steps (Madry et al.'s rule) lets the iterate cross the ball.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfrobseg.attacks.budget import check_epsilon, epsilon_scale
from tfrobseg.attacks.gradient import DEFAULT_LOSS_SCALE, LossLike
from tfrobseg.attacks.iterative import check_steps, iterate
from tfrobseg.attacks.noise import stateless_seed


def pgd(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    eps: float,
    *,
    steps: int = 10,
    alpha: float | None = None,
    random_start: bool = True,
    seed: int | tuple[int, int] = 0,
    loss: LossLike = "bce",
    clip: tuple[float, float] | None = None,
    relative_to: str | None = None,
    loss_scale: float = DEFAULT_LOSS_SCALE,
    jit_compile: bool = True,
) -> tf.Tensor:
    """PGD: uniform random start in the ε-ball (stateless, from ``seed``), then projected steps.

    Arguments are as in :func:`tfrobseg.attacks.ifgsm`; ``alpha`` defaults to ``2.5 · ε / steps``.
    ``random_start=False`` starts at x (then PGD is i-FGSM with this α). The same seed gives the
    same start; returns the adversarial batch with ``‖x_adv − x‖∞ ≤ ε``.
    """
    eps = check_epsilon(eps)
    steps = check_steps(steps)
    alpha = 2.5 * eps / steps if alpha is None else check_epsilon(alpha, "alpha")
    x = tf.convert_to_tensor(x, tf.float32)
    if eps == 0:
        return x
    delta0 = None
    if random_start:
        unit = tf.random.stateless_uniform(tf.shape(x), seed=stateless_seed(seed), minval=-1.0, maxval=1.0)
        delta0 = unit * eps * epsilon_scale(x, relative_to)
    return iterate(
        model, x, y, eps, steps=steps, alpha=alpha, direction=1.0, delta0=delta0, loss=loss, clip=clip,
        relative_to=relative_to, loss_scale=loss_scale, jit_compile=jit_compile,
    )
