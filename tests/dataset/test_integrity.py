"""Issue 13 on the built-in cohort: record checksums (tfrobseg.dataset.integrity), the format-2 upgrade,
removal of patients, and one writer per prepared folder (tfrobseg.dataset.prepare.writer_lock)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tfrobseg.dataset import cli
from tfrobseg.dataset.integrity import check_slice_count, count_records, verify_records
from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest
from tfrobseg.dataset.prepare import prepare_cohort
from tfrobseg.dataset.synthetic import BUILTIN_CONFIG, prepare_builtin
from tfrobseg.errors import RecordError
from tfrobseg.locks import LockHeld

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cohort(tiny_cohort, tmp_path):
    """A writable copy of the 6-patient built-in cohort."""
    return Path(shutil.copytree(tiny_cohort, tmp_path / "builtin", ignore=shutil.ignore_patterns(".lock")))


def file_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rerun(data, log):
    """The preparation command of the built-in cohort again (what data_prep/prostatex.py runs)."""
    raw = data / "raw"
    return prepare_cohort(raw / "images", data, masks=raw / "masks" / "whole_gland",
                          second_masks=raw / "masks" / "whole_gland_second_reader", zones=raw / "masks" / "zones",
                          config=BUILTIN_CONFIG, seed=0,
                          builtin=Manifest.read(data).builtin, progress=False, log=log)


def _record_offsets(data: bytes) -> list[int]:
    """Start offsets of the records of a TFRecord file (length, crc, payload, crc)."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += 8 + 4 + int.from_bytes(data[pos:pos + 8], "little") + 4
    return offsets


def _truncate_at_boundary(path: Path, drop: int = 2) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:_record_offsets(data)[-drop]])


def test_truncated_flipped_or_missing_records_are_refused_by_name(cohort):
    m = Manifest.read(cohort)
    verify_records(cohort)
    assert all(len(m.patients[p].sha256) == 64 for p in m.ok_patients)
    one = cohort / "records" / "Synthetic-0001.tfrecord"
    n = m.patients["Synthetic-0001"].n_slices
    _truncate_at_boundary(one)
    assert count_records(one) == n - 2  # reads without error: only the checksum or the count can tell
    with pytest.raises(RecordError, match=rf"^Synthetic-0001: .*{n - 2} slice\(s\) read, manifest.json records {n}"):
        check_slice_count("Synthetic-0001", one, count_records(one), n)
    with pytest.raises(RecordError) as info:
        verify_records(cohort)
    assert str(info.value) == (f"Synthetic-0001: {one}: checksum differs from manifest.json (file truncated or "
                               "corrupted after preparation); run the same data_prep/prostatex.py command again "
                               "to prepare this patient again")
    two = cohort / "records" / "Synthetic-0002.tfrecord"
    data = bytearray(two.read_bytes())
    data[len(data) // 2] ^= 0x01
    two.write_bytes(bytes(data))
    with pytest.raises(RecordError, match=r"^Synthetic-0002: .*Synthetic-0002\.tfrecord: checksum differs"):
        verify_records(cohort, ["Synthetic-0000", "Synthetic-0002"])
    with pytest.raises(RecordError, match=r"^Synthetic-0002: .*: unreadable record file \(.*corrupted record"):
        count_records(two, "Synthetic-0002")
    with pytest.raises(RecordError, match=r"\(1 more patient\(s\) bad: Synthetic-0002\)"):
        verify_records(cohort)
    (cohort / "records" / "Synthetic-0003.tfrecord").unlink()
    with pytest.raises(RecordError, match=r"^Synthetic-0003: .*: record file missing"):
        verify_records(cohort, ["Synthetic-0003"])
    verify_records(cohort, ["Synthetic-0000", "Synthetic-0004"], manifest=m)


def test_a_damaged_record_is_prepared_again_byte_identical(cohort):
    record = cohort / "records" / "Synthetic-0001.tfrecord"
    original, other = record.read_bytes(), (cohort / "records" / "Synthetic-0000.tfrecord").stat().st_mtime_ns
    before = Manifest.read(cohort).content_hash()
    _truncate_at_boundary(record)
    lines = []
    _rerun(cohort, lines.append)
    assert any(line.startswith(f"Synthetic-0001: {record}: checksum differs") and line.endswith("preparing it again")
               for line in lines), lines
    # Compared by hash: on a mismatch pytest's diff of two ~100 kB byte strings runs for many minutes.
    assert file_sha(record.read_bytes()) == file_sha(original) and lines[-1] == "nothing changed"
    assert (cohort / "records" / "Synthetic-0000.tfrecord").stat().st_mtime_ns == other
    assert Manifest.read(cohort).content_hash() == before
    verify_records(cohort)


def test_a_format_2_folder_gets_its_checksums_without_preparing_again(cohort):
    v3 = Manifest.read(cohort)
    raw = json.loads((cohort / MANIFEST_NAME).read_text())
    raw["format_version"] = 2
    for e in raw["patients"].values():
        e.pop("sha256")
    (cohort / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(RecordError, match=r"^Synthetic-0000: .*no checksum in manifest.json .*run the same "
                                          r"data_prep/prostatex.py command once to record the checksums"):
        verify_records(cohort)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (cohort / "records").iterdir()}
    lines = []
    _rerun(cohort, lines.append)
    assert "manifest.json: format 2 -> 3: recorded the checksums of 6 existing record(s)" in "\n".join(lines)
    assert lines[-1] == "changes: format_version changed: 2 -> 3; checksums recorded: 6 patient(s)"
    assert {p.name: p.stat().st_mtime_ns for p in (cohort / "records").iterdir()} == mtimes
    verify_records(cohort)
    assert Manifest.read(cohort).fingerprint() == v3.fingerprint()


def test_remove_patients_drops_them_and_unknown_ids_change_nothing(cohort, capsys):
    manifest_bytes = (cohort / MANIFEST_NAME).read_bytes()
    assert cli.main(["--out", str(cohort), "--remove-patients", "Synthetic-0001,Nobody", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --remove-patients: not in") and "manifest.json: Nobody (patients there: " in err
    assert (cohort / MANIFEST_NAME).read_bytes() == manifest_bytes
    assert cli.main(["--out", str(cohort), "--remove-patients", "Synthetic-0001", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "patients removed: Synthetic-0001" in out
    m = Manifest.read(cohort)
    assert "Synthetic-0001" not in m.patients and len(m.ok_patients) == 5
    assert not (cohort / "records" / "Synthetic-0001.tfrecord").exists()
    assert not any("Synthetic-0001" in m.split[k] for k in ("train", "val", "test"))
    # The built-in cohort's command adds it back (its --images still hold it); nothing else changes.
    lines = []
    _rerun(cohort, lines.append)
    assert "patients added: Synthetic-0001" in lines[-1] and "records changed" not in lines[-1]
    verify_records(cohort)


def test_a_second_writer_is_refused_naming_the_holder(cohort, tmp_path, capsys):
    hold = ("import sys, time; from tfrobseg.locks import FileLock; "
            "FileLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(cohort / ".lock")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        manifest_bytes = (cohort / MANIFEST_NAME).read_bytes()
        raw = cohort / "raw"
        rc = cli.main(["--images", str(raw / "images"), "--masks", str(raw / "masks" / "whole_gland"),
                       "--out", str(cohort), "--no-n4", "--quiet"])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1
        assert f"error: {cohort} is being prepared by another run" in err and f"process {holder.pid} on " in err
        assert (cohort / MANIFEST_NAME).read_bytes() == manifest_bytes
        (cohort / "records" / "Synthetic-0000.tfrecord").unlink()  # not ready: the built-in path must write
        with pytest.raises(LockHeld, match=f"process {holder.pid}"):
            prepare_builtin(cohort, n_patients=6, seed=0)
    finally:
        holder.kill()
        holder.wait()
    prepare_builtin(cohort, n_patients=6, seed=0)  # the lock went with its holder
    verify_records(cohort)


WRITE_RECORD = """
import sys
import numpy as np
from tfrobseg.dataset.records import write_patient_records
image = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)
write_patient_records(sys.argv[1], "P", image, (image > 60).astype(np.uint8), None, (3.0, 0.5, 0.5))
"""


def test_records_have_the_same_bytes_whichever_process_writes_them(tmp_path):
    # The record checksums are the data's identity: a protobuf map serialised in hash order would
    # give another checksum after every re-preparation (another process, another hash seed).
    digests = set()
    for seed in ("1", "2", "3"):
        path = tmp_path / f"r{seed}.tfrecord"
        env = {**os.environ, "PYTHONHASHSEED": seed, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([sys.executable, "-c", WRITE_RECORD, str(path)], check=True, env=env, capture_output=True)
        digests.add(path.read_bytes())
    assert len(digests) == 1
