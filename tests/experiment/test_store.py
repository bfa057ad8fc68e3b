"""tfrobseg.experiment.store: completion markers, restarts, collecting metrics, refusing mixed settings."""

import json
import os

import pandas as pd
import pytest

from tfrobseg.errors import SettingsMismatchError
from tfrobseg.experiment import store
from tfrobseg.experiment.units import Unit
from tfrobseg.io import atomic_write_csv
from tfrobseg.locks import current_holder


def test_markers_reset_and_collect(tmp_path):
    done, broken = Unit("crossval", "unet", "bce", 0), Unit("crossval", "unet", "bce", 1)
    atomic_write_csv(done.directory(tmp_path) / "metrics.csv", pd.DataFrame({"phase": ["crossval"], "dice": [0.5]}))
    store.write_marker(done, tmp_path, rows=1)
    atomic_write_csv(broken.directory(tmp_path) / "metrics.csv", pd.DataFrame({"phase": ["crossval"], "dice": [0.1]}))
    assert store.is_complete(done, tmp_path) and not store.is_complete(broken, tmp_path)
    assert store.collect_metrics(tmp_path)["dice"].tolist() == [0.5]  # incomplete unit ignored
    assert store.reset_unit(broken, tmp_path) and not broken.directory(tmp_path).exists()
    assert not store.reset_unit(done, tmp_path) and store.is_complete(done, tmp_path)


def test_settings_refused_unless_overwrite(tmp_path):
    store.check_settings(tmp_path, {"seed": 0, "eps": [0.1]})
    store.check_settings(tmp_path, {"seed": 0, "eps": [0.1]})  # same settings: fine (resume)
    unit = Unit("crossval", "unet", "bce", 0)
    store.write_marker(unit, tmp_path)
    with pytest.raises(SettingsMismatchError, match="seed"):
        store.check_settings(tmp_path, {"seed": 1, "eps": [0.1]})
    assert store.is_complete(unit, tmp_path)
    store.check_settings(tmp_path, {"seed": 1, "eps": [0.1]}, overwrite=True)
    assert not store.is_complete(unit, tmp_path)
    assert json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))["settings"]["seed"] == 1


def test_find_unit_prefers_the_lowest_complete_fold_with_a_model(tmp_path):
    def finish(unit, model=True):
        unit.directory(tmp_path).mkdir(parents=True)
        if model:
            (unit.directory(tmp_path) / store.MODEL_NAME).write_text("m")
        store.write_marker(unit, tmp_path)

    assert store.find_unit(tmp_path, "unet", "bce") is None
    finish(Unit("holdout", "unet", "bce", None))
    assert store.find_unit(tmp_path, "unet", "bce") == tmp_path / "holdout/unet/bce/holdout"
    finish(Unit("crossval", "unet", "bce", 2))
    finish(Unit("crossval", "unet", "bce", 1), model=False)
    assert store.find_unit(tmp_path, "unet", "bce") == tmp_path / "crossval/unet/bce/fold2"


def test_refusal_names_the_nested_setting_that_differs(tmp_path):
    store.check_settings(tmp_path, {"attack": "fgsm", "train": {"seed": 0, "max_epochs": 3}})
    with pytest.raises(SettingsMismatchError, match=r"differing: train\.seed\)"):
        store.check_settings(tmp_path, {"attack": "fgsm", "train": {"seed": 1, "max_epochs": 3}})
    with pytest.raises(SettingsMismatchError, match=r"differing: attack, train\.max_epochs\)"):
        store.check_settings(tmp_path, {"attack": "pgd", "train": {"seed": 0, "max_epochs": 4}})


# --------------------------------------------------------------------------- markers with checksums
def _finished(root, unit, model=b"model bytes"):
    d = unit.directory(root)
    atomic_write_csv(d / store.METRICS_NAME, pd.DataFrame({"phase": [unit.phase], "dice": [0.5]}))
    (d / store.MODEL_NAME).write_bytes(model)
    store.write_marker(unit, root, seconds=1.0, rows=1)
    return d


def test_marker_records_checksums_and_a_changed_file_makes_the_unit_incomplete(tmp_path):
    unit = Unit("crossval", "unet", "bce", 0)
    d = _finished(tmp_path, unit)
    marker = store.UnitMarker.read(d)
    assert marker.unit == unit.uid and marker.rows == 1 and set(marker.sha256) == {"best.keras", "metrics.csv"}
    assert store.is_complete(unit, tmp_path) and store.unit_problems(d) == []
    (d / store.MODEL_NAME).write_bytes(b"model bytez")  # one byte changed
    assert store.unit_problems(d) == ["best.keras: SHA-256 differs from the one in DONE.json (changed or corrupt)"]
    assert not store.is_complete(unit, tmp_path)
    assert store.reset_unit(unit, tmp_path) and not d.exists()  # recomputed from scratch


def test_a_marker_without_checksums_is_accepted_and_an_unreadable_one_is_not(tmp_path):
    unit = Unit("crossval", "unet", "bce", 0)
    d = _finished(tmp_path, unit)
    (d / "DONE.json").write_text('{"unit": "crossval/unet/bce/fold0", "rows": 1}')  # written before checksums
    assert store.UnitMarker.read(d).sha256 is None and store.is_complete(unit, tmp_path)
    (d / "DONE.json").write_text("{not json")
    assert store.unit_problems(d)[0].startswith("DONE.json: unreadable") and not store.is_complete(unit, tmp_path)


def test_find_unit_refuses_a_model_that_differs_from_its_checksum(tmp_path):
    from tfrobseg.errors import UnitFilesError

    d = _finished(tmp_path, Unit("crossval", "unet", "bce", 0))
    (d / store.MODEL_NAME).write_bytes(b"flipped")
    with pytest.raises(UnitFilesError, match=r"^crossval/unet/bce/fold0: best.keras: SHA-256 differs"):
        store.find_unit(tmp_path, "unet", "bce")


# --------------------------------------------------------------------------- run.json: data fingerprint, refusals
DATA = {"parameters": {"size_hw": [256, 256]}, "split": {"train": ["A"]},
        "patients": {"A": {"sha256": "1", "n_slices": 16, "labelled": True, "second_reader": False}}}


def test_run_file_keeps_the_data_fingerprint_outside_the_settings_hash(tmp_path):
    digest = store.check_settings(tmp_path, {"data_fingerprint": "x", "seed": 0}, data=DATA)
    run = store.RunFile.read(tmp_path)
    assert run.settings_hash == digest and run.data == DATA and not run.legacy
    assert store.check_settings(tmp_path, {"data_fingerprint": "x", "seed": 0}, data={**DATA, "other": 1}) == digest


def test_only_the_data_changed_says_what_and_what_overwrite_deletes(tmp_path):
    store.check_settings(tmp_path, {"data_dir": "/d", "data_fingerprint": "x", "seed": 0}, data=DATA)
    _finished(tmp_path, Unit("crossval", "unet", "bce", 0))
    _finished(tmp_path, Unit("crossval", "unet", "bce", 1))
    changed = {**DATA, "patients": {"A": {**DATA["patients"]["A"], "sha256": "2"}, "B": DATA["patients"]["A"]}}
    with pytest.raises(SettingsMismatchError) as info:
        store.check_settings(tmp_path, {"data_dir": "/d", "data_fingerprint": "y", "seed": 0}, data=changed)
    message = str(info.value)
    assert "the data in /d changed since these results were made (patients added: B; records changed: A)" in message
    assert "other settings" not in message and "differing" not in message
    assert message.endswith("To keep these results use another --out (or restore the data); --overwrite, which "
                            "DELETES its 2 completed unit(s).")
    with pytest.raises(SettingsMismatchError, match=r"changed since .*; other settings differ \(differing: seed\)"):
        store.check_settings(tmp_path, {"data_dir": "/d", "data_fingerprint": "y", "seed": 1}, data=changed)


def test_a_folder_made_by_an_older_tfrobseg_is_refused_with_the_way_on(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"settings_hash": "abc", "settings": {"manifest_sha256": "m"}}))
    _finished(tmp_path, Unit("crossval", "unet", "bce", 0))
    with pytest.raises(SettingsMismatchError, match=r"made by an older tfrobseg .* Its tables and figures still read "
                       r".* or --overwrite, which DELETES its 1 completed unit\(s\)\.$"):
        store.check_settings(tmp_path, {"data_fingerprint": "x"}, data=DATA)
    (tmp_path / "run.json").write_text("{oops")
    with pytest.raises(SettingsMismatchError, match=r"run.json: not a readable run file .* DELETES its 1 completed"):
        store.check_settings(tmp_path, {"data_fingerprint": "x"}, data=DATA)


# --------------------------------------------------------------------------- unit locks
def test_lock_holder_names_the_process_holding_a_unit(tmp_path):
    from tfrobseg.locks import FileLock

    unit = Unit("crossval", "unet", "bce", 0)
    path = store.lock_path(unit, tmp_path)
    assert path == tmp_path / ".locks/crossval/unet/bce/fold0.lock" and current_holder(path) is None
    with FileLock(path):
        assert current_holder(path)["pid"] == os.getpid()
    assert current_holder(path) is None


def test_run_defense_names_the_folders_defense(tmp_path):
    assert store.run_defense(tmp_path) is None  # no run file
    store.RunFile("h", {"attack": "fgsm"}).write(tmp_path / "plain")
    assert store.run_defense(tmp_path / "plain") is None
    store.RunFile("h", {"defense": {"name": "trades", "options": {"steps": 3}}}).write(tmp_path / "trades")
    assert store.run_defense(tmp_path / "trades") == "trades(steps=3)"
