"""Whole-gland masks: reading, value policy, and matching to the image in physical space.

Value policy: a mask must contain only {0, 1} (any pixel type); NaN or infinite voxels are an error. A label map is accepted only when
``mask_label`` is given: voxels equal to it become 1, all others 0. Anything else is an error.

Geometry: masks are matched to their image in physical (patient) space. When size and spacing agree
and origin/direction differ by no more than the tolerances (ProstateX-0000's reader-1 mask differs
by a ~2e-4 direction cosine), the mask is taken as voxel-aligned and the image geometry is copied
onto it. Otherwise it is resampled onto the image grid (linear interpolation, then >= 0.5), and a
mask whose foreground lands outside the image is an error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tfrobseg.dataset.dicom import nonfinite_voxels, read_volume
from tfrobseg.errors import InputError

__all__ = ["mask_volume_ml", "match_mask", "read_mask", "same_grid"]


def read_mask(path: str | Path, *, patient: str | None = None, mask_label: int | None = None) -> sitk.Image:
    """Read a mask file and return it as uint8 {0, 1} (see the module's value policy)."""
    image = read_volume(path, patient=patient)
    arr = sitk.GetArrayViewFromImage(image)
    n_nan, n_inf = nonfinite_voxels(image, path)
    if n_nan or n_inf:
        # Checked first: ITK's NIfTI reader reads NaN as 0, and the gland voxels would vanish.
        what = " and ".join(t for t in (f"{n_nan} NaN" * bool(n_nan), f"{n_inf} infinite" * bool(n_inf)) if t)
        raise InputError(f"mask has {what} voxel(s); fix or export the mask again", patient=patient, path=path)
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
    if not np.any(sitk.GetArrayViewFromImage(out)):
        raise InputError(
            f"mask does not overlap its image (mask origin {np.round(mask.GetOrigin(), 1).tolist()} size "
            f"{list(mask.GetSize())}; image origin {np.round(image.GetOrigin(), 1).tolist()} size "
            f"{list(image.GetSize())})", patient=patient, path=path)
    return out, "resampled"


def mask_volume_ml(mask: sitk.Image | np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """Foreground volume in mL: voxel count x voxel volume (mm^3) / 1000."""
    if isinstance(mask, sitk.Image):
        spacing = mask.GetSpacing()
        mask = sitk.GetArrayViewFromImage(mask)
    if spacing is None:
        raise ValueError("spacing is required for an array mask")
    return float(np.count_nonzero(mask) * np.prod(spacing) / 1000.0)
