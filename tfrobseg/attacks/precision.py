"""A float32 copy of a Keras model, so that a model built under ``mixed_float16`` can be attacked in float32.

Under ``mixed_float16`` the input gradient of the attack is computed in float16. Loss scaling
(:mod:`tfrobseg.attacks.gradient`) keeps it from flushing to zero, but float16 rounding still flips the
sign of the small gradients: on a briefly trained U-Net at 256×256 the float16 and float32 signs of
FGSM (Apostolidis et al. eq. 1) agree on about 96 % of pixels only (docs/attacks.md gives the
measured numbers). :func:`float32_copy` rebuilds the same architecture with every layer in float32
and the same weights; :func:`tfrobseg.attacks.attack_dataset` uses it with
``attack_precision="float32"``.
"""

from __future__ import annotations

from typing import Any

import keras

#: Values of ``attack_precision``: ``"model"`` attacks the model as built (float16 compute under
#: ``mixed_float16``); ``"float32"`` attacks, and predicts with, a float32 copy of it.
ATTACK_PRECISIONS = ("model", "float32")

# Policies whose compute (and, for the non-mixed ones, variable) dtype is a 16-bit float.
_HALF_POLICIES = frozenset({"mixed_float16", "mixed_bfloat16", "float16", "bfloat16"})
# Serialized class names of the plain float policies (FloatDTypePolicy: its older alias).
_FLOAT_POLICY_CLASSES = ("DTypePolicy", "FloatDTypePolicy")


def _is_half(value: Any) -> bool:
    return isinstance(value, str) and value in _HALF_POLICIES


def _to_float32(config: Any) -> Any:
    """``config`` with every 16-bit float dtype or dtype policy replaced by ``"float32"``.

    Keras serializes a layer's policy as ``{"class_name": "DTypePolicy", "config": {"name": ...}}``
    (older or custom layers may give a plain string); nested models and the inputs' dtypes are
    reached by the same walk. Quantized policies cannot be made float32 without their float weights.
    """
    if isinstance(config, dict):
        kind = config.get("class_name")
        if isinstance(kind, str) and "DTypePolicy" in kind and kind not in _FLOAT_POLICY_CLASSES:
            raise ValueError(f"float32_copy: cannot convert a {kind} (quantized layer) to float32")
        if kind in _FLOAT_POLICY_CLASSES and config.get("config", {}).get("name") in _HALF_POLICIES:
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {key: "float32" if key == "dtype" and _is_half(value) else _to_float32(value)
                for key, value in config.items()}
    if isinstance(config, list):
        return [_to_float32(item) for item in config]
    return config


def _classes(model: keras.Model) -> dict[str, type]:
    """The model's own class and those of its layers (nested models included), by class name."""
    classes = {type(model).__name__: type(model)}
    for layer in getattr(model, "layers", []):
        classes.update(_classes(layer) if isinstance(layer, keras.Model) else {type(layer).__name__: type(layer)})
    return classes


def float32_copy(model: keras.Model) -> keras.Model:
    """A new model with ``model``'s architecture and weights, every layer computing in float32.

    Works for the :func:`tfrobseg.models.build_model` models (their custom layers are registered
    serializable) and for any functional or sequential Keras model, or a subclassed one with a
    ``get_config``; the layers' own classes are used, so unregistered custom layers work too. The
    weights (trainable and not, e.g. batch-norm statistics) are copied; ``mixed_float16`` keeps
    them in float32 already, so the copy computes with exactly the same values. The copy is not
    compiled (attacks need no optimizer), and ``model`` is left unchanged.

    Raises:
        ValueError: the model cannot be rebuilt from its config, or has quantized layers.
    """
    if not isinstance(model, keras.Model):
        # ValueError, like every bad argument in tfrobseg (the contract), not TypeError.
        raise ValueError(f"float32_copy needs a keras.Model, got {type(model).__name__}")  # noqa: TRY004
    config = _to_float32(keras.saving.serialize_keras_object(model))
    # The config names the policy of every layer, but not that of the model itself, of its inputs
    # or of layers that do not forward ``dtype``: those follow the global policy, which Keras keeps
    # per thread, so setting it here for the rebuild does not touch other threads.
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        # safe_mode=False: the config comes from this in-memory model, not from a file, and a
        # Lambda layer's function is stored as code that safe mode refuses to rebuild.
        copy = keras.saving.deserialize_keras_object(config, custom_objects=_classes(model), safe_mode=False)
    except (TypeError, ValueError, NotImplementedError) as error:
        raise ValueError(
            f"float32_copy: model {model.name!r} cannot be rebuilt from its config ({error}); build it "
            "under the float32 policy instead and load the weights"
        ) from error
    finally:
        keras.mixed_precision.set_global_policy(policy)
    copy.set_weights(model.get_weights())
    return copy
