"""Defenses trained like the baseline: adversarial training (Liu et al.'s FGSM, fast FGSM, PGD), TRADES,
defensive distillation and noise augmentation, as a Keras model whose ``train_step`` is the defense's
objective (docs/defenses.md).

* :mod:`~tfrobseg.defenses.config`: the registry of defenses and options, :class:`DefenseConfig` (no TensorFlow);
* :mod:`~tfrobseg.defenses.objectives`: the adversarial / noisy examples and the losses used inside training;
* :mod:`~tfrobseg.defenses.model`: :class:`DefendedModel` (``model.fit``, XLA, mixed precision, ``.keras``);
* :mod:`~tfrobseg.defenses.train`: :func:`train_defended` (distillation's teacher, then its student);
* :mod:`~tfrobseg.defenses.views`: the distilled student at its training temperature (gradient-masking check).

The configuration is plain Python; the Keras parts load on first use (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib
from typing import Any

from tfrobseg.defenses.config import (
    BASELINE,
    DEFENSE_NAMES,
    DEFENSES,
    DefenseConfig,
    DefenseSpec,
    parse_defense_options,
    resolve_defense,
)

_LAZY = {"DefendedModel": "model", "train_defended": "train", "temperature_view": "views",
         "masking_views": "views"}

__all__ = ["BASELINE", "DEFENSES", "DEFENSE_NAMES", "DefenseConfig", "DefenseSpec", "parse_defense_options",  # noqa: RUF022
           "resolve_defense", "DefendedModel", "train_defended", "temperature_view", "masking_views"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfrobseg.defenses.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfrobseg.defenses' has no attribute {name!r}")
