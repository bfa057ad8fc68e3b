"""tfrobseg.experiment.runner and grid: units end to end in-process, their data, their record."""

import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.pipeline import make_dataset
from tfrobseg.experiment import runner
from tfrobseg.experiment.cli import build_parser
from tfrobseg.experiment.grid import run_grid
from tfrobseg.experiment.settings import resolve_settings
from tfrobseg.experiment.units import Unit, UnitPatients, UnitRecord, unit_patients

STUDY_PROTOCOL = {  # Apostolidis et al., II-H, and our documented choices where the paper is silent
    "learning_rate": 1e-4, "batch_size": 4, "max_epochs": 150, "plateau_patience": 2, "plateau_factor": 0.5,
    "min_learning_rate": 1e-6, "early_stopping_patience": 10,
}


def _settings(data_dir, argv=(), phase="crossval"):
    return resolve_settings(build_parser(phase).parse_args(list(argv)), Path(data_dir), None, gpus=0)


# --------------------------------------------------------------------------- a unit, end to end in-process
TINY_ARGV = ["--max-epochs", "1", "--filters", "4,8", "--image-size", "32", "--no-xla", "--epsilons", "0.05,0.5"]
SCORES = ["dice", "hd95", "assd", "fg_voxels_pred"]


def _rescore(unit_dir: Path, settings, patients, loss: str) -> pd.DataFrame:
    """Attack the unit's saved model on ``patients`` with ``loss``, outside the experiment runner."""
    from tfrobseg.attacks import attack_dataset
    from tfrobseg.experiment.scoring import evaluate_attack_stream, load_volumes

    model = keras.saving.load_model(unit_dir / "best.keras", compile=False)
    ds = make_dataset(settings.data_dir, patients, batch_size=4, image_size=32)
    stream = attack_dataset(model, ds, list(settings.epsilons), loss=loss, batch_size=4, jit_compile=False)
    return evaluate_attack_stream(stream, load_volumes(ds))


@pytest.fixture(scope="module")
def tiny_runs(tiny_cohort, tmp_path_factory):
    """Two Dice cross-validation units (folds 0, 1) attacked with their own loss, and a Dice
    hold-out unit attacked with BCE."""
    same, _ = _settings(tiny_cohort, TINY_ARGV)
    named, _ = _settings(tiny_cohort, [*TINY_ARGV, "--attack-loss", "bce"])
    out_same, out_named = tmp_path_factory.mktemp("same"), tmp_path_factory.mktemp("named")
    t0 = time.perf_counter()
    combined = run_grid("crossval", same, out_same, models=["unet"], losses=["dice"], folds=[0, 1],
                                 progress=False, quiet=True)
    combined.attrs["elapsed"] = time.perf_counter() - t0
    # One unit through run_unit itself, with its defaults (progress bars on).
    runner.run_unit(Unit("holdout", "unet", "dice", None), named, out_named)
    return {"same": (same, out_same, combined), "named": (named, out_named)}


def test_units_evaluate_their_fold_and_record_the_protocol(tiny_runs, tiny_cohort):
    settings, out, combined = tiny_runs["same"]
    folds = Manifest.read(tiny_cohort).split["folds"]
    assert sorted(combined["fold"].unique()) == [0, 1]
    for k in (0, 1):
        unit = out / "crossval" / "unet" / "dice" / f"fold{k}"
        metrics = pd.read_csv(unit / "metrics.csv")
        assert sorted(metrics["patient_id"].unique()) == sorted(folds[k])
        assert (metrics["fold"] == k).all() and sorted(metrics["epsilon"].unique()) == [0.0, 0.05, 0.5]
        cfg = json.loads((unit / "config.json").read_text(encoding="utf-8"))
        record = UnitRecord.read(unit)
        assert sorted(record.patients.train) == sorted(p for j, f in enumerate(folds) if j != k for p in f)
        assert record.patients.eval == folds[k] and record.unit == Unit("crossval", "unet", "dice", k)
        recorded = {key: getattr(record.settings.train, key) for key in STUDY_PROTOCOL}
        assert recorded == {**STUDY_PROTOCOL, "max_epochs": 1}
        assert len(pd.read_csv(unit / "history.csv")) == 1
        seconds = cfg["seconds"]
        assert 0 < seconds["train"] < seconds["total"] < combined.attrs["elapsed"] and cfg["training"]["epochs_run"] == 1
        assert seconds["attack_and_metrics"] == pytest.approx(seconds["total"] - seconds["train"])
        # Image quality of the attacked inputs: RMSE is ε for an unclipped FGSM, 0 for the clean input.
        np.testing.assert_allclose(metrics["rmse"], metrics["epsilon"], atol=1e-5)
        assert metrics["psnr"].notna().all() and metrics["ssim"].between(0, 1.0 + 1e-9).all()
        assert record.settings == settings and cfg["unit"] == f"crossval/unet/dice/fold{k}"
        assert UnitRecord.from_json(record.to_json()) == record and cfg == json.loads(json.dumps(record.to_json()))


def test_attack_loss_is_the_training_loss_or_the_named_one(tiny_runs, tiny_cohort):
    split = Manifest.read(tiny_cohort).split
    same, named = tiny_runs["same"][:2], tiny_runs["named"]
    cases = [(*same, "crossval/unet/dice/fold0", split["folds"][0], "dice"),
             (*same, "crossval/unet/dice/fold1", split["folds"][1], "dice"),
             (*named, "holdout/unet/dice/holdout", split["test"], "bce")]
    differs = 0
    for settings, out, uid, patients, loss in cases:
        unit = out / uid
        metrics = pd.read_csv(unit / "metrics.csv")
        assert (metrics["attack_loss"] == loss).all() and (metrics["loss"] == "dice").all()
        assert sorted(metrics["patient_id"].unique()) == sorted(patients)
        expected = _rescore(unit, settings, patients, loss)
        pd.testing.assert_frame_equal(metrics[SCORES].reset_index(drop=True), expected[SCORES], check_dtype=False)
        other = _rescore(unit, settings, patients, "bce" if loss == "dice" else "dice")
        differs += int(not np.array_equal(other["fg_voxels_pred"], expected["fg_voxels_pred"]))
    assert differs >= 2  # the premise: the other loss would have given other numbers
    holdout = UnitRecord.read(named[1] / "holdout/unet/dice/holdout")
    assert holdout.patients == (split["train"], split["val"], split["test"]) and holdout.attack_loss == "bce"
    assert (pd.read_csv(named[1] / "holdout/unet/dice/holdout/metrics.csv")["fold"] == -1).all()


# --------------------------------------------------------------------------- a unit's data
def test_unit_datasets_shuffle_training_only_and_resize(tiny_cohort):
    settings, _ = _settings(tiny_cohort, TINY_ARGV)
    manifest = Manifest.read(tiny_cohort)
    train_ids, val_ids, eval_ids = unit_patients(Unit("crossval", "unet", "bce", 0), manifest, None)
    unit_data = runner.unit_datasets(settings, UnitPatients(train_ids, val_ids, eval_ids))
    train, val, evaluated = unit_data.train, unit_data.val, unit_data.eval
    x, y = next(iter(train))
    assert x.shape == (4, 32, 32, 1) and y.shape == (4, 32, 32, 1)  # (image, mask) batches at the unit's size
    epochs = [np.concatenate([x.numpy().sum(axis=(1, 2, 3)) for x, _ in train]) for _ in range(2)]
    in_order = np.concatenate([e["image"].numpy().sum(axis=(1, 2, 3)) for e in make_dataset(tiny_cohort, train_ids)])
    assert len(epochs[0]) == len(in_order) == sum(manifest.patients[p].n_slices for p in train_ids)
    assert not np.allclose(epochs[0], epochs[1]) and not np.allclose(np.sort(epochs[0]), in_order)  # reshuffled
    ids = [pid.decode() for e in evaluated for pid in e["patient_id"].numpy()]
    assert list(dict.fromkeys(ids)) == eval_ids  # evaluation in patient and slice order
    val_sums = np.concatenate([x.numpy().sum(axis=(1, 2, 3)) for x, _ in val])
    ordered = np.concatenate([e["image"].numpy().sum(axis=(1, 2, 3)) for e in make_dataset(tiny_cohort, val_ids)])
    assert len(val_sums) == len(ordered) and np.corrcoef(val_sums, ordered)[0, 1] > 0.99  # validation in order too
    assert next(iter(val))[0].shape == (4, 32, 32, 1) and next(iter(evaluated))["image"].shape[1:] == (32, 32, 1)
    assert runner.unit_datasets(settings, UnitPatients(train_ids, [], eval_ids)).val is None


def test_unit_with_an_empty_fold_is_refused(tiny_cohort, tmp_path):
    import shutil

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_cohort, data_dir, ignore=shutil.ignore_patterns("raw"))
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["split"]["folds"][1] = []
    (data_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    settings, _ = _settings(data_dir, TINY_ARGV)
    with pytest.raises(ValueError, match="empty training .* or evaluation"):
        runner.run_unit(Unit("crossval", "unet", "bce", 1), settings, tmp_path / "out", progress=False)


# --------------------------------------------------------------------------- a 3D network's unit
def test_a_3d_unit_trains_on_patches_and_scores_whole_volumes(tiny_cohort, tmp_path):
    """A 3D U-Net unit: trained on random patches, attacked and scored on whole volumes (padded for its
    pooling, cropped back): one row per patient x eps, over the patient's every slice, as a 2D unit's; then
    experiments/attack.py attacks the same volumes again from the saved model and gets the same clean rows."""
    from tfrobseg.experiment.attack_units import attack_units, plan_attacks
    from tfrobseg.experiment.attack_units import build_parser as attack_parser
    from tfrobseg.experiment.cli import prepare_run

    argv = ["--data", str(tiny_cohort), "--model", "unet_3d", "--loss", "dice", "--folds", "0", "--out",
            str(tmp_path), *TINY_ARGV, "--filters", "4,8,16", "--patch-shape", "4,32,32", "--batch-size", "2"]
    run = prepare_run("crossval", build_parser("crossval").parse_args(argv))
    assert run.settings.patch_shape == (4, 32, 32) and run.settings.fingerprint()["patch_shape"] == [4, 32, 32]
    combined = run_grid("crossval", run.settings, tmp_path, models=["unet_3d"], losses=["dice"], folds=[0],
                        progress=False, quiet=True)
    manifest = Manifest.read(tiny_cohort)
    patients = manifest.split["folds"][0]
    assert sorted(combined["patient_id"].unique()) == sorted(patients)
    assert len(combined) == 3 * len(patients) and combined[SCORES].notna().all().all()
    slices = {p: manifest.entry(p, tiny_cohort).n_slices for p in patients}
    assert dict(zip(combined["patient_id"], combined["n_slices"])) == slices  # the padding is cropped off
    attacked = combined[combined["epsilon"] == 0.5]
    assert (attacked["rmse"] > 0.4).all() and (attacked["rmse"] <= 0.5 + 1e-6).all()
    plan = plan_attacks(attack_parser().parse_args(["--results", str(tmp_path), "--attack", "fgsm",
                                                    "--attack-loss", "bce"]), say=lambda _: None)
    (outcome,) = attack_units(plan, progress=False, say=lambda _: None)
    clean = outcome.rows[outcome.rows["epsilon"] == 0.0].set_index("patient_id")["dice"]
    assert outcome.status == "computed" and clean.to_dict() == pytest.approx(
        combined[combined["epsilon"] == 0.0].set_index("patient_id")["dice"].to_dict())


def test_a_3d_run_checks_its_patch_before_any_work(tiny_cohort, tmp_path):
    from tfrobseg.experiment.cli import prepare_run

    base = ["--data", str(tiny_cohort), "--loss", "dice", "--out", str(tmp_path / "x"), *TINY_ARGV]
    with pytest.raises(SystemExit, match="--model unet_3d: --patch-shape 5,32,32 with --filters 4,8: .*depth 5"):
        prepare_run("crossval", build_parser("crossval").parse_args([*base, "--model", "unet_3d",
                                                                      "--patch-shape", "5,32,32"]))
    with pytest.raises(SystemExit, match="--patch-shape is for 3D networks"):
        prepare_run("crossval", build_parser("crossval").parse_args([*base, "--model", "unet",
                                                                      "--patch-shape", "8,32,32"]))
    with pytest.raises(SystemExit, match="--model unet_efficientnet: --image-size 48 with .*multiple of 32"):
        prepare_run("crossval", build_parser("crossval").parse_args([*base, "--model", "unet_efficientnet",
                                                                      "--image-size", "48"]))
    assert not (tmp_path / "x").exists()
