"""Weighted sums of two losses: the study's BCE-Dice, BCE-Tversky, Dice-Tversky, and Dice + focal.

The study (Apostolidis et al., Sec. II-D (d)-(f), after Ma et al., "Loss Odyssey", 2021)
trains with weighted sums of BCE, Dice and Tversky but does not report the weights; the
defaults here are 0.5 / 0.5 and both weights are exposed. Each term is the per-sample
value of its own loss, so the sum is also per sample (mean over the batch by default).
"""

from __future__ import annotations

from tfrobseg.losses.crossentropy import FOCAL_GAMMA, bce_loss, focal_loss
from tfrobseg.losses.overlap import (
    SMOOTH,
    TVERSKY_ALPHA,
    TVERSKY_BETA,
    dice_loss,
    tversky_loss,
)
from tfrobseg.losses.wrapper import SegmentationLoss

#: Smoothing of the Dice term of the Dice + focal hybrid, as in paper 001 (Wang & Xu, Eq. 1).
DICE_FOCAL_SMOOTH = 1e-6


def bce_dice_loss(y_true, y_pred, *, bce_weight: float = 0.5, dice_weight: float = 0.5, smooth: float = SMOOTH,
                  from_logits: bool = False, softmax: bool = False, include_background: bool = True):
    """BCE-Dice: w_bce · BCE + w_dice · Dice, per sample (see :func:`bce_loss`, :func:`dice_loss`)."""
    region = {"from_logits": from_logits, "softmax": softmax}
    return (bce_weight * bce_loss(y_true, y_pred, **region)
            + dice_weight * dice_loss(y_true, y_pred, smooth=smooth, include_background=include_background, **region))


def bce_tversky_loss(y_true, y_pred, *, bce_weight: float = 0.5, tversky_weight: float = 0.5,
                     alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA, smooth: float = SMOOTH,
                     from_logits: bool = False, softmax: bool = False, include_background: bool = True):
    """BCE-Tversky: w_bce · BCE + w_tversky · Tversky(α, β), per sample."""
    region = {"from_logits": from_logits, "softmax": softmax}
    return (bce_weight * bce_loss(y_true, y_pred, **region)
            + tversky_weight * tversky_loss(y_true, y_pred, alpha=alpha, beta=beta, smooth=smooth,
                                            include_background=include_background, **region))


def dice_tversky_loss(y_true, y_pred, *, dice_weight: float = 0.5, tversky_weight: float = 0.5,
                      alpha: float = TVERSKY_ALPHA, beta: float = TVERSKY_BETA, smooth: float = SMOOTH,
                      from_logits: bool = False, softmax: bool = False, include_background: bool = True):
    """Dice-Tversky: w_dice · Dice + w_tversky · Tversky(α, β), per sample (same smoothing s)."""
    region = {"from_logits": from_logits, "softmax": softmax, "smooth": smooth,
              "include_background": include_background}
    return (dice_weight * dice_loss(y_true, y_pred, **region)
            + tversky_weight * tversky_loss(y_true, y_pred, alpha=alpha, beta=beta, **region))


def dice_focal_loss(y_true, y_pred, *, dice_weight: float = 1.0, focal_weight: float = 1.0,
                    alpha: float | None = None, gamma: float = FOCAL_GAMMA, smooth: float = DICE_FOCAL_SMOOTH,
                    from_logits: bool = False):
    """Dice + focal hybrid of paper 001 (Wang & Xu, Sec. III-C 3, Eqs. 1 and 4), binary masks.

    w_dice · Dice(s) + w_focal · Focal(α, γ). Paper 001 adds the two terms (weights 1/1),
    uses γ = 2 with no α weighting (α = None here) and s = 1e-6. Its focal term is a sum
    over pixels; here it is the pixel mean, which keeps it on the scale of the Dice term
    independently of the image size.
    """
    return (dice_weight * dice_loss(y_true, y_pred, smooth=smooth, from_logits=from_logits)
            + focal_weight * focal_loss(y_true, y_pred, alpha=alpha, gamma=gamma, from_logits=from_logits))


class BCEDiceLoss(SegmentationLoss, fn=bce_dice_loss, name="bce_dice"):
    """BCE-Dice loss, w_bce · BCE + w_dice · Dice (defaults 0.5/0.5, s = 1); see :func:`bce_dice_loss`.

    Reduction: per sample, then mean over the batch (default).
    """


class BCETverskyLoss(SegmentationLoss, fn=bce_tversky_loss, name="bce_tversky"):
    """BCE-Tversky loss, w_bce · BCE + w_tversky · Tversky (0.5/0.5, α = 0.3, β = 0.7, s = 1).

    See :func:`bce_tversky_loss`. Reduction: per sample, then mean over the batch (default).
    """


class DiceTverskyLoss(SegmentationLoss, fn=dice_tversky_loss, name="dice_tversky"):
    """Dice-Tversky loss, w_dice · Dice + w_tversky · Tversky (0.5/0.5, α = 0.3, β = 0.7, s = 1).

    See :func:`dice_tversky_loss`. Reduction: per sample, then mean over the batch (default).
    """


class DiceFocalLoss(SegmentationLoss, fn=dice_focal_loss, name="dice_focal"):
    """Dice + focal hybrid of paper 001 (weights 1/1, γ = 2, α = None, s = 1e-6); binary masks.

    See :func:`dice_focal_loss`. Reduction: per sample, then mean over the batch (default).
    """
