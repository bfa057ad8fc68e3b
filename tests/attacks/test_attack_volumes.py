"""attack_dataset on whole volumes (tfrobseg.dataset.volumes.volume_dataset) with a 3D network: FGSM, i-FGSM,
targeted i-FGSM and a matched noise control, against the attacks called on the volume directly."""

import keras
import numpy as np
import pytest

from tfrobseg import losses
from tfrobseg.attacks import (
    attack_dataset,
    background_target,
    fgsm_sweep,
    ifgsm,
    targeted_ifgsm,
)
from tfrobseg.dataset.volumes import Volume, volume_dataset

EPS = [0.0, 0.3]


def _volume(pid: str, depth: int, seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(depth, 16, 16, 1)).astype(np.float32)
    zones = np.zeros_like(image)
    zones[1:-1, 4:12, 4:8] = 1
    zones[1:-1, 4:12, 8:12] = 2
    return Volume(pid, image, (zones > 0).astype(np.float32), np.zeros_like(image), zones, np.array([3.0, 1.0, 1.0]),
                  has_zones=True)


def _net(classes: int = 1) -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((None, None, None, 1))
    h = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(inp)
    head = keras.layers.Conv3D(classes, 1, activation="sigmoid" if classes == 1 else "softmax")
    return keras.Model(inp, head(h))


@pytest.fixture(scope="module")
def volumes():
    return [_volume("A", 6, 0), _volume("B", 8, 1), _volume("C", 5, 2)]


@pytest.fixture(scope="module")
def net():
    return _net()


def test_fgsm_on_volumes_is_fgsm_of_each_volume(net, volumes):
    results = list(attack_dataset(net, volume_dataset(volumes), EPS, batch_size=1, return_images=True))
    assert [(r["patient_id"], r["epsilon"]) for r in results] == [(v.patient_id, e) for v in volumes for e in EPS]
    assert all(set(r) == {"patient_id", "epsilon", "prediction", "image", "adversarial"} for r in results)  # no slice
    for k, v in enumerate(volumes):
        preds, adv = fgsm_sweep(net, v.image[None], v.mask[None], EPS, return_images=True)
        for e in range(len(EPS)):
            r = results[k * len(EPS) + e]
            assert r["prediction"].shape == (*v.shape, 1)
            np.testing.assert_allclose(r["prediction"], preds[e, 0].numpy(), atol=1e-6)
            np.testing.assert_array_equal(r["adversarial"], adv[e, 0].numpy())
            assert np.abs(r["adversarial"] - v.image).max() == pytest.approx(EPS[e], abs=1e-6)


@pytest.mark.parametrize("attack", ["ifgsm", "targeted_ifgsm"])
def test_iterative_attacks_on_volumes(net, volumes, attack):
    ds = volume_dataset(volumes, multiple=4)  # 8 slices each: one size, so batches of 2 (the last one padded)
    results = list(attack_dataset(net, ds, [0.3], attack=attack, batch_size=2, return_images=True, steps=2))
    assert [r["patient_id"] for r in results] == ["A", "B", "C"]
    direct = ifgsm if attack == "ifgsm" else targeted_ifgsm
    for r, v in zip(results, volumes):
        x = np.zeros((1, 8, 16, 16, 1), np.float32)
        x[0, : v.shape[0]] = v.image
        y = np.zeros_like(x)
        y[0, : v.shape[0]] = v.mask
        if attack == "targeted_ifgsm":
            y = background_target(y)
        expected = direct(net, x, y, 0.3, steps=2, loss="bce").numpy()[0]  # the runner's default loss
        np.testing.assert_allclose(r["adversarial"], expected, atol=1e-6)
        assert r["prediction"].shape == (8, 16, 16, 1) and np.abs(r["adversarial"] - x[0]).max() <= 0.3 + 1e-6


def test_a_noise_control_matched_to_a_volume_attack(net, volumes):
    results = list(attack_dataset(net, volume_dataset(volumes[:2]), [0.2], attack="gaussian", match="ifgsm",
                                  batch_size=1, return_images=True, steps=2, seed=3))
    for r in results:
        delta = r["adversarial"] - r["image"]
        assert 0 < np.sqrt(np.mean(delta**2)) <= 0.2 + 1e-6


def test_volumes_of_different_sizes_need_batches_of_one(net, volumes):
    with pytest.raises(ValueError, match="volumes differ in size .* batch_size=1"):
        attack_dataset(net, volume_dataset(volumes), [0.1], batch_size=2)


def test_a_softmax_network_attacked_on_the_zones(volumes):
    net = _net(classes=3)
    ds = volume_dataset(volumes[:2], target="zones")
    loss = losses.BCELoss(softmax=True)  # categorical cross-entropy of the one-hot zones
    results = list(attack_dataset(net, ds, EPS, loss=loss, batch_size=1, return_images=True))
    for k, v in enumerate(volumes[:2]):
        preds, _ = fgsm_sweep(net, v.image[None], v.target("zones")[None], EPS, loss=loss, return_images=True)
        for e in range(len(EPS)):
            r = results[k * len(EPS) + e]
            assert r["prediction"].shape == (*v.shape, 3)
            np.testing.assert_allclose(r["prediction"], preds[e, 0].numpy(), atol=1e-6)
