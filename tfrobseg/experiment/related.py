"""What the related-work experiments (``experiments/attack_loss.py``, ``iterations.py``, ``adaptive_loss.py``,
``two_readers.py``) share: their command line, their training grid and their extra attacks.

Each of them is a cross-validation run of ``experiments/crossval.py`` (the same options, units, results
folder, resume and refusal of another run's folder; :mod:`tfrobseg.experiment.grid`) with the paper's
models and losses as defaults, followed by the attacks the paper compares, computed on the saved networks
by ``experiments/attack.py`` (:mod:`tfrobseg.experiment.attack_units`: resumable per unit x attack), and a
report in the paper's layout with the paper's numbers beside ours. A script only says which networks,
which attacks and which table; nothing is trained or attacked twice when it is run again.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.console import setup_console
from tfrobseg.errors import (
    InputError,
    OptionError,
    SettingsMismatchError,
    UnitsFailed,
    UnitsSubmitted,
)
from tfrobseg.experiment.cli import build_parser, grid_exit, prepare_run

__all__ = ["PRESET_3D_PATCH", "REPORT_LATER", "Experiment", "Trained", "attack_saved_units", "describe_cases", "experiment_parser", "folder_args",
           "saved_rows", "start", "train_grid", "train_grids"]


#: The built-in presets' training patch of the 3D networks (``--patch-shape``): 16 slices of 32 x 32 of the 48 x 48
#: field, half of them centred on the gland. A forward pass costs ~0.5 GMAC per 16 x 48 x 48 patch (the 3D U-Net
#: with filters 8..64): with the whole field a 3D unit took ~6 minutes on one core, too long for the 15-minute
#: presets; evaluation and attacks stay on whole volumes.
PRESET_3D_PATCH = "16,32,32"


@dataclass(frozen=True)
class Experiment:
    """A related-work script: its name (``experiments/<name>.py``, ``results/<name>/``), what it reproduces, its
    default networks and the options its built-in preset sets when the user gives none (``preset``: option
    name -> value, as the parsed ``argparse`` attribute)."""

    name: str
    description: str
    model: str
    loss: str
    preset: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)  # options set whatever the data

    def apply_preset(self, args: argparse.Namespace) -> str | None:
        """Fill the options the user did not give (``None``) from :attr:`preset` when the built-in cohort is used
        (no ``--data``); returns the preset's name (``"builtin"``) or ``None``."""
        preset = "builtin" if args.data is None else None
        for key, value in {**self.defaults, **(self.preset if preset else {})}.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)
        if args.out is None:
            args.out = str(Path("results") / self.name / ("builtin" if preset else Path(args.data).name))
        return preset


def start(experiment: Experiment, argv: Sequence[str] | None,
          extra: Callable[[argparse.ArgumentParser], None] | None = None
          ) -> tuple[argparse.Namespace, Callable[[str], None]]:
    """A script's start: its options parsed (:func:`experiment_parser`), the console set up (tables hold "±" and
    "ε": a terminal of another encoding gets replacement characters, never a crash), and a flushing printer."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    args = experiment_parser(experiment, extra).parse_args(argv)
    setup_console(args.verbose)
    _configure_tensorflow(args)
    return args, functools.partial(print, flush=True)


def _configure_tensorflow(args: argparse.Namespace) -> None:
    """The threads (and op determinism) of the run's units, set in this process before TensorFlow starts: the
    extra attacks run here, on the saved networks, and must compute as the units' own attacks do (a CPU's
    rounding depends on the thread count). When TensorFlow already runs (main called from Python), attack.py's
    own check says so."""
    from tfrobseg.experiment.settings import default_threads
    from tfrobseg.parallel import configure_threads

    configure_threads(args.threads or default_threads("builtin" if args.data is None else None), args.deterministic)


def experiment_parser(experiment: Experiment, extra: Callable[[argparse.ArgumentParser], None] | None = None
                      ) -> argparse.ArgumentParser:
    """``experiments/crossval.py``'s options with the experiment's name, description and default networks;
    ``--epsilons`` and the options of :attr:`Experiment.preset` default to ``None`` (the preset fills them).
    ``extra`` adds the experiment's own options."""
    p = build_parser("crossval")
    p.prog = f"experiments/{experiment.name}.py"
    p.description = experiment.description
    p.add_argument("--phase", choices=("crossval", "holdout"), default="crossval",
                   help="crossval (default: every training patient is evaluated once, by the networks that did not see "
                        "it) or holdout (train on the training split, evaluate the test split: for cohorts too small "
                        "for folds)")
    p.add_argument("--split", default=None,
                   help="with --phase holdout: JSON file with train/val/test patient lists (default: the manifest's)")
    unset = dict.fromkeys(["epsilons", *experiment.preset, *experiment.defaults])
    p.set_defaults(**{**unset, "model": experiment.model, "loss": experiment.loss})
    if extra is not None:
        extra(p)
    return p


@dataclass
class Trained:
    """The outcome of :func:`train_grid`: the results folder and its units' own rows (``None`` with the exit
    code when the grid did not complete)."""

    out_dir: Path
    rows: pd.DataFrame | None
    code: int = 0


def train_grid(args: argparse.Namespace, say: Callable[[str], None] = print) -> Trained:
    """Check the options (nothing created on a bad one: ``error:`` and exit code 2), then train and attack the
    grid of ``args`` (``--phase``, cross-validation by default) exactly as ``experiments/crossval.py`` does
    (resuming a folder)."""
    return train_grids([args], say)[0]


def train_grids(runs: Sequence[argparse.Namespace], say: Callable[[str], None] = print) -> list[Trained]:
    """:func:`train_grid` for several results folders (each ``args.out``, e.g. the 2D and the 3D networks of one
    comparison): every folder is checked first, then their units share one pool of workers
    (:func:`tfrobseg.experiment.grid.run_grids`). On a failure every folder's :class:`Trained` has ``rows`` None
    and the exit code: also after ``--dry-run`` (the estimate printed, code 0) and after units were submitted to SLURM
    without ``--wait`` (code 0: the same command, run again when they have ended, goes on to the report)."""
    prepared = []
    for args in runs:
        phase = getattr(args, "phase", "crossval")
        try:
            prepared.append((phase, prepare_run(phase, args)))
        except (OptionError, InputError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return [Trained(Path(a.out), None, 2) for a in runs]
    from tfrobseg.experiment.grid import run_grids

    for phase, run in prepared:
        say(f"{run.out_dir.name}: models {run.models} x losses {run.losses} x "
            f"{'folds ' + str(run.folds) if phase == 'crossval' else 'hold-out'} -> {run.n_units} unit(s); eps "
            f"{list(run.settings.epsilons)}; image size {run.settings.image_size}; filters {run.settings.filters}"
            f"{'; patch ' + str(run.settings.patch_shape) if run.settings.patch_shape else ''}"
            f"{'; loss options ' + str(run.settings.loss_options) if run.settings.loss_options else ''}; results in "
            f"{run.out_dir}")
    t0 = time.perf_counter()
    first = runs[0]
    if first.dry_run:
        from tfrobseg.experiment.dry_run import dry_run

        code = dry_run([run.grid() for _, run in prepared], first, prepared[0][1].executor)
        return [Trained(run.out_dir, None, code) for _, run in prepared]
    try:
        frames = run_grids([run.grid() for _, run in prepared],
                           overwrite=first.overwrite, max_units=first.max_units, jobs=prepared[0][1].jobs,
                           progress=not first.no_progress, executor=prepared[0][1].executor)
    except (SettingsMismatchError, UnitsFailed, UnitsSubmitted) as exc:
        log = " and ".join(str(run.out_dir / "log.txt") for _, run in prepared)
        code = grid_exit(exc, log, "report was")
        return [Trained(run.out_dir, None, code) for _, run in prepared]
    say(f"training grid finished in {time.perf_counter() - t0:.0f} s ({sum(len(f) for f in frames)} rows).")
    return [Trained(run.out_dir, rows) for (_, run), rows in zip(prepared, frames)]


def folder_args(args: argparse.Namespace, folder: str, **changes: Any) -> argparse.Namespace:
    """A copy of ``args`` for the sub-folder ``folder`` of ``args.out``, with ``changes`` (model, filters ...)."""
    return argparse.Namespace(**{**vars(args), "out": str(Path(args.out) / folder), **changes})


def attack_saved_units(out_dir: Path, attack: str, *, attack_loss: str | None = None,
                       options: Sequence[str] = (), progress: bool = True,
                       args: argparse.Namespace | None = None) -> int | None:
    """Attack every complete unit of ``out_dir`` with ``attack`` (``experiments/attack.py``'s command line:
    ``attack_loss`` and ``options`` as its flags, e.g. ``["--steps", "5"]``); rows recorded per unit x attack and
    skipped when already there. ``args``: the experiment's options, whose executor the attacks use too (on SLURM,
    an array of the units). Returns attack.py's exit code, or None when the attacks were submitted to SLURM and
    not waited for (the message printed; the experiment's report must wait for them)."""
    from tfrobseg.experiment.attack_units import run_command
    from tfrobseg.experiment.executor import executor_argv

    argv = ["--results", str(out_dir), "--attack", attack, *options, *(executor_argv(args) if args else [])]
    if attack_loss is not None:
        argv += ["--attack-loss", attack_loss]
    if not progress:
        argv.append("--no-progress")
    try:
        return run_command(argv)
    except UnitsSubmitted as exc:
        print(str(exc), flush=True)
        return None


#: What an experiment says when its extra attacks were submitted to SLURM without ``--wait``.
REPORT_LATER = ("The report is written once the submitted attacks have ended: run the same command again then "
                "(nothing complete is computed or submitted twice).")


def describe_cases(rows: pd.DataFrame) -> str:
    """Which patients a table's means are over, for its notes: ``"18 patients (3-fold cross-validation)"``."""
    per_network = rows.groupby(["model", "loss"])["patient_id"].nunique()
    n = f"{per_network.min()}" if per_network.min() == per_network.max() else \
        f"{per_network.min()}-{per_network.max()}"
    phases = set(rows["phase"])
    how = "each network evaluated on the patients it did not train on (cross-validation)" if phases == {"crossval"} \
        else "hold-out test patients"
    return f"{n} patient(s) per model x loss, {how}"


def saved_rows(out_dir: Path) -> pd.DataFrame:
    """Every row of ``out_dir``: the units' own and those of their recorded extra attacks
    (:func:`tfrobseg.experiment.store.collect_attack_rows`)."""
    from tfrobseg.experiment.store import collect_attack_rows

    return collect_attack_rows(out_dir)
