"""Input validation shared by the metric modules (binary masks, voxel spacing)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SpacingLike = float | Sequence[float] | np.ndarray | None


def as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a boolean mask, refusing anything that is not already binary.

    MedPy silently treats every non-zero value as foreground; a probability map passed by
    mistake would then count 0.01 as object. Here only bool arrays or numeric arrays whose
    values are exactly 0 or 1 are accepted, so forgetting to threshold is an error.
    """
    array = np.asarray(array)
    if array.ndim == 0:
        raise ValueError(f"{name} must be an array with at least one axis, got a scalar")
    if array.dtype == np.bool_:
        return array
    if not (np.issubdtype(array.dtype, np.number)):
        raise ValueError(f"{name} must be a boolean or numeric mask, got dtype {array.dtype}")
    if np.any((array != 0) & (array != 1)):
        raise ValueError(
            f"{name} must be binary (values 0/1 or bool); threshold probabilities first, "
            f"e.g. {name} > 0.5"
        )
    return array.astype(bool)


def as_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a prediction / reference pair: binary and of identical shape."""
    pred_mask = as_mask(pred, "pred")
    gt_mask = as_mask(gt, "gt")
    if pred_mask.shape != gt_mask.shape:
        raise ValueError(f"pred and gt shapes differ: {pred_mask.shape} vs {gt_mask.shape}")
    return pred_mask, gt_mask


def normalize_spacing(spacing: SpacingLike, ndim: int) -> np.ndarray:
    """Voxel spacing as a float64 vector of length ``ndim`` in the array's axis order.

    ``None`` means unit spacing (distances in voxels), a scalar is used for every axis.
    """
    if spacing is None:
        return np.ones(ndim, dtype=np.float64)
    values = np.atleast_1d(np.asarray(spacing, dtype=np.float64))
    if values.ndim != 1:
        raise ValueError(f"spacing must be a scalar or a 1-D sequence, got shape {values.shape}")
    if values.size == 1:
        values = np.repeat(values, ndim)
    if values.size != ndim:
        raise ValueError(
            f"spacing has {values.size} entries but the masks have {ndim} axes; give one "
            "spacing per array axis, in array order (reverse SimpleITK's GetSpacing())"
        )
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing must be finite and positive, got {values.tolist()}")
    return values
