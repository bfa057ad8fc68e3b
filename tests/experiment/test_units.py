"""tfrobseg.experiment.units: split files, which patients a unit trains on and attacks, shards, the record."""

import json

import pytest

from tfrobseg.dataset.manifest import Manifest, PatientEntry
from tfrobseg.experiment import units
from tfrobseg.experiment.units import Unit, UnitPatients


def test_load_split(tmp_path):
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"train": ["A"], "test": ["B"]}))
    assert units.load_split(good) == {"train": ["A"], "test": ["B"], "val": []}
    with pytest.raises(FileNotFoundError):
        units.load_split(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["A"], "val": [], "test": ["A"]}))
    with pytest.raises(ValueError, match="both training and test"):
        units.load_split(bad)
    bad.write_text(json.dumps({"train": [], "test": ["A"]}))
    with pytest.raises(ValueError, match="train"):
        units.load_split(bad)


# --------------------------------------------------------------------------- fold roles
def test_unit_k_evaluates_fold_k_and_trains_on_the_other_folds(tiny_cohort):
    manifest = Manifest.read(tiny_cohort)
    folds = manifest.split["folds"]
    for k, fold in enumerate(folds):
        train, val, evaluated = units.unit_patients(Unit("crossval", "unet", "bce", k), manifest, None)
        assert evaluated == fold
        assert sorted(train) == sorted(p for j, f in enumerate(folds) if j != k for p in f)
        assert val == manifest.split["val"]
    train, val, evaluated = units.unit_patients(Unit("holdout", "unet", "bce", None), manifest, None)
    assert (train, val, evaluated) == (manifest.split["train"], manifest.split["val"], manifest.split["test"])


def test_unit_patients_from_a_split_file(tiny_cohort, tmp_path):
    manifest = Manifest.read(tiny_cohort)
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["Synthetic-0002"], "val": [], "test": ["Synthetic-0003"]}))
    unit = Unit("holdout", "unet", "bce", None)
    assert units.unit_patients(unit, manifest, units.load_split(path)) == (["Synthetic-0002"], [], ["Synthetic-0003"])
    path.write_text(json.dumps({"train": ["Synthetic-0002"], "test": ["Nobody"]}))
    with pytest.raises(ValueError, match="Nobody"):
        units.unit_patients(unit, manifest, units.load_split(path))
    manifest.patients["Synthetic-0003"] = PatientEntry.skipped("Synthetic-0003: unreadable")
    path.write_text(json.dumps({"train": ["Synthetic-0002"], "test": ["Synthetic-0003"]}))
    with pytest.raises(ValueError, match="Synthetic-0003"):
        units.unit_patients(unit, manifest, units.load_split(path))




def test_unit_patients_unpack_and_serialise():
    patients = UnitPatients(["A"], [], ["B"])
    assert patients == (["A"], [], ["B"]) and patients.eval == ["B"]
    assert patients._asdict() == {"train": ["A"], "val": [], "eval": ["B"]}


def test_grid_and_shards():
    grid = units.make_grid("crossval", ["unet", "resunet"], ["bce", "dice", "tversky"], [0, 1, 2])
    assert len(grid) == 18 and grid[0].uid == "crossval/unet/bce/fold0"
    parts = [units.select_shard(grid, (i, 4)) for i in range(1, 5)]
    assert sorted(u.uid for p in parts for u in p) == sorted(u.uid for u in grid)
    assert sum(len(p) for p in parts) == 18
    assert Unit("holdout", "unet", "bce", None).uid == "holdout/unet/bce/holdout"
    assert units.parse_shard("2/3") == (2, 3) and units.parse_shard(None) == (1, 1)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(ValueError):
            units.parse_shard(bad)
    with pytest.raises(ValueError):
        units.make_grid("test", ["unet"], ["bce"], [0])


def test_a_record_of_an_earlier_version_still_reads():
    # tfrobseg 0.1 wrote the training fields beside the other settings and again under "train_config".
    train = {"learning_rate": 1e-3, "batch_size": 4, "max_epochs": 40, "plateau_patience": 2, "plateau_factor": 0.5,
             "min_learning_rate": 1e-6, "early_stopping_patience": 10, "precision": "float32", "xla": False,
             "strategy": "auto", "seed": 0}
    settings = {**{k: v for k, v in train.items() if k != "strategy"}, "data_dir": "/d", "manifest_sha256": "m",
                "split_sha256": None, "epsilons": [0.0, 0.5], "attack": "fgsm", "attack_loss": "same",
                "filters": [8, 16], "image_size": 64, "threshold": 0.5, "preset": "builtin"}
    old = {"unit": "crossval/unet/bce/fold0", "phase": "crossval", "model": "unet", "loss": "bce", "fold": 0,
           "settings": settings, "train_config": train, "patients": {"train": ["A"], "val": [], "eval": ["B"]},
           "training": {"epochs_run": 3}, "seconds": {"total": 1.0}}
    record = units.UnitRecord.from_json(old)
    assert record.settings.train.learning_rate == 1e-3 and record.settings.filters == (8, 16)
    assert record.settings.split_file is None and record.attack_loss == "bce" and record.patients.eval == ["B"]
    assert record.settings.data_fingerprint == "manifest_sha256:m"  # the older data identity, kept readable


def test_the_shards_of_a_call_with_several_grids_take_them_one_after_the_other():
    crossval = units.make_grid("crossval", ["unet"], ["bce", "dice"], [0, 1, 2])
    holdout = units.make_grid("holdout", ["unet"], ["bce", "dice"], [None])
    shards = [units.select_shards([crossval, holdout], (i, 8)) for i in range(1, 9)]
    assert all(sum(map(len, shard)) == 1 for shard in shards)  # 8 units, 8 shards: one each
    assert [u for shard in shards for u in shard[0]] == crossval
    assert [u for shard in shards for u in shard[1]] == holdout
    assert units.select_shards([crossval, holdout], (2, 3)) == [[crossval[1], crossval[4]], [holdout[1]]]
