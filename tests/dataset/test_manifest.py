"""tfrobseg.dataset.manifest: the one reader and writer of manifest.json."""

import json

import pytest

from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest, PatientEntry


def _manifest() -> Manifest:
    m = Manifest(parameters=PrepConfig(size_hw=(128, 96)), seed=3, synthetic=True)
    for k in range(7):
        m.patients[f"P{k}"] = PatientEntry(status="ok", labelled=k != 6, second_reader=k == 0, n_slices=10 + k,
                                           record=f"records/P{k}.tfrecord", details={"choice": "volume file"})
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
    with pytest.raises(ValueError, match=r"format_version 1, this tfrobseg reads 2 \(prepared by an older") as info:
        Manifest.read(tmp_path)
    assert "whole N4-corrected volume" in str(info.value) and "--overwrite" in str(info.value)


def test_not_json_is_refused(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Manifest.read(tmp_path)
