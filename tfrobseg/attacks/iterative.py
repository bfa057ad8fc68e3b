"""The projected sign-gradient loop of every iterative L∞ attack, and i-FGSM / ti-FGSM on it.

i-FGSM (Kurakin et al.; Liu et al. eq. 2) repeats small FGSM steps of size α and projects every
iterate back onto the L∞ ball of radius ε around the clean image x (and onto ``clip``):

    x₀ = x,   x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k + α · sign(∇ₓ L(model(x_k), y)) )

ti-FGSM (Liu et al. eq. 3) steps *down* the loss towards a target mask (:mod:`.targets`), so the
prediction moves towards the target:

    x_{k+1} = Π_{‖·−x‖∞ ≤ ε} ( x_k − α · sign(∇ₓ L(model(x_k), y_target)) )

Liu et al. choose α and the number of steps N with α · N = ε; that is the default α = ε / steps
(``step_factor=1``). They use the soft-Dice loss for the targeted attack, the default ``loss="dice"`` here.

:func:`projected_attack` is the one loop that i-FGSM, ti-FGSM, PGD, SegPGD and CosPGD share: an
*objective* ``(y, pred, param) -> (B,)`` (:func:`~tfrobseg.attacks.gradient.objective_gradient`) with
one ``param`` per step (SegPGD's λ(t)), an optional random start, and the options of the PGD family:

* ``momentum`` μ (MI-FGSM, Dong et al. 2018): ``g_{k+1} = μ · g_k + ∇ₖ / ‖∇ₖ‖₁`` per image and the
  step along ``sign(g_{k+1})`` instead of ``sign(∇ₖ)``;
* ``best_iterate``: return, per image, the iterate x₀ … x_T whose thresholded prediction has the
  lowest Dice (:func:`~tfrobseg.attacks.budget.batch_dice`) instead of the last one — the prediction
  of x_k is the forward pass of the gradient at x_k, so this costs one extra forward (of x_T);
* ``restarts``: run the loop from ``restarts`` random starts (seeds from :func:`restart_seed`) and
  keep, per image, the run whose returned image has the lowest Dice (one forward per run).

A targeted attack (``direction=-1``) is worst when its prediction is *closest to the target*, so
there both selections keep the highest Dice with the target. Ties keep the later iterate (the one
the plain attack would return) and the earlier restart (restart 0 is the ``restarts=1`` run), so a
selection only ever departs from the plain attack where it is strictly worse for the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import (
    batch_dice,
    budget,
    check_budget,
    clip_bounds,
    project,
)
from tfrobseg.attacks.gradient import (
    LossLike,
    Objective,
    loss_objective,
    objective_gradient,
    predict,
)
from tfrobseg.attacks.noise import stateless_seed
from tfrobseg.attacks.params import (
    AttackOptions,
    check_alpha,
    check_combination,
    check_count,
    check_flag,
    check_momentum,
    check_seed,
    check_step_factor,
    check_steps,
)


def restart_seed(seed: int | tuple[int, int], restart: int) -> tf.Tensor:
    """The stateless seed of restart ``restart``: restart 0 uses ``seed`` itself (so ``restarts=1`` is the
    plain attack), restart r ≥ 1 the Philox fold-in of r into it — distinct per restart and per
    ``(seed, batch_number)`` pair, the same on every device."""
    pair = stateless_seed(seed)
    if restart == 0:
        return pair
    return tf.cast(tf.random.experimental.stateless_fold_in(pair, restart, alg="philox"), tf.int64)


def uniform_start(x: tf.Tensor, eps: float | np.ndarray, relative_to: str | None, seed: tf.Tensor) -> tf.Tensor:
    """PGD's random start: an offset from x drawn uniformly from the ε-ball (ε a number or one per image)."""
    unit = tf.random.stateless_uniform(tf.shape(x), seed=seed, minval=-1.0, maxval=1.0)
    return unit * budget(x, eps, relative_to)


def no_loss_option(attack: str, options: dict[str, Any], objective: str = "its own weighted per-pixel BCE") -> None:
    """SegPGD, CosPGD and DAG define their own objective: a ``loss`` option would be silently ignored, so it is an
    error."""
    if "loss" in options:
        raise ValueError(f"{attack} takes no loss option: its objective is {objective}, got loss={options['loss']!r}")


def step_size(alpha: float | None, step_factor: float | None, default_step_factor: float, eps: float | np.ndarray,
              steps: int) -> float | np.ndarray:
    """α in the units of ε: ``alpha`` as given, else the step rule ``step_factor · ε / steps`` (``step_factor``
    ``None``: the attack's default)."""
    if alpha is not None:
        return alpha
    return (default_step_factor if step_factor is None else step_factor) * eps / steps


def _badness(pred: tf.Tensor, y: tf.Tensor, direction: float) -> tf.Tensor:
    """``(B,)``: lower is worse for the model — the Dice with the true mask (untargeted, direction +1) or
    minus the Dice with the target (targeted, direction −1)."""
    return direction * batch_dice(pred, y)


def _keep_worse(best: tf.Tensor, best_score: tf.Tensor, candidate: tf.Tensor, score: tf.Tensor,
                ties_to_candidate: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """Per image, the candidate where its score is lower than the best so far (or equal, when ties go to it)."""
    take = score <= best_score if ties_to_candidate else score < best_score
    shape = [-1] + [1] * (best.shape.rank - 1)
    return tf.where(tf.reshape(take, shape), candidate, best), tf.where(take, score, best_score)


def iterate(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    eps: float | np.ndarray,
    *,
    alpha: float | np.ndarray,
    objective: Objective,
    params: Sequence[float],
    direction: float,
    delta0: tf.Tensor | None,
    options: AttackOptions,
    momentum: float = 0.0,
    best_iterate: bool = False,
    score: bool = False,
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Projected signed-gradient iterations: one step per entry of ``params`` (the objective's parameter
    at that step).

    ``direction`` is +1 to ascend the objective (untargeted) and −1 to descend it (targeted); ``delta0``
    is the starting offset from x (``None``: start at x). α is in the units of ε; both may be given per
    image. ``momentum`` and ``best_iterate`` are as in the module doc. Returns the adversarial batch and,
    when ``best_iterate`` or ``score``, its per-image :func:`_badness` (else ``None``).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    eps_b, alpha_b = budget(x, eps, options.relative_to), budget(x, alpha, options.relative_to)
    lo, hi = clip_bounds(options.clip)
    delta = tf.zeros_like(x) if delta0 is None else delta0
    x_adv, delta = project(x, delta, eps_b, lo, hi)
    axes = list(range(1, x.shape.rank))
    accumulated = tf.zeros_like(x)
    best = best_score = None
    for param in params:
        grad, pred, _ = objective_gradient(model, x_adv, y, objective, param=param, loss_scale=options.loss_scale,
                                           jit_compile=options.jit_compile)
        if best_iterate:
            # pred is the prediction of x_adv, the iterate this gradient was taken at.
            if best is None:
                best, best_score = x_adv, _badness(pred, y, direction)
            else:
                best, best_score = _keep_worse(best, best_score, x_adv, _badness(pred, y, direction), True)
        if momentum:
            l1 = tf.reduce_sum(tf.abs(grad), axes, keepdims=True)
            accumulated = momentum * accumulated + tf.math.divide_no_nan(grad, l1)
            sign = tf.sign(accumulated)
        else:
            sign = tf.sign(grad)
        x_adv, delta = project(x, delta + direction * alpha_b * sign, eps_b, lo, hi)
    if not (best_iterate or score):
        return x_adv, None
    last_score = _badness(predict(model, x_adv, jit_compile=options.jit_compile), y, direction)
    if best is None:
        return x_adv, last_score
    return _keep_worse(best, best_score, x_adv, last_score, True)


def projected_attack(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    eps: float | np.ndarray,
    *,
    steps: int,
    alpha: float | None,
    step_factor: float | None,
    default_step_factor: float,
    direction: float,
    objective: Objective | None = None,
    schedule: Callable[[int], Sequence[float]] | None = None,
    random_start: bool = False,
    seed: int | tuple[int, int] = 0,
    restarts: int = 1,
    best_iterate: bool = False,
    momentum: float = 0.0,
    **options: Any,
) -> tf.Tensor:
    """Check every argument, then run :func:`iterate` (``restarts`` times): the common body of i-FGSM,
    ti-FGSM, PGD, SegPGD and CosPGD.

    ``objective`` defaults to each image's own ``loss`` (:func:`~tfrobseg.attacks.gradient.loss_objective`);
    ``schedule(steps)`` gives its parameter at each step (default: zeros). ``alpha=None`` takes the step
    ``step_factor · ε / steps`` (``step_factor=None``: the attack's ``default_step_factor``); giving both
    is an error.
    ``random_start`` draws the starting offset from ``seed`` (per restart, :func:`restart_seed`).
    ε (a number, or one per image) = 0 returns ``x`` (no attack).
    """
    eps, steps, alpha = check_budget(eps), check_steps(steps), check_alpha(alpha)
    step_factor, momentum = check_step_factor(step_factor), check_momentum(momentum)
    restarts, best_iterate = check_count("restarts", restarts), check_flag("best_iterate", best_iterate)
    random_start = check_flag("random_start", random_start)
    checked = AttackOptions.of(**options)
    check_seed(seed)
    check_combination(alpha, step_factor, restarts, random_start)
    x = tf.convert_to_tensor(x, tf.float32)
    if np.all(eps == 0):
        return x
    alpha = step_size(alpha, step_factor, default_step_factor, eps, steps)
    objective = loss_objective(checked.loss) if objective is None else objective
    params = [0.0] * steps if schedule is None else schedule(steps)
    best = best_score = None
    for restart in range(restarts):
        delta0 = uniform_start(x, eps, checked.relative_to, restart_seed(seed, restart)) if random_start else None
        x_adv, score = iterate(model, x, y, eps, alpha=alpha, objective=objective, params=params, direction=direction,
                               delta0=delta0, options=checked, momentum=momentum, best_iterate=best_iterate,
                               score=restarts > 1)
        if best is None:
            best, best_score = x_adv, score
        else:
            best, best_score = _keep_worse(best, best_score, x_adv, score, False)
    return best


def ifgsm(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float, *, steps: int = 10, alpha: float | None = None,
    step_factor: float | None = None, momentum: float = 0.0, best_iterate: bool = False, **options: Any,
) -> tf.Tensor:
    """Iterative FGSM: ``steps`` projected steps of size ``alpha`` (default ``step_factor · ε / steps``,
    step_factor 1: α · steps = ε).

    Arguments are as in :func:`tfrobseg.attacks.fgsm`; ``alpha`` is in the units of ε (a fraction
    too when ``relative_to`` is set). ``momentum`` > 0 is MI-FGSM; ``best_iterate`` keeps each
    image's lowest-Dice iterate (see the module doc). With ``steps=1, alpha=eps`` this is exactly FGSM.
    Returns the adversarial batch with ``‖x_adv − x‖∞ ≤ ε``; ``eps = 0`` returns ``x``.
    """
    return projected_attack(model, x, y, eps, steps=steps, alpha=alpha, step_factor=step_factor,
                            default_step_factor=1.0, direction=1.0, momentum=momentum, best_iterate=best_iterate,
                            **options)


def targeted_ifgsm(
    model: keras.Model, x: tf.Tensor, target: tf.Tensor, eps: float, *, steps: int = 10,
    alpha: float | None = None, step_factor: float | None = None, momentum: float = 0.0,
    best_iterate: bool = False, loss: LossLike = "dice", **options: Any,
) -> tf.Tensor:
    """Targeted i-FGSM (ti-FGSM): projected steps that *decrease* ``loss(target, model(x))``.

    Args:
        target: the mask the attacker wants predicted, shaped like the model output; build one
            with :func:`~tfrobseg.attacks.make_target` (background, foreground, a shifted mask).
        loss: defaults to the soft-Dice loss, as in Liu et al.
        best_iterate: keep each image's iterate with the highest Dice *with the target*.
        Other arguments as in :func:`ifgsm` (default α = ε / steps).
    """
    return projected_attack(model, x, target, eps, steps=steps, alpha=alpha, step_factor=step_factor,
                            default_step_factor=1.0, direction=-1.0, momentum=momentum, best_iterate=best_iterate,
                            loss=loss, **options)
