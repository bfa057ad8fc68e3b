"""Integrity of a prepared folder: each record file against the SHA-256 and slice count in its manifest.

A record truncated at a record boundary still reads without error (TensorFlow just sees fewer
slices) and a flipped byte may only show when that slice is parsed, so the records are checked by
checksum before they are used (:func:`verify_records`: hashing only, a 200-patient cohort in seconds),
and a reader that counts slices can refuse a short file (:func:`check_slice_count`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest, PatientEntry
from tfrobseg.errors import RecordError
from tfrobseg.io import file_hash

__all__ = ["check_slice_count", "count_records", "record_problem", "verify_records"]

#: How to prepare a bad record again (the preparation redoes a record whose checksum differs).
REDO = "run the same data_prep/prostatex.py command again to prepare this patient again"


def record_problem(data_dir: str | Path, entry: PatientEntry) -> str | None:
    """Why the record of a prepared patient does not match its manifest entry (None when it does)."""
    path = Path(data_dir) / str(entry.record)
    if not path.is_file():
        return "record file missing"
    if entry.sha256 is None:
        return "no checksum in manifest.json (prepared before format 3)"
    if file_hash(path) != entry.sha256:
        return f"checksum differs from {MANIFEST_NAME} (file truncated or corrupted after preparation)"
    return None


def verify_records(data_dir: str | Path, patient_ids: Iterable[str] | None = None,
                   manifest: Manifest | None = None) -> None:
    """Check that each named prepared patient's record exists and has the manifest's SHA-256.

    ``patient_ids`` defaults to every prepared patient. Raises :class:`RecordError` naming the
    first bad patient and its file (and how many others are bad) with the fix.
    """
    data_dir = Path(data_dir)
    manifest = manifest if manifest is not None else Manifest.read(data_dir)
    ids = manifest.ok_patients if patient_ids is None else list(patient_ids)
    bad = []
    for pid in ids:
        entry = manifest.patients.get(pid)
        if entry is None or not entry.ok:
            raise RecordError(f"not prepared (no status ok in {MANIFEST_NAME}); prepare it with "
                              "data_prep/prostatex.py", patient=pid, path=data_dir / MANIFEST_NAME)
        if (problem := record_problem(data_dir, entry)) is not None:
            bad.append((pid, entry, problem))
    if not bad:
        return
    pid, entry, problem = bad[0]
    fix = ("run the same data_prep/prostatex.py command once to record the checksums (no patient is "
           "prepared again; it takes seconds)") if entry.sha256 is None else REDO
    more = f" ({len(bad) - 1} more patient(s) bad: {', '.join(p for p, _, _ in bad[1:6])})" if len(bad) > 1 else ""
    raise RecordError(f"{problem}; {fix}{more}", patient=pid, path=data_dir / str(entry.record))


def count_records(path: str | Path, patient_id: str | None = None) -> int:
    """Number of records (slices) in a TFRecord file; :class:`RecordError` when it cannot be read."""
    import tensorflow as tf

    n = 0
    try:
        for _ in tf.data.TFRecordDataset(str(path)):
            n += 1
    except (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.OutOfRangeError) as exc:
        reason = " ".join(str(exc.message).split()) if exc.message else type(exc).__name__
        raise RecordError(f"unreadable record file ({reason}); {REDO}", patient=patient_id, path=path) from None
    return n


def check_slice_count(patient_id: str, path: str | Path, found: int, expected: int) -> None:
    """Refuse a record with another number of slices than the manifest's ``n_slices`` (:class:`RecordError`)."""
    if found != expected:
        raise RecordError(f"{found} slice(s) read, {MANIFEST_NAME} records {expected} (file truncated or "
                          f"replaced after preparation); {REDO}", patient=patient_id, path=path)
