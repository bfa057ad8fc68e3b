"""End-to-end: crossval -> tables -> figures on a tiny built-in cohort; resume, refusal, hold-out.

Slow (a few minutes of CPU): tiny U-Net (filters 4, 8), 32 px, 1 epoch, one attacked ε.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tfrobseg.dataset.manifest import Manifest

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model", "unet", "--epsilons", "0.5", "--max-epochs", "1", "--filters", "4,8",
        "--image-size", "32", "--no-xla", "--no-progress", "--seed", "0"]
METRIC_COLUMNS = {"phase", "model", "loss", "fold", "attack", "attack_loss", "patient_id", "epsilon", "dice",
                  "hd95", "assd", "empty_pred", "empty_gt", "psnr", "ssim", "rmse", "spacing_z", "spacing_y",
                  "spacing_x", "n_slices"}
NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages)", re.MULTILINE)  # TensorFlow's native log lines

pytestmark = pytest.mark.slow


def _run(script, *args, check=True):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(REPO / script), *map(str, args)], capture_output=True, encoding="utf-8",
                          errors="replace", check=False,
                          cwd=REPO, env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_crossval_resume_refuse_tables_figures(tiny_cohort, tmp_path):
    out = tmp_path / "res"
    base = ["--data", tiny_cohort, "--out", out, "--loss", "bce,dice", "--folds", "0,1", *TINY]
    # 1) Stop after the first unit (as an interruption would), and leave a half-written second unit.
    _run("experiments/crossval.py", *base, "--max-units", "1", "--no-tables")
    markers = sorted(out.glob("crossval/*/*/*/DONE.json"))
    assert [m.parent.relative_to(out).as_posix() for m in markers] == ["crossval/unet/bce/fold0"]
    first_mtime = markers[0].stat().st_mtime_ns
    half = out / "crossval/unet/bce/fold1"
    half.mkdir(parents=True)
    (half / "history.csv").write_text("epoch,loss\n1,0.9\n")

    # 2) The re-run, with two worker processes (the built-in preset's default), skips the finished
    #    unit, restarts the interrupted one and completes the grid.
    proc = _run("experiments/crossval.py", *base, "--jobs", "2")
    assert not NOISE.search(proc.stdout + proc.stderr), proc.stderr[-3000:]  # hidden, workers' lines too
    assert len(list(out.glob("crossval/*/*/*/DONE.json"))) == 4
    assert markers[0].stat().st_mtime_ns == first_mtime
    log = (out / "log.txt").read_text(encoding="utf-8")
    assert log.count("start crossval/unet/bce/fold0") == 1
    assert "skip crossval/unet/bce/fold0 (complete)" in log
    assert "crossval/unet/bce/fold1 was interrupted or failed earlier: restarting it from scratch" in log
    assert log.count("start crossval/") == 4 and log.count("done crossval/") == 4  # 1 before, 3 by the workers
    assert "Tables:" in proc.stdout and "Combined results:" in proc.stdout

    # The same grid in one call with one worker gives byte-identical numbers: a unit's result depends
    # neither on --jobs, nor on the units run before it in the same process, nor on a resume.
    sequential = tmp_path / "seq"
    _run("experiments/crossval.py", *base[:3], sequential, *base[4:], "--jobs", "1", "--no-tables")
    for path in sorted(out.glob("crossval/*/*/*/metrics.csv")):
        assert path.read_bytes() == (sequential / path.relative_to(out)).read_bytes(), path

    # Per-unit outputs and the combined CSV.
    unit = out / "crossval/unet/dice/fold1"
    for name in ("metrics.csv", "config.json", "history.csv", "best.keras", "DONE.json"):
        assert (unit / name).is_file(), name
    m = pd.read_csv(unit / "metrics.csv")
    assert METRIC_COLUMNS <= set(m.columns)
    cfg = json.loads((unit / "config.json").read_text(encoding="utf-8"))
    assert sorted(m["epsilon"].unique()) == [0.0, 0.5]
    assert len(m) == 2 * len(cfg["patients"]["eval"])
    assert set(m["patient_id"]) == set(cfg["patients"]["eval"])
    assert not set(cfg["patients"]["eval"]) & set(cfg["patients"]["train"])
    assert cfg["seed"] == 0 and cfg["settings"]["data_fingerprint"] and cfg["versions"]["tensorflow"]
    assert (m["spacing_y"] == 0.5 * 256 / 32).all()  # resampled to 32 px: spacing scaled
    combined = pd.read_csv(out / "results_crossval.csv")
    assert len(combined) == sum(len(pd.read_csv(p)) for p in out.glob("crossval/*/*/*/metrics.csv"))

    # 3) Different settings into the same folder are refused; nothing is deleted.
    refused = _run("experiments/crossval.py", *base[:-1], "1", check=False)  # --seed 1
    assert refused.returncode == 2 and "refused" in refused.stderr and "seed" in refused.stderr
    assert len(list(out.glob("crossval/*/*/*/DONE.json"))) == 4

    # verify.py: folds 0, 1 of 3 ran, so each model x loss has a gap; the rest is intact.
    checked = _run("experiments/verify.py", "--results", out, check=False)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "problem: crossval/unet/bce: fold(s) 2 missing (have fold0, fold1)" in checked.stdout
    assert checked.stdout.splitlines()[-1].endswith("4 unit(s) complete, 0 running; 2 problem(s), 0 warning(s)")

    # 4) Tables and figures from the results folder.
    _run("experiments/tables.py", "--results", out)
    for name in ("table_I.md", "table_I.tex", "table_I.csv", "table_III_vs_published.md", "table_III_clean.csv"):
        assert (out / "tables" / name).is_file(), name
    t3 = pd.read_csv(out / "tables/table_III.csv")
    assert list(t3.columns[:4]) == ["Loss Function", "DC", "HD95 (mm)", "ASD (mm)"]
    assert list(t3["Loss Function"]) == ["BCE", "Dice"]
    proc = _run("figures/make_figures.py", "--results", out, "--no-train")
    figs = out / "figures"
    for name in ("robustness_crossval_per_model.png", "robustness_crossval_per_loss.pdf"):
        assert (figs / name).is_file(), name
    assert list(figs.glob("fallback_unet_*.png"))  # the study's figure models were not run
    assert "skipped: Figure 1" in proc.stdout


def test_a_diverging_unit_fails_by_name_without_a_marker(tiny_cohort, tmp_path):
    # The command: learning rate 1e6, 3 epochs, tiny settings (float32 on this CPU). The loss stays
    # finite (≈ 1e10: ReLU flushes the NaN activations) but the batch-norm statistics overflow in epoch 1.
    # Under mixed_float16 the loss itself is NaN at epoch 1, batch 2. Either way the run must stop the unit,
    # say which and why, exit non-zero and leave no completion marker.
    for precision, expected in (("float32", "the weights became"), ("mixed_float16", "the training loss became NaN")):
        out = tmp_path / precision
        proc = _run("experiments/crossval.py", "--data", tiny_cohort, "--out", out, "--loss", "bce", "--folds", "0",
                    *TINY, "--learning-rate", "1e6", "--max-epochs", "3", "--precision", precision, check=False)
        unit = out / "crossval/unet/bce/fold0"
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert f"failed: crossval/unet/bce/fold0: NaN/inf in training: {expected}" in proc.stderr
        assert "at epoch 1" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
        assert not (unit / "DONE.json").exists() and not (unit / "best.keras").exists()
        failure = json.loads((unit / "FAILED.json").read_text(encoding="utf-8"))
        assert "NaN" in failure["reason"] and "TrainingDiverged" in failure["details"]


def test_holdout_with_split_file(tiny_cohort, tmp_path):
    ok = Manifest.read(tiny_cohort).ok_patients
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ok[:2], "val": [], "test": ok[2:3]}))
    out = tmp_path / "hold"
    _run("experiments/holdout.py", "--data", tiny_cohort, "--out", out, "--split", split, "--loss", "bce", *TINY)
    m = pd.read_csv(out / "holdout/unet/bce/holdout/metrics.csv")
    assert set(m["patient_id"]) == {ok[2]} and set(m["fold"]) == {-1}
    assert (out / "tables/table_II.md").is_file() and (out / "tables/table_IV.md").is_file()


def test_holdout_on_the_real_sample(sample_dir, tmp_path):
    # Train on ProstateX-0000, attack ProstateX-0001: metrics carry the real spacing (3.0, 0.5, 0.5).
    data = tmp_path / "px"
    _run("data_prep/prostatex.py", "--images", sample_dir / "images", "--masks", sample_dir / "masks/whole_gland",
         "--image-list", sample_dir / "image_list.csv", "--out", data, "--no-n4", "--workers", "2", "--quiet")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["ProstateX-0000"], "val": [], "test": ["ProstateX-0001"]}))
    out = tmp_path / "res"
    _run("experiments/holdout.py", "--data", data, "--split", split, "--out", out, "--model", "unet", "--loss", "dice",
         "--epsilons", "0.5", "--max-epochs", "1", "--filters", "4,8", "--no-xla", "--no-progress")
    m = pd.read_csv(out / "holdout/unet/dice/holdout/metrics.csv")
    assert set(m["patient_id"]) == {"ProstateX-0001"} and sorted(m["epsilon"]) == [0.0, 0.5]
    assert (m[["spacing_z", "spacing_y", "spacing_x"]].to_numpy() == [3.0, 0.5, 0.5]).all()
    cfg = json.loads((out / "holdout/unet/dice/holdout/config.json").read_text(encoding="utf-8"))
    assert cfg["patients"] == {"train": ["ProstateX-0000"], "val": [], "eval": ["ProstateX-0001"]}
    assert (m["n_slices"] == 19).all() and m["hd95"].notna().all()


def test_defenses_baseline_and_defended_units_report_and_resume(tiny_cohort, tmp_path):
    """experiments/defenses.py: the baseline and two defenses in one pool, the report, the gradient-masking rows
    of the distilled network, a defended best.keras that loads in safe mode, and a resume that computes nothing."""
    out = tmp_path / "def"
    argv = ["--data", tiny_cohort, "--out", out, "--phase", "holdout", "--defense", "adversarial,distillation",
            "--defense-option", "distillation.temperature=20", "--attack", "fgsm", *TINY[2:], "--jobs", "2"]
    proc = _run("experiments/defenses.py", *argv)
    assert not NOISE.search(proc.stdout + proc.stderr), proc.stderr[-3000:]
    folders = {"baseline", "adversarial", "distillation-temperature20"}
    assert {p.relative_to(out).parts[0] for p in out.glob("*/holdout/unet/*/holdout/DONE.json")} == folders
    record = json.loads((out / "distillation-temperature20/holdout/unet/dice/holdout/config.json").read_text())
    assert record["settings"]["defense"] == {"name": "distillation", "options": {"temperature": 20.0}}
    assert "teacher" in record["training"]
    rows = pd.read_csv(out / "defenses_results.csv")
    assert set(rows["defense"]) == {"baseline", "adversarial", "distillation(temperature=20)"}
    views = rows.groupby("defense")["view"].unique().map(sorted).to_dict()
    assert views["distillation(temperature=20)"] == ["T=20", "deployed"] and views["baseline"] == ["deployed"]
    assert (out / "report" / "defenses_fgsm.md").is_file() and "Wilcoxon" in proc.stdout

    import keras

    import tfrobseg.defenses.model

    loaded = keras.saving.load_model(out / "adversarial/holdout/unet/dice/holdout/best.keras", safe_mode=True)
    assert isinstance(loaded, tfrobseg.defenses.model.DefendedModel) and loaded.defense.name == "adversarial"

    # Each folder is a results folder of its own: the distilled one's extra rows (the check) are expected.
    assert _run("experiments/verify.py", "--results", out / "distillation-temperature20").returncode == 0

    again = _run("experiments/defenses.py", *argv)
    assert again.stdout.count("1 unit(s) already complete, 0 to compute in this call") == 3
    assert "baseline: [1/1] skip holdout/unet/dice/holdout (complete)" in again.stdout
