"""Every registered model: output shape and range, gradients, saving, XLA, mixed precision, training."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import (
    FILTERS,
    SIZE,
    SMALL,
    batch,
    fit_toy,
    input_shape,
    inputs_for,
    small_model,
)

from tfrobseg.models import MODEL_NAMES, build_model, model_names, model_spatial_rank

#: Another admissible input per kind of model: non-square, 2 channels (EfficientNet: multiples of 32).
OTHER_SHAPES = {
    "unet_efficientnet": (32, 64, 2),
    "unet_plus_plus_efficientnet": (32, 64, 2),
    "unet_3d": (4, 8, 12, 2),
    "dilated_unet_3d": (4, 8, 12, 2),
}


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# keras.applications warns that 2 channels are unusual for an EfficientNet (they work without ImageNet weights)
@pytest.mark.filterwarnings("ignore:This model usually expects 1 or 3 input channels")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_range_and_sizes(name):
    model = small_model(name)
    out = model(inputs_for(model), training=False).numpy()
    assert model.name == name
    assert out.shape == (2, *input_shape(name)) and out.dtype == np.float32  # (B, [D,] H, W, 1)
    assert np.all(out >= 0) and np.all(out <= 1) and np.ptp(out) > 0
    # Any size divisible by 2^(depth-1) = 4 works (32 for the EfficientNet encoder), including non-square ones.
    shape = OTHER_SHAPES.get(name, (24, 40, 2))
    other = build_model(name, shape, filters=FILTERS, n_classes=3, **SMALL.get(name, {}))
    probs = other(inputs_for(other, 1, seed=1), training=False).numpy()
    assert probs.shape == (1, *shape[:-1], 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)  # softmax head for n_classes > 1


@pytest.mark.parametrize(
    "name, sizes", [("unet", (16, 24)), ("attention_unet", (16, 24)), ("recurrent_unet", (16, 24)), ("unet_3d", (8, 12))]
)
def test_dynamic_input_size(name, sizes):
    rank = model_spatial_rank(name)
    model = build_model(name, (None,) * rank + (1,), filters=FILTERS)
    for size in sizes:
        x = np.zeros((1,) + (size,) * rank + (1,), "float32")
        assert model(x, training=False).shape == x.shape


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradients_reach_every_weight(name):
    model = small_model(name)
    x = inputs_for(model)
    y = (inputs_for(model, seed=1) > 0).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, model.trainable_weights)
    dead = [w.path for w, g in zip(model.trainable_weights, grads) if g is None or not np.any(g.numpy())]
    assert not dead, f"{name}: no gradient reaches {dead}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_keras_round_trip_identical(name, tmp_path):
    model = small_model(name)
    x = inputs_for(model, seed=2)
    model(x, training=True)  # moves the batch-norm statistics away from their initial values
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_runs_under_xla(name):
    model = small_model(name)
    x = inputs_for(model, seed=3)
    compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)
    # XLA fuses and reorders float32 arithmetic: equal up to rounding, not bit-identical.
    np.testing.assert_allclose(compiled(x).numpy(), model(x, training=False).numpy(), rtol=1e-3, atol=5e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_mixed_float16(name, mixed_precision):
    # Seeded: untrained recurrent models at inference (batch-norm statistics still 0 / 1) reach activations
    # of a few 10^4, near float16's 65504, so an unseeded build could overflow depending on test order.
    keras.utils.set_random_seed(0)
    model = build_model(name, input_shape(name), filters=FILTERS, **SMALL.get(name, {}))
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    assert model.get_layer("logits").compute_dtype == "float32"
    out = model(inputs_for(model), training=False)
    assert out.dtype == tf.float32
    assert np.all(np.isfinite(out.numpy())) and np.all((out.numpy() >= 0) & (out.numpy() <= 1))


def test_logits_output_matches_probabilities():
    probs_model = build_model("attention_unet", (SIZE, SIZE, 1), filters=FILTERS)
    logit_model = build_model("attention_unet", (SIZE, SIZE, 1), filters=FILTERS, output="logits")
    logit_model.set_weights(probs_model.get_weights())
    x = batch()
    np.testing.assert_allclose(
        tf.sigmoid(logit_model(x, training=False)).numpy(), probs_model(x, training=False).numpy(), atol=1e-6
    )


@pytest.mark.parametrize("normalization", ["group", "instance", "none"])
def test_other_normalizations(normalization):
    model = build_model("resunet", (SIZE, SIZE, 1), filters=FILTERS, normalization=normalization)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "BatchNormalization" not in kinds
    assert ("GroupNormalization" in kinds) == (normalization != "none")
    assert model.get_layer("enc0_1_conv").use_bias == (normalization == "none")
    assert model(batch(), training=False).shape == (2, SIZE, SIZE, 1)


# --------------------------------------------------------------------------- training


def toy_batch(n: int = 2, size: int = 64, seed: int = 0):
    """Two-class toy batch: bright disks (foreground) on a noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = []
    for _ in range(n):
        cy, cx = rng.uniform(20, 44, 2)
        radius = rng.uniform(8, 14)
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 < radius**2).astype("float32"))
    y = np.stack(masks)[..., None]
    return (y + rng.normal(0, 0.5, y.shape)).astype("float32"), y


# The 2D models but the EfficientNet ones: their B0 encoder makes this fit take 50-60 s each on a CPU (measured),
# and their decoders are made of the blocks the other models fit here. 3D models: test_model_unet3d.py.
FITTED = tuple(n for n in model_names(spatial_rank=2) if not n.endswith("_efficientnet"))


@pytest.mark.slow
@pytest.mark.parametrize("name", FITTED)
def test_overfits_toy_batch(name):
    """Each model fits a two-image toy batch to Dice > 0.9 within 80 Adam steps (BCE + soft Dice).

    Group norm keeps train and inference behaviour identical, so the Dice is that of the inference output.
    """
    keras.utils.set_random_seed(0)
    model = build_model(name, (64, 64, 1), filters=FILTERS, normalization="group", **SMALL.get(name, {}))
    x, y = toy_batch()
    scores = fit_toy(model, x, y, rounds=8)
    assert scores[-1] > 0.9, f"{name}: Dice every 10 steps {np.round(scores, 3)}"
