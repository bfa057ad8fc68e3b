"""Finding each patient's T2-weighted axial image in a ProstateX (TCIA) or volume-file download.

Layouts accepted in ``--images``:

- TCIA downloader: ``<PatientID>/<study>/<SeriesNumber-Description>/*.dcm`` (any depth);
- one volume per patient: ``<PatientID>.mha|.nii.gz|.nii|.nrrd|.mhd``, or a ``<PatientID>/`` folder
  holding volume files (PI-CAI: ``<PatientID>_<study>_t2w.mha``; the ``t2w`` one is taken).

Series choice (several T2 axial series is common in ProstateX, e.g. a repeat after motion):
the series named for the patient in ``image_list.csv`` (PROSTATEx masks list, e.g.
``ProstateX-0001_t2_tse_tra_10`` = series number 10) when given, otherwise the **highest series
number** (the latest acquisition of the visit; repeats are acquired because an earlier one was
unsatisfactory). The choice and its reason are returned for the log and the manifest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tfrobseg.dataset.dicom import VOLUME_SUFFIXES, SeriesInfo, list_series
from tfrobseg.errors import InputError

__all__ = [
    "PatientSource",
    "choose_t2_series",
    "find_patients",
    "is_t2_axial",
    "patient_series",
    "patient_volume_file",
    "read_image_list",
]


@dataclass(frozen=True)
class PatientSource:
    """Where a patient's images are: a DICOM folder tree or a single volume file."""

    patient_id: str
    kind: str  # "dicom" or "volume"
    path: Path


def _volume_stem(name: str) -> str | None:
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_patients(images_dir: str | Path) -> dict[str, PatientSource]:
    """Patients in ``images_dir`` (sorted by id); :class:`InputError` when there are none."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InputError("images folder not found", path=root)
    found: dict[str, PatientSource] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            found[entry.name] = PatientSource(entry.name, "dicom", entry)
        elif entry.is_file() and (stem := _volume_stem(entry.name)) is not None:
            found[stem] = PatientSource(stem, "volume", entry)
    if not found:
        raise InputError("empty input folder: no patient folders and no .mha/.nii.gz volumes", path=root)
    return found


def read_image_list(path: str | Path) -> dict[str, tuple[str, int]]:
    """Parse the PROSTATEx ``image_list.csv``: ``{patient_id: (description, series_number)}``.

    Lines look like ``ProstateX-0001_t2_tse_tra_10``; a header line (``T2``) and blank lines are
    ignored; anything else is a :class:`InputError` naming the line.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: image list not found")
    out: dict[str, tuple[str, int]] = {}
    for lineno, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.strip().strip(",").strip('"')
        if not line or "_" not in line:
            continue
        m = re.fullmatch(r"([^_]+)_(.+)_(\d+)", line)
        if not m:
            raise InputError(f"line {lineno}: {line!r} is not <PatientID>_<description>_<series number>", path=p)
        out[m.group(1)] = (m.group(2), int(m.group(3)))
    return out


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def is_t2_axial(description: str) -> bool:
    """T2 axial by series description: starts with ``t2`` and says ``tra``/``ax``, ignoring
    case and punctuation (``t2_tse_tra``, ``t2tsetra320p2``, ``T2W TSE ax``); not ``t2_loc``."""
    n = _norm(description)
    return n.startswith("t2") and ("tra" in n or "ax" in n) and "loc" not in n


def choose_t2_series(
    patient_id: str, series: list[SeriesInfo], listed: tuple[str, int] | None = None
) -> tuple[SeriesInfo, str]:
    """The T2 axial series to use and the reason (see module docstring for the rule)."""
    candidates = [s for s in series if is_t2_axial(s.description)]
    if listed is not None:
        description, number = listed
        hits = [s for s in series if s.number == number]
        if hits:
            # Same number twice (rare: re-exported series): prefer the one whose description matches.
            hits.sort(key=lambda s: _norm(s.description) != _norm(description))
            return hits[0], f"image list names series {number} ({description})"
        raise InputError(
            f"image list names series {number} ({description}) but it is not in the download; "
            f"found: {', '.join(s.label for s in series) or 'no DICOM series'}", patient=patient_id)
    if not candidates:
        found = ", ".join(s.label for s in series) or "no readable DICOM series"
        raise InputError(f"no T2 axial series (found: {found})", patient=patient_id,
                         path=series[0].directory.parent if series else None)
    chosen = max(candidates, key=lambda s: (s.number if s.number is not None else -1, str(s.directory)))
    if len(candidates) == 1:
        return chosen, "only T2 axial series"
    numbers = ", ".join(str(s.number) for s in candidates)
    return chosen, (f"{len(candidates)} T2 axial series ({numbers}): chose series {chosen.number} "
                    "(highest series number = latest acquisition)")


def patient_series(source: PatientSource) -> list[SeriesInfo]:
    """DICOM series of a patient folder (empty for volume sources)."""
    return list_series(source.path) if source.kind == "dicom" else []


def patient_volume_file(source: PatientSource) -> Path | None:
    """The volume file of a patient: the source itself, or the one (``t2w``) volume in its folder."""
    if source.kind == "volume":
        return source.path
    vols = sorted(p for p in source.path.rglob("*") if p.is_file() and _volume_stem(p.name) is not None)
    if len(vols) > 1:
        t2 = [p for p in vols if "t2w" in p.name.lower()]
        if len(t2) == 1:
            return t2[0]
        raise InputError(f"{len(vols)} volume files and no single *t2w* one: {', '.join(p.name for p in vols)}",
                         patient=source.patient_id, path=source.path)
    return vols[0] if vols else None
