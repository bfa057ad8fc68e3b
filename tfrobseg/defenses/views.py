"""Other outputs of a trained network with the same weights: the distilled student at its training temperature.

Defensive distillation is known to mask gradients (Carlini & Wagner 2016): deployed at T = 1 after training
at a large T, the student's logits are ~T times larger, its sigmoid saturates and the input gradient of a loss
on its probabilities vanishes in floating point, so FGSM finds no direction while the network is no more
robust. :func:`temperature_view` gives the student's output at its training temperature,
``sigmoid(logits / T)``, whose gradients do not vanish. Thresholded at 0.5 its masks are the deployed model's
(``sigmoid(z / T) > 0.5`` exactly when ``z > 0``), so attacking the view and scoring its masks is the
gradient-masking check: a defense that wins only against the attack on the deployed output is flagged
(:func:`masking_views`).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from tfrobseg.defenses.config import DefenseConfig
from tfrobseg.defenses.masking import checked_temperatures

__all__ = ["logits_layer", "masking_views", "network_input", "temperature_view"]


def logits_layer(model: keras.Model) -> keras.layers.Layer:
    """The one layer of ``model`` whose name starts with ``logits`` (the pre-activation output that
    :func:`tfrobseg.models.blocks.segmentation_head` names so); ValueError naming the model otherwise."""
    heads = [layer for layer in model.layers if layer.name.startswith("logits")]
    if len(heads) != 1:
        raise ValueError(f"{model.name}: needs exactly one 'logits' layer (its pre-activation output, as "
                         f"tfrobseg.models builds it), found {len(heads)}")
    return heads[0]


def network_input(model: keras.Model) -> Any:
    """The input tensor of a functional or Sequential ``model`` (the list of them for several inputs): what a
    new model over its layers is built from, so that it is called with what ``model`` is called with."""
    inputs = model.inputs
    return inputs[0] if len(inputs) == 1 else inputs


def temperature_view(model: keras.Model, temperature: float) -> keras.Model:
    """``model`` with its output taken at ``temperature``: ``sigmoid(logits / T)`` for one channel,
    ``softmax(logits / T)`` for more; the same layers and weights (nothing copied), uncompiled."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{model.name}: temperature must be a finite number > 0, got {temperature!r}")
    logits = logits_layer(model).output
    scaled = keras.layers.Rescaling(1.0 / float(temperature), dtype="float32", name="temperature")(logits)
    activation = "sigmoid" if logits.shape[-1] == 1 else "softmax"
    output = keras.layers.Activation(activation, dtype="float32", name="probabilities_at_temperature")(scaled)
    return keras.Model(network_input(model), output, name=f"{model.name}_at_temperature")


def masking_views(model: keras.Model, defense: DefenseConfig | None) -> list[tuple[dict[str, float], keras.Model]]:
    """The views to attack besides the deployed output, with what identifies each: for a distilled network
    ``[({"temperature": T}, temperature_view(model, T))]``, for every other defense (or none) ``[]``."""
    return [({"temperature": t}, temperature_view(model, t)) for t in checked_temperatures(defense)]
