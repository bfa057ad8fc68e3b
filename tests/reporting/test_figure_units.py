"""figures/make_figures.py on a folder without the ResU-Net (the main command's): the unit of Figure 1 is trained
into <results>/figure_units with the folder's settings, outside its tables, and reused by the next call.

The folder's one unit (cross-validation fold 0, Recurrent U-Net + BCE) is written by hand, untrained, as
tests/reporting/test_figures.py does: the figures only load and attack its model. Figure 1's unit is really
trained (ResU-Net, 32 px, filters 4, 8, one epoch, ε 0.5). Each test works on a copy of the folder.
"""

import dataclasses
import json
import runpy
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.errors import FigureUnitError, UnitsFailed
from tfrobseg.experiment import grid, store
from tfrobseg.experiment.cli import build_parser
from tfrobseg.experiment.settings import resolve_settings
from tfrobseg.experiment.units import Unit, UnitRecord, unit_patients
from tfrobseg.experiment.verify import verify_results
from tfrobseg.io import atomic_write_csv, config_hash
from tfrobseg.reporting.figure_units import find_figure_unit
from tfrobseg.reporting.figures import make_figures

pytestmark = pytest.mark.slow  # Figure 1's unit trains (about half a minute on 2 cores)

REPO = Path(__file__).resolve().parents[2]
FIGURE1 = "figure_units/crossval/resunet/bce/fold0"
UNIT_SECONDS = 180.0  # the folder's unit's recorded time: the estimate said before training is "about 3 min"


@pytest.fixture(scope="module")
def folder(tiny_cohort, tmp_path_factory) -> Path:
    """A cross-validation folder with one Recurrent U-Net + BCE unit: Figures 2 and 3 are there, Figure 1 not."""
    from tfrobseg.models import build_model

    out = tmp_path_factory.mktemp("figure_units") / "res"
    argv = ["--max-epochs", "1", "--filters", "4,8", "--image-size", "32", "--no-xla", "--epsilons", "0.5"]
    settings, _ = resolve_settings(build_parser("crossval").parse_args(argv), tiny_cohort, None, gpus=0)
    manifest = Manifest.read(tiny_cohort)
    store.check_settings(out, settings.fingerprint(), data=manifest.fingerprint())
    unit = Unit("crossval", "recurrent_unet", "bce", 0)
    d = unit.directory(out)
    d.mkdir(parents=True)
    build_model(unit.model, (32, 32, 1), filters=(4, 8)).save(d / store.MODEL_NAME)
    patients = unit_patients(unit, manifest, None)
    UnitRecord(unit, settings, patients, {}, {"total": UNIT_SECONDS}).write(out)
    rows = [{"phase": unit.phase, "model": unit.model, "loss": unit.loss, "fold": unit.fold, "attack": "fgsm",
             "attack_loss": "bce", "patient_id": pid, "epsilon": eps, "dice": 0.8 - eps, "hd95": 2.0 + eps,
             "assd": 1.0 + eps, "empty_pred": False, "empty_gt": False} for pid in patients.eval for eps in (0.0, 0.5)]
    atomic_write_csv(d / store.METRICS_NAME, pd.DataFrame(rows))
    store.write_marker(unit, out, seconds=UNIT_SECONDS, rows=len(rows))
    atomic_write_csv(out / "results_crossval.csv", store.collect_metrics(out))
    # The premise: a sound folder, but for the folds not run.
    problems = [f.line() for f in verify_results(out).findings if f.level == "problem"]
    assert len(problems) == 1 and "crossval/recurrent_unet/bce: fold(s) 1, 2 missing" in problems[0]
    return out


def _copy(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "res"
    shutil.copytree(folder, out)
    return out


def _script(*argv):
    return runpy.run_path(str(REPO / "figures/make_figures.py"))["main"]([str(a) for a in argv])


def test_the_missing_unit_is_trained_outside_the_tables_and_reused(folder, tmp_path, capsys):
    out = _copy(folder, tmp_path)
    metrics = store.collect_metrics(out)
    combined = (out / "results_crossval.csv").read_bytes()
    checked = [f.line() for f in verify_results(out).findings]

    report = make_figures(out, progress=False)
    unit = out / FIGURE1
    said = capsys.readouterr().out
    assert (f"Figure 1 needs resunet + bce (crossval fold 0), not in {out}: training it with the folder's settings "
            f"into {out / 'figure_units'} (about 3 min; --no-train to skip)") in said
    assert report["trained"] == [unit] and (unit / "DONE.json").is_file() and not report["missing"]
    for name in ("figure1_resunet_bce", "figure2_recurrent_unet_bce", "figure3_recurrent_unet_bce"):
        assert (out / "figures" / f"{name}.png").is_file(), name
    index = (out / "figures/index.md").read_text(encoding="utf-8")
    assert index.endswith(f"(not in its tables):\n- {FIGURE1}\n") and "Most robust loss" in index
    # The unit was made with the folder's settings, into a tree of its own with the same run.json hash ...
    run = store.RunFile.read(out)
    assert config_hash(UnitRecord.read(unit).settings.fingerprint()) == run.settings_hash
    assert store.RunFile.read(out / "figure_units").settings_hash == run.settings_hash
    # ... which the folder's readers do not see: its metrics, combined CSV and verify.py findings are unchanged.
    pd.testing.assert_frame_equal(store.collect_metrics(out), metrics)
    assert (out / "results_crossval.csv").read_bytes() == combined and store.count_complete(out) == 1
    assert [f.line() for f in verify_results(out).findings] == checked

    # A second call finds the unit in figure_units and trains nothing.
    done = (unit / "DONE.json").stat().st_mtime_ns
    again = make_figures(out, quiet=True)
    assert again["trained"] == [] and not again["missing"] and (unit / "DONE.json").stat().st_mtime_ns == done
    assert "training it" not in capsys.readouterr().out

    # figure_units made with other settings than the folder (the folder re-run with --overwrite) is not used.
    assert find_figure_unit(out, "resunet", "bce") == unit
    stale = json.loads((out / "figure_units/run.json").read_text(encoding="utf-8"))
    (out / "figure_units/run.json").write_text(json.dumps({**stale, "settings_hash": "0" * 16}), encoding="utf-8")
    assert find_figure_unit(out, "resunet", "bce") is None


def test_no_train_skips_the_figure_and_trains_nothing(folder, tmp_path, capsys):
    out = _copy(folder, tmp_path)
    assert _script("--results", out, "--no-train") == 0
    said = capsys.readouterr().out
    assert "skipped: Figure 1 (ResU-Net, most robust loss: resunet + bce) needs that trained unit" in said
    assert "without --no-train" in said and "training it" not in said
    assert not (out / "figure_units").exists()
    assert (out / "figures/figure2_recurrent_unet_bce.png").is_file()


def _resettle(out: Path, **changes) -> None:
    """Give the folder's unit and its run.json other settings (as a run made with them would have)."""
    d = out / "crossval/recurrent_unet/bce/fold0"
    record = UnitRecord.read(d)
    record.settings = dataclasses.replace(record.settings, **changes)
    record.write(out)
    fingerprint = record.settings.fingerprint()
    store.RunFile(config_hash(fingerprint), fingerprint, store.RunFile.read(out).data).write(out)


@pytest.mark.parametrize("damage", ["no run.json", "other settings", "older tfrobseg", "changed data", "split file"])
def test_unknown_settings_are_one_line_and_write_no_figure(folder, tmp_path, capsys, damage):
    out = _copy(folder, tmp_path)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    if damage == "no run.json":
        (out / "run.json").unlink()
        expected = f"{out / 'run.json'}: not a readable run file (FileNotFoundError"
    elif damage == "other settings":
        (out / "run.json").write_text(json.dumps({**run, "settings_hash": "0" * 16}), encoding="utf-8")
        expected = f"{out}: no complete unit was made with the settings of its run.json"
    elif damage == "older tfrobseg":
        legacy = {k: v for k, v in run["settings"].items() if k != "data_fingerprint"} | {"manifest_sha256": "0" * 64}
        (out / "run.json").write_text(json.dumps({**run, "settings": legacy}), encoding="utf-8")
        expected = f"{out} was made by an older tfrobseg"
    elif damage == "changed data":
        _resettle(out, data_fingerprint="0" * 64)
        expected = f"{run['settings']['data_dir']}: the data changed since the folder's units were made"
    else:
        _resettle(out, split_file=str(tmp_path / "split.json"), split_sha256="0" * 64)
        expected = f"{tmp_path / 'split.json'}: the split file of the folder's units is missing or changed"
    assert _script("--results", out) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {expected}") and "--no-train" in err and len(err.splitlines()) == 1, err
    assert not (out / "figures").exists() and not (out / "figure_units").exists()


def test_a_failed_training_names_the_unit(folder, tmp_path, capsys, monkeypatch):
    out = _copy(folder, tmp_path)
    uid = "crossval/resunet/bce/fold0"

    def fail(*args, **kwargs):
        raise UnitsFailed({uid: "NaN/inf in training: the training loss became NaN at epoch 1"})

    monkeypatch.setattr(grid, "run_grid", fail)
    with pytest.raises(FigureUnitError, match=rf"^Figure 1: training figure_units/{uid} failed: NaN/inf in training"):
        make_figures(out, quiet=True)
    assert _script("--results", out) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"figure_units/{uid} failed" in err and "FAILED.json" in err
    assert not (out / "figures").exists()
