"""Attack parameters, validated by name once and before any work (cf. ART's ``_check_params``).

Every attack checks all of its arguments before it touches the model, and
:func:`tfrobseg.attacks.attack_dataset` checks the whole call before it reads the dataset, so a bad
``steps`` or ``relative_to`` fails at once with a ValueError naming the argument instead of after
a gradient has been computed. The options that every gradient attack shares travel as one
validated :class:`AttackOptions`; :data:`PARAM_CHECKS` holds the rule of every parameter name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import (
    check_budget,
    check_clip,
    check_epsilon,
    check_epsilons,
    check_relative_to,
)
from tfrobseg.attacks.gradient import (
    DEFAULT_LOSS_SCALE,
    LossLike,
    check_loss,
    check_loss_scale,
    gradient_sign,
)
from tfrobseg.attacks.precision import ATTACK_PRECISIONS
from tfrobseg.attacks.targets import check_target


def check_count(name: str, value: int) -> int:
    """Validate a count such as ``steps`` or ``restarts``: a positive int."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_steps(steps: int) -> int:
    """Validate the number of iterations (a positive int)."""
    return check_count("steps", steps)


def check_alpha(alpha: float | None) -> float | None:
    """Validate a step size: ``None`` (the attack's default) or a finite number ≥ 0."""
    return None if alpha is None else check_epsilon(alpha, "alpha")


def check_seed(seed: int | tuple[int, int]) -> tuple[int, int]:
    """A stateless-RNG seed pair from an int ``s`` (meaning ``(s, 0)``) or a pair of ints."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed, 0
    try:
        pair = tuple(int(s) for s in seed)
    except (TypeError, ValueError):
        raise ValueError(f"seed must be an int or a pair of ints, got {seed!r}") from None
    if len(pair) != 2:
        raise ValueError(f"seed must be an int or a pair of ints, got {seed!r}")
    return pair


def check_step_factor(step_factor: float | None) -> float | None:
    """Validate the step rule α = step_factor · ε / steps: ``None`` (the attack's default) or a number > 0."""
    if step_factor is None:
        return None
    value = check_epsilon(step_factor, "step_factor")
    if value == 0:
        raise ValueError("step_factor must be > 0 (the step rule α = step_factor · ε / steps), got 0")
    return value


def check_momentum(momentum: float) -> float:
    """Validate MI-FGSM's decay μ: a number in [0, 1] (0: no momentum)."""
    value = check_epsilon(momentum, "momentum")
    if value > 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    return value


def check_flag(name: str, value: bool) -> bool:
    """Validate a switch (a Python or NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {value!r}")  # noqa: TRY004 - bad input is a ValueError
    return bool(value)


def check_forward_batch(forward_batch: int | None) -> int | None:
    """Validate the bound on images per forward call: ``None`` (no bound) or a positive int."""
    if forward_batch is not None and (
        isinstance(forward_batch, bool) or not isinstance(forward_batch, int) or forward_batch < 1
    ):
        raise ValueError(f"forward_batch must be a positive int or None, got {forward_batch!r}")
    return forward_batch


def check_attack_precision(attack_precision: str) -> str:
    """Validate the precision an attack runs in: one of :data:`~tfrobseg.attacks.precision.ATTACK_PRECISIONS`."""
    if not isinstance(attack_precision, str) or attack_precision not in ATTACK_PRECISIONS:
        raise ValueError(f"attack_precision must be one of {ATTACK_PRECISIONS}, got {attack_precision!r}")
    return attack_precision


def check_match(match: str) -> str:
    """Validate the attack a noise control is matched to in size: an attack of
    :data:`~tfrobseg.attacks.runner.ATTACKS` that is not itself a noise control."""
    # Imported here: the runner imports this module.
    from tfrobseg.attacks.runner import matchable_attacks

    valid = matchable_attacks()
    if match not in valid:
        raise ValueError(f"match must be one of {valid}, got {match!r}")
    return match


#: The rule of every attack parameter, by name; each returns the normalised value or raises ValueError.
PARAM_CHECKS: dict[str, Callable[[Any], Any]] = {
    "eps": check_budget,
    "epsilons": check_epsilons,
    "alpha": check_alpha,
    "steps": check_steps,
    "step_factor": check_step_factor,
    "restarts": partial(check_count, "restarts"),
    "best_iterate": partial(check_flag, "best_iterate"),
    "momentum": check_momentum,
    "clip": check_clip,
    "relative_to": check_relative_to,
    "loss": check_loss,
    "loss_scale": check_loss_scale,
    "jit_compile": partial(check_flag, "jit_compile"),
    "random_start": partial(check_flag, "random_start"),
    "seed": check_seed,
    "forward_batch": check_forward_batch,
    "target": check_target,
    "attack_precision": check_attack_precision,
    "match": check_match,
}


def check_combination(alpha: float | None = None, step_factor: float | None = None, restarts: int = 1,
                      random_start: bool = True) -> None:
    """The PGD-family options that exclude each other: a step given both as ``alpha`` and as ``step_factor``,
    and ``restarts`` > 1 without a random start (every restart would be the same run)."""
    if alpha is not None and step_factor is not None:
        raise ValueError(f"give alpha (the step) or step_factor (α = step_factor · ε / steps), not both: "
                         f"alpha={alpha!r}, step_factor={step_factor!r}")
    if restarts > 1 and not random_start:
        raise ValueError(f"restarts={restarts} needs random_start=True: without a random start every restart is the same")


def check_params(**params: Any) -> dict[str, Any]:
    """Validate attack parameters by name, then :func:`check_combination`; returns the normalised values.

    Raises:
        ValueError: a name without a rule in :data:`PARAM_CHECKS`, an invalid value or an invalid combination.
    """
    unknown = sorted(set(params) - set(PARAM_CHECKS))
    if unknown:
        raise ValueError(f"unknown attack argument(s) {', '.join(unknown)}; valid: {', '.join(PARAM_CHECKS)}")
    checked = {name: PARAM_CHECKS[name](value) for name, value in params.items()}
    check_combination(**{k: v for k, v in checked.items() if k in ("alpha", "step_factor", "restarts", "random_start")})
    return checked


@dataclass(frozen=True)
class AttackOptions:
    """The options every gradient attack takes, validated on construction.

    :func:`~tfrobseg.attacks.fgsm`, :func:`~tfrobseg.attacks.fgsm_sweep`,
    :func:`~tfrobseg.attacks.ifgsm`, :func:`~tfrobseg.attacks.targeted_ifgsm` and
    :func:`~tfrobseg.attacks.pgd` accept these as keyword arguments (``**options``);
    :func:`~tfrobseg.attacks.segpgd`, :func:`~tfrobseg.attacks.cospgd` and
    :func:`~tfrobseg.attacks.targeted_cospgd` all but ``loss`` (their objective is fixed).

    Attributes:
        loss: attack loss name (:func:`tfrobseg.losses.get_loss`) or callable ``(y_true, y_pred)``;
            it need not be the training loss.
        clip: valid input range ``(lo, hi)`` of the adversarial image; ``None`` leaves it unbounded.
        relative_to: ``None`` (ε in input units), ``"range"`` or ``"max"``; see :mod:`.budget`.
        loss_scale: loss multiplier protecting float16 gradients; the sign is unaffected.
        jit_compile: XLA-compile the gradient.
    """

    loss: LossLike = "bce"
    clip: tuple[float, float] | None = None
    relative_to: str | None = None
    loss_scale: float = DEFAULT_LOSS_SCALE
    jit_compile: bool = True

    def __post_init__(self) -> None:
        for field in fields(self):
            object.__setattr__(self, field.name, PARAM_CHECKS[field.name](getattr(self, field.name)))

    @classmethod
    def of(cls, **options: Any) -> AttackOptions:
        """The validated options from keyword arguments; an unknown name is a ValueError listing the valid ones."""
        valid = [field.name for field in fields(cls)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"unknown attack option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return cls(**options)

    def gradient_sign(self, model: keras.Model, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """:func:`~tfrobseg.attacks.gradient_sign` with these options' loss, loss scale and compilation."""
        return gradient_sign(model, x, y, loss=self.loss, loss_scale=self.loss_scale, jit_compile=self.jit_compile)


def keyword_options(attack: Callable[..., Any]) -> frozenset[str]:
    """The keyword arguments an attack function takes: its keyword-only parameters, and the
    :class:`AttackOptions` fields when it forwards ``**options``."""
    parameters = inspect.signature(attack).parameters.values()
    names = {p.name for p in parameters if p.kind is p.KEYWORD_ONLY}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        names |= {field.name for field in fields(AttackOptions)}
    return frozenset(names)
