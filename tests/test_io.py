"""tfrobseg.io: atomic writes leave nothing half-written, hashes are canonical, versions are recorded."""

import json

import matplotlib
import pandas as pd
import pytest

from tfrobseg import io

matplotlib.use("Agg")


def test_atomic_writes_and_hash(tmp_path):
    p = io.atomic_write_json(tmp_path / "a" / "x.json", {"b": 1, "a": [1.5]})
    assert json.loads(p.read_text(encoding="utf-8")) == {"a": [1.5], "b": 1}
    io.atomic_write_csv(tmp_path / "t.csv", pd.DataFrame({"x": [1, 2]}))
    assert pd.read_csv(tmp_path / "t.csv")["x"].tolist() == [1, 2]
    assert not [q for q in tmp_path.rglob(".*")]
    assert io.config_hash({"a": 1, "b": 2}) == io.config_hash({"b": 2, "a": 1})
    assert io.config_hash({"a": 1}) != io.config_hash({"a": 2})
    with pytest.raises(ValueError, match=".keras"):
        io.atomic_save_model(None, tmp_path / "m.h5")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    io.atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
    (tmp_path / ".tmp-dead-x.csv").write_text("left by a killed run")
    assert [p.name for p in io.remove_stale_temporaries(tmp_path)] == [".tmp-dead-x.csv"]


def test_save_figure_writes_each_format_atomically(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = io.save_figure(fig, tmp_path / "curve")
    assert [p.name for p in paths] == ["curve.png", "curve.pdf"] and all(p.stat().st_size > 1000 for p in paths)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.pdf", "curve.png"]
    assert not plt.fignum_exists(fig.number)


def test_json_converts_numpy_and_paths(tmp_path):
    import numpy as np

    text = io.to_json({"a": np.float32(0.5), "b": np.arange(2), "c": tmp_path, "d": {2, 1}})
    assert json.loads(text) == {"a": 0.5, "b": [0, 1], "c": str(tmp_path), "d": [1, 2]}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        io.to_json({"x": object()})


def test_versions_name_the_libraries_that_change_the_numbers():
    v = io.environment_versions()
    assert set(v) >= {"python", "platform", "tfrobseg", "tensorflow", "keras", "numpy", "SimpleITK"}
    assert v["tfrobseg"] != "not installed"
