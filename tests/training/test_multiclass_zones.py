"""Multi-class segmentation end to end: the built-in cohort's zones (background, PZ, TZ) as one-hot targets, a
softmax network trained with the multi-class Dice + CE, predictions stacked per patient and scored per zone."""

import keras
import numpy as np
import pytest

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.pipeline import make_dataset, to_xy
from tfrobseg.losses import get_loss
from tfrobseg.metrics import per_class_metrics
from tfrobseg.models import build_model
from tfrobseg.training import TrainConfig, set_seed, train_model


def test_a_softmax_network_learns_the_zones_and_is_scored_per_zone(tiny_cohort):
    # Seeded before the datasets are made, as a unit is (their shuffle takes the global seed): otherwise the
    # batches depend on what the tests run before in the same worker process set it to.
    keras.backend.clear_session()
    set_seed(0)
    manifest = Manifest.read(tiny_cohort)
    train_ids, test_id = manifest.split["train"], manifest.split["test"][0]
    assert all(manifest.entry(p, tiny_cohort).has_zones for p in [*train_ids, test_id])

    def xy(ids, shuffle):
        ds = make_dataset(tiny_cohort, ids, batch_size=4, shuffle=shuffle, image_size=32, cache=True)
        return ds.map(lambda e: to_xy(e, target="zones"))

    result = train_model(
        lambda: build_model("unet", (32, 32, 1), filters=(8, 16, 32), n_classes=3),
        get_loss("bce_dice", softmax=True), xy(train_ids, True), None,
        config=TrainConfig(max_epochs=15, learning_rate=3e-3, precision="float32", xla=False, batch_norm_momentum=0.9),
        progress=False)
    assert result.model.output.shape[-1] == 3
    slices = [e for e in make_dataset(tiny_cohort, [test_id], batch_size=64, image_size=32)]
    image = np.concatenate([s["image"].numpy() for s in slices])
    zones = np.concatenate([s["zones"].numpy() for s in slices])[..., 0].astype(np.int64)
    spacing = slices[0]["spacing"].numpy()[0]
    probs = result.model.predict(image, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)  # a softmax head
    scores = per_class_metrics(np.argmax(probs, axis=-1), zones, spacing=spacing, names={1: "PZ", 2: "TZ"})
    assert set(scores) == {"PZ", "TZ"}
    # Both zones of a patient it never saw are found (measured: Dice PZ 0.53, TZ 0.18 after 15 epochs of 4
    # patients at 32 px; a network that labels the whole gland PZ scores TZ 0).
    assert scores["PZ"]["dice"] > 0.3 and scores["TZ"]["dice"] > 0.1, scores
    assert np.isfinite([scores[z]["hd95"] for z in scores]).all()
    keras.backend.clear_session()


@pytest.mark.parametrize("loss", ["dice", "tversky", "bce"])
def test_multiclass_losses_take_the_one_hot_zones(tiny_cohort, loss):
    ds = make_dataset(tiny_cohort, Manifest.read(tiny_cohort).split["train"][:1], batch_size=4, image_size=32)
    _, y = to_xy(next(iter(ds)), target="zones")
    value = get_loss(loss, softmax=True)(y, y).numpy()
    assert value == pytest.approx(0.0, abs=1e-5)  # a perfect prediction of every zone
