"""End-to-end: the related-work scripts on the tiny cohort - report files, the paper beside ours, a resume that
recomputes nothing, several folders (2D and 3D) in one pool.

Slow: tiny networks (filters 4, 8), 32 px, 1 epoch, fold 0 only.
"""

import pandas as pd
import pytest
from test_scripts import NOISE, _run

pytestmark = pytest.mark.slow

TINY = ["--folds", "0", "--max-epochs", "1", "--filters", "4,8", "--image-size", "32", "--no-xla", "--no-progress",
        "--jobs", "1"]


def test_attack_loss_writes_the_table_beside_the_paper_and_resumes(tiny_cohort, tmp_path):
    out = tmp_path / "al"
    argv = ["--data", tiny_cohort, "--out", out, "--model", "unet", "--attack-losses", "bce", "--epsilons", "0.1,0.5",
            *TINY]
    first = _run("experiments/attack_loss.py", *argv)
    assert not NOISE.search(first.stdout + first.stderr), first.stderr[-3000:]
    for name in ("attack_loss.md", "attack_loss_1.csv", "attack_loss_2.csv", "attack_loss.png", "attack_loss.pdf"):
        assert (out / "report" / name).is_file(), name
    rows = pd.read_csv(out / "attack_loss_results.csv")
    assert sorted(rows["attack_loss"].unique()) == ["bce", "dice_focal"] and set(rows["epsilon"]) == {0.0, 0.1, 0.5}
    table = pd.read_csv(out / "report" / "attack_loss_1.csv")
    clean = rows[(rows["epsilon"] == 0) & (rows["attack_loss"] == "dice_focal")]["dice"].mean()
    attacked = rows[(rows["epsilon"] == 0.1) & (rows["attack_loss"] == "bce")]["dice"].mean()
    assert table.at[0, "AS BCE"] == pytest.approx((clean - attacked) / clean, abs=1e-4)  # at the smallest eps
    assert "EffB7 U-Net++" in first.stdout and "0.8024" in first.stdout  # the paper's table is printed too
    again = _run("experiments/attack_loss.py", *argv)
    assert "1 unit(s) already complete, 0 to compute" in again.stdout and "0 computed, 1 already there" in again.stdout
    assert pd.read_csv(out / "attack_loss_results.csv").equals(rows)


def test_iterations_trains_a_2d_and_a_3d_unet_in_one_pool(tiny_cohort, tmp_path):
    out = tmp_path / "it"
    proc = _run("experiments/iterations.py", "--data", tiny_cohort, "--out", out, "--iterations", "1,2",
                "--filters-3d", "4,8", "--patch-shape", "4,32,32", *TINY)
    rows = pd.read_csv(out / "iterations_results.csv")
    assert set(rows["network"]) == {"2d", "3d"} and set(rows["model"]) == {"unet", "unet_3d"}
    assert set(rows["attack"]) == {"fgsm", "ifgsm", "targeted_ifgsm"}
    # alpha * N = eps: the largest perturbation of every attacked voxel is eps, whatever N.
    attacked = rows[rows["epsilon"] > 0]
    assert (attacked["rmse"] <= 0.1 + 1e-6).all() and rows[rows["epsilon"] == 0]["rmse"].eq(0).all()
    table = pd.read_csv(out / "report" / "iterations_1.csv")
    assert list(table["Attack"]) == ["No attack", "FGSM", "i-FGSM (N=2)", "ti-FGSM (N=2)"] * 2
    assert "Liu et al., Table 1" in proc.stdout
