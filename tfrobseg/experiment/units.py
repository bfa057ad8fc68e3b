"""Units of the experiment grid, which patients each uses, and the record each leaves (``config.json``).

An *experiment unit* is one model × loss × fold cell of the study's grid (Apostolidis et al.,
Section II-G): train one network, attack its evaluation patients at every ε, write the metrics.
Each unit owns the folder ``<out>/<phase>/<model>/<loss>/<fold>/``; :class:`UnitRecord` is the one
reader and writer of its ``config.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.experiment.settings import Settings
from tfrobseg.io import atomic_write_json

__all__ = ["MARKER", "PHASES", "RECORD_NAME", "Unit", "UnitPatients", "UnitRecord", "load_split", "make_grid",
           "parse_shard", "select_shard", "select_shards", "unit_patients"]

PHASES = ("crossval", "holdout")
RECORD_NAME = "config.json"
#: Written last in a unit's folder: the unit is complete once it exists.
MARKER = "DONE.json"


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


def make_grid(phase: str, models: list[str] | tuple[str, ...], losses: list[str] | tuple[str, ...],
              folds: list[int | None] | tuple[int | None, ...]) -> list[Unit]:
    """The model × loss × fold grid in a fixed order (model, then loss, then fold)."""
    if phase not in PHASES:
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


def select_shard(units: list[Unit], shard: tuple[int, int]) -> list[Unit]:
    """Round-robin share of the grid for shard ``(i, n)``; shards are disjoint and cover the grid."""
    i, n = shard
    return [u for k, u in enumerate(units) if k % n == i - 1]


def select_shards(grids: list[list[Unit]], shard: tuple[int, int]) -> list[list[Unit]]:
    """:func:`select_shard` of several grids one call runs (``study.py``'s two phases, ``defenses.py``'s folders)
    taken one after the other, so that the n shards of the call get one unit each when it has n units."""
    flat = [(g, unit) for g, grid in enumerate(grids) for unit in grid]
    picked: list[list[Unit]] = [[] for _ in grids]
    for g, unit in select_shard(flat, shard):  # type: ignore[arg-type]
        picked[g].append(unit)
    return picked


class UnitPatients(NamedTuple):
    """The patients a unit trains on, validates on (early stopping) and attacks."""

    train: list[str]
    val: list[str]
    eval: list[str]


def load_split(path: str | os.PathLike) -> dict[str, list[str]]:
    """An explicit split file: JSON with "train", "val" (may be empty) and "test" patient lists."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"split file not found: {p}")
    split = json.loads(p.read_text(encoding="utf-8"))
    for key in ("train", "test"):
        if not isinstance(split.get(key), list) or not split[key]:
            raise ValueError(f"split file {p}: '{key}' must be a non-empty list of patient ids")
    split.setdefault("val", [])
    overlap = (set(split["train"]) | set(split["val"])) & set(split["test"])
    if overlap:
        raise ValueError(f"split file {p}: patients in both training and test: {sorted(overlap)}")
    return split


def unit_patients(unit: Unit, manifest: Manifest, split: dict[str, list[str]] | None) -> UnitPatients:
    """Train, val and eval patients of a unit: from an explicit split file, else the manifest's split."""
    if split is not None:
        unknown = sorted((set(split["train"]) | set(split["val"]) | set(split["test"])) - set(manifest.ok_patients))
        if unknown:
            raise ValueError(f"split file names patients not prepared (status ok) in the data: {unknown}")
        return UnitPatients(list(split["train"]), list(split["val"]), list(split["test"]))
    val = manifest.patients_of("val")
    if unit.fold is None:
        return UnitPatients(manifest.patients_of("train"), val, manifest.patients_of("test"))
    return UnitPatients(manifest.patients_of("train", exclude_fold=unit.fold), val,
                        manifest.patients_of("train", fold=unit.fold))


@dataclass
class UnitRecord:
    """What a finished unit was made with and how it went: its ``config.json``."""

    unit: Unit
    settings: Settings
    patients: UnitPatients
    training: dict[str, Any]  # epochs_run, best_epoch, best_val_loss, seconds, strategy, replicas, params
    seconds: dict[str, float]  # train, attack_and_metrics, total
    versions: dict[str, str] = field(default_factory=dict)
    keras_dtype_policy: str = "float32"

    @property
    def attack_loss(self) -> str:
        return self.settings.attack_loss_for(self.unit.loss)

    def to_json(self) -> dict[str, Any]:
        u = self.unit
        return {"unit": u.uid, "phase": u.phase, "model": u.model, "loss": u.loss, "fold": u.fold,
                "settings": self.settings.to_json(), "patients": self.patients._asdict(), "seed": self.settings.train.seed,
                "versions": self.versions, "keras_dtype_policy": self.keras_dtype_policy,
                "training": self.training, "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UnitRecord:
        settings = d["settings"]
        if "train" not in settings:
            # Records written before Settings embedded the training configuration (tfrobseg 0.1
            # results folders): the training fields sat beside the others, copied in "train_config".
            train = d["train_config"]
            settings = {**{k: v for k, v in settings.items() if k not in train}, "train": train, "split_file": None}
        return cls(unit=Unit(d["phase"], d["model"], d["loss"], d["fold"]), settings=Settings.from_json(settings),
                   patients=UnitPatients(**d["patients"]), training=d["training"], seconds=d["seconds"],
                   versions=d.get("versions", {}), keras_dtype_policy=d.get("keras_dtype_policy", "float32"))

    def write(self, out_dir: str | os.PathLike) -> Path:
        return atomic_write_json(self.unit.directory(out_dir) / RECORD_NAME, self.to_json())

    @classmethod
    def read(cls, unit_dir: str | os.PathLike) -> UnitRecord:
        path = Path(unit_dir) / RECORD_NAME
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable unit record ({type(exc).__name__}: {exc})") from None
