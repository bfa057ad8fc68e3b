"""The in-graph pieces of the defenses' training objectives: the adversarial and noisy examples, TRADES'
per-pixel KL divergence, the clean/adversarial mixing and distillation's softened outputs.

Every function is plain TensorFlow without Python decisions on tensors, traced inside
:meth:`tfrobseg.defenses.model.DefendedModel.train_step` (``model.fit``, XLA, mixed precision).

Notation: ``f`` the network (probabilities), ``Lᵢ`` the compiled loss of image i on its own (each image's own
loss, as the package's attacks take it: :func:`tfrobseg.attacks.gradient.loss_objective`), ε the L∞ radius
and α the step, both in model-input units. The attacks inside training

* take the input gradient with :func:`tfrobseg.attacks.gradient.input_gradient`, i.e. from the *current*
  weights with batch norm in inference mode (its moving statistics, not the batch's: the attack sees the
  network as it is deployed, and does not move the statistics);
* return a constant (``tf.stop_gradient``): the network is trained *on* the example, not through it;
* stay in the L∞ ball ``‖x_adv − x‖∞ ≤ ε`` (no clipping to an intensity range: the study's inputs are
  z-scores without bounds).

Mixed precision: under ``mixed_float16`` the attack's loss is multiplied by :data:`ATTACK_LOSS_SCALE` before
differentiating (per-pixel gradients of a loss averaged over the pixels underflow float16 otherwise), and an
overflowing, non-finite scaled gradient is taken again at scale 1, in-graph (:func:`attack_gradient`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfrobseg.attacks.gradient import DEFAULT_LOSS_SCALE, Objective, input_gradient
from tfrobseg.losses.distillation import soften

__all__ = ["ATTACK_LOSS_SCALE", "KL_CLIP", "TRADES_START_SIGMA", "attack_gradient", "attack_loss_scale",
           "fast_fgsm_example", "fgsm_example", "gaussian_noise", "kl_objective", "mix", "pgd_example",
           "pixel_kl", "soft_labels", "trades_example", "trades_loss", "uniform_noise"]

#: The attack's loss multiplier under float16 (Keras' initial dynamic loss scale, a power of two).
ATTACK_LOSS_SCALE = DEFAULT_LOSS_SCALE
#: Probabilities are clipped to [KL_CLIP, 1 − KL_CLIP] before the logarithms of the KL divergence.
KL_CLIP = 1e-7
#: TRADES starts its attack at x + 0.001 · N(0, 1) (Zhang et al.'s reference implementation).
TRADES_START_SIGMA = 0.001

SeedLike = keras.random.SeedGenerator | int | None


def attack_loss_scale(model: keras.Model) -> float:
    """:data:`ATTACK_LOSS_SCALE` when a layer of ``model`` computes in float16 (``mixed_float16``), else 1:
    float32 and bfloat16 have float32's exponent range, where nothing underflows."""
    return ATTACK_LOSS_SCALE if any(layer.compute_dtype == "float16" for layer in model.layers) else 1.0


def attack_gradient(model: keras.Model, x: tf.Tensor, y: tf.Tensor, objective: Objective,
                    scale: float = 1.0) -> tf.Tensor:
    """``∇ₓ Σᵢ objective(y, f(x))ᵢ`` (float32, inference mode), taken with the loss multiplied by ``scale``;
    where that scaled gradient is not finite (float16 overflow), taken again with scale 1 (``tf.cond``)."""
    param = tf.constant(0.0, tf.float32)
    grad = input_gradient(model, x, y, objective, param, tf.constant(scale, tf.float32))[0]
    if scale == 1.0:
        return grad

    def unscaled() -> tf.Tensor:
        return input_gradient(model, x, y, objective, param, tf.constant(1.0, tf.float32))[0]

    return tf.cond(tf.reduce_all(tf.math.is_finite(grad)), lambda: grad, unscaled)


def fgsm_example(model: keras.Model, x: tf.Tensor, y: tf.Tensor, objective: Objective, epsilon: float, *,
                 scale: float = 1.0) -> tf.Tensor:
    """The FGSM example of the adversarial defense, from the current weights.

    Formula: ``x_adv = x + ε · sign(∇ₓ Σᵢ Lᵢ(f(x), y))``.

    Source: Goodfellow et al. 2015; Liu et al. (paper 002), eq. 9.
    """
    x = tf.cast(x, tf.float32)
    grad = attack_gradient(model, x, y, objective, scale)
    return tf.stop_gradient(x + epsilon * tf.sign(grad))


def _uniform(x: tf.Tensor, radius: float, seed: SeedLike) -> tf.Tensor:
    return keras.random.uniform(tf.shape(x), -radius, radius, dtype="float32", seed=seed)


def fast_fgsm_example(model: keras.Model, x: tf.Tensor, y: tf.Tensor, objective: Objective, epsilon: float,
                      step_factor: float, seed: SeedLike, *, scale: float = 1.0) -> tf.Tensor:
    """The example of fast adversarial training: one FGSM step from a uniform random start, projected.

    Formula: ``δ₀ ~ U(−ε, ε)`` per pixel, ``δ = clip(δ₀ + α · sign(∇ₓ Σᵢ Lᵢ(f(x + δ₀), y)), −ε, ε)`` with
    ``α = step_factor · ε``, ``x_adv = x + δ``.

    Source: Wong, Rice & Kolter 2020, "Fast is better than free", Algorithm 3 (α = 1.25 ε).
    """
    x = tf.cast(x, tf.float32)
    start = x + _uniform(x, epsilon, seed)
    grad = attack_gradient(model, start, y, objective, scale)
    alpha = step_factor * epsilon
    return tf.stop_gradient(x + tf.clip_by_value(start - x + alpha * tf.sign(grad), -epsilon, epsilon))


def _projected_steps(model: keras.Model, x: tf.Tensor, start: tf.Tensor, y: tf.Tensor, objective: Objective,
                     epsilon: float, alpha: float, steps: int, scale: float) -> tf.Tensor:
    """``steps`` sign steps of size α on the objective from ``start``, each projected onto the ε-ball of ``x``.

    Unrolled (``steps`` is the defense's option, a Python int) rather than a ``tf.while_loop``: on the 2-core
    CPU, PGD's 7 steps on the 48 px U-Net (filters 8…128, batch 4) took 0.21 CPU s per training step unrolled
    against 0.24 s in a while loop, and 0.21 s against 0.60 s with XLA, for twice the tracing time once.
    """
    x_k = start
    for _ in range(steps):
        grad = attack_gradient(model, x_k, y, objective, scale)
        x_k = x + tf.clip_by_value(x_k + alpha * tf.sign(grad) - x, -epsilon, epsilon)
    return tf.stop_gradient(x_k)


def pgd_example(model: keras.Model, x: tf.Tensor, y: tf.Tensor, objective: Objective, epsilon: float,
                steps: int, step_factor: float, seed: SeedLike, *, scale: float = 1.0) -> tf.Tensor:
    """The PGD example of PGD adversarial training.

    Formula: ``x₀ = x + U(−ε, ε)`` per pixel, ``x_{k+1} = x + clip(x_k + α · sign(∇ₓ Σᵢ Lᵢ(f(x_k), y)) − x,
    −ε, ε)`` for k < steps, ``α = step_factor · ε / steps``, ``x_adv = x_steps``.

    Source: Madry et al. 2018 (step factor 2.5: the steps can cross the ball and back).
    """
    x = tf.cast(x, tf.float32)
    start = x + _uniform(x, epsilon, seed)
    return _projected_steps(model, x, start, y, objective, epsilon, step_factor * epsilon / steps, steps, scale)


def pixel_kl(p: tf.Tensor, q: tf.Tensor, *, softmax: bool = False) -> tf.Tensor:
    """``(B,)``: each image's mean over pixels of the KL divergence of prediction ``q`` from ``p``.

    Formula: one channel (a Bernoulli per pixel) ``KL(p‖q) = p log(p/q) + (1 − p) log((1 − p)/(1 − q))``;
    C > 1 channels (``softmax``, a categorical per pixel) ``KL(p‖q) = Σ_c p_c log(p_c / q_c)``; p and q
    clipped to [1e-7, 1 − 1e-7] first, then averaged over the H·W pixels of the image.

    Source: Zhang et al. 2019 (TRADES), the classifier's KL taken per pixel for segmentation.
    """
    p = tf.clip_by_value(tf.cast(p, tf.float32), KL_CLIP, 1.0 - KL_CLIP)
    q = tf.clip_by_value(tf.cast(q, tf.float32), KL_CLIP, 1.0 - KL_CLIP)
    kl = p * (tf.math.log(p) - tf.math.log(q))
    if not softmax:
        kl += (1.0 - p) * (tf.math.log(1.0 - p) - tf.math.log(1.0 - q))
    return tf.reduce_mean(tf.reduce_sum(kl, axis=-1), axis=[1, 2])


def _kl_one_channel(y: tf.Tensor, pred: tf.Tensor, param: tf.Tensor) -> tf.Tensor:
    return pixel_kl(y, pred)


def _kl_categorical(y: tf.Tensor, pred: tf.Tensor, param: tf.Tensor) -> tf.Tensor:
    return pixel_kl(y, pred, softmax=True)


def kl_objective(softmax: bool) -> Objective:
    """TRADES' attack objective ``(p, f(x'), param) -> (B,)``: :func:`pixel_kl` of the attacked prediction
    from the clean one ``p`` (handed in as the objective's target)."""
    return _kl_categorical if softmax else _kl_one_channel


def trades_example(model: keras.Model, x: tf.Tensor, epsilon: float, steps: int, step_factor: float,
                   seed: SeedLike, *, softmax: bool = False, scale: float = 1.0) -> tf.Tensor:
    """The example of TRADES: the point of the ε-ball whose prediction is farthest, in KL, from the clean one.

    Formula: ``p = f(x)`` (inference mode, held fixed), ``x'₀ = x + 0.001 · N(0, 1)`` per pixel,
    ``x'_{k+1} = x + clip(x'_k + α · sign(∇ Σᵢ KLᵢ(p ‖ f(x'_k))) − x, −ε, ε)`` for k < steps with
    ``α = step_factor · ε / steps`` and KLᵢ of :func:`pixel_kl`; ``x_adv = x'_steps``.

    Source: Zhang et al. 2019 (TRADES), the attack of their reference implementation (``trades.py``:
    0.001 N(0, 1) start, sign steps on the KL, projection onto the ball).
    """
    x = tf.cast(x, tf.float32)
    clean = tf.stop_gradient(tf.cast(model(x, training=False), tf.float32))
    start = x + TRADES_START_SIGMA * keras.random.normal(tf.shape(x), dtype="float32", seed=seed)
    return _projected_steps(model, x, start, clean, kl_objective(softmax), epsilon, step_factor * epsilon / steps,
                            steps, scale)


def mix(beta: float, clean: tf.Tensor, adversarial: tf.Tensor) -> tf.Tensor:
    """The adversarial defenses' objective from the clean and the adversarial loss of the batch.

    Formula: ``L̃ = β · L(x, y) + (1 − β) · L(x_adv, y)``.

    Source: Liu et al. (paper 002), eq. 9 (Goodfellow et al. 2015's objective; β = 0.5).
    """
    return beta * clean + (1.0 - beta) * adversarial


def trades_loss(natural: tf.Tensor, clean: tf.Tensor, adversarial: tf.Tensor, beta: float, *,
                softmax: bool = False) -> tf.Tensor:
    """TRADES' objective from the clean loss ``natural = L(f(x), y)`` and the clean and adversarial predictions.

    Formula: ``L(f(x), y) + β · (1/B) Σᵢ KLᵢ(f(x) ‖ f(x'))`` with KLᵢ of :func:`pixel_kl` (both predictions
    with gradients, as in the reference implementation).

    Source: Zhang et al. 2019 (TRADES), eq. 5 (β = 6 in their CIFAR-10 experiments).
    """
    return natural + beta * tf.reduce_mean(pixel_kl(clean, adversarial, softmax=softmax))


def uniform_noise(x: tf.Tensor, radius: float, seed: SeedLike) -> tf.Tensor:
    """The noisy copy of the uniform-noise defense.

    Formula: ``x + δ``, ``δ ~ U(−r, r)`` per pixel (radius r in the L∞ norm).

    Source: Liu et al. (paper 002): "random perturbations of radius 0.01 in infinity norm".
    """
    x = tf.cast(x, tf.float32)
    return x + _uniform(x, radius, seed)


def gaussian_noise(x: tf.Tensor, sigma: float, seed: SeedLike) -> tf.Tensor:
    """The noisy copy of the Gaussian-noise defense.

    Formula: ``x + σ · n``, ``n ~ N(0, 1)`` per pixel.

    Source: Liu et al. (paper 002), refs. 24 and 26 (Gaussian noise on the pixel values).
    """
    x = tf.cast(x, tf.float32)
    return x + sigma * keras.random.normal(tf.shape(x), dtype="float32", seed=seed)


def soft_labels(logits: tf.Tensor, temperature: float) -> tf.Tensor:
    """The outputs of a network run at temperature T: distillation's teacher output, soft labels.

    Formula: ``sigmoid(z / T)`` for one channel, ``softmax(z / T)`` over the C > 1 channels of the logits z.

    Source: Papernot et al. 2016; Liu et al. (paper 002), eq. 4.
    """
    logits = tf.cast(logits, tf.float32)
    return soften(logits, temperature=float(temperature), from_logits=True, softmax=logits.shape[-1] != 1)
