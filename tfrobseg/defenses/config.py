"""The defenses' names, options and defaults, and the one typed record of a chosen defense.

Plain Python (no TensorFlow): the command line checks ``--defense`` / ``--defense-option`` before any work
starts, and a unit's record (:class:`~tfrobseg.experiment.settings.Settings`) carries the chosen
:class:`DefenseConfig`. The training itself lives in :mod:`tfrobseg.defenses.model`.

Units: ``epsilon``, ``radius`` and ``sigma`` are in model-input units, as the attacks' ε are (z-scores on
the study's data). ``step_factor`` sets the step of the iterative attacks inside training, α = factor · ε /
steps (Madry et al.'s 2.5: the steps can walk the whole ball and back), and of the fast FGSM, α = factor · ε
(Wong et al.'s 1.25). docs/defenses.md gives each objective, its cost per step and its source.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["BASELINE", "DEFENSES", "DEFENSE_NAMES", "DefenseConfig", "DefenseSpec", "Range", "parse_defense_options",
           "resolve_defense"]

#: The label of the undefended network in ``experiments/defenses.py``'s tables and folders.
BASELINE = "baseline"


@dataclass(frozen=True)
class DefenseSpec:
    """One defense of the registry: its option defaults (their Python types are the options' types), the
    allowed range of each option, and where it comes from."""

    name: str
    defaults: Mapping[str, float | int]
    source: str
    summary: str
    bounds: Mapping[str, Range] = field(default_factory=dict)


class Range(NamedTuple):
    """The allowed values of an option: ``low <= v <= high`` (``low < v`` when ``open_low``; no ``high``: none)."""

    low: float
    high: float | None = None
    open_low: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        return above and (self.high is None or value <= self.high)

    def __str__(self) -> str:
        if self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        return f"{'>' if self.open_low else '>='} {self.low:g}"


_MIX = Range(0.0, 1.0)
_POSITIVE = Range(0.0, open_low=True)
_COUNT = Range(1)

DEFENSES: dict[str, DefenseSpec] = {spec.name: spec for spec in (
    DefenseSpec("adversarial", {"epsilon": 0.5, "beta": 0.5},
                "Liu et al. (paper 002), after Goodfellow et al. 2015",
                "beta * L(x, y) + (1 - beta) * L(x + epsilon * sign(grad_x L), y), FGSM on the current weights",
                {"epsilon": _POSITIVE, "beta": _MIX}),
    DefenseSpec("fast_adversarial", {"epsilon": 0.5, "beta": 0.5, "step_factor": 1.25},
                "Wong et al. 2020, 'Fast is better than free'",
                "FGSM from a uniform random start in the epsilon-ball, step step_factor * epsilon, projected; "
                "mixed with the clean loss by beta",
                {"epsilon": _POSITIVE, "beta": _MIX, "step_factor": _POSITIVE}),
    DefenseSpec("pgd_adversarial", {"epsilon": 0.5, "beta": 0.5, "steps": 7, "step_factor": 2.5},
                "Madry et al. 2018",
                "PGD (uniform random start, steps sign steps of step_factor * epsilon / steps, projected); mixed "
                "with the clean loss by beta",
                {"epsilon": _POSITIVE, "beta": _MIX, "steps": _COUNT, "step_factor": _POSITIVE}),
    DefenseSpec("trades", {"epsilon": 0.5, "beta": 6.0, "steps": 10, "step_factor": 2.5},
                "Zhang et al. 2019 (TRADES)",
                "L(x, y) + beta * mean over pixels of KL(f(x) || f(x')), x' maximising that KL by PGD from "
                "x + 0.001 N(0, 1)",
                {"epsilon": _POSITIVE, "beta": Range(0.0), "steps": _COUNT, "step_factor": _POSITIVE}),
    DefenseSpec("distillation", {"temperature": 100.0},
                "Liu et al. (paper 002), after Papernot et al. 2016",
                "teacher trained on sigmoid(logits / T); student trained at T on 1 - soft Dice against the "
                "teacher's softened outputs; deployed at T = 1",
                {"temperature": Range(1.0)}),
    DefenseSpec("uniform_noise", {"radius": 0.01},
                "Liu et al. (paper 002)",
                "per batch one step on x + U(-radius, radius), then one step on x",
                {"radius": _POSITIVE}),
    DefenseSpec("gaussian_noise", {"sigma": 0.01},
                "Liu et al. (paper 002), refs. 24 and 26",
                "per batch one step on x + N(0, sigma^2), then one step on x",
                {"sigma": _POSITIVE}),
)}
DEFENSE_NAMES: tuple[str, ...] = tuple(DEFENSES)


@dataclass(frozen=True)
class DefenseConfig:
    """A chosen defense with every option set (the defaults filled in): what a unit's record keeps and what
    :class:`~tfrobseg.defenses.model.DefendedModel` trains with. Build it with :func:`resolve_defense`."""

    name: str
    options: tuple[tuple[str, float | int], ...]  # sorted (option, value) pairs

    def __getitem__(self, key: str) -> float | int:
        return dict(self.options)[key]

    @property
    def spec(self) -> DefenseSpec:
        return DEFENSES[self.name]

    @property
    def changed(self) -> dict[str, float | int]:
        """The options that differ from the defense's defaults."""
        defaults = self.spec.defaults
        return {k: v for k, v in self.options if v != defaults[k]}

    @property
    def label(self) -> str:
        """``name``, or ``name(option=value, ...)`` naming the options that differ from the defaults."""
        changed = self.changed
        return self.name if not changed else f"{self.name}({', '.join(f'{k}={v:g}' for k, v in changed.items())})"

    @property
    def slug(self) -> str:
        """A folder name: ``name``, or ``name-option<value>-...`` for the options that differ from the defaults."""
        return "-".join([self.name, *(f"{k}{v:g}" for k, v in self.changed.items())])

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DefenseConfig:
        return resolve_defense(d["name"], d.get("options", {}))


def _typed(name: str, key: str, value: Any, default: float) -> float | int:
    """``value`` as the option's type (that of its default), range-checked; ValueError naming the option."""
    allowed = DEFENSES[name].bounds.get(key)
    try:
        if isinstance(default, int):
            number: float = int(value) if float(value) == int(float(value)) else math.nan
        else:
            number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if math.isnan(number) or (allowed is not None and not allowed.holds(number)):
        kind = "an integer" if isinstance(default, int) else "a number"
        raise ValueError(f"--defense-option {key}={value}: {name}'s {key} must be {kind}"
                         f"{' ' + str(allowed) if allowed else ''}")
    return number


def resolve_defense(name: str, options: Mapping[str, Any] | None = None) -> DefenseConfig:
    """The :class:`DefenseConfig` of ``name`` with ``options`` over its defaults; ValueError (one line) for an
    unknown defense, an option it does not take or a value out of range."""
    if name not in DEFENSES:
        raise ValueError(f"--defense: unknown defense {name!r}; choose from {', '.join(DEFENSE_NAMES)}")
    defaults = DEFENSES[name].defaults
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"--defense-option {', '.join(unknown)}: not an option of {name} "
                         f"(its options: {', '.join(defaults) or 'none'})")
    values = {key: _typed(name, key, options.get(key, default), default) for key, default in defaults.items()}
    return DefenseConfig(name, tuple(sorted(values.items())))


def parse_key_values(items: Iterable[str] | None, flag: str) -> dict[str, float]:
    """``["epsilon=0.25", "beta=1"]`` (the values of the command-line option ``flag``) as
    ``{"epsilon": 0.25, "beta": 1.0}``. ValueError naming ``flag`` for an item without ``=``, a non-number or an
    option given twice."""
    parsed: dict[str, float] = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected key=value, e.g. alpha=0.7")
        if key in parsed:
            raise ValueError(f"{flag} {key} given twice")
        try:
            parsed[key] = float(value)
        except ValueError:
            raise ValueError(f"{flag} {item!r}: {value!r} is not a number") from None
    return parsed


def parse_defense_options(items: Iterable[str] | None) -> dict[str, float]:
    """The ``--defense-option`` values as numbers by option name (:func:`parse_key_values`); their types and
    ranges are checked by :func:`resolve_defense`."""
    return parse_key_values(items, "--defense-option")

