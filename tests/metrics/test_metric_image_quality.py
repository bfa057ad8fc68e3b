"""PSNR, RMSE and SSIM (tfrobseg.metrics.image_quality) against scikit-image and NumPy."""

import numpy as np
import pytest
import skimage.metrics as skimage_metrics
from scipy import ndimage

from tfrobseg import metrics as M


def images(seed, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    clean = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * 3.0 + 1.0
    adv = clean + 0.1 * np.sign(rng.standard_normal(shape))
    return clean, adv


def test_psnr_rmse_match_skimage_and_numpy():
    clean, adv = images(0)
    data_range = clean.max() - clean.min()
    assert M.psnr(clean, adv) == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(clean, adv, data_range=data_range), rel=1e-12
    )
    assert M.psnr(clean, adv, data_range=4.0) == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(clean, adv, data_range=4.0), rel=1e-12
    )
    # FGSM-like ±0.1 everywhere: RMSE is exactly 0.1.
    assert M.rmse(clean, adv) == pytest.approx(0.1)
    assert M.psnr(clean, clean) == float("inf")
    with pytest.raises(ValueError, match="data range"):
        M.psnr(np.ones((4, 4)), np.zeros((4, 4)))


def test_ssim_matches_skimage_gaussian_window():
    clean, adv = images(1)
    data_range = clean.max() - clean.min()

    def reference(x, y, r):
        return skimage_metrics.structural_similarity(
            x, y, data_range=r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )

    assert M.ssim(clean, adv) == pytest.approx(reference(clean, adv, data_range), abs=1e-10)
    assert M.ssim(clean[..., None], adv[..., None], data_range=5.0) == pytest.approx(
        reference(clean, adv, 5.0), abs=1e-10
    )
    clean2, adv2 = images(2)
    stack_clean, stack_adv = np.stack([clean, clean2]), np.stack([adv, adv2])
    expected = np.mean([reference(clean, adv, 7.0), reference(clean2, adv2, 7.0)])
    assert M.ssim(stack_clean, stack_adv, data_range=7.0) == pytest.approx(expected, abs=1e-10)
    assert M.ssim(clean, clean) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11"):
        M.ssim(np.ones((8, 8)), np.ones((8, 8)))
