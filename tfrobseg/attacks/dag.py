"""Dense Adversary Generation (DAG, Xie et al., ICCV 2017), adapted to a binary sigmoid head under an L∞ budget.

DAG attacks only the pixels the model still gets right and pushes each towards another label. In the
paper (Algorithm 1), with T_m the still-correct targets of the current image X + r, l their true and
l' their adversarial labels and f_c the class scores (logits):

    r_m = Σ_{n∈T_m} ∇ₓ [f_{l'ₙ}(X + r) − f_{lₙ}(X + r)],   r'_m = γ · r_m / ‖r_m‖∞,   r ← r + r'_m

until T_m is empty or M₀ iterations have run (γ = 0.5 on 0–255 images; the adv_lib port of the paper
defaults to γ = 0.5, 200 iterations). The perturbation is unbounded there.

Binary adaptation. A sigmoid probability p is the two-class softmax of the logits (0, z) with
z = log p − log(1 − p) (p clipped to [1e-7, 1 − 1e-7]); the adversarial label is the flipped class, so the
logit difference adversarial − true of pixel n is (1 − 2yₙ)·zₙ (yₙ ∈ {0, 1} the mask thresholded at
0.5). With T = {n : (pₙ > 0.5) = (yₙ > 0.5)} of the current iterate x_m,

    r = ∇ₓ Σ_{n∈T} (1 − 2yₙ) zₙ(x_m),   x_{m+1} = Π_ε(x_m + α · r / ‖r‖∞)

per image (Π_ε: onto the L∞ ball of radius ε around x, then onto ``clip``). α is the move of the
pixel with the largest |r| in one step; the others move in proportion (DAG's direction is not a sign).
An image whose T is empty takes no more steps; the loop ends when every image of the batch has
stopped (one host check per step) or after ``steps`` steps.

Default α = 2.5 · ε / steps (``step_factor`` 2.5, the PGD rule of the other iterative attacks): within
0.4 · steps steps the most sensitive pixel can cross the whole ball, as a PGD pixel can; the paper's
unbounded γ has no ε to relate to.

Cost: at most ``steps`` input gradients per image and ε; one gradient per step for the whole batch
until all its images have stopped (the call that finds the last T empty is counted).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import budget, check_budget, clip_bounds, project
from tfrobseg.attacks.gradient import objective_gradient
from tfrobseg.attacks.iterative import no_loss_option, step_size
from tfrobseg.attacks.params import (
    AttackOptions,
    check_alpha,
    check_combination,
    check_step_factor,
    check_steps,
)

#: The default step rule α = DAG_STEP_FACTOR · ε / steps.
DAG_STEP_FACTOR = 2.5


def _still_correct(y: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """The pixel set T as a bool mask: prediction (p > 0.5) equals the mask (y > 0.5)."""
    return tf.equal(pred > 0.5, y > 0.5)


def _dag_objective(y: tf.Tensor, pred: tf.Tensor, param: tf.Tensor) -> tf.Tensor:
    """Σ_{n∈T} (1 − 2yₙ) zₙ per image: the adversarial-minus-true logit margin over the still-correct pixels."""
    p = tf.clip_by_value(pred, 1e-7, 1.0 - 1e-7)
    logit = tf.math.log(p) - tf.math.log(1.0 - p)
    flip = 1.0 - 2.0 * tf.cast(y > 0.5, tf.float32)
    correct = tf.stop_gradient(tf.cast(_still_correct(y, pred), tf.float32))
    return tf.reduce_sum(correct * flip * logit, axis=list(range(1, pred.shape.rank)))


def dag(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float | np.ndarray, *, steps: int = 20,
    alpha: float | None = None, step_factor: float | None = None, **options: Any,
) -> tf.Tensor:
    """DAG for a sigmoid head (see the module doc): normalised steps on the still-correct pixels only.

    Args:
        model, x, y: as in :func:`tfrobseg.attacks.fgsm`; ``y`` is the true mask (thresholded at 0.5).
        eps: ε for the whole batch or one per image (input units, or fractions with ``relative_to``).
        steps: the most steps; fewer when every image's set of still-correct pixels is empty.
        alpha: the step of the most sensitive pixel, in the units of ε; give it or ``step_factor``.
        step_factor: α = step_factor · ε / steps (default 2.5 when neither is given).
        **options: ``clip``, ``relative_to``, ``loss_scale``, ``jit_compile`` (DAG takes no ``loss``: its
            objective is the logit margin).

    Returns:
        The adversarial batch, ``‖x_adv − x‖∞ ≤ ε`` per image; ``eps = 0`` returns ``x``.
    """
    no_loss_option("dag", options, "the logit margin (1 − 2y)·z of the still-correct pixels")
    eps, steps = check_budget(eps), check_steps(steps)
    alpha, step_factor = check_alpha(alpha), check_step_factor(step_factor)
    check_combination(alpha, step_factor)
    checked = AttackOptions.of(**options)
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    if np.all(eps == 0):
        return x
    alpha = step_size(alpha, step_factor, DAG_STEP_FACTOR, eps, steps)
    eps_b, alpha_b = budget(x, eps, checked.relative_to), budget(x, alpha, checked.relative_to)
    lo, hi = clip_bounds(checked.clip)
    axes = list(range(1, x.shape.rank))
    x_adv, delta = x, tf.zeros_like(x)
    for _ in range(steps):
        grad, pred, _ = objective_gradient(
            model, x_adv, y, _dag_objective, loss_scale=checked.loss_scale, jit_compile=checked.jit_compile)
        if not bool(tf.reduce_any(_still_correct(y, pred))):
            break
        # An image whose T is empty has a zero objective, hence a zero gradient and (0/0 := 0) no step.
        largest = tf.reduce_max(tf.abs(grad), axis=axes, keepdims=True)
        x_adv, delta = project(x, delta + alpha_b * tf.math.divide_no_nan(grad, largest), eps_b, lo, hi)
    return x_adv
