"""Training under the study's protocol: hyper-parameters, callbacks, the fit loop.

* :mod:`~tfrobseg.training.config`: :class:`TrainConfig` (the study's protocol as defaults).
* :mod:`~tfrobseg.training.callbacks`: plateau / early stopping, ``history.csv``, progress bar.
* :mod:`~tfrobseg.training.fit`: seeds, precision, distribution strategy and :func:`train_model`.

The configuration is plain Python; the Keras parts load on first use (PEP 562 ``__getattr__``),
so that reading a unit's record or resolving options does not start TensorFlow.
"""

from __future__ import annotations

import importlib
from typing import Any

from tfrobseg.training.config import (
    PRECISIONS,
    STRATEGIES,
    TrainConfig,
    default_precision,
    resolve_strategy,
)

_LAZY = {
    "HistoryCSV": "callbacks", "StopOnNonFinite": "callbacks", "EpochProgress": "callbacks", "protocol_callbacks": "callbacks",
    "TrainResult": "fit", "get_strategy": "fit", "set_precision": "fit", "set_seed": "fit", "train_model": "fit",
    "clear_reusable_models": "fit", "set_batch_norm_momentum": "fit", "set_output_prior": "fit",
}

__all__ = [  # noqa: RUF022 (the eager names, then the lazy ones in _LAZY's order)
    "PRECISIONS", "STRATEGIES", "TrainConfig", "default_precision", "resolve_strategy",
    "HistoryCSV", "StopOnNonFinite", "EpochProgress", "protocol_callbacks",
    "TrainResult", "get_strategy", "set_precision", "set_seed", "train_model", "clear_reusable_models",
    "set_batch_norm_momentum", "set_output_prior",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfrobseg.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfrobseg.training' has no attribute {name!r}")
