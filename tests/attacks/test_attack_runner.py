"""Tests for tfrobseg.attacks.runner: ATTACKS and attack_dataset on dict datasets shaped like tfrobseg.dataset.pipeline's."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import batch_norm_net

from tfrobseg.attacks import (
    ATTACKS,
    attack_dataset,
    background_target,
    fgsm,
    fgsm_sweep,
    gradient_sign,
    ifgsm,
    pgd,
    sign_noise,
    targeted_ifgsm,
)
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
    """Like tfrobseg.dataset.pipeline.make_dataset: batched dict elements, last batch partial."""
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


@pytest.mark.parametrize("attack, kwargs", [("fgsm", {}), ("ifgsm", {"steps": 2}), ("pgd", {"steps": 2}), ("noise", {})])
def test_runner_predicts_in_inference_mode_with_batch_norm(attack, kwargs):
    model = batch_norm_net(SIZE, seed=1)
    results = list(attack_dataset(model, make_dataset(n=5), [0.0, 0.4, 1.0], attack=attack, batch_size=4,
                                  return_images=True, jit_compile=False, **kwargs))
    adv = np.stack([r["adversarial"] for r in results])
    expected = model(adv, training=False).numpy()
    np.testing.assert_allclose(np.stack([r["prediction"] for r in results]), expected, atol=1e-5)
    assert np.abs(model(adv, training=True).numpy() - expected).max() > 0.05  # the premise


def test_runner_attacks_with_the_loss_it_is_given(net):
    # The loss reaches the gradient: the runner's perturbation is FGSM with that loss, and two
    # losses give two different perturbations.
    image, mask, _, _ = slices()
    perturbations = {}
    for loss in ("bce", "dice"):
        results = list(attack_dataset(net, make_dataset(), [0.5], loss=loss, batch_size=4, return_images=True))
        perturbations[loss] = np.stack([r["adversarial"] - r["image"] for r in results])
        np.testing.assert_allclose(perturbations[loss], fgsm(net, image, mask, 0.5, loss=loss).numpy() - image, atol=1e-6)
    assert np.mean(perturbations["bce"] != perturbations["dice"]) > 0.02


def _padded_batches(n: int, batch_size: int):
    """The runner's batches: slices in order, the last batch padded with empty slices."""
    image, mask, _, _ = slices(n)
    for b, start in enumerate(range(0, n, batch_size)):
        count = min(batch_size, n - start)
        x = np.zeros((batch_size, SIZE, SIZE, 1), "float32")
        y = np.zeros_like(x)
        x[:count], y[:count] = image[start:start + count], mask[start:start + count]
        yield b, count, x, y


#: Each attack called directly as the runner must call it on batch ``b``, with its defaults.
DIRECT_CALLS = {
    "ifgsm": lambda net, x, y, b: ifgsm(net, x, y, 0.3, jit_compile=False),
    "targeted_ifgsm": lambda net, x, y, b: targeted_ifgsm(net, x, background_target(y), 0.3, loss="bce",
                                                          jit_compile=False),
    "pgd": lambda net, x, y, b: pgd(net, x, y, 0.3, seed=(0, b), jit_compile=False),
    "noise": lambda net, x, y, b: sign_noise(x, 0.3, seed=(0, b)),
}


@pytest.mark.parametrize("attack", ["ifgsm", "targeted_ifgsm", "pgd", "noise"])
def test_runner_runs_the_named_attack_with_its_defaults(net, attack):
    # Each name reaches its own attack: default steps and α, the "background" target, BCE, and
    # for the random attacks the stream (seed, batch number) with the default seed 0.
    results = list(attack_dataset(net, make_dataset(n=5), [0.3], attack=attack, batch_size=4, return_images=True,
                                  jit_compile=False))
    expected = []
    for b, count, x, y in _padded_batches(5, 4):
        adv = DIRECT_CALLS[attack](net, x, y, b)
        expected.append(adv.numpy()[:count])
    np.testing.assert_allclose(np.stack([r["adversarial"] for r in results]), np.concatenate(expected), atol=1e-6)


@pytest.mark.parametrize("attack, kwargs, kinds", [("ifgsm", {"steps": 1}, {"objective_gradient", "predict"}),
                                                   ("fgsm", {}, {"gradient_sign", "sweep_forward"})])
def test_runner_compiles_with_xla_by_default(net, attack, kwargs, kinds):
    _COMPILED.pop(net, None)
    list(attack_dataset(net, make_dataset(n=5), [0.0, 0.2], attack=attack, batch_size=4, **kwargs))
    assert {key[0] for key in _COMPILED[net]} == kinds
    assert {key[2] for key in _COMPILED[net]} == {True}


def test_batch_of_one_and_elements_without_ids(net):
    image, mask, _, _ = slices(3)
    ds = tf.data.Dataset.from_tensor_slices({"image": image, "mask": mask})
    results = list(attack_dataset(net, ds, [0.0], batch_size=1))
    assert [r["slice_index"] for r in results] == [0, 1, 2] and {r["patient_id"] for r in results} == {""}
    np.testing.assert_allclose(np.stack([r["prediction"] for r in results]), net(image, training=False).numpy(),
                               atol=1e-5)


# --- ATTACKS: the one list of names, each usable with its defaults ----------------------------


def test_attacks_is_the_one_list_of_names():
    assert tuple(ATTACKS) == ("fgsm", "ifgsm", "targeted_ifgsm", "pgd", "segpgd", "cospgd", "targeted_cospgd", "apgd", "dag",
                            "noise", "gaussian", "rician")
    assert ATTACKS["fgsm"].options == {"forward_batch", "loss", "clip", "relative_to", "loss_scale", "jit_compile"}
    assert {"target", "steps", "alpha"} <= ATTACKS["targeted_ifgsm"].options
    assert {"seed", "random_start"} <= ATTACKS["pgd"].options
    assert ATTACKS["noise"].options == {"seed", "clip", "relative_to", "jit_compile"}
    assert {"match", "steps", "target", "forward_batch"} <= ATTACKS["gaussian"].options == ATTACKS["rician"].options


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_attack_name_runs_with_default_arguments(net, attack):
    # The command line offers tuple(ATTACKS) and passes only the name and the loss.
    image, _, _, _ = slices(5)
    results = list(attack_dataset(net, make_dataset(n=5), [0.0, 0.3], attack=attack, loss="dice",
                                  return_images=True))
    assert len(results) == 10
    clean = net(image, training=False).numpy()
    for k, r in enumerate(results):
        dist = np.abs(r["adversarial"] - r["image"]).max()
        if r["epsilon"] == 0:
            assert dist == 0
            np.testing.assert_allclose(r["prediction"], clean[k // 2], atol=1e-5)
        else:
            assert 0 < dist <= 0.3 + 1e-6


def unreadable_dataset() -> tf.data.Dataset:
    """A dataset with the runner's element structure whose reading fails: checks must come first."""

    def fail():
        raise AssertionError("the dataset was read before the arguments were checked")
        yield  # a generator function, never reached

    spec = tf.TensorSpec((SIZE, SIZE, 1), tf.float32)
    return tf.data.Dataset.from_generator(fail, output_signature={"image": spec, "mask": spec})


class UncallableModel:
    """Stands in for the model: calling it fails the test."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the model was called before the arguments were checked")


@pytest.mark.parametrize("attack, kwargs, match", [
    ("ifgsm", {"steps": 0}, "steps"),
    ("pgd", {"steps": 2.5}, "steps"),
    ("ifgsm", {"alpha": -0.1}, "alpha"),
    ("fgsm", {"clip": (1.0, -1.0)}, "clip"),
    ("fgsm", {"relative_to": "median"}, "relative_to"),
    ("noise", {"relative_to": "median"}, "relative_to"),
    ("fgsm", {"forward_batch": 0}, "forward_batch"),
    ("ifgsm", {"loss_scale": 0.0}, "loss_scale"),
    ("pgd", {"seed": (1, 2)}, "seed must be an int"),
    ("pgd", {"random_start": "no"}, "random_start"),
    ("pgd", {"restarts": 2, "random_start": False}, "needs random_start"),
    ("segpgd", {"alpha": 0.1, "step_factor": 1.0}, "not both"),
    ("cospgd", {"momentum": 0.5}, "attack 'cospgd' takes no argument momentum"),
    ("targeted_cospgd", {"target": "everything"}, "target"),
    ("targeted_ifgsm", {"target": "everything"}, "target"),
    ("fgsm", {"steps": 3}, "attack 'fgsm' takes no argument steps"),
    ("noise", {"loss_scale": 2.0}, "attack 'noise' takes no argument loss_scale"),
    ("ifgsm", {"stesp": 3}, "takes no argument stesp"),
    ("fgsm", {"loss": "no_such_loss"}, "unknown attack loss"),
    ("gaussian", {"match": "rician"}, r"match must be one of \('fgsm', 'ifgsm', 'targeted_ifgsm', 'pgd'"),
    ("rician", {"match": "fgsm", "steps": 3}, r"attack 'rician' \(match='fgsm'\) takes no argument steps"),
    ("gaussian", {"steps": 0}, "steps"),
    ("rician", {"seed": (1, 2)}, "seed must be an int"),
])
def test_bad_parameters_are_rejected_before_any_work(attack, kwargs, match):
    loss = kwargs.pop("loss", "bce")
    with pytest.raises(ValueError, match=match):
        attack_dataset(UncallableModel(), unreadable_dataset(), [0.1], attack=attack, loss=loss, **kwargs)
    with pytest.raises(ValueError, match="epsilons"):
        attack_dataset(UncallableModel(), unreadable_dataset(), [0.1, -0.1], attack=attack)
