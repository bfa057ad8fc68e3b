"""Per-class metrics of a multi-class segmentation (label maps), e.g. the zones: peripheral and transition zone.

Each class c is scored as its own binary segmentation, ``pred == c`` against ``gt == c``, with
:func:`~tfrobseg.metrics.evaluate_case` (the overlap counts of :mod:`tfrobseg.metrics.overlap`, the
surface distances of :mod:`tfrobseg.metrics.surface`): so a class's Dice, HD95 and ASSD are MedPy's
``dc`` / ``hd95`` / ``assd`` of the two binary maps (tested against MedPy 0.5.2 on the built-in
cohort's zones), and the empty-mask policy is the binary one (a class absent from both maps scores
Dice 1 and distance 0, flagged by ``empty_pred`` and ``empty_gt``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._common import SpacingLike
from .evaluate import evaluate_case

__all__ = ["per_class_metrics"]


def _labels(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as int64 labels; refuses non-integer values (probabilities or one-hot maps)."""
    array = np.asarray(array)
    if array.ndim == 0:
        raise ValueError(f"{name} must be a label map with at least one axis, got a scalar")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a numeric label map (0 background, 1..K the classes), got dtype {array.dtype}")
    if not np.issubdtype(array.dtype, np.integer) and np.any(array != np.round(array)):
        raise ValueError(f"{name} must hold integer labels; take the argmax of probabilities first")
    return array.astype(np.int64)


def per_class_metrics(
    pred_labels: np.ndarray,
    gt_labels: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    spacing: SpacingLike = None,
    names: Sequence[str] | Mapping[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """Metrics of each class of two label maps of the same shape (2-D or 3-D; ``spacing`` in array axis order).

    Args:
        pred_labels, gt_labels: integer label maps (0 = background), e.g. the argmax of a softmax output.
        classes: the classes to score; default every label other than 0 found in either map, sorted.
        spacing: voxel spacing in mm, array axis order (e.g. a :class:`~tfrobseg.dataset.volumes.Volume`'s).
        names: keys of the result instead of the class numbers: a sequence aligned with ``classes``
            or a mapping class -> name (e.g. ``{1: "PZ", 2: "TZ"}``).

    Returns:
        ``{class or name: {"dice", "hd95", "assd", "hausdorff", "sensitivity", "specificity", "precision",
        "f2", "empty_pred", "empty_gt"}}`` (:data:`~tfrobseg.metrics.METRIC_KEYS`), in the order of ``classes``.
    """
    pred, gt = _labels(pred_labels, "pred_labels"), _labels(gt_labels, "gt_labels")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_labels and gt_labels shapes differ: {pred.shape} vs {gt.shape}")
    if classes is None:
        classes = [int(c) for c in np.union1d(np.unique(pred), np.unique(gt)) if c != 0]
    classes = [int(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must not repeat, got {classes}")
    if names is None:
        keys: list[int | str] = list(classes)
    elif isinstance(names, Mapping):
        missing = [c for c in classes if c not in names]
        if missing:
            raise ValueError(f"names has no entry for class(es) {missing}")
        keys = [names[c] for c in classes]
    else:
        if len(names) != len(classes):
            raise ValueError(f"names has {len(names)} entries for {len(classes)} classes {classes}")
        keys = list(names)
    if len(set(keys)) != len(keys):
        raise ValueError(f"names must be distinct, got {keys}")
    results = {}
    for key, c in zip(keys, classes):
        try:
            results[key] = evaluate_case(pred == c, gt == c, spacing)
        except ValueError as error:
            raise ValueError(f"class {key}: {error}") from error
    return results
