"""The units Figures 1–3 need that a results folder lacks, trained on demand into ``<results>/figure_units``.

Figure 1 shows the ResU-Net, but the main command (``crossval.py --model recurrent_unet``) trains only the
Recurrent U-Net, so its folder alone can never give that figure. :func:`train_figure_unit` trains just the
unit a figure shows (fold 0 of the cross-validation, or the hold-out unit of a hold-out-only folder) with the
folder's own settings: those its complete units were made with, which its ``run.json`` fingerprints.

The unit goes into a results tree of its own, ``<results>/figure_units/`` (its own ``run.json`` with the same
settings), not into the folder: there it would add a one-fold row to the run's tables. The folder's readers
(:func:`tfrobseg.experiment.store.collect_metrics`, the tables, ``experiments/verify.py``) look only at
``<results>/<phase>/…`` and do not see it. A ``figure_units`` tree made with other settings than its folder
(the folder was re-run with ``--overwrite``) is ignored, and replaced when a unit is trained into it.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from tfrobseg.errors import FigureUnitError, InputError, UnitFilesError, UnitsFailed
from tfrobseg.experiment import store
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import Unit, UnitRecord

__all__ = ["FIGURE_UNITS_DIR", "find_figure_unit", "folder_settings", "train_figure_unit"]

FIGURE_UNITS_DIR = "figure_units"


def find_figure_unit(root: Path, model: str, loss: str) -> Path | None:
    """The complete unit of ``model`` + ``loss`` in ``root`` (:func:`~tfrobseg.experiment.store.find_unit`),
    else in ``root/figure_units`` when that tree has the folder's settings. A damaged unit there counts as
    missing: training it again (:func:`train_figure_unit`) recomputes it."""
    unit = store.find_unit(root, model, loss)
    sub = root / FIGURE_UNITS_DIR
    if unit is not None or not _same_run(root, sub):
        return unit
    try:
        return store.find_unit(sub, model, loss)
    except UnitFilesError:
        return None


def _same_run(root: Path, sub: Path) -> bool:
    try:
        return store.RunFile.read(sub).settings_hash == store.RunFile.read(root).settings_hash
    except ValueError:
        return False


def folder_settings(root: Path) -> tuple[Settings, list[UnitRecord]]:
    """:func:`tfrobseg.experiment.store.folder_settings`: the settings of ``root``'s units and the records of its
    complete units; :class:`~tfrobseg.errors.FigureUnitError` (one line) when they are unknown or their data changed.
    """
    try:
        return store.folder_settings(root)
    except InputError as exc:
        raise FigureUnitError(f"{exc}; the settings to train a figure's unit with are unknown; figures/make_figures.py "
                              "--no-train skips the figures whose unit is missing") from None


def train_figure_unit(root: Path, unit: Unit, number: int, *, progress: bool = True, quiet: bool = False) -> Path:
    """Train ``unit`` (the one Figure ``number`` shows) with the folder's settings into ``root/figure_units``,
    saying so first; returns its folder.

    Raises :class:`~tfrobseg.errors.FigureUnitError` (one line naming the unit) when the settings are
    unknown (:func:`folder_settings`) or the training fails.
    """
    from tfrobseg.experiment.grid import run_grid

    settings, records = folder_settings(root)
    out = root / FIGURE_UNITS_DIR
    where = "crossval fold 0" if unit.fold == 0 else "holdout"
    same_model = [r.seconds.get("total", 0.0) for r in records if r.unit.model == unit.model]
    seconds = statistics.median(same_model or [r.seconds.get("total", 0.0) for r in records])
    say = (lambda line: None) if quiet else (lambda line: print(line, flush=True))
    say(f"Figure {number} needs {unit.model} + {unit.loss} ({where}), not in {root}: training it with the folder's "
        f"settings into {out} (about {max(1, round(seconds / 60))} min; --no-train to skip)")
    if (out / store.RUN_FILE).exists() and not _same_run(root, out):
        say(f"{out} was made with other settings than {root}: its units are replaced")
    try:
        run_grid(unit.phase, settings, out, models=[unit.model], losses=[unit.loss], folds=[unit.fold], jobs=1,
                 overwrite=True, progress=progress, quiet=quiet)
    except UnitsFailed as exc:
        raise FigureUnitError(f"Figure {number}: training {FIGURE_UNITS_DIR}/{unit.uid} failed: "
                              f"{exc.failures.get(unit.uid, exc)} (details: {unit.directory(out) / store.FAILURE_NAME})"
                              ) from None
    if not store.is_complete(unit, out):
        raise FigureUnitError(f"Figure {number}: {FIGURE_UNITS_DIR}/{unit.uid} is being trained by another process "
                              f"(see {out / 'log.txt'}); run figures/make_figures.py again when it finishes")
    return unit.directory(out)
