"""Segmentation losses of the study and its related work, as Keras 3 losses.

Every loss is a plain function returning per-sample values (shape (B,)) plus a
``keras.losses.Loss`` subclass (:class:`~tfrobseg.losses.wrapper.SegmentationLoss`) that stores
the function's keyword arguments and is registered for serialization under the package name
``tfrobseg`` (so compiled models saved to ``.keras`` load without ``custom_objects``).
Call convention: ``loss(y_true, y_pred)`` with ``y_true`` (B, H, W, 1) — or (B, H, W, 2)
(expert, second reader) for ``ag_bce`` and ``adaptive_focal`` — and ``y_pred``
(B, H, W, 1) probabilities (``from_logits=True`` for logits). Computation is float32;
the default reduction is the mean of the per-sample values over the batch.

>>> loss = get_loss("bce_tversky", alpha=0.3, beta=0.7)
"""

from __future__ import annotations

from typing import Any

from tfrobseg import study
from tfrobseg.losses.adaptive import (
    AdaptiveTverskyCELoss,
    AdaptiveTverskyCEWeighting,
    tversky_ce_components,
    tversky_ce_loss,
)
from tfrobseg.losses.annotation import (
    AdaptiveFocalLoss,
    AGBCELoss,
    adaptive_focal_loss,
    ag_bce_loss,
    hard_region,
)
from tfrobseg.losses.compound import (
    BCEDiceLoss,
    BCETverskyLoss,
    DiceFocalLoss,
    DiceTverskyLoss,
    bce_dice_loss,
    bce_tversky_loss,
    dice_focal_loss,
    dice_tversky_loss,
)
from tfrobseg.losses.crossentropy import BCELoss, FocalLoss, bce_loss, focal_loss
from tfrobseg.losses.distillation import (
    SoftDiceDistillationLoss,
    soft_dice_distillation_loss,
)
from tfrobseg.losses.overlap import DiceLoss, TverskyLoss, dice_loss, tversky_loss
from tfrobseg.losses.wrapper import SegmentationLoss

#: Every registered loss with its display name, in registry order; the study's six display names
#: match the loss column of ../shared/reference/published_tables.csv.
_LOSSES: tuple[tuple[type[SegmentationLoss], str], ...] = (
    (BCELoss, "BCE"),
    (DiceLoss, "Dice"),
    (TverskyLoss, "Tversky"),
    (BCEDiceLoss, "BCE-Dice"),
    (BCETverskyLoss, "BCE-Tversky"),
    (DiceTverskyLoss, "Dice-Tversky"),
    (FocalLoss, "Focal"),
    (DiceFocalLoss, "Dice-Focal"),
    (AdaptiveTverskyCELoss, "Adaptive TverskyCE"),
    (AGBCELoss, "AG-BCE"),
    (AdaptiveFocalLoss, "Adaptive Focal"),
    (SoftDiceDistillationLoss, "Soft-Dice Distillation"),
)
_REGISTRY: dict[str, type[SegmentationLoss]] = {cls.default_name: cls for cls, _ in _LOSSES}

#: Every loss name accepted by :func:`get_loss`.
LOSS_NAMES: tuple[str, ...] = tuple(_REGISTRY)
#: The six losses of the study (Apostolidis et al., Sec. II-D), in the order of its tables.
STUDY_LOSSES: tuple[str, ...] = study.LOSSES
#: Names that take a two-channel y_true (expert, second reader).
SECOND_READER_LOSSES: tuple[str, ...] = (AGBCELoss.default_name, AdaptiveFocalLoss.default_name)
#: Display names of every registered loss.
LOSS_DISPLAY_NAMES: dict[str, str] = {cls.default_name: display for cls, display in _LOSSES}


def get_loss(name: str, **kwargs: Any) -> SegmentationLoss:
    """Instantiate the loss registered as ``name`` with constructor keyword arguments ``kwargs``.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or invalid arguments.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as exc:  # unexpected keyword: report it as bad input, naming the loss
        raise ValueError(f"invalid arguments for loss {name!r}: {exc}") from exc


__all__ = [
    "LOSS_DISPLAY_NAMES",
    "LOSS_NAMES",
    "SECOND_READER_LOSSES",
    "STUDY_LOSSES",
    "AGBCELoss",
    "AdaptiveFocalLoss",
    "AdaptiveTverskyCELoss",
    "AdaptiveTverskyCEWeighting",
    "BCEDiceLoss",
    "BCELoss",
    "BCETverskyLoss",
    "DiceFocalLoss",
    "DiceLoss",
    "DiceTverskyLoss",
    "FocalLoss",
    "SegmentationLoss",
    "SoftDiceDistillationLoss",
    "TverskyLoss",
    "adaptive_focal_loss",
    "ag_bce_loss",
    "bce_dice_loss",
    "bce_loss",
    "bce_tversky_loss",
    "dice_focal_loss",
    "dice_loss",
    "dice_tversky_loss",
    "focal_loss",
    "get_loss",
    "hard_region",
    "soft_dice_distillation_loss",
    "tversky_ce_components",
    "tversky_ce_loss",
    "tversky_loss",
]
