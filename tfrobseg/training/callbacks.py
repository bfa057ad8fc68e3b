"""Callbacks of the training protocol: learning-rate plateau and early stopping, history, progress,
and the stop on a non-finite loss.

``history.csv`` is rewritten atomically after every epoch, so an interrupted training still leaves
its curve behind.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from tfrobseg.console import Progress, progress
from tfrobseg.io import atomic_write_csv
from tfrobseg.training.config import TrainConfig

__all__ = ["EpochProgress", "HistoryCSV", "StopOnNonFinite", "protocol_callbacks"]


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


class StopOnNonFinite(keras.callbacks.Callback):
    """Stop training at the first NaN / infinite training loss (checked every batch), validation loss
    or weight (both checked every epoch).

    Like :class:`keras.callbacks.TerminateOnNaN`, but it keeps a one-line ``reason`` (what, epoch,
    batch, learning rate) for the caller to report instead of printing:
    :func:`tfrobseg.training.train_model` raises :class:`tfrobseg.errors.TrainingDiverged` with it.
    The weights are checked too because the loss alone can hide a broken network: ReLU maps NaN to 0
    on a CPU, so with a learning rate of 1e6 every network of the tiny test settings had non-finite
    batch-norm statistics after one epoch while its loss stayed finite (≈ 1e10). Without this stop,
    early stopping would restore the last "best" weights and the run would look normal.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch + 1

    def _stop(self, what: str, where: str = "") -> None:
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        # One searchable prefix whatever became non-finite (the loss, or a weight while the loss looked fine).
        self.reason = f"NaN/inf in training: {what} at epoch {self._epoch}{where} (learning rate {lr:g})"
        self.model.stop_training = True

    @staticmethod
    def _non_finite(values) -> str:
        """How a non-finite value (or array holding one) is not finite: ``NaN`` wins over ``infinite``."""
        return "NaN" if np.isnan(values).any() else "infinite"

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if self.reason is None and loss is not None and not math.isfinite(float(loss)):
            self._stop(f"the training loss became {self._non_finite(float(loss))}", f", batch {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name in ("loss", "val_loss"):
            value = (logs or {}).get(name)
            if self.reason is None and value is not None and not math.isfinite(float(value)):
                label = "the validation loss" if name == "val_loss" else "the training loss"
                self._stop(f"{label} became {self._non_finite(float(value))}")
        if self.reason is None:
            self._check_weights()

    def _check_weights(self) -> None:
        for variable in self.model.weights:
            values = np.asarray(keras.ops.convert_to_numpy(variable))
            if not np.isfinite(values).all():
                self._stop(f"the weights became {self._non_finite(values)} ({variable.path})")
                return


class EpochProgress(keras.callbacks.Callback):
    """Progress over epochs with the latest loss / val_loss / learning rate
    (:func:`tfrobseg.console.progress`: a bar on a terminal, one line per epoch in a log)."""

    def __init__(self, max_epochs: int, desc: str = "train", position: int = 0) -> None:
        super().__init__()
        self.max_epochs = max_epochs
        self.desc = desc
        self.position = position
        self.bar: Progress | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.bar = progress(self.max_epochs, self.desc, unit="epoch", position=self.position, each_step=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        values = [f"{k} {float(logs[k]):.4f}" for k in ("loss", "val_loss") if k in logs]
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.bar.update(1, " ".join([*values, f"lr {lr:.0e}"]))

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
