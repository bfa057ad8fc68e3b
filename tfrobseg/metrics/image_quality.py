"""Image-quality metrics between a clean input and its perturbed (adversarial) version.

Liu et al., "Robustifying Deep Networks for Medical Image Segmentation", report PSNR, SSIM and
RMSE of perturbed inputs against the clean ones (their Table 1). Intensities are whatever the
model sees (here z-scored MR slices), so the peak value needed by PSNR and SSIM is not a
property of the dtype: the data range defaults to the clean image's ``max − min`` and can be
given explicitly (``data_range=``) to compare across images on a common scale.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

# Wang et al. (2004) constants and the Gaussian window of their reference implementation:
# sigma 1.5, truncated at 3.5 sigma (an 11 × 11 window), as scikit-image uses.
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5


def _pair(clean: np.ndarray, adv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    clean = np.asarray(clean, dtype=np.float64)
    adv = np.asarray(adv, dtype=np.float64)
    if clean.shape != adv.shape:
        raise ValueError(f"clean and adv shapes differ: {clean.shape} vs {adv.shape}")
    if clean.size == 0:
        raise ValueError("clean and adv are empty arrays")
    if not (np.all(np.isfinite(clean)) and np.all(np.isfinite(adv))):
        raise ValueError("clean and adv must contain only finite values")
    return clean, adv


def _data_range(clean: np.ndarray, data_range: float | None) -> float:
    value = float(clean.max() - clean.min()) if data_range is None else float(data_range)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"data range must be positive, got {value} (a constant clean image has no range; "
            "pass data_range explicitly)"
        )
    return value


def rmse(clean: np.ndarray, adv: np.ndarray) -> float:
    """Root mean squared error sqrt(mean((clean − adv)²)), in the input's intensity units."""
    clean, adv = _pair(clean, adv)
    return float(np.sqrt(np.mean((clean - adv) ** 2)))


def psnr(clean: np.ndarray, adv: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio 10 · log10(R² / MSE) in dB.

    ``R`` is ``data_range``, by default ``clean.max() − clean.min()``. Identical images give
    ``inf`` (no noise), as scikit-image's ``peak_signal_noise_ratio``.
    """
    clean, adv = _pair(clean, adv)
    peak = _data_range(clean, data_range)
    mse = float(np.mean((clean - adv) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(peak**2 / mse))


def ssim(clean: np.ndarray, adv: np.ndarray, data_range: float | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004) with an 11 × 11 Gaussian window (σ = 1.5).

    SSIM(x, y) = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2)),
    C1 = (0.01 R)², C2 = (0.03 R)², local moments from Gaussian filtering (population
    covariance), averaged over the pixels at least 5 px from the border (as scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``).
    ``R`` is ``data_range``, by default ``clean.max() − clean.min()``.

    Input: a 2-D image (H, W), or a stack (..., H, W) whose slices are compared in 2-D and
    averaged; a trailing channel axis of size 1 ((H, W, 1), (B, H, W, 1)) is dropped. H and W
    must be at least 11.
    """
    clean, adv = _pair(clean, adv)
    if clean.ndim >= 3 and clean.shape[-1] == 1:
        clean, adv = clean[..., 0], adv[..., 0]
    if clean.ndim < 2:
        raise ValueError(f"ssim needs images with at least 2 axes, got shape {clean.shape}")
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(clean.shape[-2:]) < 2 * radius + 1:
        raise ValueError(f"ssim needs images of at least {2 * radius + 1} x {2 * radius + 1}, got {clean.shape}")
    peak = _data_range(clean, data_range)
    # Filter only the two image axes: leading axes are independent slices.
    sigma = (0.0,) * (clean.ndim - 2) + (SSIM_SIGMA, SSIM_SIGMA)

    def blur(image: np.ndarray) -> np.ndarray:
        return gaussian_filter(image, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")

    mu_x, mu_y = blur(clean), blur(adv)
    var_x = blur(clean * clean) - mu_x**2
    var_y = blur(adv * adv) - mu_y**2
    cov_xy = blur(clean * adv) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    inner = ssim_map[..., radius:-radius, radius:-radius]
    return float(inner.mean(dtype=np.float64))
