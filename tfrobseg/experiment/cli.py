"""Command line of ``experiments/crossval.py``, ``experiments/holdout.py`` and ``experiments/study.py`` (both).

Options are checked before any work or folder is created; the run's settings are resolved once
(:mod:`tfrobseg.experiment.settings`) and the grid is run by :func:`tfrobseg.experiment.grid.run_grids`, here or
on a SLURM cluster (:mod:`tfrobseg.experiment.executor`); ``--dry-run`` lists the units and their cost instead
(:mod:`tfrobseg.experiment.cost`).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tfrobseg import study
from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.defenses.config import DEFENSE_NAMES
from tfrobseg.errors import (
    InputError,
    OptionError,
    SettingsMismatchError,
    UnitsFailed,
    UnitsSubmitted,
)
from tfrobseg.experiment.attacks import add_attack_options
from tfrobseg.experiment.executor import (
    ExecutorConfig,
    add_executor_options,
    resolve_executor,
)
from tfrobseg.experiment.settings import (
    BUILTIN_DATA,
    BUILTIN_PRESET,
    Settings,
    default_out_dir,
    resolve_attack_options,
    resolve_data,
    resolve_defense_options,
    resolve_settings,
)
from tfrobseg.experiment.units import parse_shard
from tfrobseg.training.config import PRECISIONS, STRATEGIES

__all__ = ["PHASES_OF", "add_cost_options", "build_parser", "grid_exit", "main", "prepare_run", "prepare_runs"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals or any(v < 0 or not np.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"epsilons must be finite and >= 0, got {text!r}")
    return vals


def _float_or_none(text: str) -> float | str:
    """A number, or ``none`` (the option off, even where the built-in preset sets it)."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


#: The phases each entry point runs (``experiments/<name>.py``): ``study`` is the study's whole grid, 120 units.
PHASES_OF = {"crossval": ("crossval",), "holdout": ("holdout",), "study": ("crossval", "holdout"),
             "defenses": ("crossval",)}

#: What each entry point runs (``experiments/<phase>.py``).
_WHAT = {
    "study": "Apostolidis et al. end to end (Tables I-IV): the 3-fold cross-validation and the hold-out retraining "
             "of each model x loss (5 x 6 x (3 + 1) = 120 units with the defaults) into one results folder, one "
             "SLURM job array with --executor slurm.",
    "crossval": "Apostolidis et al. 3-fold cross-validation (Tables I, III): train each model x loss, attack at "
                "every eps, score in 3D.",
    "holdout": "Apostolidis et al. hold-out retraining and test-set attack (Tables II, IV): train each model x loss, "
               "attack at every eps, score in 3D.",
    "defenses": "Defenses compared with the undefended baseline (Liu et al.): train the baseline and each defense "
                "with the same seeds and split, attack all of them, and write Liu et al.'s table (Dice per eps, "
                "paired Wilcoxon vs the baseline with Bonferroni, bootstrap CI of the median difference) and a "
                "figure of Dice vs eps (docs/defenses.md).",
}


def build_parser(phase: str) -> argparse.ArgumentParser:
    """The options of ``experiments/<phase>.py`` (``crossval``, ``holdout``, ``study`` or ``defenses``). Builds without
    TensorFlow, so ``--help`` starts no TensorFlow (its start-up lines read like errors); ``--attack`` is
    checked against the attack mapping after parsing."""
    p = argparse.ArgumentParser(
        prog=f"experiments/{phase}.py",
        description=_WHAT[phase],
        epilog="exit codes: 0 every unit of this call complete (units another process is computing are named and "
               "left to it); 1 some units failed (one 'failed:' line each; the others are kept, no tables); "
               "2 bad options or inputs, checked before any folder is created or any unit starts (one 'error:' "
               "line), or the results folder holds another run ('refused:').",
        allow_abbrev=False,
    )
    defenses = phase == "defenses"
    if defenses:
        p.add_argument("--phase", choices=("crossval", "holdout"), default="crossval",
                       help="crossval (default: every training patient is attacked once, by the network that did not "
                            "see it, so the paired tests have all of them) or holdout (the test split)")
        p.add_argument("--model", default="unet", help="model name or comma list (default unet, as Liu et al.)")
        p.add_argument("--loss", default="dice", help="loss name or comma list (default dice, Liu et al.'s soft Dice)")
    else:
        p.add_argument("--model", default="all", help="model name, comma list, or 'all' (the study's five)")
        p.add_argument("--loss", default="all", help="loss name, comma list, or 'all' (the study's six)")
    if phase != "holdout":
        p.add_argument("--folds", type=str, default=None, help="held-out fold indices, 0-based, e.g. 0,1,2 (default: all)")
    if phase not in ("crossval", "study"):
        p.add_argument("--split", default=None, help="JSON file with train/val/test patient lists (default: the manifest's split)")
    if defenses:
        p.add_argument("--defense", default=None,
                       help=f"comma list of defenses, or 'all' (the default): {', '.join(DEFENSE_NAMES)}; the "
                            "baseline is always trained (docs/defenses.md)")
        p.add_argument("--defense-option", action="append", default=None, metavar="[DEFENSE.]KEY=VALUE",
                       help="an option of the defenses, e.g. trades.steps=3, or epsilon=0.25 for every chosen defense "
                            "that takes it (repeat for several)")
    else:
        p.add_argument("--defense", default=None,
                       help=f"train every network with this defense ({', '.join(DEFENSE_NAMES)}; docs/defenses.md); "
                            "default: none")
        p.add_argument("--defense-option", action="append", default=None, metavar="KEY=VALUE",
                       help="an option of --defense, e.g. epsilon=0.25 (repeat for several)")
    p.add_argument("--epsilons", type=_floats, default=None if defenses else study.EPSILONS,
                   help="attack strengths in z-score units (default 0,0.1,...,1.0"
                        f"{'; built-in preset 0.1,0.25,0.5,1' if defenses else ''}; the clean 0 is always added)")
    p.add_argument("--attack", default="fgsm,ensemble" if defenses else "fgsm",
                   help="the study's fgsm, another attack of tfrobseg.attacks.ATTACKS, 'ensemble' (per case the worst "
                        "of --ensemble-members: robust Dice), or a comma list: every unit evaluates each (the "
                        "ensemble's members too); Tables I-IV use the first (docs/attacks.md)")
    p.add_argument("--attack-precision", default="model",
                   help="'model' (attack the trained model as built: float16 gradients under mixed_float16) or "
                        "'float32' (attack a float32 copy with the same weights; docs/attacks.md)")
    p.add_argument("--attack-loss", default="same", help="'same' (the training loss, as in the study) or a loss name")
    p.add_argument("--model-option", action="append", default=None, metavar="MODEL.KEY=VALUE",
                   help="an option of one of the models, e.g. unet_efficientnet.variant=b7 or "
                        "unet_efficientnet.weights=imagenet (repeat for several; docs/models.md)")
    p.add_argument("--patch-shape", default=None, metavar="D,H,W",
                   help="training patch of the 3D networks (default: 16 slices of the whole in-plane field); they "
                        "are evaluated and attacked on whole volumes")
    p.add_argument("--loss-option", action="append", default=None, metavar="LOSS.KEY=VALUE",
                   help="an option of one of the losses, e.g. tversky.alpha=0.7 (repeat for several; docs/losses.md); "
                        "it holds wherever the run uses that loss, training and attack")
    p.add_argument("--data", default=None, help=f"prepared data folder (default: the built-in cohort in {BUILTIN_DATA}, prepared if absent)")
    p.add_argument("--out", default=None, help="results folder (default: results/builtin or results/<data folder name>)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help=f"epoch cap (study: {study.MAX_EPOCHS}; built-in preset: {BUILTIN_PRESET['max_epochs']})")
    p.add_argument("--batch-size", type=int, default=study.BATCH_SIZE)
    p.add_argument("--learning-rate", type=float, default=None, help=f"initial Adam learning rate (study: {study.LEARNING_RATE:g})")
    p.add_argument("--filters", type=_ints, default=None,
                   help=f"filters per level (default {','.join(map(str, study.FILTERS))}; built-in preset "
                        f"{','.join(map(str, BUILTIN_PRESET['filters']))})")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"in-plane size fed to the networks (default: as prepared, 256; built-in preset {BUILTIN_PRESET['image_size']})")
    p.add_argument("--early-stopping-patience", type=int, default=None,
                   help=f"epochs without val-loss improvement (default {study.EARLY_STOPPING_PATIENCE})")
    p.add_argument("--batch-norm-momentum", type=_float_or_none, default=None,
                   help="momentum of the batch-norm moving statistics, or 'none' for the layers' own (Keras 0.99, the "
                        f"study's); built-in preset {BUILTIN_PRESET['batch_norm_momentum']}")
    p.add_argument("--output-prior", type=_float_or_none, default=None,
                   help="initial foreground probability of the output layer, or 'none' for a zero bias (0.5, the "
                        f"study's); built-in preset {BUILTIN_PRESET['output_prior']}")
    add_attack_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", default=None, help="i/n: run the i-th of n disjoint parts of the grid (cluster job arrays)")
    p.add_argument("--overwrite", action="store_true", help="delete results made with other settings in --out")
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default: mixed_float16 with a GPU, float32 otherwise")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="XLA-compile training and attack steps (default on; the built-in preset turns it off on a CPU-only machine)")
    p.add_argument("--jobs", type=int, default=None,
                   help=f"units computed at once in worker processes (default 1; built-in preset {BUILTIN_PRESET['jobs']})")
    p.add_argument("--threads", type=int, default=None,
                   help="TensorFlow threads of each unit's process (default: the cores, halved under the built-in "
                        "preset; never derived from --jobs, so --jobs does not change the numbers)")
    p.add_argument("--deterministic", action="store_true",
                   help="TensorFlow op determinism (tf.config.experimental.enable_op_determinism); recorded")
    p.add_argument("--strategy", choices=STRATEGIES, default="auto",
                   help="distribution strategy (auto: MultiWorker from TF_CONFIG, Mirrored with >1 GPU)")
    p.add_argument("--max-units", type=int, default=None, help="compute at most N units in this call, then stop")
    p.add_argument("--no-tables", action="store_true", help="do not write the tables at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_options(p)
    add_cost_options(p)
    add_verbose_option(p)
    return p


def add_cost_options(p: argparse.ArgumentParser) -> None:
    """``--dry-run`` and what its estimate needs (:mod:`tfrobseg.experiment.cost`)."""
    g = p.add_argument_group("cost before starting (docs/cluster.md#cost)")
    g.add_argument("--dry-run", action="store_true",
                   help="list the units this call would compute and estimate their cost in GPU- or CPU-hours; "
                        "nothing is trained, submitted or created")
    g.add_argument("--throughput", type=float, default=None, metavar="GMAC/S",
                   help="--dry-run: effective billions of multiply-accumulates per second of a unit's work on the "
                        "machines that will run it")
    g.add_argument("--calibrate", action="store_true",
                   help="--dry-run: measure the throughput (and a unit's start-up) per model on this machine first")


def _names(text: str, all_names: Sequence[str], kind: str, known: Sequence[str]) -> list[str]:
    if text == "all":
        return list(all_names)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise OptionError(f"unknown {kind}(s) {bad}; choose from {', '.join(known)} or 'all'")
    return names


def _folds(text: str | None, n_folds: int) -> list[int]:
    if text is None:
        return list(range(n_folds))
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise OptionError(f"--folds expects comma-separated fold indices, got {text!r}") from None
    if not vals or any(not 0 <= v < n_folds for v in vals):
        raise OptionError(f"--folds {text!r}: indices must be in 0..{n_folds - 1}")
    return vals


def _check_names(args: argparse.Namespace) -> tuple[list[str], list[str], tuple[int, int]]:
    """Model, loss and attack names and the shard, checked before anything is prepared or created."""
    from tfrobseg import losses, models
    from tfrobseg.attacks import ATTACK_PRECISIONS

    model_names = _names(args.model, study.MODELS, "model", models.MODEL_NAMES)
    loss_names = _names(args.loss, study.LOSSES, "loss", losses.LOSS_NAMES)
    resolve_attack_options(args)
    resolve_defense_options(args)
    if args.attack_precision not in ATTACK_PRECISIONS:
        raise OptionError(f"unknown --attack-precision {args.attack_precision!r}; choose from {', '.join(ATTACK_PRECISIONS)}")
    if args.attack_loss != "same" and args.attack_loss not in losses.LOSS_NAMES:
        raise OptionError(f"unknown --attack-loss {args.attack_loss!r}; 'same' or one of {', '.join(losses.LOSS_NAMES)}")
    two_readers = [name for name in loss_names if name in losses.SECOND_READER_LOSSES]
    if args.attack_loss == "same" and two_readers:
        raise OptionError(f"--loss {','.join(two_readers)}: trained on two readers' masks, which the attack does not "
                          "have (it differentiates against the reference mask): choose its loss with --attack-loss, "
                          "e.g. bce")
    try:
        return model_names, loss_names, parse_shard(args.shard)
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def _describe(phase: str, settings: Settings, jobs: int, models: list[str], losses: list[str], folds: list,
              n_units: int, out_dir: Path) -> None:
    t = settings.train
    if settings.preset:
        print("Built-in cohort preset (override with the options): "
              f"max_epochs={t.max_epochs}, learning_rate={t.learning_rate:g}, "
              f"batch_norm_momentum={t.batch_norm_momentum}, output_prior={t.output_prior}, filters={settings.filters}, "
              f"image_size={settings.image_size} (prepared slices are resampled, in-plane spacing scaled "
              f"accordingly), jobs={jobs}, xla={'on' if t.xla else 'off (CPU: compile time exceeds the gain)'}.",
              flush=True)
    print(f"{phase}: models {models} x losses {losses} x folds {folds if phase == 'crossval' else ['hold-out']}"
          f" -> {n_units} unit(s) in this shard; eps {list(settings.epsilons)}; attack {_attacks(settings)} "
          f"(loss: {settings.attack_loss}, precision: {settings.attack_precision}); precision {t.precision}; XLA {'on' if t.xla else 'off'}; "
          f"defense {settings.defense.label if settings.defense else 'none'}; seed {t.seed}; strategy {t.strategy} ({settings.replicas} replica(s)); {settings.threads} thread(s) per unit"
          f"{'; deterministic ops' if settings.deterministic else ''}; results in {out_dir}", flush=True)


def _attacks(settings: Settings) -> str:
    """The attacks of a run for its description line: each with its options, the first marked as the tables'."""
    specs = settings.attack_specs()
    text = "; ".join(spec.label for spec in specs)
    return text if len(specs) == 1 else f"{text} (Tables I-IV: {specs[0].name})"


def _write_tables(out_dir: Path) -> None:
    from tfrobseg.experiment.store import collect_metrics, run_defense
    from tfrobseg.reporting.tables import write_tables

    written = write_tables(collect_metrics(out_dir), out_dir / "tables", defense=run_defense(out_dir))
    print(f"Tables: {out_dir / 'tables'} ({len(written.paths)} files; overview {written.overview})", flush=True)
    for path in written.printed:  # Tables I–IV, then the additional table (results outside the study grid)
        print(path.read_text(encoding="utf-8"), flush=True)


def main(phase: str, argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/crossval.py``, ``holdout.py`` and ``study.py`` (both phases)."""
    # The tables contain "±" and "ε": never crash on a terminal / log with a non-UTF-8 encoding.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    args = build_parser(phase).parse_args(argv)
    setup_console(args.verbose)
    try:
        runs = prepare_runs(PHASES_OF[phase], args)
    except (OptionError, InputError) as exc:  # InputError: a prepared record missing, truncated or corrupt
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for run in runs:
        _describe(run.phase, run.settings, run.jobs, run.models, run.losses, run.folds, run.n_units, run.out_dir)
    first = runs[0]
    if args.dry_run:
        from tfrobseg.experiment.dry_run import dry_run

        return dry_run([run.grid() for run in runs], args, first.executor)
    from tfrobseg.experiment import store
    from tfrobseg.experiment.grid import run_grids

    t0 = time.perf_counter()
    try:
        frames = run_grids([run.grid() for run in runs], overwrite=args.overwrite, max_units=args.max_units,
                           jobs=first.jobs, progress=not args.no_progress, executor=first.executor)
    except (SettingsMismatchError, UnitsFailed, UnitsSubmitted) as exc:
        return grid_exit(exc, str(first.out_dir / "log.txt"), "tables were")
    print(f"{phase} finished in {time.perf_counter() - t0:.0f} s.", flush=True)
    for run, combined in zip(runs, frames):
        print(f"Per-unit results: {run.out_dir}/{run.phase}/<model>/<loss>/<fold>/metrics.csv", flush=True)
        if not combined.empty:
            print(f"Combined results: {store.results_path(run.out_dir, run.phase)} ({len(combined)} rows)", flush=True)
    if any(not f.empty for f in frames) and not args.no_tables:
        _write_tables(first.out_dir)
    return 0


def grid_exit(exc: SettingsMismatchError | UnitsFailed | UnitsSubmitted, log: str, unwritten: str) -> int:
    """Report why a grid run stopped and return the exit code: 0 with the submission's message for units submitted
    to SLURM and not waited for, 2 with one ``refused:`` line for a folder of another run, 1 with one ``failed:``
    line per failed unit (``log``: where the details are; ``unwritten``: what was therefore not written)."""
    if isinstance(exc, UnitsSubmitted):
        print(str(exc), flush=True)
        return 0
    if isinstance(exc, SettingsMismatchError):
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    for uid, reason in exc.failures.items():
        print(f"failed: {uid}: {reason}", file=sys.stderr)
    print(f"{len(exc.failures)} unit(s) failed and have no completion marker (details in each unit's FAILED.json "
          f"and {log}); the completed units are kept, and a re-run retries only the failed ones. No {unwritten} "
          "written.", file=sys.stderr)
    return 1


@dataclass
class _Run:
    """A run's resolved options for one phase, checked before anything is created."""

    phase: str
    settings: Settings
    jobs: int
    models: list[str]
    losses: list[str]
    folds: list[int | None]
    shard: tuple[int, int]
    n_units: int
    out_dir: Path
    data: dict
    executor: ExecutorConfig

    def grid(self) -> Any:
        """The :class:`~tfrobseg.experiment.grid.GridRun` of this run."""
        from tfrobseg.experiment.grid import GridRun

        return GridRun(self.phase, self.settings, self.out_dir, self.models, self.losses, self.folds, self.shard,
                       self.data)


def prepare_run(phase: str, args: argparse.Namespace) -> _Run:
    """:func:`prepare_runs` of one phase."""
    return prepare_runs((phase,), args)[0]


def prepare_runs(phases: Sequence[str], args: argparse.Namespace) -> list[_Run]:
    """Every check a run can fail, in order of cost, before any folder is created or any unit starts
    (:mod:`tfrobseg.experiment.preflight`), for each of ``phases`` into one results folder; raises OptionError
    or a RecordError. Under ``--executor slurm`` the settings are those of a unit's node (its GPUs, its cores)."""
    from tfrobseg.dataset.manifest import Manifest
    from tfrobseg.experiment import preflight

    preflight.check_counts(args)
    executor = resolve_executor(args)
    model_names, loss_names, shard = _check_names(args)
    if args.out:
        preflight.check_out_dir(Path(args.out))
    preflight.check_cost_options(args)
    data_dir, preset = resolve_data(args.data)
    out_dir = default_out_dir(args.out, data_dir, preset)
    preflight.check_out_dir(out_dir)
    from tfrobseg import models

    if executor.remote and args.threads is None:
        args.threads = executor.cpus_per_unit
    settings, jobs = resolve_settings(args, data_dir, preset, gpus=executor.unit_gpus(),
                                      loss_names=loss_names, model_names=model_names,
                                      volumetric=bool(set(model_names) & set(models.model_names(spatial_rank=3))))
    preflight.check_image_size(settings.image_size, settings.filters)
    preflight.check_models(model_names, settings.image_size, settings.filters, settings.patch_shape,
                           settings.model_options)
    manifest = Manifest.read(data_dir)
    folds_of: dict[str, list[int | None]] = {}
    for phase in phases:
        folds_of[phase] = list(_folds(args.folds, manifest.n_folds)) if phase == "crossval" else [None]
        patients = preflight.check_patients(phase, data_dir, manifest, folds_of[phase], settings.split_file)
        preflight.check_records(data_dir, manifest, patients)
    runs = [_Run(phase, settings, jobs, model_names, loss_names, folds_of[phase], shard, 0, out_dir,
                 manifest.fingerprint(), executor) for phase in phases]
    from tfrobseg.experiment.grid import shard_units

    for run, units in zip(runs, shard_units([run.grid() for run in runs])):
        run.n_units = len(units)
    return runs
