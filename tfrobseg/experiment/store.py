"""A results folder: the run's fingerprint, completion markers with checksums, unit locks, collecting metrics.

Layout: ``<out>/run.json`` (:class:`RunFile`: the settings fingerprint and the data's), one folder per unit
``<out>/<phase>/<model>/<loss>/<fold>/`` (:class:`~tfrobseg.experiment.units.Unit`) with
``metrics.csv``, ``config.json``, ``history.csv``, ``best.keras`` and, written last, its marker
``DONE.json`` (:class:`UnitMarker`, with the SHA-256 of ``best.keras`` and ``metrics.csv``). A unit that
failed gets ``FAILED.json`` (its one-line reason and the traceback) instead, never the marker. Every file is
written atomically (:mod:`tfrobseg.io`), so a killed process never leaves a half-written file that looks
complete. A unit is complete when its marker exists and its files still match the marker's checksums;
any other unit is cleared and restarted from scratch, so an interrupted run loses at most the units that
were in flight.

The process computing a unit holds its lock ``<out>/.locks/<phase>/<model>/<loss>/<fold>.lock``
(:class:`tfrobseg.locks.FileLock`) from before the half-finished folder is cleared until the marker or the
failure is written, so several processes (or machines) can share a results folder: each skips the units
another one holds.

The settings that change the numbers are fingerprinted into ``run.json``; a second run into the
same folder with other settings (or other data) is refused unless ``overwrite`` is set, because mixing
units trained under different settings would silently corrupt the tables.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.errors import SettingsMismatchError, UnitFilesError
from tfrobseg.experiment.settings import LEGACY_DATA_KEY
from tfrobseg.experiment.units import MARKER, PHASES, Unit
from tfrobseg.io import atomic_write_json, config_hash, file_hash, to_json

__all__ = ["CHECKSUMMED", "FAILURE_NAME", "LOCKS_DIR", "METRICS_NAME", "MODEL_NAME", "RUN_FILE", "RunFile",
           "UnitMarker", "check_settings", "collect_metrics", "count_complete", "differing", "find_unit",
           "is_complete", "lock_path", "read_failure", "reset_unit", "unit_problems", "write_failure",
           "write_marker"]

RUN_FILE = "run.json"
METRICS_NAME = "metrics.csv"
MODEL_NAME = "best.keras"
FAILURE_NAME = "FAILED.json"
LOCKS_DIR = ".locks"
#: The files whose SHA-256 a marker records: what tables (metrics) and figures (model) read.
CHECKSUMMED = (MODEL_NAME, METRICS_NAME)


# ---------------------------------------------------------------------------------------- run.json
@dataclass
class RunFile:
    """``<out>/run.json``: the settings fingerprint of the folder and the data's content fingerprint.

    ``data`` (:meth:`tfrobseg.dataset.manifest.Manifest.fingerprint`) is kept beside the settings, outside
    their hash, so that a refusal can say what changed in the data; ``None`` in folders made before it.
    """

    settings_hash: str
    settings: dict[str, Any]
    data: dict[str, Any] | None = None

    @property
    def legacy(self) -> bool:
        """Made by a tfrobseg that identified the data by the manifest file's hash (before issue 13)."""
        return LEGACY_DATA_KEY in self.settings

    @classmethod
    def read(cls, out_dir: str | os.PathLike) -> RunFile:
        """The run file of ``out_dir``; ValueError naming the file when it is unreadable."""
        path = Path(out_dir) / RUN_FILE
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(d["settings_hash"]), dict(d["settings"]), d.get("data"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable run file ({type(exc).__name__}: {exc})") from None

    def write(self, out_dir: str | os.PathLike) -> Path:
        return atomic_write_json(Path(out_dir) / RUN_FILE,
                                 {"settings_hash": self.settings_hash, "settings": self.settings, "data": self.data})


# ---------------------------------------------------------------------------------------- markers
@dataclass
class UnitMarker:
    """A unit's ``DONE.json``, written last: the unit id, its time and rows, the SHA-256 of its files.

    ``sha256`` maps each file of :data:`CHECKSUMMED` the unit has to its SHA-256; ``None`` in markers
    written before checksums (accepted as complete, reported by ``experiments/verify.py``).
    """

    unit: str = ""
    seconds: float | None = None
    rows: int | None = None
    sha256: dict[str, str] | None = None

    @classmethod
    def read(cls, unit_dir: str | os.PathLike) -> UnitMarker:
        """The marker of ``unit_dir``; ValueError naming the file when it is missing or unreadable."""
        path = Path(unit_dir) / MARKER
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            sha = d.get("sha256")
            return cls(str(d.get("unit", "")), d.get("seconds"), d.get("rows"),
                       None if sha is None else {str(k): str(v) for k, v in sha.items()})
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a readable marker ({type(exc).__name__}: {exc})") from None

    def write(self, unit_dir: str | os.PathLike) -> Path:
        return atomic_write_json(Path(unit_dir) / MARKER, {"unit": self.unit, "seconds": self.seconds,
                                                           "rows": self.rows, "sha256": self.sha256})

    def mismatches(self, unit_dir: str | os.PathLike) -> list[str]:
        """Each recorded file that is missing or whose SHA-256 differs, as "<file>: <what>" ([] when all match)."""
        problems = []
        for name, digest in (self.sha256 or {}).items():
            path = Path(unit_dir) / name
            if not path.is_file():
                problems.append(f"{name}: missing")
            elif file_hash(path) != digest:
                problems.append(f"{name}: SHA-256 differs from the one in {MARKER} (changed or corrupt)")
        return problems


def write_marker(unit: Unit, out_dir: str | os.PathLike, *, seconds: float | None = None,
                 rows: int | None = None) -> Path:
    """Mark a unit complete, with the checksums of its files; written last, after every other file."""
    d = unit.directory(out_dir)
    sha = {name: file_hash(d / name) for name in CHECKSUMMED if (d / name).is_file()}
    return UnitMarker(unit.uid, seconds, rows, sha).write(d)


def unit_problems(unit_dir: str | os.PathLike) -> list[str]:
    """Why a unit that has a marker is not complete: an unreadable marker or files that differ from its
    checksums ([] when it is complete)."""
    try:
        marker = UnitMarker.read(unit_dir)
    except ValueError as exc:
        return [f"{MARKER}: unreadable ({str(exc).split(' (', 1)[-1].rstrip(')')})"]
    return marker.mismatches(unit_dir)


def is_complete(unit: Unit, out_dir: str | os.PathLike) -> bool:
    """The unit has its marker and its files match the marker's checksums."""
    d = unit.directory(out_dir)
    return (d / MARKER).is_file() and not unit_problems(d)


def write_failure(unit: Unit, out_dir: str | os.PathLike, reason: str, details: str) -> Path:
    """Record why a unit failed (``reason``: one line; ``details``: the traceback). No marker is written,
    so the unit counts as incomplete and a re-run retries it from scratch."""
    return atomic_write_json(unit.directory(out_dir) / FAILURE_NAME,
                             {"unit": unit.uid, "reason": reason, "details": details})


def read_failure(unit_dir: str | os.PathLike) -> str:
    """The one-line reason of a unit's ``FAILED.json`` (what :func:`write_failure` recorded)."""
    path = Path(unit_dir) / FAILURE_NAME
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["reason"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{path} unreadable ({type(exc).__name__})"


def reset_unit(unit: Unit, out_dir: str | os.PathLike) -> bool:
    """Remove the files of a unit that is not complete (:func:`is_complete`) so that it restarts cleanly;
    returns True if any existed. Call it holding the unit's lock (:func:`lock_path`)."""
    d = unit.directory(out_dir)
    if d.exists() and not is_complete(unit, out_dir):
        shutil.rmtree(d)
        return True
    return False


# ---------------------------------------------------------------------------------------- locks
def lock_path(unit: Unit, out_dir: str | os.PathLike) -> Path:
    """``<out>/.locks/<phase>/<model>/<loss>/<fold>.lock``, held by the process computing the unit."""
    return Path(out_dir) / LOCKS_DIR / f"{unit.uid}.lock"


# ---------------------------------------------------------------------------------------- settings
def count_complete(out_dir: str | os.PathLike) -> int:
    """Units with a marker under ``out_dir`` (their files are not hashed)."""
    return sum(1 for _ in Path(out_dir).glob(f"*/*/*/*/{MARKER}"))


def check_settings(out_dir: str | os.PathLike, settings: Mapping[str, Any], *, data: Mapping[str, Any] | None = None,
                   overwrite: bool = False) -> str:
    """Record ``settings`` (and the ``data`` fingerprint) in ``<out>/run.json``, or refuse if a different
    run is already there. Returns the settings hash.

    With ``overwrite`` an existing run's unit folders are deleted first, so that nothing computed under
    the old settings survives.
    """
    out = Path(out_dir)
    digest = config_hash(settings)
    if (out / RUN_FILE).exists():
        try:
            old = RunFile.read(out)
        except ValueError as exc:
            old = None
            reason = f"{exc}. Use another --out, or --overwrite, which DELETES its {count_complete(out)} completed unit(s)"
        if old is None or old.settings_hash != digest:
            if not overwrite:
                raise SettingsMismatchError(reason if old is None else _refusal(out, old, settings, data))
            for phase in PHASES:
                if (out / phase).exists():
                    shutil.rmtree(out / phase)
    RunFile(digest, json.loads(to_json(settings)), None if data is None else json.loads(to_json(data))).write(out)
    return digest


def _refusal(out: Path, old: RunFile, settings: Mapping[str, Any], data: Mapping[str, Any] | None) -> str:
    """Why ``out`` cannot take a run with ``settings``: what differs, and what each way out costs."""
    n = count_complete(out)
    deletes = f"--overwrite, which DELETES its {n} completed unit(s)"
    if old.legacy:
        return (f"{out} was made by an older tfrobseg (its {RUN_FILE} identifies the data by the manifest file's "
                f"hash): this version does not add units to it. Its tables and figures still read "
                f"(experiments/tables.py --results {out}, figures/make_figures.py --results {out}); to run with this "
                f"version use another --out, or {deletes}.")
    names = differing(old.settings, json.loads(to_json(settings)))
    others = [name for name in names if name != "data_fingerprint"]
    parts = []
    if "data_fingerprint" in names:
        changes = _data_changes(old.data, data)
        parts.append(f"the data in {settings.get('data_dir')} changed since these results were made ({changes})")
    if others or not parts:
        parts.append(f"other settings differ (differing: {', '.join(others) or 'unknown'})")
    fix = (f"To keep these results use another --out (or restore the data); {deletes}." if not others
           else f"Use another --out, or {deletes}.")
    return f"{out} already holds results made with different settings: {'; '.join(parts)}. {fix}"


def _data_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> str:
    if old is None or new is None:
        return "content fingerprint differs"
    from tfrobseg.dataset.manifest import describe_data_changes

    return "; ".join(describe_data_changes(dict(old), dict(new))) or "content fingerprint differs"


def differing(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ (``train.seed``), nested settings included."""
    names = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            names += differing(a, b, f"{prefix}{key}.")
        elif a != b:
            names.append(f"{prefix}{key}")
    return names


# ---------------------------------------------------------------------------------------- reading results
def collect_metrics(out_dir: str | os.PathLike, phase: str | None = None) -> pd.DataFrame:
    """Concatenate the ``metrics.csv`` of every unit with a marker under ``out_dir``."""
    out = Path(out_dir)
    frames = []
    for marker in sorted(out.glob(f"{phase or '*'}/*/*/*/{MARKER}")):
        csv = marker.parent / METRICS_NAME
        if csv.exists():
            frames.append(pd.read_csv(csv))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def find_unit(results_dir: str | os.PathLike, model: str, loss: str) -> Path | None:
    """The complete unit of ``model`` + ``loss`` with a saved model: cross-validation fold 0 first
    (the lowest fold present), else the hold-out unit.

    Raises :class:`~tfrobseg.errors.UnitFilesError` naming the unit when its model differs from the
    checksum in its marker.
    """
    root = Path(results_dir)
    folds = sorted((root / "crossval" / model / loss).glob("fold*"))
    for d in [*folds, Unit("holdout", model, loss, None).directory(root)]:
        if (d / MARKER).is_file() and (d / MODEL_NAME).is_file():
            problems = [p for p in unit_problems(d) if p.startswith((MODEL_NAME, MARKER))]
            if problems:
                raise UnitFilesError(f"{d.relative_to(root).as_posix()}: {'; '.join(problems)}. Recompute it: run "
                                     f"its experiment again with --out {root} (units whose files changed are "
                                     f"recomputed); experiments/verify.py --results {root} lists every such unit")
            return d
    return None
