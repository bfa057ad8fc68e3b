"""Which attacks a run or ``experiments/attack.py`` evaluates: :class:`AttackSpec`, one typed specification.

A spec is an attack name of :data:`tfrobseg.attacks.runner.ATTACKS` (or ``"ensemble"``) with the options
chosen for it, validated before any work: only options the attack takes
(``ATTACKS[name].options``), each checked by :func:`tfrobseg.attacks.params.check_params`. The options
not given keep the attack's own defaults and are not written down, so that a spec made before an option
existed still means the same attack. ``attack_params`` is their canonical JSON (sorted keys; ``{}``
for the study's FGSM), the column of the tidy rows that, with ``attack``, says what made a row;
:meth:`AttackSpec.key` names its files in ``<unit>/attacks/``.

The ensemble's spec carries its member specs; its rows are the worst case over theirs
(:func:`tfrobseg.attacks.ensemble.worst_case`).

The command lines set the same options on every chosen attack that takes them (:func:`resolve_attacks`):
``--steps`` goes to PGD and i-FGSM but not to FGSM. An option that none of the chosen attacks takes
is an error, never silently ignored. This module imports TensorFlow only to validate.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tfrobseg.attack_names import DEFAULT_MEMBERS, ENSEMBLE, members_params

__all__ = ["ENSEMBLE", "OPTION_FLAGS", "AttackSpec", "add_attack_options", "evaluation_order", "given_options",
           "resolve_attacks"]

#: The attack options the command lines set, with their flags.
OPTION_FLAGS: dict[str, str] = {
    "steps": "--steps",
    "alpha": "--alpha",
    "step_factor": "--step-factor",
    "restarts": "--restarts",
    "momentum": "--momentum",
    "best_iterate": "--best-iterate",
    "random_start": "--no-random-start",
    "match": "--match",
    "target": "--target",
}
#: Options whose canonical value is a float (``--alpha 1`` and ``--alpha 1.0`` are one attack).
_FLOAT_OPTIONS = ("alpha", "step_factor", "momentum")


def _canonical(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    items = []
    for name, value in sorted(options.items()):
        if name in _FLOAT_OPTIONS and value is not None and not isinstance(value, bool):
            value = float(value)
        items.append((name, value))
    return tuple(items)


@dataclass(frozen=True)
class AttackSpec:
    """One attack with its chosen options; hashable, so it keys the rows computed for it.

    Build it with :meth:`of` (validated). ``members``: the ensemble's member specs, in order
    (ties in Dice go to the first); empty for every other attack.
    """

    name: str
    option_items: tuple[tuple[str, Any], ...] = ()
    members: tuple[AttackSpec, ...] = ()

    @classmethod
    def of(cls, name: str, options: Mapping[str, Any] | None = None,
           members: Sequence[AttackSpec] = ()) -> AttackSpec:
        """A validated spec; ValueError naming the attack and the option otherwise."""
        spec = cls(name, _canonical(options or {}), tuple(members))
        spec.validate()
        return spec

    @property
    def options(self) -> dict[str, Any]:
        """The chosen options, as keyword arguments of :func:`tfrobseg.attacks.attack_dataset`."""
        return dict(self.option_items)

    @property
    def is_ensemble(self) -> bool:
        return self.name == ENSEMBLE

    @property
    def attack_params(self) -> str:
        """Canonical JSON of the options (``{}`` when none), or for the ensemble the list of its members
        (:func:`tfrobseg.attack_names.members_params`)."""
        if self.is_ensemble:
            return members_params([(m.name, m.attack_params) for m in self.members])
        return json.dumps(self.options, sort_keys=True)

    @property
    def label(self) -> str:
        """``name`` with its options, for messages and summaries (``pgd {"steps": 3}``)."""
        if self.is_ensemble:
            return f"ensemble of {', '.join(m.label for m in self.members)}"
        return self.name if not self.option_items else f"{self.name} {self.attack_params}"

    def key(self, *, loss: str, epsilons: Iterable[float], batch_size: int) -> str:
        """``<name>-<12 hex>``: the name and a hash of everything that changes the rows: the options (the
        members' for the ensemble), the attack loss, the ε values and the batch size (a batch-level
        loss such as Dice couples the images of a batch)."""
        blob = json.dumps({"attack": self.name, "params": json.loads(self.attack_params), "loss": loss,
                           "epsilons": [round(float(e), 10) for e in epsilons], "batch_size": int(batch_size)},
                          sort_keys=True)
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def validate(self) -> None:
        """The name is an attack (or the ensemble of attacks), the options are ones it takes, with valid values."""
        from tfrobseg.attacks.params import check_params
        from tfrobseg.attacks.runner import ATTACKS

        if self.is_ensemble:
            if self.option_items:
                raise ValueError("the ensemble takes no options of its own; its members take them")
            if not self.members or any(m.is_ensemble for m in self.members):
                raise ValueError("the ensemble needs at least one member attack (not itself)")
            for member in self.members:
                member.validate()
            return
        if self.members:
            raise ValueError(f"attack {self.name!r} has no members (only the ensemble has)")
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; choose from {', '.join([*ATTACKS, ENSEMBLE])}")
        taken = ATTACKS[self.name].options
        unknown = sorted(set(self.options) - taken)
        if unknown:
            raise ValueError(f"attack {self.name!r} takes no option {', '.join(unknown)}")
        check_params(**self.options)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"attack": self.name, "params": self.options}
        if self.is_ensemble:
            d["members"] = [m.to_json() for m in self.members]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AttackSpec:
        """Read back :meth:`to_json` (not validated: a record names what was run)."""
        return cls(str(d["attack"]), _canonical(d.get("params") or {}),
                   tuple(cls.from_json(m) for m in d.get("members", ())))


def add_attack_options(parser: argparse.ArgumentParser) -> None:
    """The attack options of ``experiments/crossval.py``, ``holdout.py`` and ``attack.py`` (:data:`OPTION_FLAGS`);
    not given, each keeps every attack's own default."""
    group = parser.add_argument_group("attack options (each goes to every chosen attack that takes it; an option "
                                      "none of them takes is an error; docs/attacks.md)")
    group.add_argument("--steps", type=int, default=None, help="iterations of the iterative attacks")
    group.add_argument("--alpha", type=float, default=None, help="step size in eps units (default: the step rule)")
    group.add_argument("--step-factor", type=float, choices=(1.0, 2.5), default=None,
                       help="step rule alpha = factor * eps / steps: 1 (eps/k) or 2.5 (2.5 eps/k, Madry et al.); "
                            "default: each attack's own")
    group.add_argument("--restarts", type=int, default=None,
                       help="random restarts, keeping per image the one with the lowest Dice (default 1)")
    group.add_argument("--momentum", type=float, default=None, help="MI-FGSM momentum mu (default 0: none)")
    group.add_argument("--best-iterate", action="store_true", default=None,
                       help="keep per image the iterate with the lowest Dice instead of the last")
    group.add_argument("--no-random-start", dest="random_start", action="store_const", const=False, default=None,
                       help="start the random-start attacks (PGD) at the clean image")
    group.add_argument("--target", choices=("background", "foreground"), default=None,
                       help="what the targeted attacks drive the prediction to: background (the gland vanishes; "
                            "the default) or foreground (every voxel labelled, Liu et al.'s ti-FGSM)")
    group.add_argument("--match", default=None,
                       help="the attack whose perturbation size the gaussian / rician noise controls reproduce "
                            "(default pgd)")
    group.add_argument("--ensemble-members", default=None,
                       help=f"comma list of the ensemble's member attacks (default: "
                            f"{','.join(DEFAULT_MEMBERS)}); only with --attack ensemble")


def given_options(args: Any) -> dict[str, Any]:
    """The attack options given on the command line (parsed by :func:`add_attack_options`), by option name."""
    return {name: getattr(args, name) for name in OPTION_FLAGS if getattr(args, name, None) is not None}


def _split_names(text: str) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in str(text).split(",") if t.strip()))


def resolve_attacks(names: str, options: Mapping[str, Any] | None = None,
                    members: str | Sequence[str] | None = None) -> list[AttackSpec]:
    """The chosen attacks' specs from the command line's values; ValueError (one line, naming the flag) when
    an attack is unknown, an option is taken by none of them or has a bad value.

    Args:
        names: an attack name or a comma list (``"fgsm,pgd,ensemble"``).
        options: the options given (``None`` values: not given), by option name (:data:`OPTION_FLAGS`);
            each goes to every chosen attack, ensemble members included, that takes it.
        members: the ensemble's members (a comma list or names); default
            :data:`~tfrobseg.attack_names.DEFAULT_MEMBERS`. Only with the ensemble.
    """
    from tfrobseg.attacks.runner import ATTACKS

    chosen = _split_names(names)
    if not chosen:
        raise ValueError("--attack: no attack named")
    known = [*ATTACKS, ENSEMBLE]
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"--attack: unknown attack(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if members is not None and ENSEMBLE not in chosen:
        raise ValueError("--ensemble-members: only with --attack ensemble")
    member_names = (_split_names(members) if isinstance(members, str) else list(dict.fromkeys(members))) \
        if members is not None else list(DEFAULT_MEMBERS)
    if ENSEMBLE in chosen:
        bad = [m for m in member_names if m not in ATTACKS]
        if bad or not member_names:
            raise ValueError(f"--ensemble-members: {', '.join(bad) or 'none given'} not an attack of this tfrobseg; "
                             f"choose from {', '.join(ATTACKS)}")
    attacks = list(dict.fromkeys([n for n in chosen if n != ENSEMBLE] + (member_names if ENSEMBLE in chosen else [])))
    given = {k: v for k, v in (options or {}).items() if v is not None}
    for name in given:
        if not any(name in ATTACKS[a].options for a in attacks):
            takers = [a for a in ATTACKS if name in ATTACKS[a].options]
            raise ValueError(f"{OPTION_FLAGS.get(name, name)}: none of the chosen attacks ({', '.join(attacks)}) takes "
                             f"it; {'it is taken by ' + ', '.join(takers) if takers else 'no attack takes it'}")

    def spec(name: str) -> AttackSpec:
        mine = {k: v for k, v in given.items() if k in ATTACKS[name].options}
        try:
            return AttackSpec.of(name, mine)
        except ValueError as exc:
            flags = ", ".join(OPTION_FLAGS.get(k, k) for k in mine)
            raise ValueError(f"{flags or '--attack'}: {exc}") from None

    return [AttackSpec.of(ENSEMBLE, members=[spec(m) for m in member_names]) if n == ENSEMBLE else spec(n)
            for n in chosen]


def evaluation_order(chosen: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The row sets a unit writes, in order: the chosen specs as given, then the ensemble members that
    were not chosen themselves (computed for the ensemble, kept so that every robust Dice can be checked
    against its members). Each spec once."""
    order = list(dict.fromkeys(chosen))
    for spec in chosen:
        order += [m for m in spec.members if m not in order]
    return order
