"""tfrobseg.dataset.preprocessing: each step against an independent NumPy / SciPy reference."""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from tfrobseg.dataset import preprocessing as pp


def _image(arr, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(np.asarray(arr, np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def test_n4_removes_a_multiplicative_bias():
    _, y, x = np.meshgrid(np.arange(4), np.arange(64), np.arange(64), indexing="ij")
    truth = np.where((x - 32) ** 2 + (y - 32) ** 2 < 26**2, 100.0, 5.0)
    truth[(x - 32) ** 2 + (y - 32) ** 2 < 10**2] = 60.0
    bias = np.exp(0.6 * (x - 32) / 32.0)
    corrected = sitk.GetArrayFromImage(pp.n4_bias_correction(_image(truth * bias), shrink_factor=2, iterations=(30, 30)))
    tissue = truth == 100.0
    cv = lambda a: a[tissue].std() / a[tissue].mean()
    assert cv(corrected) < 0.5 * cv(truth * bias)
    assert corrected.shape == truth.shape and corrected.dtype == np.float32


@pytest.mark.parametrize("kwargs", [{"shrink_factor": 0}, {"iterations": ()}, {"iterations": (10, 0)}])
def test_n4_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        pp.n4_bias_correction(_image(np.ones((2, 8, 8))), **kwargs)


def test_resample_linear_image_matches_numpy_interp():
    ramp = np.tile(np.arange(10, dtype=np.float32) * 2.0, (2, 3, 1))  # value = 2 * x_mm at 1 mm spacing
    out = pp.resample_to_spacing(_image(ramp, spacing=(1.0, 1.0, 3.0)), (0.5, 1.0, 3.0))
    assert out.GetSize() == (20, 3, 2)
    assert out.GetSpacing() == (0.5, 1.0, 3.0)
    assert out.GetOrigin() == (0.0, 0.0, 0.0)
    row = sitk.GetArrayFromImage(out)[0, 1]
    xs = 0.5 * np.arange(20)
    inside = xs <= 9.0
    np.testing.assert_allclose(row[inside], np.interp(xs[inside], np.arange(10), ramp[0, 1]), atol=1e-5)


def test_resample_mask_keeps_volume_and_binary_values():
    # A ball of radius 20 mm sampled at 0.625 x 0.625 x 3.6 mm (ProstateX-0218-like grid).
    sp = np.array([0.625, 0.625, 3.6])
    n = np.array([96, 96, 16])
    zz, yy, xx = np.meshgrid(*[np.arange(k) * s for k, s in zip(n[::-1], sp[::-1])], indexing="ij")
    ball = ((xx - 30) ** 2 + (yy - 30) ** 2 + (zz - 27) ** 2 <= 20.0**2).astype(np.uint8)
    img = sitk.GetImageFromArray(ball)
    img.SetSpacing(tuple(sp))
    out = pp.resample_to_spacing(img, (0.5, 0.5, 3.0), is_mask=True)
    arr = sitk.GetArrayFromImage(out)
    assert set(np.unique(arr)) <= {0, 1} and arr.dtype == np.uint8
    exact = 4 / 3 * np.pi * 20.0**3
    assert arr.sum() * 0.75 == pytest.approx(exact, rel=0.03)
    assert ball.sum() * np.prod(sp) == pytest.approx(exact, rel=0.03)


def test_resample_same_grid_is_identity():
    arr = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    out = pp.resample_to_spacing(_image(arr, spacing=(0.5, 0.5, 2.9999999)), (0.5, 0.5, 3.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), arr)


def test_center_crop_or_pad_by_hand():
    v = np.arange(2 * 5 * 6).reshape(2, 5, 6)
    cropped = pp.center_crop_or_pad(v, (3, 4))
    np.testing.assert_array_equal(cropped, v[:, 1:4, 1:5])
    padded = pp.center_crop_or_pad(v, (8, 7), pad_value=-1)
    assert padded.shape == (2, 8, 7)
    np.testing.assert_array_equal(padded[:, 1:6, 0:6], v)
    assert (padded[:, 0] == -1).all() and (padded[:, :, 6] == -1).all()
    np.testing.assert_array_equal(pp.center_crop_or_pad(padded, (5, 6)), v)  # pad then crop is the identity
    with pytest.raises(ValueError):
        pp.center_crop_or_pad(v, (0, 4))


def test_zscore_matches_numpy():
    v = np.random.default_rng(1).gamma(2.0, 50.0, (4, 16, 16))
    z = pp.zscore(v)
    np.testing.assert_allclose(z, (v - v.mean()) / v.std(), rtol=1e-5, atol=1e-5)
    assert abs(z.mean()) < 1e-5 and z.std() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="constant"):
        pp.zscore(np.ones((2, 4, 4)))


def test_zscore_with_the_statistics_of_another_volume():
    # The study's order: statistics of the whole volume, applied to a part of it (the crop).
    v = np.random.default_rng(1).gamma(2.0, 50.0, (4, 16, 16))
    v[:, :4] += 300.0
    stats = pp.zscore_stats(v)
    assert stats == pytest.approx((v.mean(), v.std()), rel=1e-12)
    part = v[:, 4:12, 4:12]
    np.testing.assert_allclose(pp.zscore(part, stats), (part - v.mean()) / v.std(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="constant"):
        pp.zscore_stats(np.full((2, 4, 4), 7.0))
    with pytest.raises(ValueError, match="std must be > 0"):
        pp.zscore(part, (1.0, 0.0))


def test_gaussian_smooth_is_in_plane_scipy_filter():
    v = np.random.default_rng(2).standard_normal((3, 32, 32)).astype(np.float32)
    out = pp.gaussian_smooth(v, 1.0)
    for k in range(3):
        np.testing.assert_allclose(out[k], ndimage.gaussian_filter(v[k], 1.0, mode="nearest"), atol=1e-5)
    impulse = np.zeros((3, 21, 21), np.float32)
    impulse[1, 10, 10] = 1.0
    s = pp.gaussian_smooth(impulse, 1.0)
    assert s[0].max() == 0 and s[2].max() == 0  # no mixing across 3 mm slices
    assert s.sum() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(pp.gaussian_smooth(impulse, 1.0, unit="mm", spacing_yx=(0.5, 0.5)),
                               pp.gaussian_smooth(impulse, 2.0), atol=1e-6)
    with pytest.raises(ValueError):
        pp.gaussian_smooth(v, 1.0, unit="cm")
