"""Training under the study's protocol (Apostolidis et al., Section II-H).

The study trains every model with Adam (initial learning rate 1e-4), batch size 4, for at most
150 epochs; the learning rate is reduced when the validation loss has not improved for 2
consecutive epochs, down to 1e-6, and early stopping guards against overfitting. The study does
not state the reduction factor or the early-stopping patience; our defaults are:

* ``plateau_factor = 0.5``: halving takes 7 reductions to go from 1e-4 to the 1e-6 floor, which
  matches the paper's wording that the reduction "was continued" until the minimum was reached
  (Keras' default factor 0.1 would hit the floor after only two reductions).
* ``early_stopping_patience = 10`` epochs on the validation loss, best weights restored: long
  enough for several learning-rate reductions (every 2 stale epochs) to take effect before
  training gives up, short next to the 150-epoch cap.

Outputs of :func:`train_model` in ``out_dir``: ``best.keras`` (the restored best-validation-loss
model, written atomically) and ``history.csv`` (one row per epoch: loss, val_loss, learning rate,
seconds; rewritten atomically after each epoch so that it survives an interruption).

Precision (``float32`` / ``mixed_float16`` / ``mixed_bfloat16``), XLA (``jit_compile``) and the
distribution strategy (one device, ``MirroredStrategy`` over several GPUs or logical CPU devices,
``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``) are options; seeds are set with
:func:`keras.utils.set_random_seed` and returned in the result for the run's ``config.json``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import pandas as pd
import tensorflow as tf

from tfrobseg.runs import atomic_save_model, atomic_write_csv

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def default_precision(has_gpu: bool | None = None) -> str:
    """``mixed_float16`` with a GPU (tensor cores), ``float32`` otherwise (``None``: look for one)."""
    if has_gpu is None:
        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if has_gpu else "float32"


@dataclass
class TrainConfig:
    """Training hyper-parameters; the defaults are the study's protocol (Section II-H).

    ``batch_size`` is the global batch (split across replicas under a distribution strategy), so
    that the optimisation matches the study's batch of 4 whatever the hardware.
    """

    learning_rate: float = 1e-4
    batch_size: int = 4
    max_epochs: int = 150
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    min_learning_rate: float = 1e-6
    early_stopping_patience: int = 10
    precision: str | None = None
    xla: bool = True
    strategy: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.min_learning_rate < 0 or self.min_learning_rate > self.learning_rate:
            raise ValueError("min_learning_rate must be in [0, learning_rate]")
        if self.plateau_patience < 0 or self.early_stopping_patience < 0:
            raise ValueError("patience values must be >= 0")
        if self.precision is None:
            self.precision = default_precision()
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


# --------------------------------------------------------------------------- setup helpers
def set_seed(seed: int) -> int:
    """Seed Python, NumPy and TensorFlow through Keras; returns the seed for the record."""
    keras.utils.set_random_seed(int(seed))
    return int(seed)


def set_precision(precision: str) -> None:
    """Set the global Keras dtype policy (must happen before the model is built)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    keras.mixed_precision.set_global_policy(precision)


def _tf_config_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Pick the distribution strategy.

    ``auto``: ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names more than one worker,
    ``MirroredStrategy`` when more than one GPU is visible, else the default (one device).
    ``mirrored``: ``MirroredStrategy`` over all GPUs, or over all logical CPU devices when there
    is no GPU (how the tests exercise the multi-replica path on a CPU machine).
    ``multiworker``: ``MultiWorkerMirroredStrategy`` (cluster from ``TF_CONFIG``).
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "multiworker" or (name == "auto" and _tf_config_workers() > 1):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "auto" and len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


# --------------------------------------------------------------------------- callbacks
class HistoryCSV(keras.callbacks.Callback):
    """Rewrite ``history.csv`` atomically after every epoch (loss, val_loss, lr, seconds)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self._t0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch + 1}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row["seconds"] = time.perf_counter() - self._t0
        self.rows.append(row)
        atomic_write_csv(self.path, pd.DataFrame(self.rows))


class TqdmProgress(keras.callbacks.Callback):
    """A tqdm bar over epochs with the latest loss / val_loss / learning rate as postfix."""

    def __init__(self, max_epochs: int, desc: str = "train", position: int = 0) -> None:
        super().__init__()
        self.max_epochs = max_epochs
        self.desc = desc
        self.position = position
        self.bar = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=self.max_epochs, desc=self.desc, unit="epoch", leave=False, dynamic_ncols=True, position=self.position
        )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        self.bar.set_postfix({k: f"{float(v):.4f}" for k, v in logs.items() if k in ("loss", "val_loss")})
        self.bar.update(1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()


def protocol_callbacks(config: TrainConfig, monitor: str = "val_loss") -> list[keras.callbacks.Callback]:
    """[ReduceLROnPlateau, EarlyStopping] of the protocol: reduce by ``plateau_factor`` after
    ``plateau_patience`` stale epochs down to ``min_learning_rate``; stop after
    ``early_stopping_patience`` stale epochs and restore the best weights."""
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor,
            factor=config.plateau_factor,
            patience=config.plateau_patience,
            min_lr=config.min_learning_rate,
        ),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=config.early_stopping_patience, restore_best_weights=True),
    ]


# --------------------------------------------------------------------------- training
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
            batch size (``tfrobseg.data.make_dataset`` mapped through ``to_xy``).
        config: hyper-parameters (default: the study's protocol).
        out_dir: where ``best.keras`` and ``history.csv`` go (nothing is written when ``None``).
        progress: show a tqdm bar over epochs (``desc`` / ``position``: its label and terminal row).

    Returns:
        :class:`TrainResult` whose ``model`` carries the best-validation-loss weights.
    """
    config = config or TrainConfig()
    set_seed(config.seed)
    set_precision(config.precision)
    if isinstance(loss, str):
        from tfrobseg.losses import get_loss

        loss = get_loss(loss)
    strategy = get_strategy(config.strategy)
    with strategy.scope():
        model = build_fn()
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
            loss=loss,
            jit_compile=bool(config.xla),
        )
    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = protocol_callbacks(config, monitor)
    early = callbacks[1]
    history_cb = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        history_cb = HistoryCSV(out_dir / "history.csv")
        callbacks.append(history_cb)
    if progress:
        callbacks.append(TqdmProgress(config.max_epochs, desc=desc, position=position))

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        # tf.data pipelines over TFRecords have unknown length: Keras learns it in the first epoch
        # and warns when the data "runs out" at the end of every epoch, which is expected here.
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        # shuffle=False: the tf.data pipeline already reshuffles every epoch (Keras cannot shuffle it).
        hist = model.fit(
            train_data, validation_data=val_data, epochs=config.max_epochs, callbacks=callbacks, verbose=0,
            shuffle=False,
        )
    seconds = time.perf_counter() - t0

    history = pd.DataFrame(history_cb.rows) if history_cb else pd.DataFrame(hist.history)
    values = list(hist.history.get(monitor, []))
    best_epoch = int(early.best_epoch) + 1 if values else 0
    best_val = float(min(values)) if values else float("nan")
    model_path = atomic_save_model(model, out_dir / "best.keras") if out_dir is not None else None
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_val_loss=best_val,
        epochs_run=len(values),
        seconds=seconds,
        model_path=model_path,
        strategy=type(strategy).__name__,
        replicas=int(strategy.num_replicas_in_sync),
    )
