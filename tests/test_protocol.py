"""tfrobseg.protocol helpers: split files, resampling with spacing, option parsing."""

import json
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tfrobseg import protocol


def test_load_split(tmp_path):
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"train": ["A"], "test": ["B"]}))
    assert protocol.load_split(good) == {"train": ["A"], "test": ["B"], "val": []}
    with pytest.raises(FileNotFoundError):
        protocol.load_split(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["A"], "val": [], "test": ["A"]}))
    with pytest.raises(ValueError, match="both training and test"):
        protocol.load_split(bad)
    bad.write_text(json.dumps({"train": [], "test": ["A"]}))
    with pytest.raises(ValueError, match="train"):
        protocol.load_split(bad)


def test_resize_element_scales_spacing_and_keeps_masks_binary():
    mask = np.zeros((1, 8, 8, 1), "float32")
    mask[:, 2:6, 2:6] = 1
    el = {"image": tf.constant(mask * 3), "mask": tf.constant(mask), "spacing": tf.constant([[3.0, 0.5, 0.5]])}
    out = protocol.resize_element(el, 4)
    assert out["image"].shape == (1, 4, 4, 1)
    np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 1.0, 1.0]])
    assert set(np.unique(out["mask"].numpy())) == {0.0, 1.0}
    assert out["mask"].numpy().sum() == 4


def test_parser_defaults_are_the_study():
    args = protocol.build_parser("crossval").parse_args([])
    assert args.model == "all" and args.loss == "all" and args.attack == "fgsm" and args.attack_loss == "same"
    assert args.epsilons == protocol.DEFAULT_EPSILONS and args.batch_size == 4
    assert args.xla is None and args.precision is None  # resolved at run time (GPU / preset)
    with pytest.raises(SystemExit):
        protocol.build_parser("crossval").parse_args(["--epsilons", "-0.1"])
    assert protocol.build_parser("holdout").parse_args(["--split", "x.json"]).split == "x.json"


# --------------------------------------------------------------------------- study defaults and presets
STUDY_PROTOCOL = {  # Apostolidis et al., II-H, and our documented choices where the paper is silent
    "learning_rate": 1e-4, "batch_size": 4, "max_epochs": 150, "plateau_patience": 2, "plateau_factor": 0.5,
    "min_learning_rate": 1e-6, "early_stopping_patience": 10,
}


def _settings(data_dir, argv=(), phase="crossval", preset=None, has_gpu=False):
    args = protocol.build_parser(phase).parse_args(list(argv))
    return protocol.resolve_settings(args, Path(data_dir), preset, has_gpu=has_gpu)


def test_study_run_resolves_to_the_paper_protocol(tiny_cohort):
    settings, jobs = _settings(tiny_cohort, ["--data", str(tiny_cohort)])
    assert {k: getattr(settings, k) for k in STUDY_PROTOCOL} == STUDY_PROTOCOL
    assert settings.epsilons == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert settings.filters == (16, 32, 64, 128, 256) and settings.image_size == 256
    assert (settings.attack, settings.attack_loss, settings.threshold) == ("fgsm", "same", 0.5)
    assert settings.preset is None and jobs == 1 and settings.xla is True and settings.precision == "float32"
    assert _settings(tiny_cohort, has_gpu=True)[0].precision == "mixed_float16"
    # The unit's TrainConfig carries the same values.
    config = protocol.train_config(settings)
    assert {k: getattr(config, k) for k in STUDY_PROTOCOL} == STUDY_PROTOCOL and config.strategy == "auto"


def test_settings_defaults_and_fingerprint(tiny_cohort):
    # Settings built in code (not from the command line) default to the study's protocol too.
    required = dict(data_dir=str(tiny_cohort), manifest_sha256="abc", split_file="s.json", split_sha256=None,
                    epsilons=(0.0, 0.5), attack="fgsm", attack_loss="same", max_epochs=150, batch_size=4, seed=0,
                    precision="float32", xla=True, filters=(16, 32), image_size=256)
    settings = protocol.Settings(**required)
    assert {k: getattr(settings, k) for k in STUDY_PROTOCOL} == STUDY_PROTOCOL
    assert settings.threshold == 0.5 and settings.preset is None
    fp = settings.fingerprint()
    assert fp["data_dir"] == str(Path(tiny_cohort).resolve()) and "split_file" not in fp
    assert fp["epsilons"] == [0.0, 0.5] and fp["plateau_factor"] == 0.5 and json.loads(json.dumps(fp)) == fp
    assert protocol.Settings(**required, plateau_factor=0.1).fingerprint() != fp


def test_holdout_split_file_is_part_of_the_settings(tiny_cohort, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["Synthetic-0002"], "test": ["Synthetic-0003"]}))
    settings, _ = _settings(tiny_cohort, ["--split", str(split)], phase="holdout")
    assert settings.split_file == str(split) and len(settings.split_sha256) == 64
    assert _settings(tiny_cohort, phase="holdout")[0].split_file is None


def test_builtin_preset_choices_and_overrides(tiny_cohort):
    settings, jobs = _settings(tiny_cohort, preset="builtin")
    assert (settings.max_epochs, settings.learning_rate, settings.filters, settings.image_size, jobs) == (
        40, 1e-3, (8, 16, 32, 64, 128), 64, 2)
    assert settings.early_stopping_patience == 10 and settings.preset == "builtin"
    assert settings.xla is False and _settings(tiny_cohort, preset="builtin", has_gpu=True)[0].xla is True
    # What the user gives always wins over the preset.
    argv = ["--max-epochs", "3", "--learning-rate", "0.5", "--filters", "4,8", "--image-size", "32", "--jobs", "1",
            "--early-stopping-patience", "2", "--xla", "--epsilons", "0.3,0.1"]
    settings, jobs = _settings(tiny_cohort, argv, preset="builtin")
    assert (settings.max_epochs, settings.learning_rate, settings.filters, settings.image_size, jobs) == (
        3, 0.5, (4, 8), 32, 1)
    assert settings.early_stopping_patience == 2 and settings.xla is True and settings.epsilons == (0.0, 0.1, 0.3)
    config = protocol.train_config(settings, strategy="mirrored")
    assert (config.max_epochs, config.learning_rate, config.early_stopping_patience, config.xla) == (3, 0.5, 2, True)
    assert (config.strategy, config.seed, config.precision) == ("mirrored", 0, "float32")


def test_default_data_is_the_builtin_cohort(tmp_path, monkeypatch, capsys):
    import tfrobseg.synthetic

    calls = []

    def fake_prepare(out_dir, **kwargs):
        calls.append(out_dir)
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "manifest.json").write_text("{}")
        return Path(out_dir)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tfrobseg.synthetic, "prepare_builtin", fake_prepare)
    assert protocol.resolve_data(None) == (Path("data/builtin"), "builtin")
    assert calls == ["data/builtin"] and "preparing the built-in synthetic cohort" in capsys.readouterr().out
    assert protocol.resolve_data(None) == (Path("data/builtin"), "builtin") and len(calls) == 1  # prepared once
    assert protocol.default_out_dir(None, Path("data/builtin"), "builtin") == Path("results/builtin")
    assert protocol.default_out_dir(None, Path("/x/px_prepared"), None) == Path("results/px_prepared")
    assert protocol.default_out_dir("r", Path("data/builtin"), "builtin") == Path("r")
    with pytest.raises(SystemExit, match="no manifest"):
        protocol.resolve_data(str(tmp_path / "nothing"))


# --------------------------------------------------------------------------- fold roles
def test_unit_k_evaluates_fold_k_and_trains_on_the_other_folds(tiny_cohort):
    from tfrobseg import data, runs

    manifest = data.read_manifest(tiny_cohort)
    folds = manifest["split"]["folds"]
    for k, fold in enumerate(folds):
        train, val, evaluated = protocol.unit_patients(runs.Unit("crossval", "unet", "bce", k), manifest, None)
        assert evaluated == fold
        assert sorted(train) == sorted(p for j, f in enumerate(folds) if j != k for p in f)
        assert val == manifest["split"]["val"]
    train, val, evaluated = protocol.unit_patients(runs.Unit("holdout", "unet", "bce", None), manifest, None)
    assert (train, val, evaluated) == (manifest["split"]["train"], manifest["split"]["val"], manifest["split"]["test"])


# --------------------------------------------------------------------------- a unit, end to end in-process
TINY_ARGV = ["--max-epochs", "1", "--filters", "4,8", "--image-size", "32", "--no-xla", "--epsilons", "0.05,0.5"]
SCORES = ["dice", "hd95", "assd", "fg_voxels_pred"]


def _rescore(unit_dir: Path, settings, patients, loss: str) -> pd.DataFrame:
    """Attack the unit's saved model on ``patients`` with ``loss``, outside the experiment runner."""
    from functools import partial

    from tfrobseg import data
    from tfrobseg.attacks import attack_dataset
    from tfrobseg.evaluation import evaluate_attack_stream, load_volumes

    model = keras.saving.load_model(unit_dir / "best.keras", compile=False)
    ds = data.make_dataset(settings.data_dir, patients, batch_size=4).map(partial(protocol.resize_element, size=32))
    stream = attack_dataset(model, ds, list(settings.epsilons), loss=loss, batch_size=4, jit_compile=False)
    return evaluate_attack_stream(stream, load_volumes(ds))


@pytest.fixture(scope="module")
def tiny_runs(tiny_cohort, tmp_path_factory):
    """Two Dice cross-validation units (folds 0, 1) attacked with their own loss, and a Dice
    hold-out unit attacked with BCE."""
    from tfrobseg import runs

    same, _ = _settings(tiny_cohort, TINY_ARGV)
    named, _ = _settings(tiny_cohort, [*TINY_ARGV, "--attack-loss", "bce"])
    out_same, out_named = tmp_path_factory.mktemp("same"), tmp_path_factory.mktemp("named")
    t0 = time.perf_counter()
    combined = protocol.run_grid("crossval", same, out_same, models=["unet"], losses=["dice"], folds=[0, 1],
                                 progress=False, quiet=True)
    combined.attrs["elapsed"] = time.perf_counter() - t0
    # One unit through run_unit itself, with its defaults (strategy "auto", progress bars on).
    protocol.run_unit(runs.Unit("holdout", "unet", "dice", None), named, out_named)
    return {"same": (same, out_same, combined), "named": (named, out_named)}


def test_units_evaluate_their_fold_and_record_the_protocol(tiny_runs, tiny_cohort):
    from tfrobseg import data

    settings, out, combined = tiny_runs["same"]
    folds = data.read_manifest(tiny_cohort)["split"]["folds"]
    assert sorted(combined["fold"].unique()) == [0, 1]
    for k in (0, 1):
        unit = out / "crossval" / "unet" / "dice" / f"fold{k}"
        metrics = pd.read_csv(unit / "metrics.csv")
        assert sorted(metrics["patient_id"].unique()) == sorted(folds[k])
        assert (metrics["fold"] == k).all() and sorted(metrics["epsilon"].unique()) == [0.0, 0.05, 0.5]
        cfg = json.loads((unit / "config.json").read_text(encoding="utf-8"))
        assert sorted(cfg["patients"]["train"]) == sorted(p for j, f in enumerate(folds) if j != k for p in f)
        assert cfg["patients"]["eval"] == folds[k]
        recorded = {key: cfg["train_config"][key] for key in STUDY_PROTOCOL}
        assert recorded == {**STUDY_PROTOCOL, "max_epochs": 1}
        assert len(pd.read_csv(unit / "history.csv")) == 1
        seconds = cfg["seconds"]
        assert 0 < seconds["train"] < seconds["total"] < combined.attrs["elapsed"] and cfg["training"]["epochs_run"] == 1
        assert seconds["attack_and_metrics"] == pytest.approx(seconds["total"] - seconds["train"])
        # Image quality of the attacked inputs: RMSE is ε for an unclipped FGSM, 0 for the clean input.
        np.testing.assert_allclose(metrics["rmse"], metrics["epsilon"], atol=1e-5)
        assert metrics["psnr"].notna().all() and metrics["ssim"].between(0, 1.0 + 1e-9).all()
        assert cfg["settings"] == settings.fingerprint() and cfg["unit"] == f"crossval/unet/dice/fold{k}"


def test_attack_loss_is_the_training_loss_or_the_named_one(tiny_runs, tiny_cohort):
    from tfrobseg import data

    split = data.read_manifest(tiny_cohort)["split"]
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
    holdout = json.loads((named[1] / "holdout/unet/dice/holdout/config.json").read_text(encoding="utf-8"))
    assert holdout["patients"] == {"train": split["train"], "val": split["val"], "eval": split["test"]}
    assert (pd.read_csv(named[1] / "holdout/unet/dice/holdout/metrics.csv")["fold"] == -1).all()


# --------------------------------------------------------------------------- a unit's data
def test_unit_datasets_shuffle_training_only_and_resize(tiny_cohort):
    from tfrobseg import data, runs

    settings, _ = _settings(tiny_cohort, TINY_ARGV)
    manifest = data.read_manifest(tiny_cohort)
    train_ids, val_ids, eval_ids = protocol.unit_patients(runs.Unit("crossval", "unet", "bce", 0), manifest, None)
    train, val, evaluated = protocol.make_unit_datasets(settings, train_ids, val_ids, eval_ids)
    x, y = next(iter(train))
    assert x.shape == (4, 32, 32, 1) and y.shape == (4, 32, 32, 1)  # (image, mask) batches at the unit's size
    epochs = [np.concatenate([x.numpy().sum(axis=(1, 2, 3)) for x, _ in train]) for _ in range(2)]
    in_order = np.concatenate([e["image"].numpy().sum(axis=(1, 2, 3)) for e in data.make_dataset(tiny_cohort, train_ids)])
    assert len(epochs[0]) == len(in_order) == sum(manifest["patients"][p]["n_slices"] for p in train_ids)
    assert not np.allclose(epochs[0], epochs[1]) and not np.allclose(np.sort(epochs[0]), in_order)  # reshuffled
    ids = [pid.decode() for e in evaluated for pid in e["patient_id"].numpy()]
    assert list(dict.fromkeys(ids)) == eval_ids  # evaluation in patient and slice order
    val_sums = np.concatenate([x.numpy().sum(axis=(1, 2, 3)) for x, _ in val])
    ordered = np.concatenate([e["image"].numpy().sum(axis=(1, 2, 3)) for e in data.make_dataset(tiny_cohort, val_ids)])
    assert len(val_sums) == len(ordered) and np.corrcoef(val_sums, ordered)[0, 1] > 0.99  # validation in order too
    assert next(iter(val))[0].shape == (4, 32, 32, 1) and next(iter(evaluated))["image"].shape[1:] == (32, 32, 1)
    assert protocol.make_unit_datasets(settings, train_ids, [], eval_ids)[1] is None


def test_resize_non_square_scales_each_axis():
    image = np.zeros((1, 8, 4, 1), "float32")
    out = protocol.resize_element({"image": tf.constant(image), "mask": tf.constant(image),
                                   "spacing": tf.constant([[3.0, 0.5, 0.5]])}, 2)
    assert out["image"].shape == (1, 2, 2, 1) and out["mask"].shape == (1, 2, 2, 1)
    np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 2.0, 1.0]])


def test_resize_averages_when_downsampling():
    # Anti-aliased resampling: a bright pixel between the sample points of a 4x reduction still
    # reaches the output (plain bilinear sampling would drop it).
    impulse = np.zeros((1, 8, 8, 1), "float32")
    impulse[0, 3, 3] = 1.0
    out = protocol.resize_element({"image": tf.constant(impulse), "spacing": tf.constant([[3.0, 0.5, 0.5]])}, 2)
    assert out["image"].numpy()[0, 0, 0, 0] > 0.02 and out["image"].numpy().sum() * 16 > 0.9
    np.testing.assert_allclose(out["spacing"].numpy(), [[3.0, 2.0, 2.0]])


def test_unit_patients_from_a_split_file(tiny_cohort, tmp_path):
    from tfrobseg import data, runs

    manifest = data.read_manifest(tiny_cohort)
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["Synthetic-0002"], "val": [], "test": ["Synthetic-0003"]}))
    unit = runs.Unit("holdout", "unet", "bce", None)
    assert protocol.unit_patients(unit, manifest, protocol.load_split(path)) == (["Synthetic-0002"], [], ["Synthetic-0003"])
    path.write_text(json.dumps({"train": ["Synthetic-0002"], "test": ["Nobody"]}))
    with pytest.raises(ValueError, match="Nobody"):
        protocol.unit_patients(unit, manifest, protocol.load_split(path))
    manifest["patients"]["Synthetic-0003"]["status"] = "skipped"
    path.write_text(json.dumps({"train": ["Synthetic-0002"], "test": ["Synthetic-0003"]}))
    with pytest.raises(ValueError, match="Synthetic-0003"):
        protocol.unit_patients(unit, manifest, protocol.load_split(path))


def test_unit_with_an_empty_fold_is_refused(tiny_cohort, tmp_path):
    import shutil

    from tfrobseg import runs

    data_dir = tmp_path / "data"
    shutil.copytree(tiny_cohort, data_dir, ignore=shutil.ignore_patterns("raw"))
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["split"]["folds"][1] = []
    (data_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    settings, _ = _settings(data_dir, TINY_ARGV)
    with pytest.raises(ValueError, match="empty training .* or evaluation"):
        protocol.run_unit(runs.Unit("crossval", "unet", "bce", 1), settings, tmp_path / "out", progress=False)


@pytest.mark.parametrize("argv, ok", [(["--image-size", "16"], True), (["--image-size", "15"], False),
                                      (["--batch-size", "1", "--max-epochs", "1"], True), (["--batch-size", "0"], False),
                                      (["--max-epochs", "0"], False)])
def test_settings_bounds(tiny_cohort, argv, ok):
    if ok:
        assert _settings(tiny_cohort, argv)[0]
    else:
        with pytest.raises(SystemExit):
            _settings(tiny_cohort, argv)
