"""Volume preprocessing of the study (Apostolidis et al., Sec. II-B "Preprocessing steps").

The paper lists, in this order: bias-field correction, z-score normalisation, a fixed 256 x 256 x 1
slice shape, resampling to 0.5 x 0.5 x 3.0 mm with linear interpolation, and Gaussian smoothing with
sigma = 1.0. It gives no units; this module fixes them (and exposes every value):

1. :func:`n4_bias_correction` - N4 (Tustison et al. 2010) fitted on an in-plane shrunk copy inside an
   Otsu body mask, the fitted field applied to the full-resolution image: ``I / exp(log_field)``.
2. :func:`zscore_stats` - the z-score statistics (mean, std) of the whole N4-corrected volume on its
   own grid, i.e. before resampling and crop, where the paper places the z-score. They are applied
   by step 5, so that the zero padding of step 4 still means air.
3. :func:`resample_to_spacing` - to (x, y, z) = (0.5, 0.5, 3.0) mm in the image's own frame
   (origin and direction kept); linear for images; masks linear then ``>= 0.5`` (keeps the
   partial-volume boundary and the gland volume better than nearest neighbour when the spacing
   changes, e.g. 0.625 -> 0.5 mm or 3.6 -> 3.0 mm).
4. :func:`center_crop_or_pad` - in-plane to 256 x 256 about the centre (pad value 0 = air). The
   paper lists the fixed shape before the resampling; cropping after it keeps a fixed 128 mm field
   of view whatever the acquired spacing.
5. :func:`zscore` - ``(v - mean) / std`` with the statistics of step 2. Linear interpolation
   commutes with this affine map, so the result equals z-scoring right after N4, except that
   voxels outside the acquired volume (padding, the resampling edge) are air, 0 before the
   z-score. The prepared block's own mean and std are therefore not 0 and 1 (it is the central
   part of the field of view), and the attacks' ε is in standard deviations of the patient's whole
   N4-corrected volume.
6. :func:`gaussian_smooth` - sigma = 1.0 **in-plane voxels** (0.5 mm at 0.5 mm spacing), each slice
   separately: the network sees single slices, and slices 3 mm apart should not be mixed.

Volumes are SimpleITK images up to step 3 and NumPy arrays in (Z, Y, X) order afterwards.

Zonal label maps (:func:`resample_label_map`) are resampled label by label, never by interpolating
the label values (which would turn a PZ/background edge into TZ): the gland (every label together)
is resampled exactly as a mask (linear, then ``>= mask_threshold``), and each of its voxels takes
the label whose own linearly interpolated indicator is largest (:func:`labels_from_indicators`). A
zonal map whose labels make up the gland mask thus gives, on the new grid, labels that still make up
the resampled gland mask, voxel for voxel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = [
    "center_crop_or_pad",
    "gaussian_smooth",
    "labels_from_indicators",
    "n4_bias_correction",
    "resample_label_map",
    "resample_labels_with",
    "resample_to_spacing",
    "zscore",
    "zscore_stats",
]


def n4_bias_correction(
    image: sitk.Image,
    *,
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
    convergence_threshold: float = 1e-3,
    otsu_bins: int = 200,
) -> sitk.Image:
    """N4 bias-field correction; returns a float32 image on the input grid.

    The multiplicative field ``B`` with ``I = B * I_true`` is fitted as a B-spline in log space
    on ``shrink(I, shrink_factor)`` (in-plane only: slices are already thick) within an Otsu
    foreground mask, then evaluated on the full grid: ``I_corrected = I / exp(log B)``.
    ``len(iterations)`` is the number of fitting levels.
    """
    if int(shrink_factor) < 1:
        raise ValueError(f"shrink_factor must be >= 1, got {shrink_factor}")
    if not iterations or any(int(i) < 1 for i in iterations):
        raise ValueError(f"iterations must be a non-empty sequence of positive ints, got {iterations}")
    image = sitk.Cast(image, sitk.sitkFloat32)
    s = int(shrink_factor)
    factors = [s, s] + [1] * (image.GetDimension() - 2)
    small = sitk.Shrink(image, factors) if s > 1 else image
    mask = sitk.OtsuThreshold(small, 0, 1, int(otsu_bins))
    if not np.any(sitk.GetArrayViewFromImage(mask)):
        # A constant image has no Otsu foreground; fitting on all voxels is then the only option.
        mask = sitk.Image(small.GetSize(), sitk.sitkUInt8) + 1
        mask.CopyInformation(small)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.SetConvergenceThreshold(float(convergence_threshold))
    corrector.Execute(small, sitk.Cast(mask, sitk.sitkUInt8))
    log_field = corrector.GetLogBiasFieldAsImage(image)
    return sitk.Cast(image / sitk.Exp(log_field), sitk.sitkFloat32)


def output_grid(image: sitk.Image, spacing: Sequence[float]) -> tuple[list[int], list[float]]:
    """Size and spacing of ``image`` resampled to ``spacing`` with the same physical extent."""
    if len(spacing) != image.GetDimension() or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must have {image.GetDimension()} positive values, got {spacing}")
    size = [max(1, round(n * old / new)) for n, old, new in zip(image.GetSize(), image.GetSpacing(), spacing)]
    return size, [float(s) for s in spacing]


def resample_to_spacing(
    image: sitk.Image,
    spacing: Sequence[float] = (0.5, 0.5, 3.0),
    *,
    is_mask: bool = False,
    mask_threshold: float = 0.5,
) -> sitk.Image:
    """Resample to ``spacing`` (x, y, z in mm) keeping origin, direction and physical extent.

    Images: linear interpolation, float32. Masks: linear interpolation of the {0, 1} mask, then
    ``>= mask_threshold`` (uint8); a grid that already has the target spacing (within 1e-6
    relative) is returned unchanged, so no interpolation error is introduced.
    """
    size, spacing = output_grid(image, spacing)
    if list(size) == list(image.GetSize()) and np.allclose(image.GetSpacing(), spacing, rtol=1e-6, atol=0):
        return sitk.Cast(image, sitk.sitkUInt8 if is_mask else sitk.sitkFloat32)
    out = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32),
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )
    if is_mask:
        return sitk.Cast(out >= float(mask_threshold), sitk.sitkUInt8)
    return out


def labels_from_indicators(foreground: np.ndarray, indicators: Sequence[np.ndarray], *,
                           mask_threshold: float = 0.5) -> np.ndarray:
    """A label map (uint8) from interpolated indicators: 0 where ``foreground < mask_threshold``, else
    ``1 + argmax_k indicators[k]`` (a tie goes to the lower label).

    ``foreground`` is the interpolated indicator of all labels together, so the label map's
    foreground is exactly the mask that thresholding it gives.
    """
    stacked = np.stack([np.asarray(i, np.float32) for i in indicators])
    labels = (np.argmax(stacked, axis=0) + 1).astype(np.uint8)
    labels[np.asarray(foreground) < mask_threshold] = 0
    return labels


def resample_labels_with(labels: sitk.Image, n_labels: int, resample: Callable[[sitk.Image], sitk.Image], *,
                         mask_threshold: float = 0.5) -> sitk.Image:
    """Resample a label map (values 0..``n_labels``) with ``resample`` (a linear resampling of a float32
    image), label by label: see the module docstring and :func:`labels_from_indicators`."""
    arr = sitk.GetArrayViewFromImage(labels)

    def soft(indicator: np.ndarray) -> tuple[sitk.Image, np.ndarray]:
        img = sitk.GetImageFromArray(indicator.astype(np.float32))
        img.CopyInformation(labels)
        out = resample(img)
        return out, sitk.GetArrayFromImage(out)

    grid, foreground = soft(arr > 0)
    indicators = [soft(arr == k)[1] for k in range(1, n_labels + 1)]
    out = sitk.GetImageFromArray(labels_from_indicators(foreground, indicators, mask_threshold=mask_threshold))
    out.CopyInformation(grid)
    return out


def resample_label_map(labels: sitk.Image, spacing: Sequence[float] = (0.5, 0.5, 3.0), n_labels: int = 2, *,
                       mask_threshold: float = 0.5) -> sitk.Image:
    """Resample a label map (uint8, 0..``n_labels``) to ``spacing`` like :func:`resample_to_spacing`, label by
    label (module docstring); a grid that already has the target spacing is returned unchanged."""
    size, target = output_grid(labels, spacing)
    if list(size) == list(labels.GetSize()) and np.allclose(labels.GetSpacing(), target, rtol=1e-6, atol=0):
        return sitk.Cast(labels, sitk.sitkUInt8)
    return resample_labels_with(labels, n_labels, lambda img: resample_to_spacing(img, spacing),
                                mask_threshold=mask_threshold)


def center_crop_or_pad(volume: np.ndarray, size: Sequence[int] = (256, 256), *, pad_value: float = 0.0) -> np.ndarray:
    """Crop / pad the last two axes of ``volume`` (Z, Y, X) to ``size`` = (Y, X) about the centre.

    For an odd difference the extra row/column is removed from (or added to) the end, so that
    crop and pad are inverse to each other.
    """
    if len(size) != 2 or any(int(s) < 1 for s in size):
        raise ValueError(f"size must be two positive ints (H, W), got {size}")
    out = np.asarray(volume)
    for axis, target in zip((-2, -1), size):
        n = out.shape[axis]
        if n > target:
            start = (n - target) // 2
            out = np.take(out, np.arange(start, start + target), axis=axis)
        elif n < target:
            before = (target - n) // 2
            widths = [(0, 0)] * out.ndim
            widths[axis] = (before, target - n - before)
            out = np.pad(out, widths, constant_values=pad_value)
    return out


def zscore_stats(volume: np.ndarray, *, eps: float = 1e-8) -> tuple[float, float]:
    """Mean and (population) std of all voxels of ``volume``, float64; ValueError for a constant volume."""
    v = np.asarray(volume, dtype=np.float64)
    mean, std = float(v.mean()), float(v.std())
    if not np.isfinite(std) or std < eps:
        raise ValueError(f"cannot z-score a constant volume (std={std:.3g})")
    return mean, std


def zscore(volume: np.ndarray, stats: tuple[float, float] | None = None) -> np.ndarray:
    """Z-score ``(v - mean) / std`` in float32 (float64 arithmetic).

    ``stats`` = (mean, std) from :func:`zscore_stats` of another volume (the study: the whole
    N4-corrected volume before resampling and crop); None uses ``volume``'s own statistics.
    """
    mean, std = zscore_stats(volume) if stats is None else (float(stats[0]), float(stats[1]))
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    return ((np.asarray(volume, dtype=np.float64) - mean) / std).astype(np.float32)


def gaussian_smooth(volume: np.ndarray, sigma: float = 1.0, *, unit: str = "voxel",
                    spacing_yx: Sequence[float] = (0.5, 0.5)) -> np.ndarray:
    """In-plane Gaussian smoothing of each slice of a (Z, Y, X) volume.

    ``unit="voxel"`` (default): sigma in pixels (sigma = 1.0 -> 0.5 mm at 0.5 mm spacing);
    ``unit="mm"``: sigma in millimetres, converted with ``spacing_yx``. Border mode ``nearest``.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if unit not in ("voxel", "mm"):
        raise ValueError(f"unit must be 'voxel' or 'mm', got {unit!r}")
    v = np.asarray(volume, dtype=np.float32)
    if sigma == 0:
        return v.copy()
    sig_yx = (sigma, sigma) if unit == "voxel" else (sigma / spacing_yx[0], sigma / spacing_yx[1])
    return ndimage.gaussian_filter(v, sigma=(0.0, *sig_yx), mode="nearest").astype(np.float32)
