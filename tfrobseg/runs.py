"""Experiment bookkeeping: unit ids, config fingerprints, atomic writes, completion markers.

An *experiment unit* is one model × loss × fold cell of the study's grid (Apostolidis et al.,
Section II-G): train one network, attack its evaluation patients at every ε, write the metrics.
Each unit owns one directory ``<out>/<phase>/<model>/<loss>/<fold>/``; the unit is complete once
its marker ``DONE.json`` exists. Every file is written under a temporary name and moved into
place with :func:`os.replace`, so a killed process never leaves a half-written file that looks
complete. A unit without a marker is incomplete and is restarted from scratch (its directory is
cleared first), so an interrupted run loses at most the unit that was in flight.

The settings of a run that change the numbers (everything but the unit selection and output
options) are fingerprinted into ``<out>/run.json``; a second run into the same folder with other
settings is refused unless ``overwrite`` is set, because mixing units trained under different
settings would silently corrupt the tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

MARKER = "DONE.json"
RUN_FILE = "run.json"


class SettingsMismatchError(RuntimeError):
    """A results folder already holds a run made with different settings."""


# --------------------------------------------------------------------------- atomic writes
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and :func:`os.replace`."""
    _atomic_write_bytes(Path(path), text.encode("utf-8"))
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON (NumPy scalars converted)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    """Atomically write a DataFrame as CSV without its index."""
    return atomic_write_text(path, df.to_csv(index=False))


def atomic_save_model(model: Any, path: str | os.PathLike) -> Path:
    """Save a Keras model as ``.keras`` under a temporary name, then move it into place."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _json_default(obj: Any) -> Any:
    # NumPy scalars / arrays and paths appear in configs and metric summaries.
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------- fingerprints
def config_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``settings``."""
    blob = json.dumps(settings, sort_keys=True, default=_json_default).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (used for the data manifest)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def environment_versions() -> dict[str, str]:
    """Versions of Python, this package and the libraries that change the numbers."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("tfrobseg", "tensorflow", "keras", "numpy", "scipy", "pandas", "SimpleITK"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


# --------------------------------------------------------------------------- units
@dataclass(frozen=True)
class Unit:
    """One cell of the experiment grid.

    ``fold`` is the held-out cross-validation fold index, or ``None`` for the hold-out phase
    (train on the whole training part, evaluate on the test split).
    """

    phase: str
    model: str
    loss: str
    fold: int | None

    @property
    def uid(self) -> str:
        fold = "holdout" if self.fold is None else f"fold{self.fold}"
        return f"{self.phase}/{self.model}/{self.loss}/{fold}"

    def directory(self, out_dir: str | os.PathLike) -> Path:
        return Path(out_dir) / self.uid

    def is_complete(self, out_dir: str | os.PathLike) -> bool:
        return (self.directory(out_dir) / MARKER).is_file()


def make_grid(phase: str, models: Sequence[str], losses: Sequence[str], folds: Sequence[int | None]) -> list[Unit]:
    """The model × loss × fold grid in a fixed order (model, then loss, then fold)."""
    if phase not in ("crossval", "holdout"):
        raise ValueError(f"phase must be 'crossval' or 'holdout', got {phase!r}")
    return [Unit(phase, m, l, f) for m in models for l in losses for f in folds]


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse ``"i/n"`` (1-based shard i of n) for cluster job arrays; ``None`` means ``1/1``."""
    if text is None:
        return 1, 1
    try:
        i, n = (int(p) for p in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 2/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {text!r}: need 1 <= i <= n")
    return i, n


def select_shard(units: Sequence[Unit], shard: tuple[int, int]) -> list[Unit]:
    """Round-robin share of the grid for shard ``(i, n)``; shards are disjoint and cover the grid."""
    i, n = shard
    return [u for k, u in enumerate(units) if k % n == i - 1]


def write_marker(unit: Unit, out_dir: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Mark a unit complete; written last, after every other file of the unit is in place."""
    return atomic_write_json(unit.directory(out_dir) / MARKER, {"unit": unit.uid, **info})


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
                diff = sorted(
                    k for k in set(old.get("settings", {})) | set(settings)
                    if old.get("settings", {}).get(k) != json.loads(json.dumps(settings.get(k), default=_json_default))
                )
                raise SettingsMismatchError(
                    f"{out} already holds results made with different settings (differing: "
                    f"{', '.join(diff) or 'unknown'}). Use another --out, or --overwrite to delete them."
                )
            for phase in ("crossval", "holdout"):
                if (out / phase).exists():
                    shutil.rmtree(out / phase)
    atomic_write_json(run_file, {"settings_hash": digest, "settings": settings})
    return digest


def collect_metrics(out_dir: str | os.PathLike, phase: str | None = None) -> pd.DataFrame:
    """Concatenate the ``metrics.csv`` of every *complete* unit under ``out_dir``."""
    out = Path(out_dir)
    frames = []
    for marker in sorted(out.glob(f"{phase or '*'}/*/*/*/{MARKER}")):
        csv = marker.parent / "metrics.csv"
        if csv.exists():
            frames.append(pd.read_csv(csv))
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def completed_units(out_dir: str | os.PathLike, units: Iterable[Unit]) -> list[Unit]:
    """The subset of ``units`` whose marker exists."""
    return [u for u in units if u.is_complete(out_dir)]
