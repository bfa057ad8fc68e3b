"""Overlap metrics from the confusion counts of two binary masks, and attack success.

Definitions follow MedPy 0.5 (``medpy.metric.binary``): Dice (``dc``), sensitivity (recall),
specificity, precision, plus the F-beta score used by the TverskyCE paper (F2, recall weighted
four times as much as precision) and the attack success of Wang & Xu.

Zero denominators (an empty reference, an empty prediction, a reference that fills the whole
array) are resolved explicitly, never as NaN: the ratio is 1.0 when prediction and reference
are identical (there was nothing to get wrong) and 0.0 otherwise. These are the values MedPy
0.5.2's ``except ZeroDivisionError`` branches intend (Dice 1.0 for two empty masks, 0.0 for
the other ratios); with NumPy 2, ``count_nonzero`` returns a NumPy integer, the division gives
NaN with a RuntimeWarning instead and that branch is never reached, so on these degenerate
inputs MedPy itself returns NaN. On every non-degenerate input the values are MedPy's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._common import as_mask_pair


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of a binary prediction against a binary reference."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def identical(self) -> bool:
        """True when prediction and reference agree on every voxel."""
        return self.fp == 0 and self.fn == 0


def confusion(pred: np.ndarray, gt: np.ndarray) -> Confusion:
    """Count true/false positives/negatives of ``pred`` against ``gt`` (same shape, binary)."""
    pred, gt = as_mask_pair(pred, gt)
    tp = int(np.count_nonzero(pred & gt))
    n_pred = int(np.count_nonzero(pred))
    n_gt = int(np.count_nonzero(gt))
    fp = n_pred - tp
    fn = n_gt - tp
    return Confusion(tp=tp, fp=fp, fn=fn, tn=pred.size - tp - fp - fn)


def _ratio(numerator: float, denominator: float, counts: Confusion) -> float:
    # 0/0 only happens when the quantity is undefined for this pair; identical masks are a
    # perfect answer (1.0), otherwise MedPy's 0.0 is kept so values match it exactly.
    if denominator == 0:
        return 1.0 if counts.identical else 0.0
    return float(numerator / denominator)


def dice_from_counts(counts: Confusion) -> float:
    """Dice = 2 TP / (2 TP + FP + FN); 1.0 when both masks are empty."""
    return _ratio(2.0 * counts.tp, 2.0 * counts.tp + counts.fp + counts.fn, counts)


def sensitivity_from_counts(counts: Confusion) -> float:
    """Sensitivity (recall, true positive rate) = TP / (TP + FN)."""
    return _ratio(counts.tp, counts.tp + counts.fn, counts)


def specificity_from_counts(counts: Confusion) -> float:
    """Specificity (true negative rate) = TN / (TN + FP)."""
    return _ratio(counts.tn, counts.tn + counts.fp, counts)


def precision_from_counts(counts: Confusion) -> float:
    """Precision (positive predictive value) = TP / (TP + FP)."""
    return _ratio(counts.tp, counts.tp + counts.fp, counts)


def f_beta_from_counts(counts: Confusion, beta: float = 2.0) -> float:
    """F-beta = (1 + b²) TP / ((1 + b²) TP + b² FN + FP)."""
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError(f"beta must be a finite positive number, got {beta}")
    b2 = float(beta) ** 2
    return _ratio((1.0 + b2) * counts.tp, (1.0 + b2) * counts.tp + b2 * counts.fn + counts.fp, counts)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice similarity coefficient 2|P ∩ G| / (|P| + |G|) (Apostolidis et al., Sec. II-E).

    Equal to MedPy's ``dc``; 1.0 when both masks are empty, 0.0 when exactly one is.
    """
    return dice_from_counts(confusion(pred, gt))


def sensitivity(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sensitivity TP / (TP + FN) (TverskyCE paper, Eq. 12); MedPy's ``sensitivity``."""
    return sensitivity_from_counts(confusion(pred, gt))


def specificity(pred: np.ndarray, gt: np.ndarray) -> float:
    """Specificity TN / (TN + FP) (TverskyCE paper, Eq. 14); MedPy's ``specificity``."""
    return specificity_from_counts(confusion(pred, gt))


def precision(pred: np.ndarray, gt: np.ndarray) -> float:
    """Precision TP / (TP + FP) (TverskyCE paper, Eq. 13); MedPy's ``precision``."""
    return precision_from_counts(confusion(pred, gt))


def f_beta(pred: np.ndarray, gt: np.ndarray, beta: float = 2.0) -> float:
    """F-beta score; ``beta=2`` is the recall-oriented F2 of the TverskyCE paper.

    F_b = (1 + b²) · precision · recall / (b² · precision + recall)
        = (1 + b²) TP / ((1 + b²) TP + b² FN + FP).
    ``beta=1`` gives Dice.
    """
    return f_beta_from_counts(confusion(pred, gt), beta)


def attack_success(dice_clean: float | np.ndarray, dice_adv: float | np.ndarray) -> float | np.ndarray:
    """Relative Dice drop caused by an attack, (Dice_clean − Dice_adv) / Dice_clean.

    Wang & Xu, "Susceptibility of Adversarial Attack on Medical Image Segmentation Models",
    Eq. 7 (multiply by 100 for their percentage). 1.0 means the attack erased the overlap, 0.0
    no effect; a negative value means the attack *improved* Dice and is kept as such.
    When Dice_clean == 0 there is no overlap an attack could destroy, so the success is defined
    as 0.0 (never NaN or ±inf). Works element-wise on arrays.
    """
    clean = np.asarray(dice_clean, dtype=np.float64)
    adv = np.asarray(dice_adv, dtype=np.float64)
    if np.any(~np.isfinite(clean)) or np.any(~np.isfinite(adv)):
        raise ValueError("attack_success needs finite Dice values")
    if np.any((clean < 0) | (clean > 1) | (adv < 0) | (adv > 1)):
        raise ValueError("Dice values must lie in [0, 1]")
    safe = np.where(clean > 0, clean, 1.0)
    success = np.where(clean > 0, (clean - adv) / safe, 0.0)
    if success.ndim == 0:
        return float(success)
    return success
