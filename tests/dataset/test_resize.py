"""tfrobseg.dataset.pipeline.resize_element: resampling slices with their spacing."""

import numpy as np
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
