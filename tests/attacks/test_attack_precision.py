"""The float32 copy of a model and the float32 attack of a mixed_float16 model (tfrobseg.attacks.precision)."""

import contextlib
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from attack_cases import SIZE, disks, reference_sign
from test_attack_params import ExplodingModel

from tfrobseg.attacks import (
    attack_dataset,
    float32_copy,
    gradient_sign,
    ifgsm,
    predict,
    resolve_loss,
)
from tfrobseg.attacks.params import check_params
from tfrobseg.models import build_model


@contextlib.contextmanager
def global_policy(name: str):
    """Build under the dtype policy ``name``; the previous global policy is restored however we leave."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def assert_float32(model: keras.Model) -> None:
    assert {v.dtype for v in model.variables} == {"float32"}
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}


def built_in(policy: str, build, weights=None) -> keras.Model:
    with global_policy(policy):
        model = build()
    if weights is not None:
        model.set_weights(weights)
    return model


@pytest.mark.parametrize("name, fp16_tol", [("unet", 0.02), ("unet_vit", 0.02), ("recurrent_unet", None)])
def test_float32_copy_of_registry_models(name, fp16_tol):
    x = disks(2, seed=3)[0]
    keras.utils.set_random_seed(0)
    with global_policy("mixed_float16"):
        mixed = build_model(name, (SIZE, SIZE, 1), filters=(4, 8, 16))
        copy = float32_copy(mixed)
        # The rebuild sets the float32 policy for itself only.
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
    assert "float16" in {layer.compute_dtype for layer in mixed.layers}  # the original is left as built
    assert_float32(copy)
    # Independent reference: the same architecture built directly under float32, with the same weights.
    reference = built_in("float32", lambda: build_model(name, (SIZE, SIZE, 1), filters=(4, 8, 16)), mixed.get_weights())
    np.testing.assert_allclose(copy(x, training=False).numpy(), reference(x, training=False).numpy(), atol=1e-6)
    if fp16_tol is not None:
        # Same weights, so the float16 model differs only by float16 rounding (the unrolled batch
        # norms of the recurrent U-Net amplify it at random initialisation: no tolerance there).
        np.testing.assert_allclose(copy(x, training=False).numpy(), mixed(x, training=False).numpy(), atol=fp16_tol)


class Doubling(keras.layers.Layer):
    """A custom layer registered nowhere: the copy must rebuild it from its own class."""

    def call(self, x):
        return 2.0 * x


def generic_net() -> keras.Model:
    """A functional model with a nested Sequential, a Lambda, an unregistered layer and a float32 head."""
    keras.utils.set_random_seed(4)
    inner = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Conv2D(4, 3, padding="same"), Doubling()])
    inp = keras.Input((SIZE, SIZE, 1))
    h = keras.layers.Lambda(lambda t: t * t + 0.5)(inner(inp))
    h = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, padding="same")(h))
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(h))


def test_float32_copy_of_a_generic_functional_model():
    x = disks(2, seed=3)[0]
    mixed = built_in("mixed_float16", generic_net)
    assert "float16" in {layer.compute_dtype for layer in mixed.layers[1].layers}
    copy = float32_copy(mixed)
    assert_float32(copy)
    assert {layer.compute_dtype for layer in copy.layers[1].layers} == {"float32"}  # the nested model too
    reference = built_in("float32", generic_net, mixed.get_weights())
    np.testing.assert_allclose(copy(x, training=False).numpy(), reference(x, training=False).numpy(), atol=1e-6)
    np.testing.assert_allclose(copy(x, training=False).numpy(), mixed(x, training=False).numpy(), atol=0.02)
    with pytest.raises(ValueError, match="keras.Model"):
        float32_copy(lambda t: t)
    quantized = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "InputLayer does not have a quantize method"
        quantized.quantize("int8")
    with pytest.raises(ValueError, match="QuantizedDTypePolicy"):
        float32_copy(quantized)


def slice_dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices({"image": x, "mask": y})


def unet() -> keras.Model:
    keras.utils.set_random_seed(5)
    return build_model("unet", (SIZE, SIZE, 1), filters=(4, 8))


def test_float32_attack_of_a_mixed_model_has_the_sign_of_a_float32_model():
    x, y = disks(3, seed=1)
    eps = [0.0, 0.1, 0.5]
    mixed = built_in("mixed_float16", unet)
    model32 = built_in("float32", unet, mixed.get_weights())
    assert mixed.layers[1].compute_dtype == "float16"
    # Independent references: an eager tape on the model built directly in float32, and on the mixed model.
    sign32 = reference_sign(model32, x, y, resolve_loss("bce"))
    sign16 = gradient_sign(mixed, x, y, jit_compile=False)[0].numpy()
    assert np.any(sign16 != sign32)  # the premise: float16 rounding flips some signs

    def attacked(precision, attack="fgsm", **kw):
        results = list(attack_dataset(mixed, slice_dataset(x, y), eps, attack=attack, batch_size=3, return_images=True,
                                      jit_compile=False, attack_precision=precision, **kw))
        adv = np.stack([[r["adversarial"] for r in results if r["epsilon"] == e] for e in eps])
        pred = np.stack([[r["prediction"] for r in results if r["epsilon"] == e] for e in eps])
        return adv, pred

    adv, pred = attacked("float32")
    for k, e in enumerate(eps):
        np.testing.assert_allclose(adv[k], x + e * sign32, atol=1e-6)
        np.testing.assert_allclose(pred[k], model32(adv[k], training=False).numpy(), atol=1e-6)
    # The default attacks the model as is: its own float16 signs and float16 predictions.
    adv, pred = attacked("model")
    for k, e in enumerate(eps):
        np.testing.assert_allclose(adv[k], x + e * sign16, atol=1e-6)
        np.testing.assert_allclose(pred[k], predict(mixed, adv[k], jit_compile=False).numpy(), atol=1e-6)
    # Every attack of the runner, not only FGSM, takes the float32 path.
    adv, _ = attacked("float32", attack="ifgsm", steps=2)
    for k, e in enumerate(eps):
        np.testing.assert_allclose(adv[k], ifgsm(model32, x, y, e, steps=2, jit_compile=False).numpy(), atol=1e-6)


def test_attack_precision_is_checked_before_any_work():
    x, y = disks(2, seed=1)
    for bad in ("float16", "Float32", None):
        with pytest.raises(ValueError, match="attack_precision must be one of"):
            attack_dataset(ExplodingModel(), slice_dataset(x, y), [0.1], attack_precision=bad)
    assert check_params(attack_precision="float32") == {"attack_precision": "float32"}
    with pytest.raises(ValueError, match="attack_precision"):
        check_params(attack_precision="mixed_float16")
