"""Training-level tests of tfrobseg.losses: short fits, the adaptive weighting callback, saved models."""

import keras
import numpy as np
import pytest
import scipy.ndimage as ndi
import tensorflow as tf

from tfrobseg import data, synthetic
from tfrobseg import losses as L


def tiny_model(size, *, logits=False, seed=0):
    """Two 3x3 convolutions and a 1x1 head: enough to fit a mask, small enough for CPU tests."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    outputs = keras.layers.Conv2D(1, 1, activation=None if logits else "sigmoid")(h)
    return keras.Model(inputs, outputs)


def toy_batch(n=4, size=32, seed=0):
    """Noisy images of bright discs; second reader = expert mask dilated by one pixel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = []
    for _ in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.12, size * 0.25)
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.float32))
    mask = np.stack(masks)[..., None]
    image = (mask + 0.3 * rng.normal(size=mask.shape)).astype(np.float32)
    second = ndi.binary_dilation(mask > 0, structure=np.ones((1, 3, 3, 1), bool)).astype(np.float32)
    return image, mask, second


def targets_for(name, mask, second):
    """y for loss ``name``: the mask, both readers, or soft teacher labels for distillation."""
    if name in L.SECOND_READER_LOSSES:
        return np.concatenate([mask, second], -1)
    if name == "soft_dice_distillation":
        return (0.1 + 0.8 * mask).astype(np.float32)  # a confident but soft teacher
    return mask


def loss_before_after(name, image, y, *, steps=20, logits=False):
    """Loss on the batch before and after ``steps`` Adam steps on it (one epoch, few per-epoch costs)."""
    kwargs = {"from_logits": logits}
    if name == "soft_dice_distillation":
        kwargs["teacher_from_logits"] = False  # the teacher targets are probabilities
    loss = L.get_loss(name, **kwargs)
    model = tiny_model(image.shape[1], logits=logits)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss)
    before = float(loss(y, model(image)))
    if name == "adaptive_tversky_ce":  # several epochs so that the weights actually move
        epochs, callbacks = 4, [L.AdaptiveTverskyCEWeighting()]
    else:
        epochs, callbacks = 1, []
    batches = tf.data.Dataset.from_tensors((image, y)).repeat(steps // epochs)
    model.fit(batches, epochs=epochs, verbose=0, callbacks=callbacks)
    after = float(loss(y, model(image)))
    return before, after


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_each_loss_decreases_on_toy_batch_with_logits_head(name):
    # Dependency-free twin of the built-in cohort test below, exercising the from_logits path.
    image, mask, second = toy_batch()
    before, after = loss_before_after(name, image, targets_for(name, mask, second), logits=True)
    assert np.isfinite(before) and np.isfinite(after)
    assert after < before, (name, before, after)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_adaptive_tversky_ce_weights_follow_previous_epoch(jit_compile):
    image, mask, _ = toy_batch(n=8)
    loss = L.AdaptiveTverskyCELoss()
    model = tiny_model(32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, jit_compile=jit_compile)
    history = model.fit(image, mask, batch_size=4, epochs=3, verbose=0, validation_data=(image[:4], mask[:4]),
                        callbacks=[L.AdaptiveTverskyCEWeighting()]).history
    for key in L.adaptive.LOG_KEYS:
        assert len(history[key]) == 3, key
    w, lt, lce = (np.array(history[k]) for k in ("w_tversky", "loss_tversky", "loss_ce"))
    assert w[0] == pytest.approx(0.5)
    np.testing.assert_allclose(np.array(history["w_ce"]), 1 - w, rtol=1e-6)
    # w_T(t) = L_T(t-1) / (L_T(t-1) + L_CE(t-1)), from the logged previous-epoch means.
    np.testing.assert_allclose(w[1:], lt[:-1] / (lt[:-1] + lce[:-1]), rtol=1e-5)
    assert abs(w[1] - 0.5) > 1e-3  # the two components diverge from the start
    # The compiled step really used the logged weights (train loss = weighted sum of the means).
    np.testing.assert_allclose(history["loss"], w * lt + (1 - w) * lce, rtol=1e-4)
    assert loss.get_tversky_weight() == pytest.approx(lt[-1] / (lt[-1] + lce[-1]), rel=1e-5)


def test_adaptive_callback_needs_the_adaptive_loss():
    model = tiny_model(16)
    model.compile(optimizer="adam", loss=L.get_loss("dice"))
    image, mask, _ = toy_batch(n=2, size=16)
    with pytest.raises(ValueError, match="AdaptiveTverskyCELoss"):
        model.fit(image, mask, epochs=1, verbose=0, callbacks=[L.AdaptiveTverskyCEWeighting()])
    with pytest.raises(ValueError, match="AdaptiveTverskyCELoss or None"):
        L.AdaptiveTverskyCEWeighting(loss=L.get_loss("dice"))


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_compiled_model_saved_and_loaded_without_custom_objects(name, tmp_path):
    image, mask, second = toy_batch(n=2, size=16)
    y = targets_for(name, mask, second)
    model = tiny_model(16)
    loss = L.get_loss(name, from_logits=False)
    model.compile(optimizer="adam", loss=loss)
    model.optimizer.build(model.trainable_variables)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.loss) is type(loss)
    assert loaded.loss.get_config() == loss.get_config()
    np.testing.assert_allclose(float(loaded.loss(y, loaded(image))), float(loss(y, model(image))), rtol=1e-5)


# ----------------------------------------------------------------------------- built-in cohort
@pytest.fixture(scope="module")
def cohort_batch(tmp_path_factory):
    """One 64x64-downsampled batch of the built-in synthetic cohort (tfrobseg.synthetic, issue 2)."""
    # Two patients keep the cohort preparation short; any labelled slices will do for a few steps.
    data_dir = synthetic.prepare_builtin(tmp_path_factory.mktemp("builtin") / "builtin", n_patients=2)
    manifest = data.read_manifest(data_dir)
    patients = data.split_patients(manifest, "all")
    best = None
    for element in data.make_dataset(data_dir, patients, batch_size=4).take(8):
        image, y = data.to_xy(element, second_reader=True)
        if best is None or float(tf.reduce_sum(y[..., 0])) > float(tf.reduce_sum(best[1][..., 0])):
            best = (image, y)
    image, y = best
    assert float(tf.reduce_sum(y[..., 0])) > 0, "no foreground in the first batches of the built-in cohort"
    # Area downsampling keeps the test fast; masks are re-binarised.
    image = tf.image.resize(image, (64, 64), method="area").numpy()
    y = (tf.image.resize(y, (64, 64), method="area").numpy() > 0.5).astype(np.float32)
    return image, y[..., :1], y[..., 1:]


@pytest.mark.parametrize("name", L.LOSS_NAMES)
def test_each_loss_decreases_on_builtin_cohort(name, cohort_batch):
    image, mask, second = cohort_batch
    before, after = loss_before_after(name, image, targets_for(name, mask, second), steps=15)
    assert np.isfinite(after) and after < before, (name, before, after)
