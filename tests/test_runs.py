"""tfrobseg.runs: atomic writes, fingerprints, shards, markers, refusal of mixed settings."""

import json

import pandas as pd
import pytest

from tfrobseg import runs


def test_atomic_writes_and_hash(tmp_path):
    p = runs.atomic_write_json(tmp_path / "a" / "x.json", {"b": 1, "a": [1.5]})
    assert json.loads(p.read_text(encoding="utf-8")) == {"a": [1.5], "b": 1}
    runs.atomic_write_csv(tmp_path / "t.csv", pd.DataFrame({"x": [1, 2]}))
    assert pd.read_csv(tmp_path / "t.csv")["x"].tolist() == [1, 2]
    assert not [q for q in tmp_path.rglob(".*")]
    assert runs.config_hash({"a": 1, "b": 2}) == runs.config_hash({"b": 2, "a": 1})
    assert runs.config_hash({"a": 1}) != runs.config_hash({"a": 2})
    with pytest.raises(ValueError, match=".keras"):
        runs.atomic_save_model(None, tmp_path / "m.h5")


def test_grid_and_shards():
    grid = runs.make_grid("crossval", ["unet", "resunet"], ["bce", "dice", "tversky"], [0, 1, 2])
    assert len(grid) == 18 and grid[0].uid == "crossval/unet/bce/fold0"
    parts = [runs.select_shard(grid, (i, 4)) for i in range(1, 5)]
    assert sorted(u.uid for p in parts for u in p) == sorted(u.uid for u in grid)
    assert sum(len(p) for p in parts) == 18
    assert runs.Unit("holdout", "unet", "bce", None).uid == "holdout/unet/bce/holdout"
    assert runs.parse_shard("2/3") == (2, 3) and runs.parse_shard(None) == (1, 1)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(ValueError):
            runs.parse_shard(bad)
    with pytest.raises(ValueError):
        runs.make_grid("test", ["unet"], ["bce"], [0])


def test_markers_reset_and_collect(tmp_path):
    done, broken = runs.Unit("crossval", "unet", "bce", 0), runs.Unit("crossval", "unet", "bce", 1)
    runs.atomic_write_csv(done.directory(tmp_path) / "metrics.csv", pd.DataFrame({"phase": ["crossval"], "dice": [0.5]}))
    runs.write_marker(done, tmp_path, {"rows": 1})
    runs.atomic_write_csv(broken.directory(tmp_path) / "metrics.csv", pd.DataFrame({"phase": ["crossval"], "dice": [0.1]}))
    assert runs.completed_units(tmp_path, [done, broken]) == [done]
    assert runs.collect_metrics(tmp_path)["dice"].tolist() == [0.5]  # incomplete unit ignored
    assert runs.reset_unit(broken, tmp_path) and not broken.directory(tmp_path).exists()
    assert not runs.reset_unit(done, tmp_path) and done.is_complete(tmp_path)


def test_settings_refused_unless_overwrite(tmp_path):
    runs.check_settings(tmp_path, {"seed": 0, "eps": [0.1]})
    runs.check_settings(tmp_path, {"seed": 0, "eps": [0.1]})  # same settings: fine (resume)
    unit = runs.Unit("crossval", "unet", "bce", 0)
    runs.write_marker(unit, tmp_path, {})
    with pytest.raises(runs.SettingsMismatchError, match="seed"):
        runs.check_settings(tmp_path, {"seed": 1, "eps": [0.1]})
    assert unit.is_complete(tmp_path)
    runs.check_settings(tmp_path, {"seed": 1, "eps": [0.1]}, overwrite=True)
    assert not unit.is_complete(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))["settings"]["seed"] == 1
