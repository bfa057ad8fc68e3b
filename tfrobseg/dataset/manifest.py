"""The manifest of a prepared data folder (``manifest.json``): the one reader and writer of its keys.

A prepared folder holds ``manifest.json`` and ``records/<PatientID>.tfrecord``. The manifest says
how the data were prepared (:class:`~tfrobseg.dataset.config.PrepConfig`), from which inputs, with
which library versions, what became of every patient (prepared or skipped, and why), and the
seeded patient split of the study (70/15/15 % train/val/test, 3 folds inside train; Apostolidis et
al., Sec. II-G). Every other module reads it through :class:`Manifest`; none indexes its JSON.

:meth:`Manifest.fingerprint` / :meth:`Manifest.content_hash` identify the prepared *data* (records'
checksums, parameters, split), not the file: re-running the preparation with nothing to do keeps
them; :func:`describe_data_changes` says in words what differs between two fingerprints.

Zonal labels (issue 17) did not change the format: a patient prepared with a zonal map has
``"has_zones": true`` in its entry (and in the fingerprint); the key is left out otherwise, so the
manifests and fingerprints of folders prepared before stay as they were, and read with
``has_zones`` false.
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
from tfrobseg.io import atomic_write_text, config_hash

__all__ = ["FORMAT_VERSION", "MANIFEST_NAME", "Manifest", "PatientEntry", "describe_data_changes", "split_moves"]

MANIFEST_NAME = "manifest.json"
#: Bumped when the prepared records change meaning, so that a folder prepared by an older tfrobseg
#: is refused rather than mixed with new ones (see _FORMAT_CHANGES).
FORMAT_VERSION = 3
# What changed at each version, for the message that refuses an older folder.
_FORMAT_CHANGES = {
    2: "z-score statistics taken over the whole N4-corrected volume (Apostolidis et al. order) "
       "instead of the resampled 256 x 256 block",
    3: "SHA-256 of every record file (sha256), checked before the records are used",
}
#: Older versions still read: their records are valid, only the checksums are missing, and the next
#: data_prep/prostatex.py run with the same parameters adds them (no patient is prepared again).
UPGRADABLE = (2,)
SPLITS = ("train", "val", "test", "all")
OK, SKIPPED = "ok", "skipped"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _format_hint(version: Any) -> str:
    """Why an older prepared folder is refused and what to do about it ('' for a newer or odd version)."""
    if not isinstance(version, int) or version >= FORMAT_VERSION or version in UPGRADABLE:
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
    #: SHA-256 of the record file (None in a format-2 manifest, until the preparation records it).
    sha256: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: The record holds a zonal label map (``zones``); written to the file only when true.
    has_zones: bool = False

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
                "second_reader": self.second_reader, "n_slices": self.n_slices, "record": self.record,
                "sha256": self.sha256, **({"has_zones": True} if self.has_zones else {})}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str) -> PatientEntry:
        status = d.get("status")
        if status not in (OK, SKIPPED):
            raise ValueError(f"{where}: status must be {OK!r} or {SKIPPED!r}, got {status!r}")
        if status == SKIPPED:
            return cls.skipped(str(d.get("reason", "")))
        try:
            typed = {"labelled": bool(d["labelled"]), "second_reader": bool(d.get("second_reader", False)),
                     "n_slices": int(d["n_slices"]), "record": str(d["record"]),
                     "sha256": None if d.get("sha256") is None else str(d["sha256"]),
                     "has_zones": bool(d.get("has_zones", False))}
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
        if version != FORMAT_VERSION and version not in UPGRADABLE:
            readable = ", ".join(str(v) for v in (*UPGRADABLE, FORMAT_VERSION))
            raise ValueError(f"{where}: format_version {version}, this tfrobseg reads {readable}"
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
        d["patients"] = {p: self.patients[p].to_json() for p in sorted(self.patients)}
        d["skipped"] = self.skipped  # for a reader of the file; derived, not read back
        if self.builtin is None:
            del d["builtin"]
        return d

    def write(self, data_dir: str | Path) -> Path:
        """Write ``<data_dir>/manifest.json`` atomically, stamping ``updated``.

        A manifest equal to the file (but for ``updated``) is not written again, so a run with
        nothing to do leaves the file's bytes as they were.
        """
        path = Path(data_dir) / MANIFEST_NAME
        new = json.loads(json.dumps(self.to_json()))
        try:
            on_disk = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            on_disk = None
        if isinstance(on_disk, dict) and {**on_disk, "updated": ""} == {**new, "updated": ""}:
            self.updated = on_disk.get("updated", "")
            return path
        self.updated = _now()
        return atomic_write_text(path, json.dumps({**new, "updated": self.updated}, indent=1) + "\n")

    # ------------------------------------------------------------------ identity of the prepared data
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the prepared data, for a results folder to record and compare.

        Format version, parameters, synthetic / built-in identity, seed, split, and per prepared
        patient its record's ``sha256``, ``n_slices``, ``labelled`` and ``second_reader`` (and
        ``has_zones`` when true, so that a folder without zones keeps its fingerprint). No
        timestamps, input paths, timings or skip reasons, and no ordering effects (keys sorted):
        a preparation run with nothing to do keeps it. :func:`describe_data_changes` compares two.
        """
        patients = {p: {"sha256": e.sha256, "n_slices": e.n_slices, "labelled": e.labelled,
                        "second_reader": e.second_reader, **({"has_zones": True} if e.has_zones else {})}
                    for p, e in sorted(self.patients.items()) if e.ok}
        fp = {"format_version": self.format_version, "parameters": dataclasses.asdict(self.parameters),
              "synthetic": self.synthetic, "builtin": self.builtin, "seed": self.seed,
              "split": self.split, "patients": patients}
        # Through JSON, so that a fingerprint read back from a file compares equal (tuples -> lists).
        return json.loads(json.dumps(fp, sort_keys=True))

    def content_hash(self) -> str:
        """Short hash of :meth:`fingerprint` (:func:`tfrobseg.io.config_hash`): equal for equal prepared data."""
        return config_hash(self.fingerprint())

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
        zoned = sum(self.patients[p].has_zones for p in ok)
        lines = [f"{len(ok)} patient(s) prepared ({len(ok) - len(unl)} labelled, {len(unl)} unlabelled"
                 + (f": {', '.join(unl)}" if unl else "") + (f"; {zoned} with zones" if zoned else "")
                 + f"), {len(self.skipped)} skipped"
                 + (" [SYNTHETIC cohort]" if self.synthetic else "")]
        s = self.split
        lines.append(f"split (seed {self.seed}): train {len(s['train'])}, val {len(s['val'])}, test "
                     f"{len(s['test'])}, folds {[len(f) for f in s['folds']]}")
        lines += [f"  skipped {pid}: {reason}" for pid, reason in self.skipped.items()]
        return "\n".join(lines)


def _names(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _roles(split: dict[str, Any]) -> dict[str, str]:
    """Where each patient of a fingerprint's split is: "train fold k", "val", "test" or "unlabelled"."""
    roles = {p: name for name in ("val", "test", "unlabelled") for p in split.get(name, [])}
    roles.update({p: "train" for p in split.get("train", [])})
    roles.update({p: f"train fold {k}" for k, fold in enumerate(split.get("folds", [])) for p in fold})
    return roles


def split_moves(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(patient, old place, new place) for the patients of both splits whose place differs."""
    ro, rn = _roles(old), _roles(new)
    return [(p, ro[p], rn[p]) for p in sorted(set(ro) & set(rn)) if ro[p] != rn[p]]


def describe_data_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two :meth:`Manifest.fingerprint` dicts, one phrase per kind ([] when equal).

    E.g. ``["patients added: A, B", "records changed: D", "parameters changed: size_hw",
    "split changed: 1 patient(s) moved (P: train fold 0 -> test)"]``.
    """
    out = []
    for key in ("format_version", "synthetic", "builtin", "seed"):
        if old.get(key) != new.get(key):
            out.append(f"{key} changed: {old.get(key)} -> {new.get(key)}")
    po, pn = old.get("parameters", {}), new.get("parameters", {})
    if changed := sorted(k for k in {*po, *pn} if po.get(k) != pn.get(k)):
        out.append(f"parameters changed: {', '.join(changed)}")
    a, b = old.get("patients", {}), new.get("patients", {})
    for label, ids in (("patients added", sorted(set(b) - set(a))), ("patients removed", sorted(set(a) - set(b)))):
        if ids:
            out.append(f"{label}: {_names(ids)}")
    both = sorted(set(a) & set(b))
    # A checksum missing before (a format-2 manifest) and recorded now is not a changed record.
    if recorded := [p for p in both if a[p].get("sha256") is None and b[p].get("sha256") is not None]:
        out.append(f"checksums recorded: {len(recorded)} patient(s)")
    for label, keys, pool in (("records changed", ("sha256", "n_slices"), set(both) - set(recorded)),
                              ("labels changed", ("labelled", "second_reader", "has_zones"), set(both))):
        if ids := [p for p in sorted(pool) if any(a[p].get(k) != b[p].get(k) for k in keys)]:
            out.append(f"{label}: {_names(ids)}")
    if moved := split_moves(old.get("split", {}), new.get("split", {})):
        out.append(f"split changed: {len(moved)} patient(s) moved ("
                   + _names([f"{p}: {a} -> {b}" for p, a, b in moved]) + ")")
    return out
