"""The manifest of a prepared data folder (``manifest.json``): the one reader and writer of its keys.

A prepared folder holds ``manifest.json`` and ``records/<PatientID>.tfrecord``. The manifest says
how the data were prepared (:class:`~tfrobseg.dataset.config.PrepConfig`), from which inputs, with
which library versions, what became of every patient (prepared or skipped, and why), and the
seeded patient split of the study (70/15/15 % train/val/test, 3 folds inside train; Apostolidis et
al., Sec. II-G). Every other module reads it through :class:`Manifest`; none indexes its JSON.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.splits import make_split
from tfrobseg.io import atomic_write_text

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "PatientEntry"]

MANIFEST_NAME = "manifest.json"
#: Bumped when the prepared records change meaning, so that a folder prepared by an older tfrobseg
#: is refused rather than mixed with new ones (see _FORMAT_CHANGES).
FORMAT_VERSION = 2
# What changed at each version, for the message that refuses an older folder.
_FORMAT_CHANGES = {
    2: "z-score statistics taken over the whole N4-corrected volume (Apostolidis et al. order) "
       "instead of the resampled 256 x 256 block",
}
SPLITS = ("train", "val", "test", "all")
OK, SKIPPED = "ok", "skipped"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _format_hint(version: Any) -> str:
    """Why an older prepared folder is refused and what to do about it ('' for a newer or odd version)."""
    if not isinstance(version, int) or version >= FORMAT_VERSION:
        return ""
    changes = "; ".join(f"{v}: {_FORMAT_CHANGES[v]}" for v in sorted(_FORMAT_CHANGES) if v > version)
    return (f" (prepared by an older tfrobseg; changed since: {changes}). Prepare the data again: "
            "data_prep/prostatex.py with --overwrite or another --out")


@dataclass
class PatientEntry:
    """What became of one patient. ``details`` holds the provenance (series, mask geometry, timings)."""

    status: str
    reason: str | None = None
    labelled: bool = False
    second_reader: bool = False
    n_slices: int = 0
    record: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK

    @classmethod
    def skipped(cls, reason: str) -> PatientEntry:
        return cls(status=SKIPPED, reason=reason)

    def to_json(self) -> dict[str, Any]:
        if not self.ok:
            return {"status": self.status, "reason": self.reason}
        return {**self.details, "status": self.status, "labelled": self.labelled,
                "second_reader": self.second_reader, "n_slices": self.n_slices, "record": self.record}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> PatientEntry:
        status = d.get("status")
        if status not in (OK, SKIPPED):
            raise ValueError(f"{where}: status must be {OK!r} or {SKIPPED!r}, got {status!r}")
        if status == SKIPPED:
            return cls.skipped(str(d.get("reason", "")))
        try:
            typed = {"labelled": bool(d["labelled"]), "second_reader": bool(d.get("second_reader", False)),
                     "n_slices": int(d["n_slices"]), "record": str(d["record"])}
        except KeyError as exc:
            raise ValueError(f"{where}: missing key {exc.args[0]!r}") from None
        details = {k: v for k, v in d.items() if k not in {*typed, "status"}}
        return cls(status=OK, details=details, **typed)


@dataclass
class Manifest:
    """A prepared data folder's manifest (see the module docstring)."""

    parameters: PrepConfig
    synthetic: bool = False
    description: str = ""
    inputs: dict[str, str | None] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    patients: dict[str, PatientEntry] = field(default_factory=dict)
    split: dict[str, list] = field(default_factory=dict)
    #: Identity of the built-in synthetic cohort (size, seed, generator version); None otherwise.
    builtin: dict[str, int] | None = None
    created: str = field(default_factory=_now)
    updated: str = ""
    format_version: int = FORMAT_VERSION

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def read(cls, data_dir: str | Path) -> Manifest:
        """The manifest of ``data_dir``; FileNotFoundError / ValueError name the file and the problem."""
        path = Path(data_dir) / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no manifest (prepare the data with data_prep/prostatex.py)")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_json(raw, str(path))

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
        for key in ("patients", "split", "parameters"):
            if key not in d:
                raise ValueError(f"{where}: missing key {key!r}")
        version = d.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"{where}: format_version {version}, this tfrobseg reads {FORMAT_VERSION}"
                             + _format_hint(version))
        try:
            parameters = PrepConfig.from_json(d["parameters"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: bad parameters ({exc})") from None
        patients = {p: PatientEntry.from_json(e, f"{where}: patient {p}") for p, e in d["patients"].items()}
        names = {f.name for f in dataclasses.fields(cls)} - {"parameters", "patients"}
        return cls(parameters=parameters, patients=patients, **{k: v for k, v in d.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["parameters"] = self.parameters.to_json()
        d["patients"] = {p: e.to_json() for p, e in self.patients.items()}
        d["skipped"] = self.skipped  # for a reader of the file; derived, not read back
        if self.builtin is None:
            del d["builtin"]
        return d

    def write(self, data_dir: str | Path) -> Path:
        """Write ``<data_dir>/manifest.json`` atomically (stamping ``updated``)."""
        self.updated = _now()
        return atomic_write_text(Path(data_dir) / MANIFEST_NAME, json.dumps(self.to_json(), indent=1) + "\n")

    # ------------------------------------------------------------------ patients and the split
    @property
    def ok_patients(self) -> list[str]:
        """Prepared patients (labelled or not), sorted."""
        return sorted(p for p, e in self.patients.items() if e.ok)

    @property
    def skipped(self) -> dict[str, str]:
        """Skipped patients and why."""
        return {p: e.reason or "" for p, e in sorted(self.patients.items()) if not e.ok}

    @property
    def n_folds(self) -> int:
        return len(self.split.get("folds", []))

    @property
    def image_size(self) -> int:
        """In-plane width of the prepared slices."""
        return self.parameters.size_hw[1]

    def resplit(self) -> None:
        """Recompute the seeded split over the labelled prepared patients (unlabelled listed apart)."""
        labelled = [p for p in self.ok_patients if self.patients[p].labelled]
        self.split = make_split(labelled, seed=self.seed)
        self.split["unlabelled"] = [p for p in self.ok_patients if not self.patients[p].labelled]

    def patients_of(self, split: str, *, fold: int | None = None, exclude_fold: int | None = None) -> list[str]:
        """Prepared patient ids of a split.

        ``split`` in {"train", "val", "test", "all"}. For "train", ``fold=k`` gives the k-th CV fold
        (the validation part of CV round k) and ``exclude_fold=k`` gives train minus fold k.
        "all" is every prepared patient, labelled or not.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if (fold is not None or exclude_fold is not None) and split != "train":
            raise ValueError("fold / exclude_fold apply to split='train' only")
        if fold is not None and exclude_fold is not None:
            raise ValueError("give fold or exclude_fold, not both")
        ok = set(self.ok_patients)
        if split == "all":
            return sorted(ok)
        ids = list(self.split[split])
        k = fold if fold is not None else exclude_fold
        if k is not None:
            if not 0 <= k < self.n_folds:
                raise ValueError(f"fold must be in [0, {self.n_folds}), got {k}")
            held_out = self.split["folds"][k]
            ids = list(held_out) if fold is not None else [p for p in ids if p not in set(held_out)]
        return [p for p in ids if p in ok]

    def entry(self, patient_id: str, data_dir: str | Path) -> PatientEntry:
        """The entry of a prepared patient; ValueError naming the manifest when it is not prepared."""
        e = self.patients.get(patient_id)
        if e is None or not e.ok:
            raise ValueError(f"{Path(data_dir) / MANIFEST_NAME}: patient {patient_id!r} is not prepared (status ok)")
        return e

    def summary(self) -> str:
        """Multi-line end-of-preparation summary."""
        ok = self.ok_patients
        unl = [p for p in ok if not self.patients[p].labelled]
        lines = [f"{len(ok)} patient(s) prepared ({len(ok) - len(unl)} labelled, {len(unl)} unlabelled"
                 + (f": {', '.join(unl)}" if unl else "") + f"), {len(self.skipped)} skipped"
                 + (" [SYNTHETIC cohort]" if self.synthetic else "")]
        s = self.split
        lines.append(f"split (seed {self.seed}): train {len(s['train'])}, val {len(s['val'])}, test "
                     f"{len(s['test'])}, folds {[len(f) for f in s['folds']]}")
        lines += [f"  skipped {pid}: {reason}" for pid, reason in self.skipped.items()]
        return "\n".join(lines)
