"""tfrobseg.training: the study's protocol defaults, history/best-model files, precision, strategy."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrobseg import training
from tfrobseg.training import TrainConfig, protocol_callbacks, train_model

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _tiny_model():
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inp, out)


def _data(n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16, 16, 1)).astype("float32")
    y = (x > 0.5).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def test_defaults_are_the_study_protocol():
    c = TrainConfig()
    assert (c.learning_rate, c.batch_size, c.max_epochs) == (1e-4, 4, 150)
    assert (c.plateau_patience, c.min_learning_rate) == (2, 1e-6)
    assert c.plateau_factor == 0.5 and c.early_stopping_patience == 10
    assert c.xla is True and c.strategy == "auto" and c.seed == 0
    assert c.to_dict() == {f: getattr(c, f) for f in c.__dataclass_fields__}
    assert c.precision == ("mixed_float16" if tf.config.list_physical_devices("GPU") else "float32")
    plateau, early = protocol_callbacks(c)
    assert isinstance(plateau, keras.callbacks.ReduceLROnPlateau)
    assert (plateau.factor, plateau.patience, plateau.min_lr, plateau.monitor) == (0.5, 2, 1e-6, "val_loss")
    assert isinstance(early, keras.callbacks.EarlyStopping)
    assert early.patience == 10 and early.restore_best_weights and early.monitor == "val_loss"


@pytest.mark.parametrize(
    "kwargs",
    [{"learning_rate": 0}, {"batch_size": 0}, {"max_epochs": 0}, {"plateau_factor": 1.0},
     {"min_learning_rate": 1.0}, {"precision": "float16"}, {"strategy": "tpu"}],
)
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)


def test_train_writes_history_and_restores_best(tmp_path):
    cfg = TrainConfig(max_epochs=4, learning_rate=1e-2, xla=False, seed=3)
    res = train_model(_tiny_model, keras.losses.BinaryCrossentropy(), _data(), _data(4, 1), config=cfg,
                      out_dir=tmp_path, progress=False)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert list(hist["epoch"]) == [1, 2, 3, 4] and res.epochs_run == 4
    assert {"loss", "val_loss", "learning_rate", "seconds"} <= set(hist.columns)
    assert res.best_epoch == int(hist["val_loss"].idxmin()) + 1
    assert res.best_val_loss == pytest.approx(hist["val_loss"].min())
    # The returned model and the saved file carry the best epoch's weights.
    assert res.model.evaluate(_data(4, 1), verbose=0) == pytest.approx(res.best_val_loss, rel=1e-5)
    loaded = keras.saving.load_model(tmp_path / "best.keras", compile=False)
    x = next(iter(_data(4, 1)))[0]
    np.testing.assert_allclose(loaded(x), res.model(x), rtol=1e-5, atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_same_seed_same_history_and_xla(tmp_path):
    cfg = TrainConfig(max_epochs=2, learning_rate=1e-2, xla=True, seed=7)
    a = train_model(_tiny_model, "bce", _data(), _data(4, 1), config=cfg, progress=False)
    b = train_model(_tiny_model, "bce", _data(), _data(4, 1), config=cfg, progress=False)
    assert a.model.jit_compile is True
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)


def test_mixed_bfloat16_policy():
    cfg = TrainConfig(max_epochs=1, precision="mixed_bfloat16", xla=False)
    res = train_model(_tiny_model, "bce", _data(), None, config=cfg, progress=False)
    assert keras.mixed_precision.dtype_policy().name == "mixed_bfloat16"
    assert res.model.layers[1].compute_dtype == "bfloat16"
    assert res.model(np.zeros((1, 16, 16, 1), "float32")).dtype == tf.float32


def test_strategy_selection(monkeypatch):
    assert training.get_strategy("auto") is tf.distribute.get_strategy()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}))
    assert training.config.tf_config_workers() == 2
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        training.config.tf_config_workers()
    with pytest.raises(ValueError):
        training.get_strategy("tpu")


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    # Logical devices must be configured before TensorFlow initialises: fresh interpreter.
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        from tfrobseg.training import TrainConfig, train_model
        def build():
            inp = keras.Input((16, 16, 1))
            return keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(inp))
        x = np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype("float32")
        ds = tf.data.Dataset.from_tensor_slices((x, (x > 0).astype("float32"))).batch(4)
        res = train_model(build, "bce", ds, ds, config=TrainConfig(max_epochs=2, strategy="mirrored", xla=False),
                          out_dir=sys.argv[1], progress=False)
        print(json.dumps({"strategy": res.strategy, "replicas": res.replicas, "epochs": res.epochs_run}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, check=False,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"strategy": "MirroredStrategy", "replicas": 2, "epochs": 2}
    assert (tmp_path / "best.keras").is_file() and (tmp_path / "history.csv").is_file()


def test_batch_norm_is_synchronised_across_replicas():
    # Apostolidis' global batch of 4 split over 2 replicas: with per-replica statistics each would
    # normalise over its own 2 slices and one step would differ from the single-device step.
    script = textwrap.dedent(
        """
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        from tfrobseg import models
        rng = np.random.default_rng(0)
        x = rng.normal(size=(4, 16, 16, 1)).astype("float32")
        x[:2] += 3.0  # the replicas' halves have different statistics
        ds = tf.data.Dataset.from_tensor_slices((x, (x > 1).astype("float32"))).batch(4)

        def one_step(strategy):
            keras.utils.set_random_seed(0)
            with strategy.scope():
                m = models.build_model("unet", input_shape=(16, 16, 1), filters=(4, 8))
                m.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy", jit_compile=False)
            m.fit(ds, epochs=1, verbose=0, shuffle=False)
            sync = sorted({l.synchronized for l in m.layers if isinstance(l, keras.layers.BatchNormalization)})
            return np.concatenate([w.ravel() for w in m.get_weights()]), sync

        single, sync_single = one_step(tf.distribute.get_strategy())
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        mirrored, sync_mirrored = one_step(tf.distribute.MirroredStrategy(cpus))
        print(json.dumps({"single": sync_single, "mirrored": sync_mirrored,
                          "max_diff": float(np.abs(single - mirrored).max())}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["single"] == [False] and out["mirrored"] == [True]
    assert out["max_diff"] < 1e-5  # measured 6e-8; per-replica statistics: 0.02


def _nan_after(n_good: int, size: int = 16):
    """4-slice batches whose batch ``n_good + 1`` holds a NaN label (a NaN image pixel could be
    flushed to 0 by the ReLU)."""
    x = np.random.default_rng(0).normal(size=(4 * (n_good + 2), size, size, 1)).astype("float32")
    y = (x > 0).astype("float32")
    y[4 * n_good, 0, 0, 0] = np.nan
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(4)


def test_a_nan_loss_stops_training_and_raises_naming_where(tmp_path):
    from tfrobseg.errors import TrainingDiverged

    good = tf.data.Dataset.from_tensor_slices(
        (np.ones((4, 16, 16, 1), "float32"), np.ones((4, 16, 16, 1), "float32"))).batch(4)
    with pytest.raises(TrainingDiverged, match=r"^NaN/inf in training: the training loss became NaN at epoch 1, batch 3 \(learning rate 0.01\)$"):
        train_model(_tiny_model, "bce", _nan_after(2), good, config=TrainConfig(max_epochs=3, learning_rate=1e-2, xla=False),
                    out_dir=tmp_path, progress=False)
    assert not (tmp_path / "best.keras").exists()  # nothing to attack is left behind
    # A finite training loss but a NaN validation loss stops after the first epoch.
    with pytest.raises(TrainingDiverged, match=r"^NaN/inf in training: the validation loss became NaN at epoch 1 "):
        train_model(_tiny_model, "bce", good, _nan_after(0), config=TrainConfig(max_epochs=3, learning_rate=1e-2, xla=False),
                    out_dir=tmp_path, progress=False)
    assert len(pd.read_csv(tmp_path / "history.csv")) == 1


def test_non_finite_weights_stop_training_even_when_the_loss_looks_finite(tmp_path):
    # One batch of huge inputs: the batch-norm variance overflows to inf, its running variance with it,
    # and the ReLU after it turns the NaN activations into 0, so the loss stays finite.
    from tfrobseg.errors import TrainingDiverged

    def build():
        inp = keras.Input((16, 16, 1))
        h = keras.layers.Activation("relu")(keras.layers.BatchNormalization(name="bn")(
            keras.layers.Conv2D(4, 3, padding="same", name="conv")(inp)))
        return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", name="head")(h))

    x = np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype("float32")
    x[4:] *= 1e25
    data = tf.data.Dataset.from_tensor_slices((x, (x > 0).astype("float32"))).batch(4)
    with pytest.raises(TrainingDiverged, match=r"^NaN/inf in training: the weights became (NaN|infinite) "
                                               r"\(bn/moving_(mean|variance)\) at epoch 1 \(learning rate 0.01\)$"):
        train_model(build, "bce", data, None, progress=False, out_dir=tmp_path,
                    config=TrainConfig(max_epochs=3, learning_rate=1e-2, xla=False))
    assert not (tmp_path / "best.keras").exists()
    assert np.isfinite(pd.read_csv(tmp_path / "history.csv")["loss"]).all()  # the premise: the loss looked fine


def test_strategy_resolution_without_tensorflow():
    resolve = training.resolve_strategy
    assert resolve("auto", 0) == ("default", 1) and resolve("auto", 1) == ("default", 1)
    assert resolve("auto", 4) == ("mirrored", 4) and resolve("mirrored", 0) == ("mirrored", 1)
    assert resolve("auto", 2, workers=3) == ("multiworker", 6) and resolve("default", 8) == ("default", 1)
    with pytest.raises(ValueError, match="strategy must be one of"):
        resolve("tpu", 1)


def test_rising_val_loss_reduces_lr_to_the_floor_stops_early_and_restores_best(tmp_path):
    # Validation labels are the inverse of the training labels: the better the network learns the
    # training set, the worse its validation loss, from the first epoch on. The protocol must then
    # halve the learning rate after every `plateau_patience` stale epochs down to the floor, stop
    # `early_stopping_patience` epochs after the best one, and return that epoch's weights.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 16, 1)).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, (x > 0).astype("float32"))).batch(4)
    val = tf.data.Dataset.from_tensor_slices((x, (x <= 0).astype("float32"))).batch(4)
    cfg = TrainConfig(learning_rate=0.02, plateau_patience=1, plateau_factor=0.5, min_learning_rate=0.004,
                      early_stopping_patience=4, max_epochs=30, xla=False, seed=1)
    res = train_model(_tiny_model, "bce", train, val, config=cfg, out_dir=tmp_path, progress=False)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert (np.diff(hist["val_loss"]) > 0).all() and (np.diff(hist["loss"]) < 0).all()  # the premise
    # Best epoch 1; epochs 2-5 are stale; stop after epoch 5 (wait reaches the patience of 4).
    assert res.best_epoch == 1 and res.epochs_run == 5 and list(hist["epoch"]) == [1, 2, 3, 4, 5]
    # The rate in force after each epoch: halved after every stale epoch (patience 1), floor 0.004.
    np.testing.assert_allclose(hist["learning_rate"], [0.02, 0.01, 0.005, 0.004, 0.004], rtol=1e-6)
    assert res.best_val_loss == pytest.approx(hist["val_loss"].iloc[0])
    assert res.model.evaluate(val, verbose=0) == pytest.approx(hist["val_loss"].iloc[0], rel=1e-5)
    loaded = keras.saving.load_model(tmp_path / "best.keras", compile=False)
    np.testing.assert_allclose(loaded(x), res.model(x), rtol=1e-5, atol=1e-6)


def test_config_boundaries():
    # Values at the edge of each valid range are accepted; one step outside is refused.
    ok = TrainConfig(batch_size=1, max_epochs=1, learning_rate=1e-3, min_learning_rate=1e-3, plateau_patience=0,
                     early_stopping_patience=0, plateau_factor=0.99, precision="float32")
    assert (ok.batch_size, ok.max_epochs, ok.min_learning_rate) == (1, 1, 1e-3)
    assert TrainConfig(min_learning_rate=0.0, precision="float32").min_learning_rate == 0.0
    for bad in ({"plateau_factor": 0.0}, {"learning_rate": 0.0, "min_learning_rate": 0.0}, {"plateau_patience": -1}, {"early_stopping_patience": -1},
                {"min_learning_rate": -1e-9}, {"learning_rate": -1e-3}):
        with pytest.raises(ValueError):
            TrainConfig(precision="float32", **bad)
    assert TrainConfig(precision="mixed_float16").precision == "mixed_float16"
    assert TrainConfig(strategy="mirrored", precision="float32").strategy == "mirrored"


def test_without_validation_data_the_training_loss_is_monitored(tmp_path):
    cfg = TrainConfig(max_epochs=3, learning_rate=1e-2, xla=False, seed=2)
    out = tmp_path / "unit" / "fold0"  # created with its parents
    t0 = time.perf_counter()
    res = train_model(_tiny_model, "bce", _data(), None, config=cfg, out_dir=out, progress=True, desc="t")
    elapsed = time.perf_counter() - t0
    hist = pd.read_csv(out / "history.csv")
    assert res.epochs_run == 3 and "val_loss" not in hist.columns
    assert res.best_val_loss == pytest.approx(hist["loss"].min()) and res.best_epoch == int(hist["loss"].idxmin()) + 1
    assert (res.strategy, res.replicas, res.model_path) == ("_DefaultDistributionStrategy", 1, out / "best.keras")
    # The recorded duration lies between its epochs' and the call's (a recorded number, not a speed check).
    assert hist["seconds"].sum() <= res.seconds <= elapsed
    assert res.model.optimizer.learning_rate.numpy() == pytest.approx(1e-2)


def _bn_model():
    """Batch norm (moving statistics in the weights) and Adam: every piece of state a reuse must reset."""
    inp = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    x = keras.layers.Activation("relu")(keras.layers.BatchNormalization()(x))
    return keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(x))


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_a_reused_model_trains_exactly_like_a_fresh_one(precision):
    """reuse_key: the second unit trains the kept, traced model reset to its initial state; its history and
    weights must be those of a fresh build, bit for bit (the plateau lowered the learning rate on the way)."""
    cfg = TrainConfig(max_epochs=4, learning_rate=5e-2, xla=False, seed=3, plateau_patience=0, precision=precision)
    rising = _data(4, 1).map(lambda x, y: (x, 1.0 - y))  # inverted labels: the validation loss rises

    def fit(key):
        return train_model(_bn_model, "bce", _data(), rising, config=cfg, progress=False, reuse_key=key)

    training.clear_reusable_models()
    fresh = fit(None)
    first = fit("bn")
    first_weights = [w.copy() for w in first.model.get_weights()]
    second = fit("bn")
    assert second.model is first.model  # reused, not rebuilt
    assert second.history["learning_rate"].iloc[-1] < cfg.learning_rate  # the run changed the learning rate
    for result in (first, second):
        pd.testing.assert_frame_equal(result.history, fresh.history)
    for a, b, c in zip(fresh.model.get_weights(), first_weights, second.model.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    other = train_model(_bn_model, "bce", _data(), rising, config=TrainConfig(**{**cfg.to_dict(), "seed": 4}),
                        progress=False, reuse_key="bn")
    assert other.model is not first.model  # another seed: another initial state, built anew
    training.clear_reusable_models()


def test_output_prior_sets_the_initial_foreground_probability():
    from tfrobseg import models

    model = models.build_model("unet", input_shape=(16, 16, 1), filters=(4, 8))
    training.set_output_prior(model, 0.05)
    probs = model(np.zeros((1, 16, 16, 1), "float32")).numpy()
    # Zero input: every hidden feature is a constant, so the output is sigmoid(w . const + b); the
    # bias must equal log(0.05 / 0.95) (hand value -2.944439).
    head = model.get_layer("logits")
    assert head.bias.numpy()[0] == pytest.approx(-2.944439, abs=1e-6)
    assert probs.shape == (1, 16, 16, 1)
    with pytest.raises(ValueError, match="one sigmoid output"):
        training.set_output_prior(_tiny_model(), 0.05)


def test_batch_norm_momentum_reaches_nested_norms():
    from tfrobseg import models

    model = models.build_model("recurrent_unet", input_shape=(16, 16, 1), filters=(4, 8))
    n = training.set_batch_norm_momentum(model, 0.9)
    norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.BatchNormalization)]
    inner = [layer for layer in norms if layer not in model.layers]
    assert n == len(norms) and inner  # the per-step norms inside RecurrentConv2D are nested layers
    assert all(layer.momentum == 0.9 for layer in norms)
    # Moving mean after one training call on a batch of mean m: 0.9 * 0 + 0.1 * m.
    bn = keras.layers.BatchNormalization()
    wrapper = keras.Sequential([keras.Input((4,)), bn])
    training.set_batch_norm_momentum(wrapper, 0.9)
    wrapper(np.full((8, 4), 2.0, "float32"), training=True)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.2, rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"batch_norm_momentum": 1.0}, {"batch_norm_momentum": -0.1},
                                    {"output_prior": 0.0}, {"output_prior": 1.0}])
def test_init_options_validated(kwargs):
    with pytest.raises(ValueError):
        TrainConfig(**kwargs)
