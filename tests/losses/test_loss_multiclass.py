"""The losses with softmax=True on 3-class one-hot targets, 2D (B, H, W, 3) and 3D (B, D, H, W, 3), against NumPy.

``bce_loss(..., softmax=True)`` is the categorical cross-entropy −Σ_c g_c log p_c (mean over the voxels),
not a binary cross-entropy per channel: checked here against both.
"""

import keras
import numpy as np
import pytest

from tfrobseg import losses as L

RNG = np.random.default_rng(17)
SHAPES = {"2d": (2, 6, 5), "3d": (2, 3, 6, 5)}


def _case(spatial):
    labels = RNG.integers(0, 3, spatial)
    g = np.eye(3, dtype=np.float32)[labels]
    z = RNG.normal(size=(*spatial, 3)).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return g, z, p


def _sums(x):
    """Per-class sums over every voxel of the batch (pooled), one row per sample (B, C)."""
    total = x.reshape(len(x), -1, x.shape[-1]).sum(1).sum(0, keepdims=True)
    return np.repeat(total, len(x), axis=0)


def np_tversky(g, p, a, b, s=1.0, background=True):
    tp, fp, fn = _sums(p * g), _sums(p * (1 - g)), _sums((1 - p) * g)
    per_class = 1 - (2 * tp + s) / (2 * tp + 2 * a * fp + 2 * b * fn + s)
    return (per_class if background else per_class[:, 1:]).mean(-1)


def np_ce(g, p):
    return -(g * np.log(p)).sum(-1).reshape(len(g), -1).mean(1)


def val(loss, g, p):
    return np.asarray(loss(g, p), np.float64)


@pytest.mark.parametrize("dims", SHAPES)
def test_softmax_losses_on_three_classes(dims):
    g, z, p = _case(SHAPES[dims])
    for from_logits, x in ((False, p), (True, z)):
        kw = {"softmax": True, "from_logits": from_logits, "reduction": None}
        ce = val(L.BCELoss(**kw), g, x)
        np.testing.assert_allclose(ce, np_ce(g, p), rtol=1e-5)
        np.testing.assert_allclose(val(L.DiceLoss(**kw), g, x), np_tversky(g, p, 0.5, 0.5), rtol=1e-5)
        np.testing.assert_allclose(val(L.DiceLoss(include_background=False, **kw), g, x),
                                   np_tversky(g, p, 0.5, 0.5, background=False), rtol=1e-5)
        np.testing.assert_allclose(val(L.TverskyLoss(**kw), g, x), np_tversky(g, p, 0.3, 0.7), rtol=1e-5)
        np.testing.assert_allclose(val(L.BCEDiceLoss(**kw), g, x),
                                   0.5 * np_ce(g, p) + 0.5 * np_tversky(g, p, 0.5, 0.5), rtol=1e-5)
        np.testing.assert_allclose(val(L.BCETverskyLoss(**kw), g, x),
                                   0.5 * np_ce(g, p) + 0.5 * np_tversky(g, p, 0.3, 0.7), rtol=1e-5)
        np.testing.assert_allclose(val(L.DiceTverskyLoss(**kw), g, x),
                                   0.5 * np_tversky(g, p, 0.5, 0.5) + 0.5 * np_tversky(g, p, 0.3, 0.7), rtol=1e-5)
        lt, lce = L.tversky_ce_components(g, x, softmax=True, from_logits=from_logits)
        np.testing.assert_allclose(np.asarray(lt), np_tversky(g, p, 0.5, 0.5), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(lce), np_ce(g, p), rtol=1e-5)
    # Categorical, as Keras's CategoricalCrossentropy, and not the binary cross-entropy of each channel.
    np.testing.assert_allclose(float(L.BCELoss(softmax=True)(g, p)),
                               float(keras.losses.CategoricalCrossentropy()(g, p)), rtol=1e-5)
    binary = -(g * np.log(p) + (1 - g) * np.log(1 - p)).reshape(len(g), -1).mean(1)
    assert not np.allclose(val(L.BCELoss(softmax=True, reduction=None), g, p), binary, rtol=1e-3)


def test_softmax_losses_train_a_3d_network_towards_the_labels():
    g, _, _ = _case((1, 4, 8, 8))
    keras.utils.set_random_seed(0)
    inp = keras.Input((4, 8, 8, 1))
    model = keras.Model(inp, keras.layers.Conv3D(3, 1, activation="softmax")(keras.layers.Conv3D(8, 3, padding="same",
                                                                                                 activation="relu")(inp)))
    x = g.argmax(-1)[..., None].astype(np.float32)  # the labels are a function of the input voxel
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=L.BCEDiceLoss(softmax=True))
    history = model.fit(x, g, epochs=40, verbose=0).history["loss"]
    assert history[-1] < 0.3 * history[0]
    assert (model.predict(x, verbose=0).argmax(-1) == g.argmax(-1)).mean() == 1.0
