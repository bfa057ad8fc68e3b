"""``experiments/defenses.py``: the undefended baseline and each chosen defense, trained with the same seeds and
split, attacked with the same attacks, and compared as Liu et al. compare theirs.

Every network is a results folder of its own, ``<out>/<defense>/`` (``baseline``, or the defense's
:attr:`~tfrobseg.defenses.config.DefenseConfig.slug`), made exactly as ``experiments/crossval.py`` /
``holdout.py --defense NAME`` makes one (its ``run.json``, and every unit's ``config.json`` holding the
defense and its options); the units of all folders share one pool of workers (:func:`~tfrobseg.experiment.grid.run_grids`),
and a re-run resumes each folder. Then ``<out>/defenses_results.csv`` holds every folder's rows with two more
columns, ``defense`` (its label) and ``view`` (``deployed``, or the gradient-masking check's ``T=<temperature>``:
:mod:`tfrobseg.defenses.masking`), and ``<out>/report/`` the comparison
(:func:`tfrobseg.reporting.defense_table.write_defense_report`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg import study
from tfrobseg.console import setup_console
from tfrobseg.defenses.config import (
    BASELINE,
    DEFENSE_NAMES,
    DEFENSES,
    DefenseConfig,
    resolve_defense,
)
from tfrobseg.errors import (
    InputError,
    OptionError,
    SettingsMismatchError,
    UnitsFailed,
    UnitsSubmitted,
)
from tfrobseg.experiment.cli import build_parser, grid_exit, prepare_run

__all__ = ["BUILTIN_DEFENSES", "BUILTIN_DEFENSE_OPTIONS", "BUILTIN_EPSILONS", "defense_rows", "main", "resolve_defenses"]

#: What the built-in cohort's preset chooses when the user does not, so that the baseline and six defenses x 3
#: folds train and are attacked within 30 minutes on 2 CPU cores (docs/defenses.md has the measurements):
#: fewer inner steps for the two iterative defenses; distillation at T = 5 (at Liu et al.'s T >= 20 the teacher
#: does not converge in the preset's 12 epochs: clean Dice 0.62 at T = 20, 0.08 at T = 100); noise of the
#: adversarial training's size (0.5: Liu et al.'s radius 0.01 is 1 % of the smallest attack here); four attacked
#: eps; an ensemble of FGSM and PGD (the strongest member on the baseline) with 5 steps.
BUILTIN_DEFENSES: tuple[str, ...] = ("adversarial", "fast_adversarial", "pgd_adversarial", "trades", "distillation",
                                     "uniform_noise")
BUILTIN_DEFENSE_OPTIONS: dict[str, dict[str, float]] = {
    "pgd_adversarial": {"steps": 2}, "trades": {"steps": 2}, "distillation": {"temperature": 5.0},
    "uniform_noise": {"radius": 0.5}}
BUILTIN_EPSILONS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
BUILTIN_ATTACK_OPTIONS: dict[str, Any] = {"steps": 5, "ensemble_members": "fgsm,pgd"}


def _scoped_options(items: Sequence[str] | None, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``--defense-option`` values (``trades.steps=3`` or ``epsilon=0.25``) as options per chosen defense; an
    unscoped option goes to every chosen defense that takes it. OptionError for an option no chosen defense
    takes, or a scope that is not chosen."""
    from tfrobseg.defenses.config import parse_defense_options

    per: dict[str, dict[str, float]] = {name: {} for name in names}
    for item in items or ():
        scope, dot, rest = item.partition(".")
        target = [scope] if dot and scope in DEFENSES else None
        if target is None and dot and "=" not in scope:
            raise OptionError(f"--defense-option {item}: {scope!r} is not a chosen defense ({', '.join(names)})")
        key_value = rest if target else item
        try:
            ((key, value),) = parse_defense_options([key_value]).items()
        except ValueError as exc:
            raise OptionError(str(exc)) from None
        takers = target or [n for n in names if key in DEFENSES[n].defaults]
        if target and target[0] not in names:
            raise OptionError(f"--defense-option {item}: {scope} is not among the chosen defenses ({', '.join(names)})")
        if not takers:
            raise OptionError(f"--defense-option {item}: none of the chosen defenses ({', '.join(names)}) takes {key}")
        for name in takers:
            per[name][key] = value
    return per


def resolve_defenses(text: str | None, items: Sequence[str] | None, preset: str | None) -> list[DefenseConfig]:
    """The chosen defenses (``--defense``: a comma list, or ``all``; by default all, or the built-in preset's
    :data:`BUILTIN_DEFENSES`) with their options (``--defense-option``, then the preset's
    :data:`BUILTIN_DEFENSE_OPTIONS`), validated (OptionError)."""
    if text is None:
        names = list(BUILTIN_DEFENSES if preset else DEFENSE_NAMES)
    elif text == "all":
        names = list(DEFENSE_NAMES)
    else:
        names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    unknown = [n for n in names if n not in DEFENSES]
    if not names or unknown:
        raise OptionError(f"--defense: unknown defense(s) {unknown or [text]}; choose from {', '.join(DEFENSE_NAMES)} "
                          "or 'all'")
    given = _scoped_options(items, names)
    configs = []
    for name in names:
        options = {**(BUILTIN_DEFENSE_OPTIONS.get(name, {}) if preset else {}), **given[name]}
        try:
            configs.append(resolve_defense(name, options))
        except ValueError as exc:
            raise OptionError(str(exc)) from None
    return configs


def defense_rows(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The folders' rows (``frames``: defense label -> the rows :func:`~tfrobseg.experiment.grid.run_grids`
    returned for its folder), with ``defense`` and ``view`` columns and ``attack_params`` the attack's own (the
    view taken out): what the report reads."""
    from tfrobseg.defenses.masking import view_of

    parts = []
    for label, rows in frames.items():
        if rows.empty:
            continue
        views = rows["attack_params"].map(view_of)
        parts.append(rows.assign(defense=label, view=views.map(lambda v: v[0]),
                                 attack_params=views.map(lambda v: v[1])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _preset_attack_options(args: argparse.Namespace, preset: str | None) -> None:
    """The attack options the user did not give: the built-in preset's (:data:`BUILTIN_EPSILONS`,
    :data:`BUILTIN_ATTACK_OPTIONS` where the chosen attacks take them: ``--steps`` means nothing to FGSM alone),
    else the study's ε."""
    from tfrobseg.experiment.attacks import ENSEMBLE, given_options, resolve_attacks

    if args.epsilons is None:
        args.epsilons = BUILTIN_EPSILONS if preset else study.EPSILONS
    if not preset:
        return
    if args.ensemble_members is None and ENSEMBLE in args.attack.split(","):
        args.ensemble_members = BUILTIN_ATTACK_OPTIONS["ensemble_members"]
    if args.steps is None:
        try:
            resolve_attacks(args.attack, {**given_options(args), "steps": BUILTIN_ATTACK_OPTIONS["steps"]},
                            args.ensemble_members)
        except ValueError:
            return  # no chosen attack takes steps, or a bad --attack: left to the run's own checks
        args.steps = BUILTIN_ATTACK_OPTIONS["steps"]


def _check(args: argparse.Namespace) -> None:
    if args.phase == "crossval" and args.split:
        raise OptionError("--split is for --phase holdout (cross-validation uses the manifest's folds)")
    if args.phase == "holdout" and args.folds:
        raise OptionError("--folds is for --phase crossval")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/defenses.py``."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    args = build_parser("defenses").parse_args(argv)
    setup_console(args.verbose)
    defense_text, defense_items = args.defense, args.defense_option
    args.defense = args.defense_option = None  # the folders' runs: the baseline's settings, then one defense each
    try:
        _check(args)
        preset = "builtin" if args.data is None else None  # as resolve_data decides
        defenses = resolve_defenses(defense_text, defense_items, preset)
        _preset_attack_options(args, preset)
        if args.out is None:
            args.out = str(Path("results") / "defenses" / ("builtin" if preset else Path(args.data).name))
        run = prepare_run(args.phase, args)
    except (OptionError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tfrobseg.experiment.grid import GridRun, run_grids, shard_units

    folders = {BASELINE: None, **{d.slug: d for d in defenses}}
    labels = {folder: (BASELINE if d is None else d.label) for folder, d in folders.items()}
    runs = [GridRun(args.phase, dataclasses.replace(run.settings, defense=d), run.out_dir / folder, run.models,
                    run.losses, run.folds, run.shard, run.data) for folder, d in folders.items()]
    print(f"defenses: {', '.join(labels.values())} x models {run.models} x losses {run.losses} x "
          f"{'folds ' + str(run.folds) if args.phase == 'crossval' else 'hold-out'} -> {sum(map(len, shard_units(runs)))} "
          f"unit(s); attack {run.settings.attack} {run.settings.attack_options or ''}; eps "
          f"{list(run.settings.epsilons)}; results in {run.out_dir}", flush=True)
    if args.dry_run:
        from tfrobseg.experiment.dry_run import dry_run

        return dry_run(runs, args, run.executor)
    t0 = time.perf_counter()
    try:
        combined = run_grids(runs, overwrite=args.overwrite, max_units=args.max_units, jobs=run.jobs,
                             progress=not args.no_progress, executor=run.executor)
    except (SettingsMismatchError, UnitsFailed, UnitsSubmitted) as exc:
        return grid_exit(exc, "its folder's log.txt", "report was")
    print(f"defenses finished in {time.perf_counter() - t0:.0f} s.", flush=True)
    return _report(run.out_dir, dict(zip(labels.values(), combined)), args.seed)


def _report(out_dir: Path, frames: Mapping[str, pd.DataFrame], seed: int) -> int:
    """Write ``defenses_results.csv`` and the report; print Liu et al.'s tables."""
    from tfrobseg.io import atomic_write_csv
    from tfrobseg.reporting.defense_table import write_defense_report

    rows = defense_rows(frames)
    if rows.empty:
        print("No complete units: no report.", flush=True)
        return 0
    atomic_write_csv(out_dir / "defenses_results.csv", rows)
    try:
        written = write_defense_report(rows, out_dir / "report", seed=seed)
    except ValueError as exc:  # e.g. --max-units or another process left some networks' units to compute
        print(f"No report yet: {exc}. Run the same command again to complete the units; the rows so far are in "
              f"{out_dir / 'defenses_results.csv'}.", flush=True)
        return 0
    print(f"Results: {out_dir / 'defenses_results.csv'} ({len(rows)} rows); report: {out_dir / 'report'} "
          f"({len(written)} files)", flush=True)
    for path in written:
        if path.suffix == ".md":
            print(path.read_text(encoding="utf-8"), flush=True)
    return 0
