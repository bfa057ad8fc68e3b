"""CosPGD (Agnihotri, Jung & Keuper, "CosPGD: an efficient white-box adversarial attack for pixel-wise
prediction tasks", ICML 2024): PGD on a per-pixel loss weighted by how well each pixel is still predicted.

Each pixel's loss is scaled by the cosine similarity between its predicted class distribution and
the one-hot target, taken as a constant (not differentiated). Pixels the model still gets right
(cos ≈ 1) keep their full weight, pixels already fooled (cos → 0 for a binary head at p → 1 − y)
fade out, so the attack spends its budget where the segmentation still holds. For a one-channel
sigmoid head the class distribution of a pixel is (1 − p, p) — the softmax of the logits (0, z) —
and the target's is (1 − y, y):

    cos(p, y) = ((1 − y)(1 − p) + y·p) / ( ‖(1 − p, p)‖₂ · ‖(1 − y, y)‖₂ )      (‖(1 − y, y)‖ = 1 for a binary mask)

    untargeted:  L(x) = 1/(H·W) · Σ_pixels cos(p, y) · BCE(y, p),      x_t = Π(x_{t−1} + α · sign(∇ₓ L))
    targeted:    L(x) = 1/(H·W) · Σ_pixels (1 − cos(p, t)) · BCE(t, p), x_t = Π(x_{t−1} − α · sign(∇ₓ L))

The targeted form is the authors' (``cospgd_scale(..., targeted=True)`` in
github.com/shashankskagnihotri/cospgd: the weight becomes ``1 − cos`` "to punish dissimilarity to the
target", and the step descends the loss to the target): pixels already on target stop pulling.

Both start from a uniform random point of the ε-ball, as the authors' code does (``init_linf``).
The authors attack with a fixed α = 0.01 at ε = 0.03 (≈ 8/255) for T ∈ {3, 5, 10, 20, 40, 100};
here α follows the package's step rule α = step_factor · ε / T with step_factor 2.5, T = 20.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from tfrobseg.attacks.gradient import pixel_bce
from tfrobseg.attacks.iterative import no_loss_option, projected_attack


def cosine_similarity(y: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """Per pixel, the cosine between the two-class vectors (1 − y, y) and (1 − p, p)."""
    dot = (1.0 - y) * (1.0 - pred) + y * pred
    norms = tf.sqrt((1.0 - pred) ** 2 + pred**2) * tf.sqrt((1.0 - y) ** 2 + y**2)
    return dot / norms


def _mean_over_pixels(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))


def cospgd_objective(y: tf.Tensor, pred: tf.Tensor, param: tf.Tensor) -> tf.Tensor:
    """``(B,)``: each image's mean over pixels of ``cos(p, y) · BCE(y, p)``, the cosine not differentiated."""
    return _mean_over_pixels(tf.stop_gradient(cosine_similarity(y, pred)) * pixel_bce(y, pred))


def targeted_cospgd_objective(target: tf.Tensor, pred: tf.Tensor, param: tf.Tensor) -> tf.Tensor:
    """``(B,)``: each image's mean over pixels of ``(1 − cos(p, target)) · BCE(target, p)``, the weight not
    differentiated; the targeted attack descends it."""
    weight = tf.stop_gradient(1.0 - cosine_similarity(target, pred))
    return _mean_over_pixels(weight * pixel_bce(target, pred))


def cospgd(
    model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float, *, steps: int = 20, alpha: float | None = None,
    step_factor: float | None = None, random_start: bool = True, seed: int | tuple[int, int] = 0,
    restarts: int = 1, best_iterate: bool = False, **options: Any,
) -> tf.Tensor:
    """CosPGD, untargeted: ``steps`` projected sign steps up the cosine-weighted BCE of the module doc.

    Arguments are as in :func:`tfrobseg.attacks.segpgd` (default α = 2.5 · ε / steps, T = 20, random
    start; no ``loss`` option). Returns the adversarial batch, ``‖x_adv − x‖∞ ≤ ε``.
    """
    no_loss_option("cospgd", options)
    return projected_attack(
        model, x, y, eps, steps=steps, alpha=alpha, step_factor=step_factor, default_step_factor=2.5, direction=1.0,
        objective=cospgd_objective, random_start=random_start, seed=seed, restarts=restarts,
        best_iterate=best_iterate, **options,
    )


def targeted_cospgd(
    model: keras.Model, x: tf.Tensor, target: tf.Tensor, eps: float, *, steps: int = 20,
    alpha: float | None = None, step_factor: float | None = None, random_start: bool = True,
    seed: int | tuple[int, int] = 0, restarts: int = 1, best_iterate: bool = False, **options: Any,
) -> tf.Tensor:
    """CosPGD, targeted: projected sign steps *down* ``(1 − cos) · BCE`` to ``target``.

    Args:
        target: the mask the attacker wants predicted (:func:`~tfrobseg.attacks.make_target`).
        restarts, best_iterate: keep per image the restart / iterate with the *highest* Dice with the target.
        Other arguments as in :func:`cospgd`.
    """
    no_loss_option("targeted_cospgd", options)
    return projected_attack(
        model, x, target, eps, steps=steps, alpha=alpha, step_factor=step_factor, default_step_factor=2.5,
        direction=-1.0, objective=targeted_cospgd_objective, random_start=random_start, seed=seed,
        restarts=restarts, best_iterate=best_iterate, **options,
    )
