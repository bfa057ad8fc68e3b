"""A results folder: the run's fingerprint, completion markers with checksums, unit locks, collecting metrics.

Layout: ``<out>/run.json`` (:class:`RunFile`: the settings fingerprint and the data's), one folder per unit
``<out>/<phase>/<model>/<loss>/<fold>/`` (:class:`~tfrobseg.experiment.units.Unit`) with
``metrics.csv``, ``config.json``, ``history.csv``, ``best.keras`` and, written last, its marker
``DONE.json`` (:class:`UnitMarker`, with the SHA-256 of ``best.keras`` and ``metrics.csv``). Attacks evaluated
later on a complete unit (``experiments/attack.py``) go to ``<unit>/attacks/<key>.csv`` with their record
``<key>.json`` (:class:`AttackRecord`, written last); :func:`collect_attack_rows` reads them with the units'
own rows. A unit that
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

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.errors import InputError, SettingsMismatchError, UnitFilesError
from tfrobseg.experiment.settings import LEGACY_DATA_KEY, Settings
from tfrobseg.experiment.units import MARKER, PHASES, Unit, UnitRecord
from tfrobseg.io import atomic_write_json, config_hash, file_hash, to_json

__all__ = ["ATTACKS_DIR", "CHECKSUMMED", "FAILURE_NAME", "LOCKS_DIR", "METRICS_NAME", "MODEL_NAME", "ROW_KEYS",
           "RUN_FILE", "AttackRecord", "RunFile", "UnitMarker", "attack_lock_path", "check_settings",
           "collect_attack_rows", "collect_metrics", "count_complete", "differing", "find_unit", "folder_settings",
           "is_complete", "lock_path", "model_sha256", "read_failure", "reset_unit", "results_path", "run_defense",
           "tidy_rows", "unit_problems", "write_failure", "write_marker", "write_results"]

RUN_FILE = "run.json"
METRICS_NAME = "metrics.csv"
MODEL_NAME = "best.keras"
FAILURE_NAME = "FAILED.json"
LOCKS_DIR = ".locks"
ATTACKS_DIR = "attacks"
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


def attack_lock_path(unit: Unit, out_dir: str | os.PathLike, key: str) -> Path:
    """``<out>/.locks/<phase>/<model>/<loss>/<fold>/attacks/<key>.lock``, held by the process evaluating
    attack ``key`` on the unit (``experiments/attack.py``)."""
    return Path(out_dir) / LOCKS_DIR / unit.uid / ATTACKS_DIR / f"{key}.lock"


# ---------------------------------------------------------------------------------------- settings
def count_complete(out_dir: str | os.PathLike) -> int:
    """Units with a marker under ``out_dir`` (their files are not hashed)."""
    return sum(1 for _ in Path(out_dir).glob(f"*/*/*/*/{MARKER}"))


def run_defense(out_dir: str | os.PathLike) -> str | None:
    """The label of the defense a results folder's networks were trained under (its ``run.json``), ``None``
    without one or without a readable run file."""
    from tfrobseg.defenses.config import DefenseConfig

    try:
        defense = RunFile.read(out_dir).settings.get("defense")
    except ValueError:
        return None
    return DefenseConfig.from_json(defense).label if defense else None


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


def folder_settings(root: str | os.PathLike) -> tuple[Settings, list[UnitRecord]]:
    """The settings ``root``'s units were made with (those of a complete unit whose fingerprint is ``run.json``'s,
    with the data folder as ``run.json`` has it: absolute), and the records of its complete units (a data
    folder they recorded relative to where the run started read as ``run.json``'s absolute one).

    Raises :class:`~tfrobseg.errors.InputError` (one line naming the file) when ``run.json`` is missing,
    unreadable or made by an older tfrobseg, no unit has its settings, or the data or split file they name is
    not the one the units were made with.
    """
    root = Path(root)
    try:
        run = RunFile.read(root)
    except ValueError as exc:
        raise InputError(f"{exc}: not a results folder of crossval.py / holdout.py") from None
    if run.legacy:
        raise InputError(f"{root} was made by an older tfrobseg (its {RUN_FILE} identifies the data by the manifest "
                         "file's hash): its settings cannot be checked against its data")
    records = []
    for marker in sorted(root.glob(f"*/*/*/*/{MARKER}")):
        try:
            records.append(UnitRecord.read(marker.parent))
        except ValueError:
            continue  # verify.py reports it; another unit gives the settings
    # A unit records --data as given, relative to where the run was started; run.json has it absolute. The data
    # is identified by its content fingerprint, so a relative folder is read as run.json's: the folder can be
    # attacked from any working directory.
    records = [r if os.path.isabs(r.settings.data_dir) else
               dataclasses.replace(r, settings=dataclasses.replace(r.settings, data_dir=str(run.settings["data_dir"])))
               for r in records]
    same = [r.settings for r in records if config_hash(r.settings.fingerprint()) == run.settings_hash]
    if not same:
        raise InputError(f"{root}: no complete unit was made with the settings of its {RUN_FILE} "
                         f"(experiments/verify.py --results {root} says why)")
    settings = dataclasses.replace(same[0], data_dir=str(run.settings["data_dir"]))
    _check_inputs(settings)
    return settings, records


def _check_inputs(settings: Settings) -> None:
    """The data and split file are still those the folder's units were made with."""
    from tfrobseg.dataset.manifest import Manifest

    try:
        content = Manifest.read(settings.data_dir).content_hash()
    except (OSError, ValueError) as exc:
        raise InputError(f"{settings.data_dir}: the folder's data cannot be read ({exc})") from None
    if content != settings.data_fingerprint:
        raise InputError(f"{settings.data_dir}: the data changed since the folder's units were made (content "
                         "fingerprint differs)")
    split = settings.split_file
    if split and (not Path(split).is_file() or file_hash(split) != settings.split_sha256):
        raise InputError(f"{split}: the split file of the folder's units is missing or changed")


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
def results_path(out_dir: str | os.PathLike, phase: str) -> Path:
    """``<out>/results_<phase>.csv``: every complete unit's rows of a phase in one table."""
    return Path(out_dir) / f"results_{phase}.csv"


def write_results(out_dir: str | os.PathLike, phase: str) -> pd.DataFrame:
    """Collect the phase's rows (:func:`collect_metrics`) and, when there are any, write them to
    :func:`results_path` (at the end of a grid call, and by ``verify.py --merge`` after many jobs); returns them."""
    from tfrobseg.io import atomic_write_csv

    frame = collect_metrics(out_dir, phase)
    if not frame.empty:
        atomic_write_csv(results_path(out_dir, phase), frame)
    return frame


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


# ---------------------------------------------------------------------------------------- attacks of finished units
#: What identifies a tidy row: the unit, the attack with its options and loss, the patient, ε.
ROW_KEYS = ("phase", "model", "loss", "fold", "attack", "attack_params", "attack_loss", "patient_id", "epsilon")


@dataclass
class AttackRecord:
    """``<unit>/attacks/<key>.json``, written after its ``<key>.csv``: an attack evaluated on a complete unit
    by ``experiments/attack.py``.

    ``spec`` is :meth:`tfrobseg.experiment.attacks.AttackSpec.to_json`; ``model_sha256`` the SHA-256 of the
    ``best.keras`` attacked (a record of another model is stale: recomputed, never read); ``csv_sha256`` that
    of the rows; ``sources`` (ensemble only) where each member's rows came from (``metrics.csv`` or
    ``attacks/<key>.csv``).
    """

    unit: str
    key: str
    spec: dict[str, Any]
    attack_loss: str
    epsilons: list[float]
    batch_size: int
    attack_precision: str
    model_sha256: str
    csv_sha256: str
    rows: int
    seconds: float
    sources: dict[str, str] | None = None
    versions: dict[str, str] | None = None

    @staticmethod
    def paths(unit_dir: str | os.PathLike, key: str) -> tuple[Path, Path]:
        """``(<unit>/attacks/<key>.csv, <unit>/attacks/<key>.json)``."""
        folder = Path(unit_dir) / ATTACKS_DIR
        return folder / f"{key}.csv", folder / f"{key}.json"

    @classmethod
    def read(cls, path: str | os.PathLike) -> AttackRecord:
        """The record at ``path``; ValueError naming the file when it is unreadable."""
        try:
            return cls(**json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable attack record ({type(exc).__name__}: {exc})") from None

    def write(self, unit_dir: str | os.PathLike) -> Path:
        return atomic_write_json(self.paths(unit_dir, self.key)[1], dataclasses.asdict(self))

    def problem(self, unit_dir: str | os.PathLike, model_sha256: str) -> str | None:
        """Why the record's rows cannot be used for the unit's model now (None when they can)."""
        csv = self.paths(unit_dir, self.key)[0]
        if self.model_sha256 != model_sha256:
            return f"made on another {MODEL_NAME} (SHA-256 differs)"
        if not csv.is_file():
            return f"{csv.name}: missing"
        if file_hash(csv) != self.csv_sha256:
            return f"{csv.name}: SHA-256 differs from its record (changed or corrupt)"
        return None


def model_sha256(unit_dir: str | os.PathLike) -> str:
    """The SHA-256 of a complete unit's ``best.keras``, from its marker (hashed when the marker has none)."""
    sha = UnitMarker.read(unit_dir).sha256 or {}
    return sha.get(MODEL_NAME) or file_hash(Path(unit_dir) / MODEL_NAME)


def tidy_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the tidy format of issue 15: ``attack_params`` ``{}`` where a ``metrics.csv`` predates it (its
    attack ran with its defaults: the command line had no attack options) and ``worst_attack`` empty outside
    the ensemble (CSV reads an empty string back as NaN)."""
    if df.empty or "attack" not in df:
        return df
    df = df.copy()
    df["attack_params"] = df["attack_params"].fillna("{}") if "attack_params" in df else "{}"
    df["worst_attack"] = df["worst_attack"].fillna("") if "worst_attack" in df else ""
    return df


def collect_attack_rows(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Every attack's rows of ``out_dir`` in one tidy frame: the ``metrics.csv`` of each unit with a marker and
    the rows of each of its attack records (``experiments/attack.py``) that belong to its model and match their
    checksum. A row that appears twice (same unit, attack, ``attack_params``, attack loss, patient and ε) is
    kept once, the unit's own first."""
    frames = []
    for marker in sorted(Path(out_dir).glob(f"*/*/*/*/{MARKER}")):
        d = marker.parent
        if (d / METRICS_NAME).is_file():
            frames.append(pd.read_csv(d / METRICS_NAME))
        records = sorted((d / ATTACKS_DIR).glob("*.json"))
        if not records:
            continue
        try:
            model = model_sha256(d)
        except (ValueError, OSError):
            continue  # verify.py reports the unit
        for path in records:
            try:
                record = AttackRecord.read(path)
            except ValueError:
                continue
            if record.problem(d, model) is None:
                frames.append(pd.read_csv(AttackRecord.paths(d, record.key)[0]))
    if not frames:
        return pd.DataFrame()
    rows = tidy_rows(pd.concat(frames, ignore_index=True))
    keys = [k for k in ROW_KEYS if k in rows.columns]
    rounded = rows.assign(epsilon=rows["epsilon"].astype(float).round(10))
    return rows[~rounded.duplicated(keys)].reset_index(drop=True)
