"""Surface-distance metrics in millimetres: HD95, ASSD and the Hausdorff distance.

Definitions follow MedPy 0.5.2 (``medpy.metric.binary.hd95`` / ``assd`` / ``hd``):

* the surface of a mask is ``mask XOR binary_erosion(mask)`` with the face-connected
  structuring element (``connectivity=1``); the erosion treats everything outside the array
  as background (SciPy's ``border_value=0``), so a mask touching the array border has
  surface voxels on that border;
* the directed distances from the surface of A to the surface of B are the values at A's
  surface voxels of the Euclidean distance transform of ``~surface(B)`` computed with the
  voxel spacing (``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``);
* HD95 is the 95th percentile (NumPy's linear interpolation) of the *pooled* distances of both
  directions; ASSD is the mean of the *pooled* (concatenated) distances of both directions,
  i.e. each direction is weighted by its number of surface voxels — what MedPy 0.5.2 does.
  The other published conventions are available through ``convention=``:
  ``hd95(..., convention="max_directed")`` is MONAI's ``compute_hausdorff_distance(
  percentile=95)`` (maximum of the two directed 95th percentiles) and
  ``assd(..., convention="mean_directed")`` is the mean of the two directed means (older
  MedPy and many papers).

Spacing is given in the array's axis order. SimpleITK's ``image.GetSpacing()`` is (x, y, z)
while ``GetArrayFromImage`` returns a (z, y, x) array, so pass ``spacing[::-1]``.

Empty masks (never NaN): both empty → 0 mm; exactly one empty → ``empty_distance``, by default
:func:`worst_case_distance`, the diagonal of the array's physical extent
``sqrt(sum((n_i · s_i)²))``, which is larger than any distance two non-empty masks of that
array can have.

Speed: all work happens on the bounding box of ``pred | gt``. This is exact, not an
approximation: every surface voxel of both masks lies inside that box; the erosion of either
mask inside the box is unchanged because a voxel just outside the box is background in the
full array too (or lies outside the array, which the erosion also treats as background); and
the exact EDT distance from a query voxel to the nearest feature voxel does not depend on how
far the array extends beyond the features. Each surface and each EDT is computed once and
shared by HD95, ASSD and HD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict, Unpack

import numpy as np
from scipy.ndimage import (
    binary_erosion,
    distance_transform_edt,
    generate_binary_structure,
)

from ._common import SpacingLike, as_mask, as_mask_pair, normalize_spacing

HD95_CONVENTIONS = ("pooled", "max_directed")
ASSD_CONVENTIONS = ("pooled", "mean_directed")


class SurfaceOptions(TypedDict, total=False):
    """Options of :func:`surface_metrics` that the single-metric functions pass on to it."""

    connectivity: int
    empty_distance: float | None


class SurfaceMetricOptions(SurfaceOptions, total=False):
    """Every keyword option of :func:`surface_metrics`, as :func:`~tfrobseg.metrics.evaluate_case` passes them on."""

    hd95_convention: str
    assd_convention: str


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances (mm) between two non-empty masks.

    ``pred_to_gt[i]`` is the distance from the i-th surface voxel of ``pred`` to the nearest
    surface voxel of ``gt``; ``gt_to_pred`` the other direction.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray

    @property
    def pooled(self) -> np.ndarray:
        """Both directions concatenated (MedPy's pooling)."""
        return np.concatenate([self.pred_to_gt, self.gt_to_pred])

    def hd95(self, convention: str = "pooled") -> float:
        """95th percentile distance; see the module docstring for the conventions."""
        _check_convention(convention, HD95_CONVENTIONS, "hd95")
        if convention == "pooled":
            return float(np.percentile(self.pooled, 95))
        return float(max(np.percentile(self.pred_to_gt, 95), np.percentile(self.gt_to_pred, 95)))

    def assd(self, convention: str = "pooled") -> float:
        """Average symmetric surface distance; see the module docstring for the conventions."""
        _check_convention(convention, ASSD_CONVENTIONS, "assd")
        if convention == "pooled":
            return float(self.pooled.mean())
        return float(0.5 * (self.pred_to_gt.mean() + self.gt_to_pred.mean()))

    def hausdorff(self) -> float:
        """Maximum of all surface distances (the classical symmetric Hausdorff distance)."""
        return float(max(self.pred_to_gt.max(), self.gt_to_pred.max()))


def _check_convention(convention: str, allowed: tuple[str, ...], metric: str) -> None:
    if convention not in allowed:
        raise ValueError(f"{metric} convention must be one of {allowed}, got {convention!r}")


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if not isinstance(connectivity, (int, np.integer)) or not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be an integer in [1, {ndim}], got {connectivity!r}")
    return generate_binary_structure(ndim, int(connectivity))


def worst_case_distance(shape: tuple[int, ...], spacing: SpacingLike = None) -> float:
    """Distance reported when exactly one mask is empty: the physical diagonal of the array.

    ``sqrt(sum((n_i · s_i)²))`` for shape ``n`` and spacing ``s`` (array axis order); e.g.
    384 × 384 × 19 voxels of 0.5 × 0.5 × 3.0 mm (as (3.0, 0.5, 0.5) for a (19, 384, 384)
    array) give 277.5 mm.
    """
    shape_arr = np.asarray(shape, dtype=np.float64)
    return float(np.sqrt(np.sum((shape_arr * normalize_spacing(spacing, len(shape))) ** 2)))


def surface_voxels(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Boolean map of the surface voxels of ``mask``: ``mask XOR erosion(mask)`` as in MedPy."""
    mask = as_mask(mask, "mask")
    eroded = binary_erosion(mask, structure=_structure(mask.ndim, connectivity), border_value=0)
    return mask & ~eroded


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others)) if others else np.flatnonzero(mask)
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _distances(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray, connectivity: int) -> SurfaceDistances:
    # Caller guarantees both masks are non-empty and validated.
    box = _bounding_box(pred | gt)
    pred_box, gt_box = pred[box], gt[box]
    structure = _structure(pred.ndim, connectivity)
    pred_surface = pred_box & ~binary_erosion(pred_box, structure=structure, border_value=0)
    gt_surface = gt_box & ~binary_erosion(gt_box, structure=structure, border_value=0)
    # The EDT measures the distance to the nearest zero, hence the inverted surface maps.
    to_gt = distance_transform_edt(~gt_surface, sampling=spacing)[pred_surface]
    to_pred = distance_transform_edt(~pred_surface, sampling=spacing)[gt_surface]
    return SurfaceDistances(pred_to_gt=to_gt, gt_to_pred=to_pred)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: SpacingLike = None, *, connectivity: int = 1
) -> SurfaceDistances:
    """Directed surface distances in the units of ``spacing`` (array axis order).

    Raises ValueError when either mask is empty (there is no surface to measure); the
    metric functions below apply the documented empty-mask policy instead.
    """
    pred, gt = as_mask_pair(pred, gt)
    spacing_arr = normalize_spacing(spacing, pred.ndim)
    if not pred.any() or not gt.any():
        raise ValueError("surface distances are undefined for an empty mask (pred or gt is empty)")
    return _distances(pred, gt, spacing_arr, connectivity)


def surface_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: SpacingLike = None,
    *,
    connectivity: int = 1,
    hd95_convention: str = "pooled",
    assd_convention: str = "pooled",
    empty_distance: float | None = None,
) -> dict[str, float]:
    """HD95, ASSD and Hausdorff distance from one pair of distance transforms.

    Returns ``{"hd95": ..., "assd": ..., "hausdorff": ...}`` in the units of ``spacing``,
    applying the empty-mask policy of the module docstring: ``empty_distance`` (default
    :func:`worst_case_distance`) when exactly one mask is empty. ``connectivity`` selects the
    structuring element of the surface erosion (1: face-connected, MedPy's default).
    """
    pred, gt = as_mask_pair(pred, gt)
    spacing_arr = normalize_spacing(spacing, pred.ndim)
    _check_convention(hd95_convention, HD95_CONVENTIONS, "hd95")
    _check_convention(assd_convention, ASSD_CONVENTIONS, "assd")
    _structure(pred.ndim, connectivity)
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not has_pred and not has_gt:
        return {"hd95": 0.0, "assd": 0.0, "hausdorff": 0.0}
    if not has_pred or not has_gt:
        if empty_distance is None:
            value = worst_case_distance(pred.shape, spacing_arr)
        else:
            value = float(empty_distance)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"empty_distance must be finite and >= 0, got {empty_distance}")
        return {"hd95": value, "assd": value, "hausdorff": value}
    distances = _distances(pred, gt, spacing_arr, connectivity)
    return {
        "hd95": distances.hd95(hd95_convention),
        "assd": distances.assd(assd_convention),
        "hausdorff": distances.hausdorff(),
    }


def hd95(
    pred: np.ndarray, gt: np.ndarray, spacing: SpacingLike = None, *, convention: str = "pooled",
    **options: Unpack[SurfaceOptions],
) -> float:
    """95th-percentile Hausdorff distance (mm) between the surfaces of ``pred`` and ``gt``.

    HD95 = P95(d(∂P → ∂G) ∪ d(∂G → ∂P)) (``convention="pooled"``, MedPy 0.5 ``hd95``, the
    metric of Apostolidis et al. Tables I–IV), or max(P95(d(∂P → ∂G)), P95(d(∂G → ∂P)))
    (``convention="max_directed"``, MONAI). ``spacing`` in array axis order; ``options`` as in
    :func:`surface_metrics`.
    """
    return surface_metrics(pred, gt, spacing, hd95_convention=convention, **options)["hd95"]


def assd(
    pred: np.ndarray, gt: np.ndarray, spacing: SpacingLike = None, *, convention: str = "pooled",
    **options: Unpack[SurfaceOptions],
) -> float:
    """Average symmetric surface distance (mm), the "ASD" of Apostolidis et al.

    ``convention="pooled"`` (MedPy 0.5.2 ``assd``): mean of the concatenated distances,
    (Σ d(∂P → ∂G) + Σ d(∂G → ∂P)) / (|∂P| + |∂G|). ``convention="mean_directed"``: the mean
    of the two directed means, ½ (mean d(∂P → ∂G) + mean d(∂G → ∂P)). ``options`` as in
    :func:`surface_metrics`.
    """
    return surface_metrics(pred, gt, spacing, assd_convention=convention, **options)["assd"]


def hausdorff(
    pred: np.ndarray, gt: np.ndarray, spacing: SpacingLike = None, **options: Unpack[SurfaceOptions]
) -> float:
    """Symmetric Hausdorff distance (mm), max over both directed surface distances (MedPy ``hd``).

    ``options`` as in :func:`surface_metrics`.
    """
    return surface_metrics(pred, gt, spacing, **options)["hausdorff"]
