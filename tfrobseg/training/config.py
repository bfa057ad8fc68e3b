"""Training hyper-parameters: the study's protocol (Apostolidis et al., Section II-H).

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

The values themselves live in :mod:`tfrobseg.study`. Plain Python: a :class:`TrainConfig` can be
read and fingerprinted without TensorFlow (it is imported only to look for a GPU).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any

from tfrobseg import study

__all__ = ["PRECISIONS", "STRATEGIES", "TrainConfig", "default_precision", "resolve_strategy", "tf_config_workers"]

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def default_precision(has_gpu: bool | None = None) -> str:
    """``mixed_float16`` with a GPU (tensor cores), ``float32`` otherwise (``None``: look for one)."""
    if has_gpu is None:
        import tensorflow as tf

        has_gpu = bool(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if has_gpu else "float32"


def tf_config_workers() -> int:
    """Number of workers (chief included) that ``$TF_CONFIG`` names; 0 without it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from None
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def resolve_strategy(name: str, gpus: int, workers: int = 0) -> tuple[str, int]:
    """``(strategy, replicas)`` that :func:`tfrobseg.training.get_strategy` will use, without starting TensorFlow.

    ``auto`` becomes ``multiworker`` when ``TF_CONFIG`` names more than one worker (``workers``),
    ``mirrored`` with more than one GPU, else ``default``. Replicas: one per GPU (or one CPU) on each
    worker. Batch-norm statistics and the per-replica batch depend on the replica count, so it belongs
    to the settings that must agree for results to be pooled.
    """
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "auto":
        name = "multiworker" if workers > 1 else "mirrored" if gpus > 1 else "default"
    if name == "multiworker":
        return name, max(workers, 1) * max(gpus, 1)
    return name, max(gpus, 1) if name == "mirrored" else 1


@dataclass
class TrainConfig:
    """Training hyper-parameters; the defaults are the study's protocol (Section II-H).

    ``batch_size`` is the global batch (split across replicas under a distribution strategy), so
    that the optimisation matches the study's batch of 4 whatever the hardware.
    ``batch_norm_momentum``: the momentum of every batch-norm layer's moving mean and variance (the
    statistics used at inference); ``None`` keeps the layers' own (Keras: 0.99, the study's setting).
    ``output_prior``: start the network predicting this foreground probability everywhere (the output
    layer's bias set to log(π / (1 − π)), Lin et al. 2017's prior initialisation); ``None`` keeps the
    zero bias (probability 0.5, Keras' default and the study's setting).
    """

    learning_rate: float = study.LEARNING_RATE
    batch_size: int = study.BATCH_SIZE
    max_epochs: int = study.MAX_EPOCHS
    plateau_patience: int = study.PLATEAU_PATIENCE
    plateau_factor: float = study.PLATEAU_FACTOR
    min_learning_rate: float = study.MIN_LEARNING_RATE
    early_stopping_patience: int = study.EARLY_STOPPING_PATIENCE
    batch_norm_momentum: float | None = None
    output_prior: float | None = None
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
        if self.batch_norm_momentum is not None and not 0 <= self.batch_norm_momentum < 1:
            raise ValueError(f"batch_norm_momentum must be in [0, 1), got {self.batch_norm_momentum}")
        if self.output_prior is not None and not 0 < self.output_prior < 1:
            raise ValueError(f"output_prior must be in (0, 1), got {self.output_prior}")
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**d)
