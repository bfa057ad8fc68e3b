"""Training-level tests of tfrobseg.losses: short fits of every loss, saved models."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from loss_cases import tiny_model, toy_batch

from tfrobseg import losses as L
from tfrobseg.dataset import pipeline, synthetic
from tfrobseg.dataset.manifest import Manifest


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
    """One 64x64-downsampled batch of the built-in synthetic cohort (tfrobseg.dataset.synthetic, issue 2)."""
    # Two patients keep the cohort preparation short; any labelled slices will do for a few steps.
    data_dir = synthetic.prepare_builtin(tmp_path_factory.mktemp("builtin") / "builtin", n_patients=2)
    patients = Manifest.read(data_dir).patients_of("all")
    best = None
    for element in pipeline.make_dataset(data_dir, patients, batch_size=4).take(8):
        image, y = pipeline.to_xy(element, second_reader=True)
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
