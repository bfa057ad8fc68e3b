"""How close a prepared cohort is to real prostate MRI: the gland's contrast to its surroundings, and its volume.

The built-in synthetic cohort must be learnable for the right reason (shape and context), not by a
give-away intensity step at the gland border. The measure used to check that is the contrast-to-noise
ratio of the gland against a ring around it, on the *prepared* volume (after N4, z-score, resampling
and smoothing, as the networks see it):

    CNR = (mean(gland) − mean(ring)) / std(ring),  ring = {voxels within ring_mm of the gland} − gland

with distances in millimetres in 3D (:func:`scipy.ndimage.distance_transform_edt` with the voxel
spacing). The sign is kept: positive when the gland is brighter than its ring, as on real T2. On the
two labelled ProstateX sample patients (5 mm ring): +0.33 (ProstateX-0000) and +0.24 (ProstateX-0001);
``data_prep/realism.py`` prints the table for any prepared folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

__all__ = ["RING_MM", "cohort_realism", "contrast_to_noise", "gland_volume_ml"]

#: Width of the ring around the gland, mm.
RING_MM = 5.0


def _check(image: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    image, mask = np.asarray(image, float), np.asarray(mask) > 0.5
    if image.shape != mask.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and mask {mask.shape} must be the same 3-D (Z, Y, X) shape")
    if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
        raise ValueError(f"spacing_zyx must be 3 positive values (mm), got {spacing_zyx}")
    if not mask.any():
        raise ValueError("the mask is empty: no gland to measure")
    return image, mask


def contrast_to_noise(image: np.ndarray, mask: np.ndarray, spacing_zyx: Sequence[float], *,
                      ring_mm: float = RING_MM) -> float:
    """Signed contrast-to-noise ratio of the gland against the ring of ``ring_mm`` around it (see the module).

    Raises ValueError for an empty mask, mismatched shapes, or a ring with no voxel or no spread.
    """
    image, mask = _check(image, mask, spacing_zyx)
    if ring_mm <= 0:
        raise ValueError(f"ring_mm must be > 0, got {ring_mm}")
    ring = (ndimage.distance_transform_edt(~mask, sampling=spacing_zyx) <= ring_mm) & ~mask
    spread = image[ring].std() if ring.any() else 0.0
    if spread == 0:
        raise ValueError("the ring around the gland is empty or constant: the contrast-to-noise ratio is undefined")
    return float((image[mask].mean() - image[ring].mean()) / spread)


def gland_volume_ml(mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Volume of the mask in millilitres (voxel count × voxel volume in mm³ / 1000)."""
    return float((np.asarray(mask) > 0.5).sum() * np.prod(spacing_zyx) / 1000.0)


def cohort_realism(data_dir: str | Path, *, ring_mm: float = RING_MM) -> pd.DataFrame:
    """One row per labelled patient of a prepared folder: ``patient_id, volume_ml, cnr, synthetic``.

    The volume is measured on the prepared grid (the resampled mask), the CNR on the prepared image.
    """
    from tfrobseg.dataset.manifest import Manifest
    from tfrobseg.dataset.pipeline import load_slices

    manifest = Manifest.read(data_dir)
    rows = []
    for pid in manifest.ok_patients:
        if not manifest.entry(pid, data_dir).labelled:
            continue
        volume = load_slices(data_dir, [pid])  # the patient's slices in order: its prepared volume
        spacing = volume["spacing"][0]
        image, mask = volume["image"][..., 0], volume["mask"][..., 0]
        rows.append({"patient_id": pid, "volume_ml": gland_volume_ml(mask, spacing),
                     "cnr": contrast_to_noise(image, mask, spacing, ring_mm=ring_mm),
                     "synthetic": manifest.synthetic})
    return pd.DataFrame(rows, columns=["patient_id", "volume_ml", "cnr", "synthetic"])
