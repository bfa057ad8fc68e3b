"""Noise controls: perturbations of an attack's size without its gradient information.

A model that fails under an attack and not under noise of the same size is attacked, not just noisy.
Three controls, each inside the attack's L∞ box ``|δ| ≤ ε`` per pixel (ε per image, see ``relative_to``):

* **sign noise** (:func:`sign_noise`): ``δ = ε · s``, ``s ∈ {−1, +1}`` per pixel, independent and equally
  likely; the L∞ and L2 size of an FGSM perturbation of strength ε.
* **Gaussian noise** (:func:`gaussian_noise`): ``δ = clip(σ · n, −ε, ε)``, ``n ~ N(0, 1)`` per pixel.
* **Rician noise** (:func:`rician_noise`), the magnitude noise of MRI: complex Gaussian noise added to the
  magnitude image ``m`` and the magnitude taken again, ``m' = |m + σ (n₁ + i n₂)|``, ``δ = clip(m' − m, −ε, ε)``.

For the last two σ is chosen per image so that the perturbation's RMS ``sqrt(mean δ²)`` (over the image's
pixels and channels) equals a requested ``rms`` (``0 ≤ rms ≤ ε``), in practice the RMS of an attack's
perturbation of the same image (the runner's ``"gaussian"`` and ``"rician"`` entries measure it), so a table
compares an attack with noise of exactly its size under the same box.

**The magnitude approximation.** The inputs are z-scores, not magnitudes: a z-scored volume has negative
values and no zero of signal. Rician noise needs the magnitude, so each image is taken as
``m = x − min(x)``: its darkest pixel is treated as zero signal (air). Where the true signal of the darkest
pixel is above zero this overstates the Rician bias of the dark pixels; for bright pixels (m ≫ σ) Rician
noise is nearly Gaussian whatever the offset.

σ is found by bisection on the empirical RMS, in float64 over ``t = σ / (ε + σ) ∈ [0, 1]`` (so σ from 0 to
∞ in one bracket). The empirical RMS is continuous in σ, 0 at σ = 0 and ε in the limit σ → ∞, so the
bisection always finds σ with the RMS matched to float precision. The limit ``rms = ε`` is σ = ∞: Gaussian
noise becomes ``ε · sign(n)`` (sign noise), Rician noise ``+ε`` at every pixel (the magnitude grows
without bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import (
    budget,
    check_budget,
    check_clip,
    check_epsilon,
    check_relative_to,
    clip_bounds,
    signed_step,
)
from tfrobseg.attacks.params import check_seed

#: Bisection steps on t = σ / (ε + σ): 64 halvings reach float64 resolution of t.
SIGMA_BISECTIONS = 64
#: How far above ε a requested RMS may lie and still count as ε (float rounding of a measured RMS).
RMS_TOLERANCE = 1e-6

#: A number for the whole batch or one per image (a length-B sequence, array or tensor).
PerImage = float | Sequence[float] | np.ndarray | tf.Tensor


def stateless_seed(seed: int | tuple[int, int]) -> tf.Tensor:
    """A stateless-RNG seed from an int or a pair (e.g. ``(seed, batch_number)``)."""
    return tf.constant(check_seed(seed), tf.int64)


def sign_noise(
    x: tf.Tensor,
    eps: float,
    *,
    seed: int | tuple[int, int] = 0,
    clip: tuple[float, float] | None = None,
    relative_to: str | None = None,
) -> tf.Tensor:
    """``x`` plus ε times an independent random ±1 per pixel (reproducible for a given ``seed``).

    ε, ``clip`` and ``relative_to`` mean what they mean for :func:`tfrobseg.attacks.fgsm`.
    """
    eps, seed_pair = check_epsilon(eps), stateless_seed(seed)
    clip, relative_to = check_clip(clip), check_relative_to(relative_to)
    x = tf.convert_to_tensor(x, tf.float32)
    if eps == 0:
        return x
    bits = tf.random.stateless_uniform(tf.shape(x), seed=seed_pair, minval=0, maxval=2, dtype=tf.int32)
    sign = tf.cast(2 * bits - 1, tf.float32)
    return signed_step(x, eps, sign, clip, relative_to)


def _per_image(value: PerImage, batch: int, name: str, *, allow_inf: bool = False) -> tf.Tensor:
    """A number or a per-image ``(B,)`` vector of numbers ≥ 0 (finite unless ``allow_inf``), as float64 ``(B,)``."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or one number per image, got {value!r}") from None
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] != batch):
        raise ValueError(f"{name} must be a number or one value per image (shape ({batch},)), got shape {array.shape}")
    if not ((np.isfinite(array) | allow_inf).all() and (array >= 0).all()):
        raise ValueError(f"{name} must be {'' if allow_inf else 'finite and '}>= 0, got {value!r}")
    return tf.constant(np.broadcast_to(array, (batch,)), tf.float64)


def _radius(x: tf.Tensor, eps: PerImage, relative_to: str | None) -> tf.Tensor:
    """The per-image L∞ radius ε_i in input units, ``(B,)`` float32 (:func:`~tfrobseg.attacks.budget.budget`)."""
    return tf.reshape(budget(x, eps, relative_to), [-1])


def _expand(v: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """``v`` (one value per image) shaped ``(B, 1, ..., 1)`` to broadcast against ``like`` (slices or volumes).
    The rank is taken at run time: ``_matching_sigma`` retraces with relaxed shapes (``reduce_retracing``), whose
    static rank may be unknown once slices and volumes have both gone through it."""
    return tf.reshape(v, tf.concat([[-1], tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def _gaussian_delta(normals: tf.Tensor, m: tf.Tensor, sigma: tf.Tensor, radius: tf.Tensor) -> tf.Tensor:
    """``clip(σ n, −ε, ε)`` with ``n = normals[0]``, in float64, the σ = ∞ limit being ``ε · sign(n)``
    (``m`` is not used: Gaussian noise is additive)."""
    sigma, radius = _expand(sigma, m), _expand(radius, m)
    limit = radius * tf.sign(normals[0])
    return tf.where(tf.math.is_inf(sigma), limit, tf.clip_by_value(sigma * normals[0], -radius, radius))


def _rician_delta(normals: tf.Tensor, m: tf.Tensor, sigma: tf.Tensor, radius: tf.Tensor) -> tf.Tensor:
    """``clip(|m + σ (n₁ + i n₂)| − m, −ε, ε)`` in float64, the σ = ∞ limit being ``+ε``."""
    sigma, radius = _expand(sigma, m), _expand(radius, m)
    magnitude = tf.sqrt(tf.square(m + sigma * normals[0]) + tf.square(sigma * normals[1]))
    limit = tf.broadcast_to(radius, tf.shape(m))
    return tf.where(tf.math.is_inf(sigma), limit, tf.clip_by_value(magnitude - m, -radius, radius))


Formula = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def _draw(x: tf.Tensor, seed: int | tuple[int, int]) -> tuple[tf.Tensor, tf.Tensor]:
    """Two standard normal fields shaped like ``x``, ``stateless_normal([2, *x.shape], seed)`` (Gaussian noise
    uses the first, Rician both), and the magnitude image ``m = x − min(x)`` per image, both float64."""
    shape = tf.concat([[2], tf.shape(x)], 0)
    normals = tf.cast(tf.random.stateless_normal(shape, seed=stateless_seed(seed)), tf.float64)
    axes = list(range(1, x.shape.rank))
    m = tf.cast(x - tf.reduce_min(x, axes, keepdims=True), tf.float64)
    return normals, m


def _rms(delta: tf.Tensor) -> tf.Tensor:
    # Axes from the run-time rank (see _expand); the result is one value per image, (B,).
    return tf.reshape(tf.sqrt(tf.reduce_mean(tf.square(delta), tf.range(1, tf.rank(delta)))), [-1])


@tf.function(jit_compile=True, reduce_retracing=True)
def _matching_sigma(formula: Formula, normals: tf.Tensor, m: tf.Tensor, radius: tf.Tensor,
                    rms: tf.Tensor) -> tf.Tensor:
    """Per image, the σ whose perturbation has RMS ``rms``: bisection on ``t = σ / (ε + σ)``, keeping
    ``RMS(σ(lo)) < rms ≤ RMS(σ(hi))``; ``rms = 0`` gives σ = 0, ``rms = ε`` σ = ∞."""
    lo, hi = tf.zeros_like(rms), tf.ones_like(rms)

    def sigma_of(t: tf.Tensor) -> tf.Tensor:
        return tf.where(t < 1, radius * t / (1 - t), tf.constant(np.inf, tf.float64))

    for _ in tf.range(SIGMA_BISECTIONS):
        mid = (lo + hi) / 2
        below = _rms(formula(normals, m, sigma_of(mid), radius)) < rms
        lo, hi = tf.where(below, mid, lo), tf.where(below, hi, mid)
    # rms = ε is solved by any σ that clips every pixel; the documented one is the limit σ = ∞.
    found = tf.where(rms > 0, sigma_of(hi), tf.zeros_like(rms))
    return tf.where(rms >= radius, tf.fill(tf.shape(rms), tf.constant(np.inf, tf.float64)), found)


def _perturbation(formula: Formula, x: tf.Tensor, eps: PerImage, seed: int | tuple[int, int],
                  relative_to: str | None, *, sigma: PerImage | None = None, rms: PerImage | None = None) -> tf.Tensor:
    """δ (float32) of ``formula`` for a given σ, or for the σ that gives each image the RMS ``rms``."""
    eps, relative_to, _ = check_budget(eps), check_relative_to(relative_to), check_seed(seed)
    x = tf.convert_to_tensor(x, tf.float32)
    radius = _radius(x, eps, relative_to)
    batch = int(x.shape[0])
    if rms is not None:
        target = _per_image(rms, batch, "rms")
        above = target.numpy() > radius.numpy().astype(np.float64) * (1 + RMS_TOLERANCE)
        if above.any():
            raise ValueError(f"rms must be <= eps of each image (the L∞ box), got rms {target.numpy()[above]} "
                             f"above eps {radius.numpy()[above]}")
    else:
        sigma = _per_image(sigma, batch, "sigma", allow_inf=True)
    radius64 = tf.cast(radius, tf.float64)
    normals, m = _draw(x, seed)
    if rms is not None:
        sigma = _matching_sigma(formula, normals, m, radius64, tf.minimum(target, radius64))
    # Clipped to ±ε in float64 where ε is exactly the float32 radius, so the float32 δ keeps |δ| ≤ ε exactly.
    return tf.cast(formula(normals, m, sigma, radius64), tf.float32)


def gaussian_perturbation(
    x: tf.Tensor, eps: PerImage, *, sigma: PerImage, seed: int | tuple[int, int] = 0, relative_to: str | None = None
) -> tf.Tensor:
    """The Gaussian control's δ for a given σ: ``clip(σ · n, −ε, ε)`` (float32, shaped like ``x``).

    ``sigma`` (input units) is a number or one per image, ``math.inf`` giving ``ε · sign(n)``;
    ``n = tf.random.stateless_normal([2, *x.shape], seed)[0]``. :func:`gaussian_noise` chooses σ.
    """
    return _perturbation(_gaussian_delta, x, eps, seed, relative_to, sigma=sigma)


def rician_perturbation(
    x: tf.Tensor, eps: PerImage, *, sigma: PerImage, seed: int | tuple[int, int] = 0, relative_to: str | None = None
) -> tf.Tensor:
    """The Rician control's δ for a given σ: ``clip(|m + σ (n₁ + i n₂)| − m, −ε, ε)``, ``m = x − min(x)`` per
    image (float32, shaped like ``x``).

    ``sigma`` (input units) is a number or one per image, ``math.inf`` giving ``+ε``;
    ``(n₁, n₂) = tf.random.stateless_normal([2, *x.shape], seed)``. :func:`rician_noise` chooses σ.
    """
    return _perturbation(_rician_delta, x, eps, seed, relative_to, sigma=sigma)


def _noise(formula: Formula, x: tf.Tensor, eps: PerImage, rms: PerImage, seed: int | tuple[int, int],
           clip: tuple[float, float] | None, relative_to: str | None) -> tf.Tensor:
    lo, hi = clip_bounds(check_clip(clip))
    x = tf.convert_to_tensor(x, tf.float32)
    return tf.clip_by_value(x + _perturbation(formula, x, eps, seed, relative_to, rms=rms), lo, hi)


def gaussian_noise(
    x: tf.Tensor,
    eps: PerImage,
    *,
    rms: PerImage,
    seed: int | tuple[int, int] = 0,
    clip: tuple[float, float] | None = None,
    relative_to: str | None = None,
) -> tf.Tensor:
    """``x`` plus clipped Gaussian noise ``δ = clip(σ n, −ε, ε)`` whose per-image RMS is exactly ``rms``.

    Args:
        x: float32 batch ``(B, H, W, C)``.
        eps: the L∞ box, as for :func:`tfrobseg.attacks.fgsm` (input units, or a fraction with ``relative_to``),
            a number or one per image.
        rms: the RMS ``sqrt(mean δ²)`` of each image's δ, in input units: a number or one per image ``(B,)``,
            ``0 ≤ rms ≤ ε``. ``rms = ε`` is the limit σ → ∞, ``δ = ε · sign(n)``: sign noise in distribution.
            So the control matched to FGSM, whose perturbation ``ε · sign(∇)`` has RMS ε where no gradient
            component is 0, is sign noise.
        seed: stateless-RNG seed (an int or a pair): the same seed gives the same noise.
        clip: valid input range, applied after the box (the returned image's RMS offset is then ≤ ``rms``).
            Without it the offset is δ up to float32 rounding: ``(x + δ) − x`` differs from δ by up to half
            a unit in the last place of x, negligible unless |x| is large compared with ε.
        relative_to: ε convention, see :mod:`tfrobseg.attacks.budget`.

    Raises:
        ValueError: ``rms`` negative, not finite, of the wrong shape or above ε (beyond float rounding), or
            another invalid argument.
    """
    return _noise(_gaussian_delta, x, eps, rms, seed, clip, relative_to)


def rician_noise(
    x: tf.Tensor,
    eps: PerImage,
    *,
    rms: PerImage,
    seed: int | tuple[int, int] = 0,
    clip: tuple[float, float] | None = None,
    relative_to: str | None = None,
) -> tf.Tensor:
    """``x`` plus clipped Rician (MRI magnitude) noise whose per-image RMS is exactly ``rms``.

    ``δ = clip(|m + σ (n₁ + i n₂)| − m, −ε, ε)`` with ``m = x − min(x)`` per image: the darkest pixel of the
    z-scored image is taken as zero signal (see the module docstring). Unlike Gaussian noise δ is biased
    upwards where m is small compared with σ (the Rician floor); ``rms = ε`` is the limit σ → ∞, ``δ = +ε``
    everywhere. The arguments are those of :func:`gaussian_noise`.
    """
    return _noise(_rician_delta, x, eps, rms, seed, clip, relative_to)
