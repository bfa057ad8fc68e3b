"""tfrobseg.dataset.manifest: the one reader and writer of manifest.json."""

import json

import pytest

from tfrobseg.dataset import manifest as manifest_module
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.manifest import (
    MANIFEST_NAME,
    Manifest,
    PatientEntry,
    describe_data_changes,
)


def _manifest() -> Manifest:
    m = Manifest(parameters=PrepConfig(size_hw=(128, 96)), seed=3, synthetic=True)
    for k in range(7):
        m.patients[f"P{k}"] = PatientEntry(status="ok", labelled=k != 6, second_reader=k == 0, n_slices=10 + k,
                                           record=f"records/P{k}.tfrecord", sha256=f"{k:064x}",
                                           details={"choice": "volume file", "source": f"/in/P{k}", "seconds": k})
    m.patients["Bad"] = PatientEntry.skipped("Bad: x.dcm: truncated")
    m.resplit()
    return m


def test_round_trip_keeps_every_field(tmp_path):
    m = _manifest()
    m.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back == m
    raw = json.loads((tmp_path / MANIFEST_NAME).read_text())
    # The file stays flat and readable: provenance next to the typed keys, skipped listed.
    assert raw["patients"]["P0"]["choice"] == "volume file" and raw["patients"]["P0"]["n_slices"] == 10
    assert raw["skipped"] == {"Bad": "Bad: x.dcm: truncated"}
    assert back.image_size == 96 and back.parameters.spacing_zyx == (3.0, 0.5, 0.5)


def test_zones_are_typed_and_absent_from_folders_without_them(tmp_path):
    m = _manifest()
    # Computed by the tfrobseg before issue 17 for this manifest: a folder without zones keeps its data hash.
    assert m.content_hash() == "6642e4d92804d045"
    assert all("has_zones" not in e for e in m.to_json()["patients"].values())
    m.patients["P2"].has_zones = True
    m.write(tmp_path)
    raw = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert raw["patients"]["P2"]["has_zones"] is True and "has_zones" not in raw["patients"]["P3"]
    back = Manifest.read(tmp_path)
    assert back == m and back.patients["P2"].has_zones and not back.patients["P3"].has_zones
    assert back.fingerprint()["patients"]["P2"]["has_zones"] is True
    assert describe_data_changes(_manifest().fingerprint(), back.fingerprint()) == ["labels changed: P2"]
    assert "6 labelled, 1 unlabelled: P6; 1 with zones)" in back.summary()


def test_split_uses_labelled_ok_patients_only():
    m = _manifest()
    assert m.ok_patients == [f"P{k}" for k in range(7)]
    assert sorted(m.patients_of("train") + m.patients_of("val") + m.patients_of("test")) == [f"P{k}" for k in range(6)]
    assert m.split["unlabelled"] == ["P6"] and m.patients_of("all") == m.ok_patients
    assert m.n_folds == 3 and m.skipped == {"Bad": "Bad: x.dcm: truncated"}
    with pytest.raises(ValueError, match="not prepared"):
        m.entry("Bad", "data")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["patients"]["P0"].pop("status"), "patient P0: status must be"),
    (lambda d: d["patients"]["P1"].pop("record"), "patient P1: missing key 'record'"),
    (lambda d: d.pop("parameters"), "missing key 'parameters'"),
    (lambda d: d.update(format_version=99), "format_version 99"),
    (lambda d: d["parameters"].update(size_hw=[0, 5]), "bad parameters"),
])
def test_a_broken_manifest_is_refused_naming_the_file(tmp_path, edit, message):
    d = _manifest().to_json()
    edit(d)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message) as info:
        Manifest.read(tmp_path)
    assert str(tmp_path / MANIFEST_NAME) in str(info.value)


def test_an_older_format_is_refused_with_what_changed_and_what_to_do(tmp_path):
    # Format 1 folders were z-scored over the 256 x 256 block; mixing them with new ones would mix
    # two units of ε.
    d = _manifest().to_json()
    d["format_version"] = 1
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"format_version 1, this tfrobseg reads 2, 3 \(prepared by an older") as info:
        Manifest.read(tmp_path)
    assert "whole N4-corrected volume" in str(info.value) and "--overwrite" in str(info.value)


def test_not_json_is_refused(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Manifest.read(tmp_path)


def test_a_format_2_manifest_is_read_without_checksums(tmp_path):
    d = _manifest().to_json()
    d["format_version"] = 2
    for e in d["patients"].values():
        e.pop("sha256", None)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(d))
    m = Manifest.read(tmp_path)
    assert m.format_version == 2 and m.patients["P0"].sha256 is None and m.ok_patients == [f"P{k}" for k in range(7)]


def test_fingerprint_ignores_times_paths_details_and_order():
    a, b = _manifest(), _manifest()
    b.created, b.updated, b.inputs, b.versions = "then", "now", {"images": "/elsewhere"}, {"numpy": "0"}
    b.patients = dict(reversed(b.patients.items()))
    for e in b.patients.values():
        e.details = {"source": "/moved", "seconds": 99.0}
    b.patients["Bad"] = PatientEntry.skipped("another reason")
    assert a.fingerprint() == b.fingerprint() and a.content_hash() == b.content_hash()
    assert json.loads(json.dumps(a.fingerprint())) == a.fingerprint()  # equal after a round trip through a file
    assert describe_data_changes(a.fingerprint(), b.fingerprint()) == []


@pytest.mark.parametrize("edit, phrase", [
    (lambda m: m.patients.update(P7=PatientEntry(status="ok", labelled=True, n_slices=3, record="r", sha256="f")),
     "patients added: P7"),
    (lambda m: m.patients.pop("P6"), "patients removed: P6"),
    (lambda m: setattr(m.patients["P3"], "sha256", "0" * 64), "records changed: P3"),
    (lambda m: setattr(m.patients["P2"], "n_slices", 1), "records changed: P2"),
    (lambda m: setattr(m.patients["P1"], "second_reader", True), "labels changed: P1"),
    (lambda m: setattr(m, "parameters", PrepConfig(size_hw=(64, 64), smoothing_sigma=2.0)),
     "parameters changed: size_hw, smoothing_sigma"),
    (lambda m: setattr(m, "seed", 4), "seed changed: 3 -> 4"),
])
def test_each_data_change_changes_the_hash_and_is_described(edit, phrase):
    old, new = _manifest(), _manifest()
    edit(new)
    assert old.content_hash() != new.content_hash()
    assert phrase in describe_data_changes(old.fingerprint(), new.fingerprint())


def test_a_recomputed_split_is_described_patient_by_patient():
    old, new = _manifest(), _manifest()
    new.seed = 11
    new.resplit()
    moves = [c for c in describe_data_changes(old.fingerprint(), new.fingerprint()) if c.startswith("split changed")]
    assert len(moves) == 1 and "patient(s) moved (" in moves[0] and " -> " in moves[0]
    old_v2 = _manifest()
    for e in old_v2.patients.values():
        e.sha256 = None
    old_v2.format_version = 2
    assert describe_data_changes(old_v2.fingerprint(), old.fingerprint()) == [
        "format_version changed: 2 -> 3", "checksums recorded: 7 patient(s)"]


def test_writing_an_unchanged_manifest_keeps_the_file(tmp_path, monkeypatch):
    m = _manifest()
    path = m.write(tmp_path)
    data, stamp = path.read_bytes(), m.updated
    monkeypatch.setattr(manifest_module, "_now", lambda: "2099-01-01T00:00:00")  # a later run
    back = Manifest.read(tmp_path)
    back.write(tmp_path)
    assert path.read_bytes() == data and back.updated == stamp
    back.patients["P0"].n_slices += 1
    back.write(tmp_path)
    assert path.read_bytes() != data and Manifest.read(tmp_path).updated == "2099-01-01T00:00:00"
