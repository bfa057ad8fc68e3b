"""Pixel-wise losses: binary (or categorical) cross-entropy and the binary focal loss.

Both average the pixel-wise values over all non-batch axes of each sample; the classes
then take the mean over the batch by default. With ``from_logits=True`` the logarithms
come from the logits form (softplus / log-softmax), which never overflows.
"""

from __future__ import annotations

from keras import ops

from tfrobseg.losses._common import (
    EPSILON,
    check_same_shape,
    non_batch_axes,
    spatial_axes,
    to_float32,
)
from tfrobseg.losses.wrapper import SegmentationLoss

#: Focal loss defaults of Lin et al. (2017), also the baseline of paper 004 (Thakur, Sec. 3.3.1).
FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0


def pixel_bce(y_true, y_pred, *, from_logits: bool):
    """Element-wise binary cross-entropy −[g log p + (1 − g) log(1 − p)] in float32.

    Uses ``keras.ops.binary_crossentropy``: with logits it is the stable
    max(z, 0) − z·g + log(1 + e^−|z|); with probabilities p is clipped to [1e-7, 1 − 1e-7].
    """
    return ops.binary_crossentropy(y_true, y_pred, from_logits=from_logits)


def bce_loss(y_true, y_pred, *, from_logits: bool = False, softmax: bool = False):
    """Cross-entropy per sample, the mean over its pixels (and channels).

    Binary case (default): the study's BCE (Apostolidis et al., Sec. II-D (a)), averaged
    over H, W and C. With ``softmax=True``: categorical cross-entropy −Σ_c g_c log p_c per
    pixel (one-hot ``y_true``), averaged over H and W.

    Returns:
        (B,) float32 per-sample loss.
    """
    y_true, y_pred = to_float32(y_true, y_pred)
    check_same_shape(y_true, y_pred)
    if softmax:
        per_pixel = ops.categorical_crossentropy(y_true, y_pred, from_logits=from_logits, axis=-1)
        return ops.mean(per_pixel, axis=spatial_axes(y_pred))
    return ops.mean(pixel_bce(y_true, y_pred, from_logits=from_logits), axis=non_batch_axes(y_pred))


def pixel_focal(y_true, y_pred, *, alpha: float | None, gamma: float, from_logits: bool):
    """Element-wise binary focal term −α_t (1 − p_t)^γ log p_t (Lin et al. 2017).

    p_t is the probability given to the true label, p_t = p·g + (1 − p)(1 − g), and
    α_t = α·g + (1 − α)(1 − g); ``alpha=None`` drops the α_t factor (the unweighted form
    of paper 001, Eq. 4).
    """
    ce = pixel_bce(y_true, y_pred, from_logits=from_logits)
    if from_logits:
        # 1 − p_t straight from the logits: exact even where sigmoid(z) rounds to 1.
        one_minus_pt = y_true * ops.sigmoid(-y_pred) + (1.0 - y_true) * ops.sigmoid(y_pred)
    else:
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        one_minus_pt = y_true * (1.0 - p) + (1.0 - y_true) * p
    loss = ce if gamma == 0.0 else ops.power(one_minus_pt, gamma) * ce
    if alpha is not None:
        loss = (alpha * y_true + (1.0 - alpha) * (1.0 - y_true)) * loss
    return loss


def focal_loss(y_true, y_pred, *, alpha: float | None = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA,
               from_logits: bool = False):
    """Binary focal loss per sample (Lin et al. 2017), the mean of :func:`pixel_focal` over pixels.

    Defaults α = 0.25, γ = 2 (the baseline focal loss of paper 004, Thakur, Sec. 3.3).
    With γ = 0 and α = 0.5 this is exactly half the BCE.

    Returns:
        (B,) float32 per-sample loss.
    """
    y_true, y_pred = to_float32(y_true, y_pred)
    check_same_shape(y_true, y_pred)
    per_pixel = pixel_focal(y_true, y_pred, alpha=alpha, gamma=gamma, from_logits=from_logits)
    return ops.mean(per_pixel, axis=non_batch_axes(y_pred))


class BCELoss(SegmentationLoss, fn=bce_loss, name="bce"):
    """Binary cross-entropy (categorical with ``softmax=True``); see :func:`bce_loss`.

    Reduction: per-sample mean over pixels, then mean over the batch (default). For
    equal-sized samples this equals ``keras.losses.BinaryCrossentropy``.
    """


class FocalLoss(SegmentationLoss, fn=focal_loss, name="focal"):
    """Binary focal loss with α = 0.25, γ = 2 by default; see :func:`focal_loss`.

    Reduction: per-sample mean over pixels, then mean over the batch (default).
    """
