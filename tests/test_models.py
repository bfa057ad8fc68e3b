"""Tests for tfrobseg.models: every registered model, the registry, parameter structure and MAC counts."""

from __future__ import annotations

import itertools
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfrobseg.models import (
    MODEL_DISPLAY_NAMES,
    MODEL_NAMES,
    STUDY_MODELS,
    attention_maps_model,
    build_model,
    count_macs,
    layer_macs,
    model_options,
)

SIZE = 32
FILTERS = (4, 8, 16)
# A small transformer keeps the unet_vit tests fast; its defaults are exercised by test_unet_vit_defaults.
SMALL = {"unet_vit": {"embed_dim": 16, "num_heads": 2, "mlp_dim": 32}}
_CACHE: dict[str, keras.Model] = {}


def small_model(name: str) -> keras.Model:
    """One tiny model per name, shared by the per-name tests (building dominates their cost)."""
    if name not in _CACHE:
        keras.utils.set_random_seed(0)
        _CACHE[name] = build_model(name, (SIZE, SIZE, 1), filters=FILTERS, **SMALL.get(name, {}))
    return _CACHE[name]


def batch(n: int = 2, size: int = SIZE, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, channels)).astype("float32")


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- registry and validation


def test_registry_names():
    assert set(STUDY_MODELS) <= set(MODEL_NAMES)
    assert set(MODEL_DISPLAY_NAMES) == set(MODEL_NAMES)
    published = {"U-Net", "Attention U-Net", "Recurrent U-Net", "ResU-Net", "UNet-ViT"}
    assert {MODEL_DISPLAY_NAMES[n] for n in STUDY_MODELS} == published
    assert model_options("recurrent_unet") == {"t": 2}
    assert model_options("unet") == {}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "vnet"}, "valid names: unet, attention_unet"),
        ({"name": "unet", "input_shape": (40, 40, 1), "filters": (4, 8, 16, 32, 64)}, "multiple of 2\\^\\(depth-1\\) = 16"),
        ({"name": "unet", "input_shape": (64, 64)}, "input_shape must be"),
        ({"name": "unet", "output": "softmax"}, "output must be one of"),
        ({"name": "unet", "normalization": "layer"}, "normalization must be one of"),
        ({"name": "unet", "filters": (8,)}, "at least two"),
        ({"name": "unet", "n_classes": 0}, "n_classes"),
        ({"name": "unet", "activation": "nope"}, "unknown activation"),
        ({"name": "unet", "t": 2}, "unknown option"),
        ({"name": "recurrent_unet", "t": 0}, "t \\(applications"),
        ({"name": "unet_vit", "embed_dim": 10, "num_heads": 4}, "divisible by num_heads"),
        ({"name": "unet_vit", "input_shape": (None, None, 1)}, "static input size"),
        ({"name": "unet_vit", "patch_size": 3}, "not divisible by patch_size"),
    ],
)
def test_build_model_rejects_bad_arguments(kwargs, message):
    kwargs = {"input_shape": (64, 64, 1), "filters": FILTERS, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_model(kwargs.pop("name"), kwargs.pop("input_shape"), **kwargs)


# --------------------------------------------------------------------------- every model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_output_shape_range_and_sizes(name):
    model = small_model(name)
    out = model(batch(), training=False).numpy()
    assert model.name == name
    assert out.shape == (2, SIZE, SIZE, 1) and out.dtype == np.float32
    assert np.all(out >= 0) and np.all(out <= 1) and np.ptp(out) > 0
    # Any size divisible by 2^(depth-1) = 4 works, including non-square ones.
    other = build_model(name, (24, 40, 2), filters=FILTERS, n_classes=3, **SMALL.get(name, {}))
    x = np.random.default_rng(1).normal(size=(1, 24, 40, 2)).astype("float32")
    probs = other(x, training=False).numpy()
    assert probs.shape == (1, 24, 40, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)  # softmax head for n_classes > 1


@pytest.mark.parametrize("name", ["unet", "attention_unet", "recurrent_unet"])
def test_dynamic_input_size(name):
    model = build_model(name, (None, None, 1), filters=FILTERS)
    for size in (16, 24):
        assert model(batch(1, size), training=False).shape == (1, size, size, 1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_gradients_reach_every_weight(name):
    model = small_model(name)
    x = batch()
    y = (batch(seed=1) > 0).astype("float32")
    with tf.GradientTape() as tape:
        loss = keras.losses.binary_crossentropy(y, model(x, training=True))
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, model.trainable_weights)
    dead = [w.path for w, g in zip(model.trainable_weights, grads) if g is None or not np.any(g.numpy())]
    assert not dead, f"{name}: no gradient reaches {dead}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_keras_round_trip_identical(name, tmp_path):
    model = small_model(name)
    x = batch(seed=2)
    model(x, training=True)  # moves the batch-norm statistics away from their initial values
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    np.testing.assert_array_equal(loaded(x, training=False).numpy(), model(x, training=False).numpy())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_runs_under_xla(name):
    model = small_model(name)
    x = batch(seed=3)
    compiled = tf.function(lambda t: model(t, training=False), jit_compile=True)
    # XLA fuses and reorders float32 arithmetic: equal up to rounding, not bit-identical.
    np.testing.assert_allclose(compiled(x).numpy(), model(x, training=False).numpy(), rtol=1e-3, atol=5e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_mixed_float16(name, mixed_precision):
    model = build_model(name, (SIZE, SIZE, 1), filters=FILTERS, **SMALL.get(name, {}))
    assert any(layer.compute_dtype == "float16" for layer in model.layers)
    assert model.get_layer("logits").compute_dtype == "float32"
    out = model(batch(), training=False)
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


# --------------------------------------------------------------------------- parameter structure


def layer_params(model: keras.Model, keep=lambda name: True) -> dict[str, int]:
    return {layer.name: layer.count_params() for layer in model.layers if keep(layer.name)}


def bn(c: int) -> int:  # gamma, beta, moving mean, moving variance
    return 4 * c


def unet_params(filters, c_in=1, n_classes=1) -> int:
    """Hand count: 3x3 convs without bias + BN, 2x2 transposed convs with bias, 1x1 head with bias."""
    total, prev = 0, c_in
    for f in filters:  # encoder levels and bottleneck
        total += 9 * prev * f + bn(f) + 9 * f * f + bn(f)
        prev = f
    for f in reversed(filters[:-1]):  # decoder: up-conv, then double conv on the 2f-channel concat
        total += 4 * prev * f + f + 9 * 2 * f * f + bn(f) + 9 * f * f + bn(f)
        prev = f
    return total + prev * n_classes + n_classes


def test_unet_parameter_count_by_hand():
    filters = (16, 32, 64, 128, 256)
    assert build_model("unet", (64, 64, 1), filters=filters).count_params() == unet_params(filters) == 1_945_233
    assert build_model("unet", (64, 64, 3), filters=FILTERS, n_classes=2).count_params() == unet_params(
        FILTERS, 3, 2
    )


@pytest.fixture(scope="module")
def study_models():
    filters = (8, 16, 32, 64)
    return filters, {name: build_model(name, (64, 64, 1), filters=filters) for name in MODEL_NAMES}


@pytest.mark.parametrize(
    "name, own",
    [
        ("attention_unet", lambda n: n.startswith("attention")),
        ("resunet", lambda n: "_shortcut_" in n or n.endswith("_add")),
        ("unet_vit", lambda n: n.startswith("vit_")),
    ],
)
def test_models_differ_from_unet_only_by_their_component(study_models, name, own):
    """Without its own layers a model has exactly U-Net's layers, names and per-layer parameter counts."""
    _, models = study_models
    assert layer_params(models[name], lambda n: not own(n)) == layer_params(models["unet"])


def test_component_parameter_counts(study_models):
    filters, models = study_models
    unet = models["unet"].count_params()
    # Attention gate at level i: theta_x 2x2 (C -> C/2, no bias), phi_g 1x1 (C_g -> C/2), psi 1x1 (C/2 -> 1).
    gates = sum(4 * c * (c // 2) + g * (c // 2) + c // 2 + c // 2 + 1 for c, g in itertools.pairwise(filters))
    assert models["attention_unet"].count_params() - unet == gates
    # Residual shortcut per level block: 1x1 conv (no bias) + BN, from the block's input width.
    # encoder 1->8->16->32, bottleneck 32->64, decoder on the concatenations 64->32, 32->16, 16->8
    block_inputs = [(1, 8), (8, 16), (16, 32), (32, 64), (64, 32), (32, 16), (16, 8)]
    assert models["resunet"].count_params() - unet == sum(i * f + bn(f) for i, f in block_inputs)
    # ViT (defaults: patch 1, E=128, 4 heads, 2 blocks, MLP 256) between the 64-channel bottleneck and decoder.
    e, m, c, n_tokens = 128, 256, 64, (64 // 8) ** 2
    block = 2 * 2 * e + (4 * e * e + 4 * e) + (e * m + m + m * e + e)
    vit = (c * e + e) + n_tokens * e + 2 * block + 2 * e + (e * c + c)
    assert models["unet_vit"].count_params() - unet == vit
    # Recurrent units replace each double conv by 1x1 projection (with bias) + two shared 3x3 RCLs + BN.
    skeleton = lambda n: not re.match(r"(enc\d|bottleneck|dec\d)_(\d_|proj|rcl)", n)
    assert layer_params(models["recurrent_unet"], skeleton) == layer_params(models["unet"], skeleton)
    recurrent_blocks = sum(i * f + f + 2 * (9 * f * f + bn(f)) for i, f in block_inputs)
    unet_blocks = sum(9 * i * f + bn(f) + 9 * f * f + bn(f) for i, f in block_inputs)
    assert models["recurrent_unet"].count_params() - unet == recurrent_blocks - unet_blocks
    assert models["recurrent_residual_unet"].count_params() == models["recurrent_unet"].count_params()


# --------------------------------------------------------------------------- MACs


def test_count_macs_unet_by_hand():
    """U-Net at 64 x 64, filters (4, 8, 16): every conv counted by hand."""
    model = build_model("unet", (64, 64, 1), filters=FILTERS)
    enc = 64 * 64 * 9 * (1 * 4 + 4 * 4) + 32 * 32 * 9 * (4 * 8 + 8 * 8)
    bottleneck = 16 * 16 * 9 * (8 * 16 + 16 * 16)
    # up-convs: every input pixel times 2x2 kernel times C_in x C_out
    dec1 = 16 * 16 * 4 * 16 * 8 + 32 * 32 * 9 * (16 * 8 + 8 * 8)
    dec0 = 32 * 32 * 4 * 8 * 4 + 64 * 64 * 9 * (8 * 4 + 4 * 4)
    head = 64 * 64 * 4 * 1
    assert count_macs(model) == enc + bottleneck + dec1 + dec0 + head == 6_324_224


def test_count_macs_components():
    unet = count_macs(build_model("unet", (64, 64, 1), filters=FILTERS))
    r3 = build_model("recurrent_unet", (64, 64, 1), filters=FILTERS, t=3)
    r1 = build_model("recurrent_unet", (64, 64, 1), filters=FILTERS, t=1)
    rcl_t1 = sum(layer_macs(layer) for layer in r1.layers if "_rcl" in layer.name)
    assert sum(layer_macs(layer) for layer in r3.layers if "_rcl" in layer.name) == 3 * rcl_t1
    assert count_macs(r1) - rcl_t1 == count_macs(r3) - 3 * rcl_t1  # the rest does not depend on t
    vit = build_model("unet_vit", (64, 64, 1), filters=FILTERS, **SMALL["unet_vit"])
    n, e, mlp = 16 * 16, 16, 32  # tokens at the 16 x 16 bottleneck, width, MLP width
    blocks = 2 * (4 * n * e * e + 2 * n * n * e + 2 * n * e * mlp)
    assert count_macs(vit) - unet == blocks + 2 * n * 16 * e  # + patch embedding and projection back


# --------------------------------------------------------------------------- components


def plain_block(filters: int) -> keras.Sequential:
    return keras.Sequential(
        [
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
        ]
    )


def test_recurrent_conv_shares_weights_and_reduces_to_plain_conv():
    from tfrobseg.models import RecurrentConv2D

    x = batch(2, 16, 6, seed=4)
    layers = {t: RecurrentConv2D(6, t=t) for t in (1, 2, 3)}
    for layer in layers.values():
        layer(x, training=True)  # build + move BN statistics
    counts = {t: layer.count_params() for t, layer in layers.items()}
    assert counts[1] == counts[2] == counts[3] == 9 * 6 * 6 + 4 * 6
    assert len(layers[3].trainable_weights) == len(layers[1].trainable_weights) == 3  # kernel, gamma, beta

    plain = plain_block(6)
    plain.build(x.shape)
    for t, layer in layers.items():
        plain.set_weights(layer.get_weights())
        expected = plain(x, training=False)
        for _ in range(t - 1):  # h_k = F(x + h_{k-1}) with the same F
            expected = plain(x + expected, training=False)
        np.testing.assert_allclose(layer(x, training=False).numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # t = 1 is exactly the plain block, also in training mode (batch statistics).
    plain.set_weights(layers[1].get_weights())
    np.testing.assert_allclose(layers[1](x, training=True).numpy(), plain(x, training=True).numpy(), atol=1e-5)


def test_recurrent_unet_parameters_do_not_grow_with_t():
    counts = {t: build_model("recurrent_unet", (32, 32, 1), filters=FILTERS, t=t).count_params() for t in (1, 2, 4)}
    assert len(set(counts.values())) == 1


def test_recurrent_conv_rejects_width_mismatch():
    from tfrobseg.models import RecurrentConv2D

    with pytest.raises(ValueError, match="equal widths"):
        RecurrentConv2D(8)(batch(1, 8, 4))


def test_attention_coefficients_shape_range_and_gating():
    model = small_model("attention_unet")
    maps = attention_maps_model(model)(batch(3, seed=5))
    assert len(maps) == len(FILTERS) - 1
    for i, alpha in enumerate(maps):
        alpha = alpha.numpy()
        assert alpha.shape == (3, SIZE // 2**i, SIZE // 2**i, 1)
        assert alpha.min() >= 0 and alpha.max() <= 1 and np.ptp(alpha) > 0
    probe = keras.Model(
        model.input,
        [model.get_layer(n).output for n in ("enc0_2_act", "attention0_coefficients", "attention0_gated")],
    )
    skip, alpha, gated = (t.numpy() for t in probe(batch(seed=5)))
    np.testing.assert_allclose(gated, skip * alpha, rtol=1e-6)
    with pytest.raises(ValueError, match="no attention gates"):
        attention_maps_model(small_model("unet"))


@pytest.mark.parametrize("patch_size, tokens", [(1, 64), (2, 16), (4, 4)])
def test_vit_bottleneck_token_count(patch_size, tokens):
    # 64 x 64 input, depth 4 -> 8 x 8 bottleneck -> (8 / p)^2 tokens
    model = build_model(
        "unet_vit", (64, 64, 1), filters=(4, 8, 16, 32), patch_size=patch_size, **SMALL["unet_vit"]
    )
    assert model.get_layer("vit_tokens").output.shape == (None, tokens, 16)
    assert tuple(model.get_layer("vit_position").embedding.shape) == (tokens, 16)
    assert model.get_layer("vit_project").output.shape == (None, 8, 8, 32)
    assert model(batch(1, 64), training=False).shape == (1, 64, 64, 1)


def test_unet_vit_defaults():
    model = build_model("unet_vit", (256, 256, 1))
    assert model.get_layer("vit_tokens").output.shape == (None, 256, 128)
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.MultiHeadAttention)]) == 2
    assert model.get_layer("vit_block0_attention").num_heads == 4


def test_unet_plus_plus_deep_supervision():
    model = build_model("unet_plus_plus", (SIZE, SIZE, 1), filters=FILTERS, deep_supervision=True)
    outs = model(batch(), training=False)
    assert len(outs) == len(FILTERS) - 1
    assert all(tuple(o.shape) == (2, SIZE, SIZE, 1) and o.dtype == tf.float32 for o in outs)
    # nested node x0_2 concatenates x0_0, x0_1 and the up-sampled x1_1
    assert model.get_layer("x0_2_concat").output.shape[-1] == 3 * FILTERS[0]


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


def hard_dice(prob: np.ndarray, gt: np.ndarray) -> float:
    pred = prob > 0.5
    return 2 * np.logical_and(pred, gt > 0).sum() / (pred.sum() + (gt > 0).sum())


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_overfits_toy_batch(name):
    """Each model fits a two-image toy batch to Dice > 0.9 within 80 Adam steps (BCE + soft Dice).

    Group norm keeps train and inference behaviour identical, so the Dice is that of the inference output.
    """
    keras.utils.set_random_seed(0)
    model = build_model(name, (64, 64, 1), filters=FILTERS, normalization="group", **SMALL.get(name, {}))
    x, y = toy_batch()
    optimizer = keras.optimizers.Adam(1e-2)
    bce = keras.losses.BinaryCrossentropy()

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            prob = model(x, training=True)
            soft_dice = (2 * tf.reduce_sum(prob * y) + 1) / (tf.reduce_sum(prob) + tf.reduce_sum(y) + 1)
            loss = bce(y, prob) + 1 - soft_dice
        optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)

    scores = []
    for _ in range(8):
        for _ in range(10):
            step()
        scores.append(hard_dice(model(x, training=False).numpy(), y))
        if scores[-1] > 0.9:
            break
    assert scores[-1] > 0.9, f"{name}: Dice every 10 steps {np.round(scores, 3)}"
