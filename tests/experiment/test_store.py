"""tfrobseg.experiment.store: completion markers, restarts, collecting metrics, refusing mixed settings."""

import json

import pandas as pd
import pytest

from tfrobseg.errors import SettingsMismatchError
from tfrobseg.experiment import store
from tfrobseg.experiment.units import Unit
from tfrobseg.io import atomic_write_csv


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
