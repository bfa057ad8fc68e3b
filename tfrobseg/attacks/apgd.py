"""Auto-PGD (APGD, Croce & Hein, ICML 2020, Algorithm 1), L∞, with a per-image objective of a sigmoid head.

APGD is PGD without a step size to tune: the step starts large and is halved where progress stalls,
and the point of highest objective seen is returned. With P the projection onto the ε-ball around the
clean image x (and onto ``clip``), f the per-image objective and η⁽⁰⁾ = 2ε:

    x⁽¹⁾ = P(x⁽⁰⁾ + η sign ∇f(x⁽⁰⁾))
    z = P(x⁽ᵏ⁾ + η sign ∇f(x⁽ᵏ⁾)),   x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾)),   α = 0.75

for k = 1 … N − 1 (N = ``steps``). x_max, f_max are the best iterate so far (strictly higher f replaces
it) and are what is returned. At the checkpoints w_j = ⌈p_j N⌉ (:func:`apgd_checkpoints`: p₀ = 0,
p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) an image's step η is halved and its iterate
restarts from x_max when

* condition 1: Σ_{i=w_{j−1}}^{w_j − 1} 1[f(x⁽ⁱ⁺¹⁾) > f(x⁽ⁱ⁾)] < ρ · (w_j − w_{j−1}), ρ = 0.75, or
* condition 2: η⁽ʷʲ⁻¹⁾ ≡ η⁽ʷʲ⁾ and f_max⁽ʷʲ⁻¹⁾ ≡ f_max⁽ʷʲ⁾ (not halved at the previous checkpoint, and no
  improvement since).

Every quantity is per image (η, x_max, f_max, the counts, the decisions): an image of a batch is
attacked as if it were alone, which is what lets the runner stack all ε of a batch into one call.

What was followed where the paper and the authors' code (fra31/auto-attack, ``autopgd_base.py``)
differ, or the paper's listing leaves it open:

* The schedule is the paper's ⌈p_j N⌉, computed exactly (p_j are whole hundredths); the code uses the
  integer recursion ⌊0.22N⌋, then intervals shrinking by ⌊0.03N⌋ down to ⌊0.06N⌋, which agrees for
  N = 100 but not for small N (N = 20: code 4, 7, 9, 10, …; paper 5, 9, 12, 14, …).
* The test at w_j runs once x⁽ʷʲ⁾ is computed and counts the w_j − w_{j−1} comparisons up to it (as the
  code does; the paper's listing tests at loop index k = w_j, one iterate later). A restart replaces
  x⁽ʷʲ⁾ by x_max (with its stored gradient, as in the code), so the next comparison is against f_max.
* Condition 1 is the paper's strict ``<`` (the code halves on ``≤``); the first window compares
  f(x⁽¹⁾) with f(x⁽⁰⁾) (the code's first comparison reads an unset entry, 0).
* Condition 2 may fire at the first checkpoint (η⁽⁰⁾ ≡ η⁽ʷ¹⁾ holds there; the code treats the start
  as a halving, so it cannot).
* The random start is uniform in the ε-ball, as :func:`~tfrobseg.attacks.pgd` (the code rescales the
  uniform draw so that its largest component is ε).

Objective (``loss``): ``"ce"`` (also ``"bce"``, the binary form of the paper's CE) is the mean per-pixel
BCE of each image; ``"dice_ce"`` is each image's soft Dice loss plus its mean BCE; any other
:func:`tfrobseg.losses.get_loss` name or callable ``(y_true, y_pred)`` is each image's own loss.
The paper's DLR loss needs the margin between the two largest of at least three class scores and
is not defined for a one-channel sigmoid head: ``"dlr"`` is rejected.

Cost: ``steps`` input gradients per image and ε (one at x⁽⁰⁾ and at each of x⁽¹⁾ … x⁽ᴺ⁻¹⁾) plus one
forward pass for f(x⁽ᴺ⁾); the authors' code also takes a gradient at x⁽ᴺ⁾.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import budget, check_budget, clip_bounds, project
from tfrobseg.attacks.gradient import (
    LossLike,
    Objective,
    check_loss,
    compiled,
    loss_objective,
    objective_gradient,
    pixel_bce,
)
from tfrobseg.attacks.iterative import uniform_start
from tfrobseg.attacks.noise import stateless_seed
from tfrobseg.attacks.params import AttackOptions, check_flag, check_steps
from tfrobseg.losses import bce_loss, dice_loss

#: Weight α of the new step against the previous one (the paper's momentum, 0.75).
MOMENTUM = 0.75
#: Fraction ρ of steps since the last checkpoint that must have raised f to keep the step size.
RHO = 0.75
#: The checkpoint fractions p_j in hundredths: p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06),
#: up to p_j ≤ 1 (0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99).
_P0, _P1, _SHRINK, _MIN_INTERVAL = 0, 22, 3, 6


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations w_j = ⌈p_j · steps⌉ at which APGD may halve its step, ascending and distinct
    (0 first); computed in whole hundredths, so exactly (no rounding of 0.7 · 20 up to 15).

    >>> apgd_checkpoints(100)
    [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    steps = check_steps(steps)
    hundredths = [_P0, _P1]
    while True:
        following = hundredths[-1] + max(hundredths[-1] - hundredths[-2] - _SHRINK, _MIN_INTERVAL)
        if following > 100:
            break
        hundredths.append(following)
    return sorted({-(-q * steps // 100) for q in hundredths})


def _mean_bce(y: tf.Tensor, pred: tf.Tensor, param: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(pixel_bce(y, pred), axis=list(range(1, pred.shape.rank)))


def _dice_ce(y: tf.Tensor, pred: tf.Tensor, param: tf.Tensor) -> tf.Tensor:
    # Each image's own soft Dice (counts not pooled over the batch) plus its mean BCE.
    return tf.cast(dice_loss(y, pred, pooled=False) + bce_loss(y, pred), tf.float32)


#: APGD's own objective names (module-level objects: each compiles once per model).
APGD_OBJECTIVES: dict[str, Objective] = {"ce": _mean_bce, "bce": _mean_bce, "dice_ce": _dice_ce}


def apgd_objective(loss: LossLike) -> Objective:
    """The per-image objective f of an APGD ``loss``: ``"ce"``/``"bce"``, ``"dice_ce"``, or any attack loss.

    Raises:
        ValueError: ``"dlr"`` (not defined for a one-channel head), or an unknown loss name.
    """
    if isinstance(loss, str) and loss in APGD_OBJECTIVES:
        return APGD_OBJECTIVES[loss]
    return loss_objective(check_loss(loss))  # check_loss refuses "dlr" with the reason


def _build_objective_value(model: keras.Model, objective: Objective, jit_compile: bool) -> Callable:
    @tf.function(jit_compile=jit_compile)
    def objective_value(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        pred = tf.cast(model(x, training=False), tf.float32)
        return tf.cast(objective(y, pred, tf.constant(0.0)), tf.float32)

    return objective_value


def checkpoint_halves(
    increases: tf.Tensor, window: int, halved_before: tf.Tensor, f_max_before: tf.Tensor, f_max: tf.Tensor
) -> tf.Tensor:
    """``(B,)`` bool: which images halve their step at a checkpoint w_j (condition 1 or condition 2).

    Args:
        increases: per image, how many of the ``window`` = w_j − w_{j−1} steps since the last checkpoint raised f.
        halved_before: per image, whether the step was halved at the previous checkpoint.
        f_max_before, f_max: per image, the best objective at the previous checkpoint and now.
    """
    condition_1 = tf.cast(increases, tf.float32) < RHO * window
    condition_2 = tf.logical_and(tf.logical_not(halved_before), f_max <= f_max_before)
    return tf.logical_or(condition_1, condition_2)


def apgd(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float | np.ndarray, *, steps: int = 20,
    loss: LossLike = "ce", random_start: bool = True, seed: int | tuple[int, int] = 0, **options: Any,
) -> tf.Tensor:
    """APGD (see the module doc): ``steps`` iterations, returning each image's iterate of highest objective.

    Args:
        model, x, y, **options: as in :func:`tfrobseg.attacks.fgsm` (``clip``, ``relative_to``,
            ``loss_scale``, ``jit_compile``).
        eps: ε for the whole batch or one per image (input units, or fractions with ``relative_to``).
        steps: N, the number of iterations (and of input gradients per image).
        loss: the objective: ``"ce"`` (≡ ``"bce"``), ``"dice_ce"``, or any attack loss name or callable.
        random_start: start from a uniform point of the ε-ball (stateless, from ``seed``) instead of x.
        seed: an int or a pair of ints; the same seed gives the same start.

    Returns:
        The adversarial batch, ``‖x_adv − x‖∞ ≤ ε`` per image; ``eps = 0`` returns ``x``.
    """
    eps, steps = check_budget(eps), check_steps(steps)
    objective = apgd_objective(loss)
    random_start, seed_pair = check_flag("random_start", random_start), stateless_seed(seed)
    checked = AttackOptions.of(**options)
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    if np.all(eps == 0):
        return x
    eps_b = budget(x, eps, checked.relative_to)
    lo, hi = clip_bounds(checked.clip)
    run = {"loss_scale": checked.loss_scale, "jit_compile": checked.jit_compile}
    per_image = [-1] + [1] * (x.shape.rank - 1)

    def pick(mask: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
        """Per image: ``new`` where ``mask`` (B,) holds, else ``old`` (images or per-image values)."""
        return tf.where(tf.reshape(mask, per_image) if new.shape.rank > 1 else mask, new, old)

    start = uniform_start(x, eps, checked.relative_to, seed_pair) if random_start else tf.zeros_like(x)
    x_k, d_k = project(x, start, eps_b, lo, hi)
    grad, _, f_k = objective_gradient(model, x_k, y, objective, **run)
    d_prev, eta = d_k, 2.0 * eps_b
    x_max, d_max, f_max, g_max = x_k, d_k, f_k, grad
    checkpoints = apgd_checkpoints(steps)[1:]
    last_checkpoint, halved_before, f_max_before = 0, tf.zeros_like(f_k, tf.bool), f_max
    increases = tf.zeros_like(f_k, tf.int32)
    for k in range(steps):
        _, z = project(x, d_k + eta * tf.sign(grad), eps_b, lo, hi)
        candidate = z if k == 0 else d_k + MOMENTUM * (z - d_k) + (1.0 - MOMENTUM) * (d_k - d_prev)
        x_new, d_new = project(x, candidate, eps_b, lo, hi)
        if k + 1 < steps:
            grad, _, f_new = objective_gradient(model, x_new, y, objective, **run)
        else:  # the last iterate only needs its objective value: a forward pass
            value = compiled(model, "apgd_objective_value", objective, checked.jit_compile, _build_objective_value)
            f_new = value(x_new, y)
        increases += tf.cast(f_new > f_k, tf.int32)
        improved = f_new > f_max
        x_max, d_max, f_max = pick(improved, x_new, x_max), pick(improved, d_new, d_max), pick(improved, f_new, f_max)
        d_prev, d_k, f_k = d_k, d_new, f_new
        if k + 1 == steps:
            break
        g_max = pick(improved, grad, g_max)
        if k + 1 in checkpoints:
            halve = checkpoint_halves(increases, k + 1 - last_checkpoint, halved_before, f_max_before, f_max)
            eta = pick(halve, eta / 2.0, eta)
            d_k, f_k, grad = pick(halve, d_max, d_k), pick(halve, f_max, f_k), pick(halve, g_max, grad)
            last_checkpoint, halved_before, f_max_before = k + 1, halve, f_max
            increases = tf.zeros_like(increases)
    return x_max
