"""Fast Gradient Sign Method, for one ε and swept over a grid of ε with one gradient per batch.

FGSM (Goodfellow et al.; Apostolidis et al. eq. 1; Liu et al. eq. 1) moves every pixel by ε in the
direction that increases the attack loss:

    x_adv = clip(x + ε · sign(∇ₓ L(model(x), y)), lo, hi)

The sign does not depend on ε, so :func:`fgsm_sweep` computes it once per batch and then runs the
forward passes of all ε values stacked into one batch (or a few fixed-size chunks); the ε = 0
prediction is the gradient's own forward pass. The study's grid is ε ∈ {0.1, 0.2, …, 1.0}.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfrobseg.attacks.budget import (
    check_epsilon,
    check_epsilons,
    clip_bounds,
    epsilon_scale,
    signed_step,
)
from tfrobseg.attacks.gradient import compiled
from tfrobseg.attacks.params import AttackOptions, check_forward_batch


def fgsm(model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: float, **options: Any) -> tf.Tensor:
    """One-step FGSM: ``x + ε · sign(∇ₓ L(model(x), y))``, clipped to ``clip``.

    Args:
        model: Keras model returning probabilities for a ``(B, H, W, C)`` float32 batch.
        x: clean images, in model input units (z-scores in the study).
        y: true masks (the loss's ``y_true``).
        eps: attack strength ≥ 0, in input units, or a fraction when ``relative_to`` is set.
        **options: the :class:`~tfrobseg.attacks.params.AttackOptions`: ``loss`` (default
            ``"bce"``), ``clip``, ``relative_to``, ``loss_scale``, ``jit_compile``.

    Returns:
        The float32 adversarial batch. ``eps = 0`` returns ``x`` unchanged (no attack).
    """
    eps, checked = check_epsilon(eps), AttackOptions.of(**options)
    x = tf.convert_to_tensor(x, tf.float32)
    if eps == 0:
        return x
    sign, _ = checked.gradient_sign(model, x, y)
    return signed_step(x, eps, sign, checked.clip, checked.relative_to)


def _build_sweep_forward(model: keras.Model, loss_fn: None, jit_compile: bool) -> Callable:
    @tf.function(jit_compile=jit_compile)
    def sweep_forward(x, sign, eps, lo, hi):
        # eps: (K, B, 1, ..., 1) per-ε, per-image budget -> K adversarial copies of the batch.
        adv = tf.clip_by_value(x[None] + eps * sign[None], lo, hi)
        flat = tf.reshape(adv, [-1] + x.shape[1:].as_list())
        pred = tf.cast(model(flat, training=False), tf.float32)
        return tf.reshape(pred, [eps.shape[0], x.shape[0]] + pred.shape[1:].as_list()), adv

    return sweep_forward


def fgsm_sweep(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    epsilons: Sequence[float],
    *,
    return_images: bool = False,
    forward_batch: int | None = None,
    **options: Any,
) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
    """FGSM predictions for every ε of a grid, from a single input gradient.

    Equivalent to ``[model(fgsm(model, x, y, e, ...)) for e in epsilons]`` but the gradient sign is
    computed once; the adversarial copies of the batch for all ε > 0 are stacked and sent through
    the model together. Entries with ε = 0 reuse the clean prediction of the gradient's forward pass.

    Args:
        model, x, y, **options: as in :func:`fgsm`.
        epsilons: the ε grid (e.g. ``[0.1, 0.2, …, 1.0]``), each ≥ 0.
        return_images: also return the adversarial images.
        forward_batch: bound on images per forward call, to bound memory; ``None`` sends all
            ``len(epsilons) · B`` images in one call. Chunks have a fixed size so XLA compiles once.

    Returns:
        Predictions shaped ``(E, B, H, W, C)`` (float32 probabilities), and with ``return_images``
        the pair ``(predictions, adversarial)`` with adversarial images shaped ``(E, B, H, W, C)``.
    """
    eps_values, forward_batch = check_epsilons(epsilons), check_forward_batch(forward_batch)
    checked = AttackOptions.of(**options)
    x = tf.convert_to_tensor(x, tf.float32)
    lo, hi = clip_bounds(checked.clip)
    sign, clean = checked.gradient_sign(model, x, y)

    batch = int(x.shape[0])
    attacked = [i for i, e in enumerate(eps_values) if e > 0]
    per_call = len(attacked) if forward_batch is None else max(1, forward_batch // batch)
    per_call = max(1, min(per_call, len(attacked)))
    scale = epsilon_scale(x, checked.relative_to)
    forward = compiled(model, "sweep_forward", None, checked.jit_compile, _build_sweep_forward)

    preds: list[tf.Tensor | None] = [clean if e == 0 else None for e in eps_values]
    images: list[tf.Tensor | None] = [x if e == 0 else None for e in eps_values]
    for start in range(0, len(attacked), per_call):
        chunk = attacked[start : start + per_call]
        # Pad the last chunk with its own last ε so every call has the same shape (one compilation).
        padded = chunk + [chunk[-1]] * (per_call - len(chunk))
        # (K, 1, ..., 1) against scale's (B, 1, ..., 1): one budget per ε and image, slices or volumes alike.
        eps = tf.reshape(tf.constant([eps_values[i] for i in padded], tf.float32), [-1] + [1] * x.shape.rank)
        eps = eps * scale[None]
        chunk_pred, chunk_adv = forward(x, sign, eps, lo, hi)
        for k, i in enumerate(chunk):
            preds[i] = chunk_pred[k]
            images[i] = chunk_adv[k]
    predictions = tf.stack(preds)
    if return_images:
        return predictions, tf.stack(images)
    return predictions
