"""tfrobseg.dataset.pipeline.resize_element: resampling slices with their spacing."""

import numpy as np
import pytest
import tensorflow as tf

from tfrobseg.dataset.pipeline import resize_element


def test_resize_element_scales_spacing_and_keeps_masks_binary():
    mask = np.zeros((1, 8, 8, 1), "float32")
    mask[:, 2:6, 2:6] = 1
    el = {"image": tf.constant(mask * 3), "mask": tf.constant(mask), "spacing": tf.constant([[3.0, 0.5, 0.5]])}
    out = resize_element(el, 4)
    assert out["image"].shape == (1, 4, 4, 1)
    np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 1.0, 1.0]])
    assert set(np.unique(out["mask"].numpy())) == {0.0, 1.0}
    assert out["mask"].numpy().sum() == 4


def test_resize_non_square_scales_each_axis():
    image = np.zeros((1, 8, 4, 1), "float32")
    out = resize_element({"image": tf.constant(image), "mask": tf.constant(image),
                                   "spacing": tf.constant([[3.0, 0.5, 0.5]])}, 2)
    assert out["image"].shape == (1, 2, 2, 1) and out["mask"].shape == (1, 2, 2, 1)
    np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 2.0, 1.0]])


def test_resize_averages_when_downsampling():
    # Anti-aliased resampling: a bright pixel between the sample points of a 4x reduction still
    # reaches the output (plain bilinear sampling would drop it).
    impulse = np.zeros((1, 8, 8, 1), "float32")
    impulse[0, 3, 3] = 1.0
    out = resize_element({"image": tf.constant(impulse), "spacing": tf.constant([[3.0, 0.5, 0.5]])}, 2)
    assert out["image"].numpy()[0, 0, 0, 0] > 0.02 and out["image"].numpy().sum() * 16 > 0.9
    np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 2.0, 2.0]])


@pytest.mark.parametrize("axis", [1, 2], ids=["rows", "columns"])
def test_mask_stays_on_the_image_grid(axis):
    # 64 -> 16 px (4x): output pixel i is centred on input position 4i + 1.5 for the antialiased
    # image; the mask must be resampled on the same centres. A band of rows (or columns) e..l, for
    # all 16 phases of its two edges relative to the 4x grid: the resized mask's centroid (in
    # input pixels, NumPy) is off the band's true centre by rounding only, so 0 on average over
    # the phases; nearest-neighbour masks (input pixel 4i + 2) come out 0.5 input pixel off.
    errors = []
    for e in range(8, 12):
        for last in range(40, 44):
            band = np.zeros((1, 64, 64, 1), "float32")
            band[0, e:last + 1] = 1.0
            if axis == 2:
                band = band.transpose(0, 2, 1, 3).copy()
            el = {"image": tf.constant(band), "mask": tf.constant(band), "spacing": tf.constant([[3.0, 0.5, 0.5]])}
            out = resize_element(el, 16)
            mask, image = out["mask"].numpy()[0, ..., 0], out["image"].numpy()[0, ..., 0]
            # The image is a copy of the mask: both must agree on where the band is.
            np.testing.assert_array_equal(mask, (image >= 0.5).astype("float32"))
            kept = np.nonzero(mask.any(axis=2 - axis))[0]
            errors.append(np.mean(4 * kept + 1.5) - (e + last) / 2)
            np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 2.0, 2.0]])
    assert max(abs(x) for x in errors) <= 1.5  # rounding to the 2 mm grid
    assert np.mean(errors) == pytest.approx(0.0, abs=1e-9)


def test_mask_threshold_is_checked():
    el = {"image": tf.zeros((1, 8, 8, 1)), "mask": tf.zeros((1, 8, 8, 1)), "spacing": tf.constant([[3.0, 0.5, 0.5]])}
    with pytest.raises(ValueError, match="mask_threshold"):
        resize_element(el, 4, mask_threshold=0.0)
