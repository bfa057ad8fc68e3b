"""Whole-gland masks and zonal label maps: reading, value policy, and matching to the image in physical space.

Value policy: a mask must contain only {0, 1} (any pixel type); NaN or infinite voxels are an error. A label map is accepted only when
``mask_label`` is given: voxels equal to it become 1, all others 0. Anything else is an error.
A zonal map (:func:`read_zones`) must contain only 0 and the values given for the peripheral and the
transition zone (``--zone-labels``, default 1 and 2), which become the prepared labels 1 and 2.

Geometry: masks are matched to their image in physical (patient) space. When size and spacing agree
and origin/direction differ by no more than the tolerances (ProstateX-0000's reader-1 mask differs
by a ~2e-4 direction cosine), the mask is taken as voxel-aligned and the image geometry is copied
onto it. Otherwise it is resampled onto the image grid (linear interpolation, then >= 0.5), and a
mask whose foreground lands outside the image is an error. A zonal map is matched in the same way,
resampled label by label (:func:`tfrobseg.dataset.preprocessing.resample_labels_with`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tfrobseg.dataset.config import ZONE_LABELS
from tfrobseg.dataset.dicom import nonfinite_voxels, read_volume
from tfrobseg.dataset.preprocessing import resample_labels_with
from tfrobseg.errors import InputError

__all__ = ["mask_volume_ml", "match_mask", "match_zones", "read_mask", "read_zones", "same_grid"]


def _check_finite(image: sitk.Image, path: object, patient: str | None, what: str) -> None:
    n_nan, n_inf = nonfinite_voxels(image, path)
    if n_nan or n_inf:
        # Checked first: ITK's NIfTI reader reads NaN as 0, and the gland voxels would vanish.
        found = " and ".join(t for t in (f"{n_nan} NaN" * bool(n_nan), f"{n_inf} infinite" * bool(n_inf)) if t)
        raise InputError(f"{what} has {found} voxel(s); fix or export the {what} again", patient=patient, path=path)


def read_mask(path: str | Path, *, patient: str | None = None, mask_label: int | None = None) -> sitk.Image:
    """Read a mask file and return it as uint8 {0, 1} (see the module's value policy)."""
    image = read_volume(path, patient=patient)
    arr = sitk.GetArrayViewFromImage(image)
    _check_finite(image, path, patient, "mask")
    values = np.unique(arr)
    if mask_label is None:
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if values.size > 8 else "")
            raise InputError(f"mask values {{{shown}}}: only {{0, 1}} is accepted "
                             "(for a label map give --mask-label N)", patient=patient, path=path)
        binary = arr.astype(np.uint8)
    else:
        if not np.any(values == mask_label):
            raise InputError(f"mask label {mask_label} not present (values {values[:8].tolist()})",
                             patient=patient, path=path)
        binary = (arr == mask_label).astype(np.uint8)
    if not binary.any():
        raise InputError("mask is empty (no foreground voxel)", patient=patient, path=path)
    out = sitk.GetImageFromArray(binary)
    out.CopyInformation(image)
    return out


def read_zones(path: str | Path, *, patient: str | None = None, labels: Sequence[int] = ZONE_LABELS) -> sitk.Image:
    """Read a zonal map and return it as uint8 0 background, 1 peripheral zone, 2 transition zone.

    ``labels`` = (PZ value, TZ value) in the file. Any other value, NaN or infinite voxels, or a map
    without any zone voxel is an :class:`InputError` naming the file.
    """
    pz, tz = (int(v) for v in labels)
    if pz == tz or min(pz, tz) < 1:
        raise ValueError(f"zone labels must be two different positive values (PZ,TZ), got {tuple(labels)}")
    image = read_volume(path, patient=patient)
    _check_finite(image, path, patient, "zone map")
    arr = sitk.GetArrayViewFromImage(image)
    values = np.unique(arr)
    unexpected = [v for v in values if v not in (0, pz, tz)]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:8]) + (", ..." if len(unexpected) > 8 else "")
        raise InputError(f"zone map has value(s) {{{shown}}}; only 0, {pz} (PZ) and {tz} (TZ) are accepted "
                         "(other label values: give --zone-labels PZ,TZ)", patient=patient, path=path)
    zones = np.zeros(arr.shape, np.uint8)
    zones[arr == pz] = 1
    zones[arr == tz] = 2
    if not zones.any():
        raise InputError("zone map is empty (no PZ or TZ voxel)", patient=patient, path=path)
    out = sitk.GetImageFromArray(zones)
    out.CopyInformation(image)
    return out


def match_zones(zones: sitk.Image, image: sitk.Image, *, patient: str | None = None, path: object = None,
                direction_tol: float = 1e-3, origin_tol_mm: float = 0.05) -> tuple[sitk.Image, str]:
    """Put a zonal map (from :func:`read_zones`) on ``image``'s grid as :func:`match_mask` puts a mask, label by
    label; returns (zones, how) with how in {"same grid", "resampled"}."""
    if same_grid(zones, image, direction_tol=direction_tol, origin_tol_mm=origin_tol_mm):
        out = sitk.Image(zones)
        out.CopyInformation(image)
        return out, "same grid"

    def onto_image(indicator: sitk.Image) -> sitk.Image:
        return sitk.Resample(indicator, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)

    out = resample_labels_with(zones, 2, onto_image)
    _check_overlap(out, "zone map", zones, image, patient, path)
    return out, "resampled"


def _check_overlap(resampled: sitk.Image, what: str, labels: sitk.Image, image: sitk.Image, patient: str | None,
                   path: object) -> None:
    """InputError when nothing of ``labels`` (a mask or zone map) is left on ``image``'s grid: they do not overlap."""
    if not np.any(sitk.GetArrayViewFromImage(resampled)):
        raise InputError(
            f"{what} does not overlap its image ({what} origin {np.round(labels.GetOrigin(), 1).tolist()} size "
            f"{list(labels.GetSize())}; image origin {np.round(image.GetOrigin(), 1).tolist()} size "
            f"{list(image.GetSize())})", patient=patient, path=path)


def same_grid(a: sitk.Image, b: sitk.Image, *, direction_tol: float = 1e-3, origin_tol_mm: float = 0.05,
              spacing_rtol: float = 1e-4) -> bool:
    """Whether two images share a voxel grid within the tolerances."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=spacing_rtol, atol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=origin_tol_mm)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=direction_tol)
    )


def match_mask(mask: sitk.Image, image: sitk.Image, *, patient: str | None = None, path: object = None,
               direction_tol: float = 1e-3, origin_tol_mm: float = 0.05) -> tuple[sitk.Image, str]:
    """Put ``mask`` on ``image``'s grid; returns (mask, how) with how in {"same grid", "resampled"}."""
    if same_grid(mask, image, direction_tol=direction_tol, origin_tol_mm=origin_tol_mm):
        out = sitk.Image(mask)
        out.CopyInformation(image)
        return out, "same grid"
    resampled = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), image, sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32)
    out = sitk.Cast(resampled >= 0.5, sitk.sitkUInt8)
    _check_overlap(out, "mask", mask, image, patient, path)
    return out, "resampled"


def mask_volume_ml(mask: sitk.Image | np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """Foreground volume in mL: voxel count x voxel volume (mm^3) / 1000."""
    if isinstance(mask, sitk.Image):
        spacing = mask.GetSpacing()
        mask = sitk.GetArrayViewFromImage(mask)
    if spacing is None:
        raise ValueError("spacing is required for an array mask")
    return float(np.count_nonzero(mask) * np.prod(spacing) / 1000.0)
