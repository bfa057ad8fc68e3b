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
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from tfrobseg.defenses.config import DefenseConfig
from tfrobseg.defenses.model import DefendedModel
from tfrobseg.errors import TrainingDiverged
from tfrobseg.io import atomic_save_model
from tfrobseg.losses.adaptive import AdaptiveTverskyCELoss, AdaptiveTverskyCEWeighting
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

__all__ = ["TrainResult", "clear_reusable_models", "get_strategy", "set_batch_norm_momentum", "set_output_prior",
           "set_precision", "set_seed", "train_model"]

# Compiled models kept between train_model calls of one process (``reuse_key``), most recent last:
# key -> (model, its initial weights, its optimizer's initial variables). Tracing the train, test and
# attack steps of a Recurrent U-Net costs ~25 s on one CPU core, more than a third of a built-in unit.
_REUSABLE: OrderedDict[Hashable, tuple[keras.Model, list[np.ndarray], list[np.ndarray]]] = OrderedDict()
_MAX_REUSABLE = 4


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
    #: Distillation: the teacher's own run (its model, history and ``best.keras``); ``None`` otherwise.
    teacher: TrainResult | None = None


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
    reuse_key: Hashable | None = None,
    defense: DefenseConfig | None = None,
    teacher: keras.Model | None = None,
    role: str = "model",
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
        reuse_key: when given, the compiled model is kept in this process and the next call with the same
            key (and the same seed, precision, XLA, learning rate, batch-norm momentum and output prior)
            trains that very model again, reset to the initial weights and optimizer state of its first
            build, instead of building and tracing a new one: same numbers (the same graph from the same
            state), without the tracing. The returned model is that kept one. The key must
            identify what ``build_fn`` builds and the loss (e.g. model name, input shape, filters, loss name).
            Only on one device (the default strategy); ignored otherwise.
        defense, teacher, role: train the built network under a defense
            (:meth:`tfrobseg.defenses.model.DefendedModel.wrap`, after the batch-norm momentum and output prior
            are set; ``seed`` from ``config``): ``role`` ``"model"``, or ``"teacher"`` / ``"student"`` with
            ``teacher`` for distillation (:func:`tfrobseg.defenses.train_defended` trains both). ``None``: the
            network as built, trained with the compiled loss.

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
    model = _compiled_model(build_fn, loss, config, strategy, reuse_key, (defense, role, teacher))
    monitor = "val_loss" if val_data is not None else "loss"
    callbacks = protocol_callbacks(config, monitor)
    early = callbacks[1]
    if isinstance(model.loss, AdaptiveTverskyCELoss):
        # Paper 003's epoch-wise weights; first, so that history.csv records each epoch's weights.
        callbacks.insert(0, AdaptiveTverskyCEWeighting())
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


def _compiled_model(build_fn: Callable[[], keras.Model], loss: keras.losses.Loss | Callable | str,
                    config: TrainConfig, strategy: tf.distribute.Strategy, reuse_key: Hashable | None,
                    defended: tuple[DefenseConfig | None, str, keras.Model | None]) -> keras.Model:
    """A compiled model in its initial state: built now, or the kept one of ``reuse_key`` reset."""
    defense, role, teacher = defended
    if defense is None and (role != "model" or teacher is not None):
        raise ValueError(f"train_model: role={role!r} / teacher are distillation's; pass defense= too")
    key = None
    if reuse_key is not None and strategy is tf.distribute.get_strategy():
        # Everything that shapes the built, compiled model or its initial state (callbacks are made per call).
        # A student's traced steps call its teacher: the kept one keeps it alive, so its id is not reused.
        key = (reuse_key, config.seed, config.precision, bool(config.xla), config.learning_rate,
               config.batch_norm_momentum, config.output_prior, defense, role, None if teacher is None else id(teacher))
    if key in _REUSABLE:
        _REUSABLE.move_to_end(key)
        model, weights, optimizer_state = _REUSABLE[key]
        model.set_weights(weights)
        for variable, value in zip(model.optimizer.variables, optimizer_state):
            variable.assign(value)
        if defense is not None:
            model.reset_random_state()
        return model
    with strategy.scope():
        model = build_fn()
        if config.batch_norm_momentum is not None:
            set_batch_norm_momentum(model, config.batch_norm_momentum)
        if config.output_prior is not None:
            # Distillation trains on sigmoid(logits / T): the prior holds at that temperature.
            distilled = defense is not None and role in ("teacher", "student")
            set_output_prior(model, config.output_prior, temperature=defense["temperature"] if distilled else 1.0)
        if defense is not None:
            model = DefendedModel.wrap(model, defense, role=role, teacher=teacher, seed=config.seed)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
                      loss=_resolve_loss(loss), jit_compile=bool(config.xla))
        # Built now (not at the first step), so that its initial state can be kept and restored.
        model.optimizer.build(model.trainable_variables)
    if key is not None:
        _REUSABLE[key] = (model, model.get_weights(), [v.numpy() for v in model.optimizer.variables])
        while len(_REUSABLE) > _MAX_REUSABLE:
            _REUSABLE.popitem(last=False)
    return model


def set_batch_norm_momentum(model: keras.Model, momentum: float) -> int:
    """Set the moving-statistics momentum of every batch-norm layer of ``model``, nested ones included
    (e.g. the per-step norms inside :class:`tfrobseg.models.layers.RecurrentConv2D`); returns how many.

    Only the inference statistics change: a batch-norm layer in training normalises with the batch's own.
    """
    # Keras 3 has no public recursive layer walk; _flatten_layers is what Model.summary uses.
    norms = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
             if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = float(momentum)
    return len(norms)


def set_output_prior(model: keras.Model, prior: float, *, temperature: float = 1.0) -> None:
    """Make a freshly built tfrobseg model predict ``prior`` everywhere: the bias of its sigmoid output
    layers (``logits*``, :func:`tfrobseg.models.blocks.output_head`) set to log(π / (1 − π)), or to
    T · log(π / (1 − π)) for a network trained on sigmoid(logits / T) (defensive distillation), so that it
    starts at π at the temperature it trains at.

    Why: a zero bias starts at probability 0.5 on every pixel, a ~20-fold over-segmentation of a gland
    that covers ~5 % of a slice; an overlap loss (Dice, Tversky) then first has to undo that, and on
    the built-in cohort it collapsed instead (measured: Recurrent U-Net, 48 px, batch-norm momentum 0.9,
    per-sample Dice loss: held-out Dice 0.46 after 3 epochs and 0.19 after 9 with a zero bias; 0.57 and
    0.71 with π = 0.05).
    Raises ValueError for a model without such a layer, or with a multi-class (softmax) head.
    """
    convolutions = (keras.layers.Conv2D, keras.layers.Conv3D)  # the head of a 2D or a 3D network
    heads = [layer for layer in model.layers if isinstance(layer, convolutions) and layer.name.startswith("logits")]
    if not heads or any(layer.filters != 1 for layer in heads):
        raise ValueError(f"{model.name}: output_prior needs a tfrobseg model with one sigmoid output (a 'logits' "
                         "1x1 convolution with one filter)")
    for layer in heads:
        layer.bias.assign(np.full(layer.bias.shape, temperature * np.log(prior / (1.0 - prior)), dtype=layer.bias.dtype))


def clear_reusable_models() -> None:
    """Forget the compiled models kept for ``reuse_key`` (the next call builds and traces again)."""
    _REUSABLE.clear()


def _resolve_loss(loss: keras.losses.Loss | Callable | str) -> keras.losses.Loss | Callable:
    if not isinstance(loss, str):
        return loss
    from tfrobseg.losses import get_loss

    return get_loss(loss)
