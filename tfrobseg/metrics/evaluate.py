"""Whole-case evaluation: all segmentation metrics of a case, many cases in parallel.

Tables of the study are per patient: the 2-D slice predictions of a patient are stacked back
in slice order (:func:`stack_slices`) and evaluated as one 3-D volume with the voxel spacing
(:func:`evaluate_case`, :func:`evaluate_cases`). Per-slice 2-D metrics are available with
:func:`evaluate_slices`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, Unpack

import numpy as np
import pandas as pd

from ._common import SpacingLike, as_mask_pair, normalize_spacing
from .overlap import (
    confusion,
    dice_from_counts,
    f_beta_from_counts,
    precision_from_counts,
    sensitivity_from_counts,
    specificity_from_counts,
)
from .surface import SurfaceMetricOptions, surface_metrics

METRIC_KEYS = (
    "dice", "hd95", "assd", "hausdorff", "sensitivity", "specificity", "precision", "f2",
    "empty_pred", "empty_gt",
)
_CASE_ARRAY_KEYS = ("pred", "gt", "spacing")


def evaluate_case(
    pred: np.ndarray, gt: np.ndarray, spacing: SpacingLike = None, **options: Unpack[SurfaceMetricOptions]
) -> dict[str, Any]:
    """All metrics of one case (2-D or 3-D binary masks, ``spacing`` in array axis order).

    Returns a dict with ``dice, hd95, assd, hausdorff, sensitivity, specificity, precision, f2``
    (floats; distances in the units of ``spacing``) and the flags ``empty_pred`` / ``empty_gt``
    (bools) so that tables can count the cases where the empty-mask policy applied (both empty:
    Dice 1 and distances 0; exactly one empty: Dice 0 and distances = ``empty_distance``,
    default the physical diagonal of the array). No value is ever NaN. ``options`` are those of
    :func:`~tfrobseg.metrics.surface_metrics` (``connectivity``, ``hd95_convention``,
    ``assd_convention``, ``empty_distance``).
    """
    pred, gt = as_mask_pair(pred, gt)
    counts = confusion(pred, gt)
    row: dict[str, Any] = {
        "dice": dice_from_counts(counts),
        **surface_metrics(pred, gt, spacing, **options),
        "sensitivity": sensitivity_from_counts(counts),
        "specificity": specificity_from_counts(counts),
        "precision": precision_from_counts(counts),
        "f2": f_beta_from_counts(counts, 2.0),
        "empty_pred": counts.tp + counts.fp == 0,
        "empty_gt": counts.tp + counts.fn == 0,
    }
    return {key: row[key] for key in METRIC_KEYS}


def _split_case(case: Any, index: int) -> tuple[np.ndarray, np.ndarray, SpacingLike, dict[str, Any]]:
    if isinstance(case, Mapping):
        missing = [key for key in ("pred", "gt") if key not in case]
        if missing:
            raise ValueError(f"case {index} lacks {missing}; a case needs 'pred' and 'gt' (and optionally 'spacing')")
        meta = {key: value for key, value in case.items() if key not in _CASE_ARRAY_KEYS}
        clash = sorted(set(meta) & set(METRIC_KEYS))
        if clash:
            raise ValueError(f"case {index} has metadata keys that clash with metric columns: {clash}")
        return case["pred"], case["gt"], case.get("spacing"), meta
    if isinstance(case, Sequence) and len(case) in (2, 3):
        return case[0], case[1], (case[2] if len(case) == 3 else None), {}
    raise ValueError(f"case {index} must be a mapping with 'pred', 'gt', 'spacing' or a (pred, gt[, spacing]) tuple")


def _evaluate_indexed(item: tuple[int, Any], options: dict[str, Any]) -> dict[str, Any]:
    index, case = item
    pred, gt, spacing, meta = _split_case(case, index)
    try:
        metrics = evaluate_case(pred, gt, spacing, **options)
    except ValueError as error:
        label = ", ".join(f"{k}={v}" for k, v in meta.items()) or f"index {index}"
        raise ValueError(f"case {label}: {error}") from error
    return {**meta, **metrics}


def evaluate_cases(
    cases: Iterable[Mapping[str, Any] | Sequence[Any]],
    *,
    workers: int = 1,
    mp_context: str = "spawn",
    **options: Unpack[SurfaceMetricOptions],
) -> pd.DataFrame:
    """Evaluate many cases, optionally in parallel processes; one row per case, input order.

    Each case is a mapping with ``pred``, ``gt`` and optionally ``spacing``; its other keys
    (``patient_id``, ``epsilon``, ``model`` …) become leading columns. A ``(pred, gt[, spacing])``
    tuple is accepted too. ``options`` are passed to :func:`evaluate_case`.

    ``workers > 1`` uses worker processes (:func:`tfrobseg.parallel.process_map`); results keep the input order, so the output
    is identical for any number of workers. ``spawn`` is the default start method because the
    caller usually has TensorFlow loaded, whose threads do not survive ``fork``.
    """
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    items = list(enumerate(cases))
    worker = partial(_evaluate_indexed, options=options)
    if workers == 1 or len(items) <= 1:
        rows = [worker(item) for item in items]
    else:
        from tfrobseg.parallel import process_map

        rows = [row for _, row in process_map(worker, items, workers=int(workers), ordered=True,
                                              start_method=mp_context)]
    if not rows:
        return pd.DataFrame(columns=list(METRIC_KEYS))
    frame = pd.DataFrame(rows)
    meta_columns = [column for column in frame.columns if column not in METRIC_KEYS]
    return frame[meta_columns + list(METRIC_KEYS)]


def evaluate_slices(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: SpacingLike = None,
    *,
    axis: int = 0,
    **options: Unpack[SurfaceMetricOptions],
) -> pd.DataFrame:
    """Per-slice 2-D metrics of a volume; one row per slice with a ``slice_index`` column.

    ``spacing`` is the volume's spacing (array axis order); each slice uses the spacing of
    the two remaining axes. Slices where both masks are empty score Dice 1 and distance 0 and
    are flagged by ``empty_pred & empty_gt``; exclude them explicitly if a table should not
    count them.
    """
    pred, gt = as_mask_pair(pred, gt)
    if pred.ndim != 3:
        raise ValueError(f"evaluate_slices needs 3-D volumes, got shape {pred.shape}")
    spacing_arr = normalize_spacing(spacing, 3)
    axis = int(axis) % 3
    in_plane = np.delete(spacing_arr, axis)
    rows = []
    for index in range(pred.shape[axis]):
        metrics = evaluate_case(
            np.take(pred, index, axis=axis), np.take(gt, index, axis=axis), in_plane, **options
        )
        rows.append({"slice_index": index, **metrics})
    return pd.DataFrame(rows, columns=["slice_index", *METRIC_KEYS])


def stack_slices(
    slices: Mapping[int, np.ndarray] | Iterable[tuple[int, np.ndarray]],
    *,
    n_slices: int | None = None,
) -> np.ndarray:
    """Stack 2-D slices back into a (Z, H, W) volume in slice-index order.

    ``slices`` maps slice index → (H, W) or (H, W, 1) array (or is an iterable of
    ``(index, array)`` pairs, e.g. from the attack runner's records). Duplicate indices, or
    missing ones when ``n_slices`` is given, raise ValueError: a per-patient metric over an
    incomplete volume would be silently wrong.
    """
    pairs = list(slices.items()) if isinstance(slices, Mapping) else list(slices)
    if not pairs:
        raise ValueError("no slices to stack")
    indices = [int(index) for index, _ in pairs]
    if len(set(indices)) != len(indices):
        raise ValueError(f"duplicate slice indices: {sorted(i for i in set(indices) if indices.count(i) > 1)}")
    if n_slices is not None and sorted(indices) != list(range(int(n_slices))):
        missing = sorted(set(range(int(n_slices))) - set(indices))
        raise ValueError(f"expected slices 0..{int(n_slices) - 1}; missing {missing}, got {len(indices)} slices")
    arrays = []
    for index, array in sorted(pairs, key=lambda pair: int(pair[0])):
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"slice {index} must be (H, W) or (H, W, 1), got shape {array.shape}")
        arrays.append(array)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"slices have different shapes: {sorted(shapes)}")
    return np.stack(arrays, axis=0)
