"""Training under the study's protocol: hyper-parameters, callbacks, the fit loop.

* :mod:`~tfrobseg.training.config`: :class:`TrainConfig` (the study's protocol as defaults).
* :mod:`~tfrobseg.training.callbacks`: plateau / early stopping, ``history.csv``, progress bar.
* :mod:`~tfrobseg.training.fit`: seeds, precision, distribution strategy and :func:`train_model`.
"""

from tfrobseg.training.callbacks import HistoryCSV, TqdmProgress, protocol_callbacks
from tfrobseg.training.config import (
    PRECISIONS,
    STRATEGIES,
    TrainConfig,
    default_precision,
)
from tfrobseg.training.fit import (
    TrainResult,
    get_strategy,
    set_precision,
    set_seed,
    train_model,
)

__all__ = [
    "PRECISIONS", "STRATEGIES", "HistoryCSV", "TqdmProgress", "TrainConfig", "TrainResult", "default_precision",
    "get_strategy", "protocol_callbacks", "set_precision", "set_seed", "train_model",
]
