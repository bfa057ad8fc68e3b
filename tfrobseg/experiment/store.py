"""A results folder: the run's fingerprint, completion markers, restarts, and collecting metrics.

Layout: ``<out>/run.json`` (the settings fingerprint), one folder per unit
``<out>/<phase>/<model>/<loss>/<fold>/`` (:class:`~tfrobseg.experiment.units.Unit`) with
``metrics.csv``, ``config.json``, ``history.csv``, ``best.keras`` and, written last, its marker
``DONE.json``. A unit that failed gets ``FAILED.json`` (its one-line reason and the traceback)
instead, never the marker. Every file is written atomically (:mod:`tfrobseg.io`), so a killed process never
leaves a half-written file that looks complete. A unit without a marker is incomplete and is
restarted from scratch (its folder is cleared first), so an interrupted run loses at most the
units that were in flight.

The settings that change the numbers are fingerprinted into ``run.json``; a second run into the
same folder with other settings is refused unless ``overwrite`` is set, because mixing units
trained under different settings would silently corrupt the tables.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.errors import SettingsMismatchError
from tfrobseg.experiment.units import MARKER, PHASES, Unit
from tfrobseg.io import atomic_write_json, config_hash, to_json

__all__ = ["FAILURE_NAME", "METRICS_NAME", "RUN_FILE", "check_settings", "collect_metrics", "completed_units",
           "find_unit", "reset_unit", "write_failure", "write_marker"]

RUN_FILE = "run.json"
METRICS_NAME = "metrics.csv"
MODEL_NAME = "best.keras"
FAILURE_NAME = "FAILED.json"


def write_marker(unit: Unit, out_dir: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Mark a unit complete; written last, after every other file of the unit is in place."""
    return atomic_write_json(unit.directory(out_dir) / MARKER, {"unit": unit.uid, **info})


def write_failure(unit: Unit, out_dir: str | os.PathLike, reason: str, details: str) -> Path:
    """Record why a unit failed (``reason``: one line; ``details``: the traceback). No marker is written,
    so the unit counts as incomplete and a re-run retries it from scratch."""
    return atomic_write_json(unit.directory(out_dir) / FAILURE_NAME,
                             {"unit": unit.uid, "reason": reason, "details": details})


def reset_unit(unit: Unit, out_dir: str | os.PathLike) -> bool:
    """Remove a half-finished unit's files so that it restarts cleanly; returns True if any existed."""
    d = unit.directory(out_dir)
    if d.exists() and not (d / MARKER).exists():
        shutil.rmtree(d)
        return True
    return False


def check_settings(out_dir: str | os.PathLike, settings: Mapping[str, Any], *, overwrite: bool = False) -> str:
    """Record ``settings`` in ``<out>/run.json``, or refuse if a different run is already there.

    Returns the settings hash. With ``overwrite`` an existing run's unit folders are deleted
    first, so that nothing computed under the old settings survives.
    """
    out = Path(out_dir)
    digest = config_hash(settings)
    run_file = out / RUN_FILE
    if run_file.exists():
        old = json.loads(run_file.read_text(encoding="utf-8"))
        if old.get("settings_hash") != digest:
            if not overwrite:
                diff = _differing(old.get("settings", {}), json.loads(to_json(settings)))
                raise SettingsMismatchError(
                    f"{out} already holds results made with different settings (differing: "
                    f"{', '.join(diff) or 'unknown'}). Use another --out, or --overwrite to delete them."
                )
            for phase in PHASES:
                if (out / phase).exists():
                    shutil.rmtree(out / phase)
    atomic_write_json(run_file, {"settings_hash": digest, "settings": settings})
    return digest


def _differing(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (``train.seed``), nested settings included."""
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            names += _differing(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key}")
    return names


def collect_metrics(out_dir: str | os.PathLike, phase: str | None = None) -> pd.DataFrame:
    """Concatenate the ``metrics.csv`` of every *complete* unit under ``out_dir``."""
    out = Path(out_dir)
    frames = []
    for marker in sorted(out.glob(f"{phase or '*'}/*/*/*/{MARKER}")):
        csv = marker.parent / METRICS_NAME
        if csv.exists():
            frames.append(pd.read_csv(csv))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def completed_units(out_dir: str | os.PathLike, units: Iterable[Unit]) -> list[Unit]:
    """The subset of ``units`` whose marker exists."""
    return [u for u in units if u.is_complete(out_dir)]


def find_unit(results_dir: str | os.PathLike, model: str, loss: str) -> Path | None:
    """The complete unit of ``model`` + ``loss`` with a saved model: cross-validation fold 0 first
    (the lowest fold present), else the hold-out unit."""
    root = Path(results_dir)
    folds = sorted((root / "crossval" / model / loss).glob("fold*"))
    for d in [*folds, Unit("holdout", model, loss, None).directory(root)]:
        if (d / MARKER).is_file() and (d / MODEL_NAME).is_file():
            return d
    return None
