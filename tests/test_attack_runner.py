"""Tests for tfrobseg.attacks.runner.attack_dataset on dict datasets shaped like tfrobseg.data's."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobseg.attacks import attack_dataset, fgsm_sweep, gradient_sign
from tfrobseg.attacks.gradient import _COMPILED

SIZE = 32
EPS = [0.0, 0.2, 0.6]


def tiny_net() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(h))


def slices(n: int = 7):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(n, SIZE, SIZE, 1)).astype(np.float32)
    mask = (rng.random((n, SIZE, SIZE, 1)) < 0.3).astype(np.float32)
    ids = np.array([f"ProstateX-{i // 4:04d}" for i in range(n)])
    index = np.array([10 + i % 4 for i in range(n)], np.int64)
    return image, mask, ids, index


def make_dataset(batch: int | None = 3, n: int = 7) -> tf.data.Dataset:
    """Like tfrobseg.data.make_dataset: batched dict elements, last batch partial."""
    image, mask, ids, index = slices(n)
    ds = tf.data.Dataset.from_tensor_slices(
        {"image": image, "mask": mask, "mask2": np.zeros_like(mask), "labelled": np.ones(n, bool),
         "patient_id": ids, "slice_index": index, "n_slices": np.full(n, 4, np.int64)}
    )
    return ds if batch is None else ds.batch(batch)


@pytest.fixture(scope="module")
def net():
    return tiny_net()


def test_fgsm_runner_matches_fgsm_sweep_and_keeps_ids(net):
    image, mask, ids, index = slices()
    results = list(attack_dataset(net, make_dataset(), EPS, batch_size=4, return_images=True))
    assert len(results) == 7 * len(EPS)  # the padding of the last batch is dropped
    assert [r["patient_id"] for r in results[:: len(EPS)]] == list(ids)
    assert [r["slice_index"] for r in results[:: len(EPS)]] == list(index)
    assert [r["epsilon"] for r in results[: len(EPS)]] == EPS
    preds, adv = fgsm_sweep(net, image, mask, EPS, return_images=True)
    for k, r in enumerate(results):
        i, e = divmod(k, len(EPS))
        assert r["prediction"].shape == (SIZE, SIZE, 1) and r["prediction"].dtype == np.float32
        np.testing.assert_allclose(r["prediction"], preds[e, i].numpy(), atol=1e-5)
        np.testing.assert_array_equal(r["image"], image[i])
        np.testing.assert_array_equal(r["adversarial"], adv[e, i].numpy())
        assert np.abs(r["adversarial"] - r["image"]).max() <= EPS[e] + 1e-6


def test_padding_compiles_the_gradient_once(net):
    _COMPILED.pop(net, None)
    list(attack_dataset(net, make_dataset(batch=3, n=7), [0.1], batch_size=4))
    fn = _COMPILED[net][next(k for k in _COMPILED[net] if k[0] == "gradient_sign")][0]
    assert fn.experimental_get_tracing_count() == 1  # batches of 4, 3 (padded to 4)
    gradient_sign(net, slices(4)[0], slices(4)[1])
    assert fn.experimental_get_tracing_count() == 1


def test_unbatched_dataset_and_no_images(net):
    results = list(attack_dataset(net, make_dataset(batch=None, n=5), [0.3], batch_size=2))
    assert len(results) == 5 and set(results[0]) == {"patient_id", "slice_index", "epsilon", "prediction"}


@pytest.mark.parametrize(
    "attack, kwargs",
    [
        ("ifgsm", {"steps": 2}),
        ("targeted_ifgsm", {"steps": 2, "target": "foreground"}),
        ("pgd", {"steps": 2, "seed": 1}),
        ("noise", {"seed": 1, "clip": (-2.0, 2.0)}),
    ],
)
def test_other_attacks_through_the_runner(net, attack, kwargs):
    results = list(attack_dataset(net, make_dataset(n=5), [0.0, 0.3], attack=attack, batch_size=4,
                                  return_images=True, **kwargs))
    assert len(results) == 10
    lo, hi = kwargs.get("clip", (-np.inf, np.inf))
    for r in results:
        if r["epsilon"] == 0:  # no attack: the clean slice itself
            np.testing.assert_array_equal(r["adversarial"], r["image"])
            continue
        # The bound holds against the image clipped to the valid range (clip is applied last).
        assert lo <= r["adversarial"].min() and r["adversarial"].max() <= hi
        dist = np.abs(r["adversarial"] - np.clip(r["image"], lo, hi)).max()
        assert 0 < dist <= r["epsilon"] + 1e-6


def test_bad_runner_arguments(net):
    with pytest.raises(ValueError, match="attack"):
        next(attack_dataset(net, make_dataset(), [0.1], attack="deepfool"))
    with pytest.raises(ValueError, match="batch_size"):
        next(attack_dataset(net, make_dataset(), [0.1], batch_size=0))
    with pytest.raises(ValueError, match="image"):
        next(attack_dataset(net, tf.data.Dataset.from_tensor_slices(np.zeros((2, SIZE, SIZE, 1))), [0.1]))
    with pytest.raises(ValueError, match="epsilons"):
        next(attack_dataset(net, make_dataset(), [-1.0]))
