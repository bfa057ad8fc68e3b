"""tfrobseg.experiment.cost: MACs counted from the graph against hand counts, the cost formula by hand on a
hand-written manifest, the calibration's figures and the printed estimate."""

from __future__ import annotations

import json
import math

import pytest

from tfrobseg import models
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.manifest import Manifest, PatientEntry
from tfrobseg.defenses.config import resolve_defense
from tfrobseg.experiment.cost import (
    Throughput,
    UnitCost,
    attack_passes,
    calibrate,
    estimate_units,
    format_estimate,
    training_passes,
)
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import Unit
from tfrobseg.training.config import TrainConfig

FILTERS = (4, 8, 16)


def unet_3d_macs(depth: int, size: int = 32) -> int:
    """The 3D U-Net with FILTERS on one (depth, size, size) volume, by the layer count (tfrobseg.models.count_macs,
    independent of the graph count the estimate uses; both are checked by hand in tests/models)."""
    return models.count_macs(models.build_model("unet_3d", (depth, size, size, 1), filters=FILTERS))


# --------------------------------------------------------------------------------------------------- passes
def test_attack_passes_by_hand():
    eps = (0.0, 0.1, 0.5)  # E = 3, P = 2
    assert attack_passes("fgsm", {}, eps) == 2 + 2  # one gradient for every eps, a forward pass per eps > 0
    assert attack_passes("fgsm", {}, (0.0,)) == 2
    assert attack_passes("pgd", {}, eps) == 2 * 2 * 10 + 3  # default 10 steps, the predictions of every eps
    assert attack_passes("pgd", {"steps": 3, "restarts": 2}, eps) == 2 * 2 * (2 * 3 + 1) + 3  # + a scoring pass
    assert attack_passes("ifgsm", {"steps": 4, "best_iterate": True}, eps) == 2 * (2 * 4 + 1) + 3
    assert attack_passes("segpgd", {}, eps) == attack_passes("cospgd", {}, eps) == 2 * 2 * 20 + 3
    assert attack_passes("apgd", {"steps": 5}, eps) == 2 * (2 * 5 + 1) + 3
    assert attack_passes("dag", {}, eps) == 2 * 2 * 20 + 3
    assert attack_passes("noise", {}, eps) == 3
    assert attack_passes("gaussian", {"steps": 3}, eps) == attack_passes("pgd", {"steps": 3}, eps) + 3
    assert attack_passes("rician", {"match": "fgsm"}, eps) == 4 + 3
    with pytest.raises(ValueError, match="no cost known for the attack 'nope'"):
        attack_passes("nope", {}, eps)


def test_training_passes_by_hand():
    assert training_passes(None) == [(3, 1)]
    assert training_passes(resolve_defense("adversarial")) == [(2 + 3 + 3, 1)]  # gradient, clean and adversarial
    assert training_passes(resolve_defense("adversarial", {"beta": 0})) == [(2 + 3, 1)]
    assert training_passes(resolve_defense("fast_adversarial", {"beta": 1})) == [(3, 1)]
    assert training_passes(resolve_defense("pgd_adversarial")) == [(2 * 7 + 6, 1)]
    assert training_passes(resolve_defense("trades", {"steps": 4})) == [(1 + 2 * 4 + 6, 1)]
    assert training_passes(resolve_defense("trades", {"beta": 0})) == [(3, 1)]
    assert training_passes(resolve_defense("gaussian_noise")) == [(6, 1)]
    assert training_passes(resolve_defense("distillation")) == [(3, 1), (3 + 1, 1 + 1)]  # the student runs the teacher


# --------------------------------------------------------------------------------------------------- estimate
SLICES = {"P0": 10, "P1": 12, "P2": 9, "P3": 7, "P4": 11, "P5": 13}


@pytest.fixture
def data_dir(tmp_path):
    """A manifest written by hand (no records: the estimate reads only the manifest): train P0-P2 in folds
    [P0, P1] and [P2], val P3, test P4 and P5."""
    entries = {p: PatientEntry(status="ok", labelled=True, n_slices=n, record=f"records/{p}.tfrecord")
               for p, n in SLICES.items()}
    split = {"train": ["P0", "P1", "P2"], "val": ["P3"], "test": ["P4", "P5"], "folds": [["P0", "P1"], ["P2"]],
             "unlabelled": []}
    Manifest(parameters=PrepConfig(size_hw=(64, 64)), patients=entries, split=split).write(tmp_path)
    return tmp_path


def settings_of(data_dir, **changes) -> Settings:
    base = Settings(data_dir=str(data_dir), data_fingerprint="-", split_file=None, split_sha256=None,
                    epsilons=(0.0, 0.5, 1.0), attack="fgsm", attack_loss="same", filters=FILTERS, image_size=64,
                    train=TrainConfig(batch_size=4, max_epochs=5, precision="float32", xla=False))
    for key, value in changes.items():
        setattr(base, key, value)
    return base


RATE = Throughput(gmacs=2.0, startup_s=10.0, source="calibrated on test", device="CPU", attack_gmacs=4.0,
                  attack_startup_s=3.0, score_s_per_mvoxel=0.5, read_s_per_slice=0.01)


def test_estimate_units_by_hand(data_dir):
    fold0, holdout = Unit("crossval", "unet", "dice", 0), Unit("holdout", "unet", "dice", None)
    cost0, cost_h = estimate_units([fold0, holdout], settings_of(data_dir), RATE)
    m = models.count_macs(models.build_model("unet", (64, 64, 1), filters=FILTERS))
    # fold 0 trains on P2 (9 slices), validates on P3 (7) and attacks P0 + P1 (22 slices, 24 in batches of 4)
    assert (cost0.samples_per_epoch, cost0.val_samples, cost0.eval_samples, cost0.epochs) == (9, 7, 24, 5)
    assert cost0.forward_gmac == pytest.approx(m / 1e9)
    assert cost0.train_gmac == pytest.approx(5 * (3 * m * 9 + m * 7) / 1e9)
    fgsm = 2 + 2  # the gradient, the forward passes at eps 0.5 and 1
    assert cost0.attack_gmac == pytest.approx(fgsm * m * 24 / 1e9)
    read = (9 + 7 + 10 + 12) * 0.01  # every slice of the unit's patients, read once
    assert cost0.train_s == pytest.approx(10.0 + read + 5 * (3 * m * 9 + m * 7) / 1e9 / 2.0)
    scoring = 3 * 22 * 64 * 64 / 1e6 * 0.5  # 3 eps x the evaluated voxels x seconds per Mvoxel
    assert cost0.attack_s == pytest.approx(3.0 + fgsm * m * 24 / 1e9 / 4.0 + scoring)
    assert cost0.seconds == pytest.approx(cost0.train_s + cost0.attack_s)
    assert cost0.total_gmac == pytest.approx(cost0.train_gmac + cost0.attack_gmac)
    assert cost0.hours == pytest.approx(cost0.seconds / 3600)
    # the hold-out unit trains on P0-P2 (31 slices) and attacks P4 + P5 (24 slices)
    assert (cost_h.samples_per_epoch, cost_h.eval_samples) == (31, 24)
    assert cost_h.train_gmac == pytest.approx(5 * (3 * m * 31 + m * 7) / 1e9)


def test_estimate_units_with_a_defense_the_ensemble_and_a_split_file(data_dir, tmp_path_factory):
    split = tmp_path_factory.mktemp("split") / "split.json"
    split.write_text(json.dumps({"train": ["P0", "P4"], "val": [], "test": ["P5"]}))
    settings = settings_of(data_dir, defense=resolve_defense("distillation"), attack="fgsm,ensemble",
                           attack_options={"steps": 3}, ensemble_members=("fgsm", "pgd"), split_file=str(split))
    (cost,) = estimate_units([Unit("holdout", "unet", "dice", None)], settings, Throughput.given(2.0, "CPU"))
    m = models.count_macs(models.build_model("unet", (64, 64, 1), filters=FILTERS))
    assert (cost.samples_per_epoch, cost.val_samples, cost.eval_samples, cost.runs) == (21, 0, 16, 2)
    assert cost.train_gmac == pytest.approx(5 * (3 + 4) * m * 21 / 1e9)  # the teacher's run and the student's
    passes = (2 + 2) + (2 * 2 * 3 + 3)  # FGSM once (chosen and a member), PGD with 3 steps; not the ensemble
    assert cost.attack_gmac == pytest.approx(2 * passes * m * 16 / 1e9)  # also at the training temperature
    # given: no start-up, reading or scoring
    assert cost.seconds == pytest.approx((cost.train_gmac + cost.attack_gmac) / 2.0)


def test_estimate_units_of_a_3d_network(data_dir):
    settings = settings_of(data_dir, image_size=32, patch_shape=(8, 32, 32), patches_per_volume=4)
    (cost,) = estimate_units([Unit("crossval", "unet_3d", "dice", 0)], settings, RATE)
    patch = unet_3d_macs(8)
    # 4 patches of P2; validation P3 (7 slices padded to 8); evaluation P0 and P1 (10 and 12 slices, both padded
    # to 12, the deepest one rounded up to a multiple of 4)
    assert (cost.samples_per_epoch, cost.val_samples, cost.eval_samples) == (4, 1, 2)
    assert cost.train_gmac == pytest.approx(5 * (3 * patch * 4 + unet_3d_macs(8) * 1) / 1e9)
    assert cost.attack_gmac == pytest.approx(4 * unet_3d_macs(12) * 2 / 1e9)


def test_estimate_units_needs_a_throughput_per_model(data_dir):
    with pytest.raises(ValueError, match="no throughput for the model 'unet' \\(given for: resunet\\)"):
        estimate_units([Unit("crossval", "unet", "dice", 0)], settings_of(data_dir), {"resunet": RATE})


def test_throughput_checks_its_figures():
    for bad in ({"gmacs": 0}, {"gmacs": math.inf}, {"gmacs": "12"}, {"startup_s": -1}, {"device": "TPU"},
                {"attack_gmacs": -2}, {"read_s_per_slice": math.nan}):
        values = {"gmacs": 1.0, "startup_s": 0.0, "source": "given", "device": "CPU", **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            Throughput(**values)
    assert Throughput.given(5, "GPU").attack_rate == 5.0


# --------------------------------------------------------------------------------------------------- calibrate
def test_calibrate_gives_positive_finite_figures(tmp_path):
    settings = settings_of(tmp_path, image_size=32, attack="fgsm,pgd", attack_options={"steps": 5},
                           train=TrainConfig(batch_size=2, precision="float32", xla=False), threads=1)
    (name, rate), = calibrate(settings, ["unet"], epochs=2, budget_gmac=0.01).items()
    assert name == "unet" and rate.source.startswith("calibrated on ") and rate.device in ("CPU", "GPU")
    for value in (rate.gmacs, rate.attack_gmacs, rate.score_s_per_mvoxel):
        assert math.isfinite(value) and value > 0
    assert rate.read_s_per_slice == 0  # no prepared cohort in the data folder: reading is not measured
    assert math.isfinite(rate.startup_s + rate.attack_startup_s) and min(rate.startup_s, rate.attack_startup_s) >= 0
    with pytest.raises(ValueError, match="unknown model"):
        calibrate(settings, ["nope"])
    with pytest.raises(ValueError, match="epochs must be an int >= 2"):
        calibrate(settings, ["unet"], epochs=1)


# --------------------------------------------------------------------------------------------------- format
def cost_of(uid_fold: int, seconds: float, throughput: Throughput = RATE) -> UnitCost:
    return UnitCost(unit=Unit("crossval", "unet", "dice", uid_fold), samples_per_epoch=2304, val_samples=300,
                    eval_samples=700, epochs=150, runs=1, forward_gmac=3.014, train_gmac=1.0, attack_gmac=1.0,
                    train_s=seconds * 0.75, attack_s=seconds * 0.25, throughput=throughput)


def test_format_estimate_lines_and_total():
    costs = [cost_of(0, 3600.0), cost_of(1, 7200.0), cost_of(2, 1800.0)]
    lines = format_estimate(costs, gpus_per_unit=2).splitlines()
    assert len(lines) == 1 + 3 + 1  # header, a line per unit, the total
    assert lines[0].split()[-1] == "GPU-hours"
    assert lines[1].split() == ["crossval/unet/dice/fold0", "2,304", "150", "3.014", "2.000"]  # 1 h x 2 GPUs
    assert lines[-1].startswith("3 unit(s): 7 GPU-hours in total (2 GPU(s) per unit; upper bound: every unit runs "
                                "its 150 epochs")  # (1 + 2 + 0.5) h x 2 GPUs
    assert ("calibrated on test: 2.0 GMAC/s training, 4.0 attacking, start-up 13 s per unit, reading and scoring "
            "included") in lines[-1]
    given = format_estimate([cost_of(0, 36_000.0, Throughput.given(12_000, "GPU"))] * 4, gpus_per_unit=0)
    assert given.splitlines()[-1].startswith("4 unit(s): 40.0 CPU-hours in total (a unit's process")
    assert "throughput 12000 GMAC/s given, start-up, reading and scoring not included" in given
    with pytest.raises(ValueError, match="gpus_per_unit"):
        format_estimate(costs, gpus_per_unit=-1)
