"""Build, compile and fit a model under the study's protocol (Apostolidis et al., Section II-H).

Outputs of :func:`train_model` in ``out_dir``: ``best.keras`` (the restored best-validation-loss
model, written atomically) and ``history.csv`` (one row per epoch: loss, val_loss, learning rate,
seconds; rewritten atomically after each epoch so that it survives an interruption).

Precision (``float32`` / ``mixed_float16`` / ``mixed_bfloat16``), XLA (``jit_compile``) and the
distribution strategy (one device, ``MirroredStrategy`` over several GPUs or logical CPU devices,
``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``) are options; seeds are set with
:func:`keras.utils.set_random_seed` and returned in the result for the unit's record.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from tfrobseg.errors import TrainingDiverged
from tfrobseg.io import atomic_save_model
from tfrobseg.training.callbacks import (
    EpochProgress,
    HistoryCSV,
    StopOnNonFinite,
    protocol_callbacks,
)
from tfrobseg.training.config import (
    PRECISIONS,
    TrainConfig,
    resolve_strategy,
    tf_config_workers,
)

__all__ = ["TrainResult", "get_strategy", "set_precision", "set_seed", "train_model"]


@dataclass
class TrainResult:
    """What one training run produced."""

    model: keras.Model
    history: pd.DataFrame
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    seconds: float
    model_path: Path | None
    strategy: str
    replicas: int


def set_seed(seed: int) -> int:
    """Seed Python, NumPy and TensorFlow through Keras; returns the seed for the record."""
    keras.utils.set_random_seed(int(seed))
    return int(seed)


def set_precision(precision: str) -> None:
    """Set the global Keras dtype policy (must happen before the model is built)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    keras.mixed_precision.set_global_policy(precision)


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Pick the distribution strategy.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one worker,
    ``MirroredStrategy`` when more than one GPU is visible, else the default (one device).
    ``mirrored``: ``MirroredStrategy`` over all GPUs, or over all logical CPU devices when there
    is no GPU (how the tests exercise the multi-replica path on a CPU machine).
    ``multiworker``: ``MultiWorkerMirroredStrategy`` (cluster from ``TF_CONFIG``).
    """
    gpus = tf.config.list_logical_devices("GPU")
    # The choice itself is resolve_strategy's, so that it matches the settings fingerprint exactly.
    name, _ = resolve_strategy(name, len(gpus), tf_config_workers() if name == "auto" else 0)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()


def train_model(
    build_fn: Callable[[], keras.Model],
    loss: keras.losses.Loss | Callable | str,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset | None,
    *,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "train",
    position: int = 0,
) -> TrainResult:
    """Build, compile and fit a model under the study's protocol.

    Args:
        build_fn: returns an *uncompiled* model; called inside the strategy scope (variables
            must be created there) after the precision policy is set.
        loss: a Keras loss, a callable ``loss(y_true, y_pred)`` or a name for
            :func:`tfrobseg.losses.get_loss`.
        train_data, val_data: ``(image, mask)`` datasets, already batched with the *global*
            batch size (:func:`tfrobseg.dataset.pipeline.make_dataset` mapped through ``to_xy``).
        config: hyper-parameters (default: the study's protocol).
        out_dir: where ``best.keras`` and ``history.csv`` go (nothing is written when ``None``).
        progress: show progress over epochs (:class:`EpochProgress`; ``desc`` / ``position``: its label and terminal row).

    Returns:
        :class:`TrainResult` whose ``model`` carries the best-validation-loss weights.

    Raises:
        TrainingDiverged: the training or validation loss became NaN / infinite (training stops at
            once; ``best.keras`` is not written, ``history.csv`` keeps the epochs before).
    """
    config = config or TrainConfig()
    set_seed(config.seed)
    set_precision(config.precision)
    strategy = get_strategy(config.strategy)
    with strategy.scope():
        model = build_fn()
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                      loss=_resolve_loss(loss), jit_compile=bool(config.xla))
    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = protocol_callbacks(config, monitor)
    early = callbacks[1]
    history_cb = HistoryCSV(Path(out_dir) / "history.csv") if out_dir is not None else None
    diverged = StopOnNonFinite()
    callbacks += [cb for cb in (history_cb, diverged) if cb is not None]
    if progress:
        callbacks.append(EpochProgress(config.max_epochs, desc=desc, position=position))

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # tf.data pipelines over TFRecords have unknown length: Keras learns it in the first epoch
        # and warns when the data "runs out" at the end of every epoch, which is expected here.
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        # shuffle=False: the tf.data pipeline already reshuffles every epoch (Keras cannot shuffle it).
        hist = model.fit(train_data, validation_data=val_data, epochs=config.max_epochs, callbacks=callbacks,
                         verbose=0, shuffle=False)
    seconds = time.perf_counter() - t0
    if diverged.reason is not None:
        # No best.keras: the restored "best" weights of a diverged run are not a result to attack.
        raise TrainingDiverged(diverged.reason)

    values = list(hist.history.get(monitor, []))
    return TrainResult(
        model=model,
        history=pd.DataFrame(history_cb.rows) if history_cb else pd.DataFrame(hist.history),
        best_epoch=int(early.best_epoch) + 1 if values else 0,
        best_val_loss=float(min(values)) if values else float("nan"),
        epochs_run=len(values),
        seconds=seconds,
        model_path=atomic_save_model(model, Path(out_dir) / "best.keras") if out_dir is not None else None,
        strategy=type(strategy).__name__,
        replicas=int(strategy.num_replicas_in_sync),
    )


def _resolve_loss(loss: keras.losses.Loss | Callable | str) -> keras.losses.Loss | Callable:
    if not isinstance(loss, str):
        return loss
    from tfrobseg.losses import get_loss

    return get_loss(loss)
