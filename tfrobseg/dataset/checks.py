"""Up-front checks of a preparation's output folder and mask folders, before any folder is made or patient read.

A wrong ``--masks`` (the parent folder, or images and masks swapped) would otherwise run N4 on the
whole cohort and prepare every patient "unlabelled"; an output folder that cannot be written would
fail only after the first patient.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tfrobseg.dataset.dicom import VOLUME_SUFFIXES
from tfrobseg.errors import InputError
from tfrobseg.io import out_folder_problem

__all__ = ["check_mask_folder", "check_out_folder", "find_mask"]


def find_mask(folder: str | Path | None, patient_id: str) -> Path | None:
    """``<folder>/<PatientID>.nii.gz`` (or .nii/.mha/.nrrd/.mhd), None when absent."""
    if folder is None:
        return None
    for suffix in VOLUME_SUFFIXES:
        p = Path(folder) / f"{patient_id}{suffix}"
        if p.is_file():
            return p
    return None


def check_out_folder(out: str | Path) -> None:
    """:class:`InputError` when ``out`` is a file, lies below a file, or cannot be written."""
    if (problem := out_folder_problem(out)) is not None:
        raise InputError(f"--out {out}: {problem}")


def _looks_like_images(folder: Path) -> bool:
    """A DICOM download (``*.dcm`` below the folder) rather than a mask folder."""
    return any(p.suffix.lower() == ".dcm" for p in folder.rglob("*") if p.is_file())


def check_mask_folder(folder: str | Path, patient_ids: Sequence[str], option: str = "--masks") -> None:
    """:class:`InputError` when ``folder`` is not a folder or holds a mask for none of ``patient_ids``.

    Some patients without a mask is allowed (they are prepared unlabelled); none at all is a wrong
    folder. The message adds a hint for sub-folders that do hold the masks, or for a DICOM folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{option} {folder}: not a folder")
    if not patient_ids or any(find_mask(folder, p) is not None for p in patient_ids):
        return
    examples = ", ".join(list(patient_ids)[:3])
    message = (f"{option} {folder}: no mask for any of the {len(patient_ids)} patient(s) of --images ({examples}"
               f"{', ...' if len(patient_ids) > 3 else ''}); expected <PatientID>.nii.gz (or "
               f"{', '.join(s for s in VOLUME_SUFFIXES if s != '.nii.gz')}), e.g. {patient_ids[0]}.nii.gz")
    subs = sorted(d for d in folder.iterdir() if d.is_dir() and any(find_mask(d, p) for p in patient_ids))
    if subs:
        message += f"; did you mean {option} {subs[0]}?"
    elif _looks_like_images(folder) or any((folder / p).is_dir() for p in patient_ids):
        message += "; it holds DICOM files or patient folders: --images and --masks swapped?"
    raise InputError(message)

