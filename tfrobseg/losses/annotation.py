"""Annotation-guided losses that use a second reader's mask (paper 004, Thakur, Sec. 3.3).

``y_true`` layout for both losses: shape (B, H, W, 2) with channel 0 the expert
(reference) mask and channel 1 the second reader's mask, both in {0, 1}; this is what
``tfrobseg.dataset.pipeline.to_xy(element, second_reader=True)`` produces. ``y_pred`` is (B, H, W, 1).
The prediction is always scored against the expert mask; the second reader only decides
where the "hard" pixels are:

    hard = expert XOR second reader  (computed as e + r − 2·e·r),
    easy = 1 − hard.

For a slice without a second reader, ``to_xy`` repeats the expert mask in channel 1, so the readers
agree and every pixel is "easy"; an all-zero channel 1 built by hand would instead make the whole
expert mask "hard".
"""

from __future__ import annotations

from keras import ops

from tfrobseg.losses._common import activate, non_batch_axes, split_readers
from tfrobseg.losses.crossentropy import FOCAL_GAMMA, pixel_bce, pixel_focal
from tfrobseg.losses.wrapper import SegmentationLoss

#: Hard / easy weights of AG-BCE (MicroSegNet's 4 : 1, as quoted by paper 004).
HARD_WEIGHT = 4.0
EASY_WEIGHT = 1.0
#: Side of the square used to dilate the hard region of the adaptive focal loss (our choice;
#: paper 004 dilates with ``cv2.dilate`` but does not report the kernel size).
ADAPTIVE_KERNEL_SIZE = 3
#: Lower bound on γ_adapt, which divides the easy term.
MIN_GAMMA = 0.1


def hard_region(expert, second, *, kernel_size: int = 1):
    """Reader disagreement (expert XOR second reader), dilated by a ``kernel_size`` square.

    Dilation of a {0, 1} mask by a k×k square is a k×k max-pool with stride 1 and "same"
    padding; ``kernel_size=1`` leaves the mask unchanged.
    """
    disagreement = expert + second - 2.0 * expert * second
    if kernel_size == 1:
        return disagreement
    return ops.max_pool(disagreement, pool_size=kernel_size, strides=1, padding="same")


def ag_bce_loss(y_true, y_pred, *, hard_weight: float = HARD_WEIGHT, easy_weight: float = EASY_WEIGHT,
                kernel_size: int = 1, from_logits: bool = False):
    """Annotation-guided BCE per sample (MicroSegNet, as described in paper 004, Sec. 1-2).

    mean over pixels of  w · BCE(expert, p),  w = W_hard on the hard region and W_easy
    elsewhere (default 4 / 1). The hard region is the reader disagreement, optionally
    dilated by ``kernel_size`` (default 1: no dilation). The weighted sum is divided by the
    pixel count, not by the weight sum.

    Args:
        y_true: (B, H, W, 2) expert and second-reader masks (see module docstring).
        y_pred: (B, H, W, 1) probabilities, or logits with ``from_logits``.

    Returns:
        (B,) float32 per-sample loss.
    """
    expert, second, y_pred = split_readers(y_true, y_pred)
    hard = hard_region(expert, second, kernel_size=kernel_size)
    weight = hard_weight * hard + easy_weight * (1.0 - hard)
    return ops.mean(weight * pixel_bce(expert, y_pred, from_logits=from_logits), axis=non_batch_axes(y_pred))


def adaptive_focal_loss(y_true, y_pred, *, gamma: float = FOCAL_GAMMA, kernel_size: int = ADAPTIVE_KERNEL_SIZE,
                        min_gamma: float = MIN_GAMMA, stop_gradient_gamma: bool = True, from_logits: bool = False):
    """Adaptive focal loss per sample (paper 004, Thakur, Sec. 3.3.4-3.3.6).

    With f = −(1 − p_t)^γ log p_t the pixel focal term against the expert mask (no α;
    γ = 2 by default; log p_t from the stable logits/clipped form instead of log(p_t + ε)),
    ``hard`` the reader disagreement dilated by a ``kernel_size`` square and
    ``easy = 1 − hard``:

        difficulty  = 1 − mean(p)                       (mean predicted probability)
        variability = mean(expert XOR second reader)    (undilated disagreement fraction)
        γ_adapt     = max(difficulty + variability, min_gamma)
        loss        = (γ_adapt · Σ f·hard + Σ f·easy / γ_adapt) / N_pixels,

    all per sample, N_pixels = H·W·C. ``min_gamma`` (0.1) keeps the 1/γ_adapt factor
    bounded when the network predicts foreground everywhere and the readers agree.
    Paper 004 describes the variability as the mean standard deviation of the annotations;
    we follow the project issue and take the mean disagreement (for two binary readers the
    per-pixel standard deviation is half of it). With ``stop_gradient_gamma`` (default)
    γ_adapt acts as a weight only: otherwise the network could lower the loss by shifting its
    mean prediction to rebalance the two terms instead of fitting the pixels.

    ``y_true``, ``y_pred`` and the result are as in :func:`ag_bce_loss`.
    """
    expert, second, y_pred = split_readers(y_true, y_pred)
    axes = non_batch_axes(y_pred)
    disagreement = hard_region(expert, second, kernel_size=1)
    hard = hard_region(expert, second, kernel_size=kernel_size)
    focal = pixel_focal(expert, y_pred, alpha=None, gamma=gamma, from_logits=from_logits)
    hard_sum = ops.sum(focal * hard, axis=axes)
    easy_sum = ops.sum(focal * (1.0 - hard), axis=axes)
    probs = activate(y_pred, from_logits=from_logits, softmax=False)
    gamma_adapt = ops.maximum((1.0 - ops.mean(probs, axis=axes)) + ops.mean(disagreement, axis=axes), min_gamma)
    if stop_gradient_gamma:
        gamma_adapt = ops.stop_gradient(gamma_adapt)
    n_pixels = ops.cast(ops.prod(ops.shape(y_pred)[1:]), "float32")
    return (gamma_adapt * hard_sum + easy_sum / gamma_adapt) / n_pixels


class AGBCELoss(SegmentationLoss, fn=ag_bce_loss, name="ag_bce"):
    """Annotation-guided BCE, W_hard / W_easy = 4 / 1; y_true = (expert, second reader) channels.

    See :func:`ag_bce_loss`. Reduction: per sample, then mean over the batch (default).
    """


class AdaptiveFocalLoss(SegmentationLoss, fn=adaptive_focal_loss, name="adaptive_focal"):
    """Adaptive focal loss of paper 004 (γ = 2, 3×3 dilation, γ_adapt ≥ 0.1); two-reader y_true.

    See :func:`adaptive_focal_loss`. Reduction: per sample, then mean over the batch (default).
    """
