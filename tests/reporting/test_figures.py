"""tfrobseg.reporting.figures: the slice a study figure shows and the colours of its prediction panel."""


import numpy as np

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.pipeline import make_dataset
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import Unit, UnitPatients, UnitRecord
from tfrobseg.reporting import figures
from tfrobseg.training import TrainConfig


def test_overlay_colours():
    mask = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0]], bool)
    rgba = figures.overlay_rgba(mask, pred)
    np.testing.assert_allclose(rgba[0, 0], [1.0, 1.0, 0.0, figures.OVERLAY_ALPHA])  # overlap: yellow
    np.testing.assert_allclose(rgba[0, 1], [0.0, 0.8, 0.0, figures.OVERLAY_ALPHA])  # missed reference: green
    np.testing.assert_allclose(rgba[0, 2], [0.9, 0.0, 0.0, figures.OVERLAY_ALPHA])  # false positive: red
    assert rgba[0, 3, 3] == 0.0  # background stays transparent


def test_figure_shows_the_largest_reference_slice_of_the_first_eval_patient(tiny_cohort, tmp_path):
    from tfrobseg.models import build_model

    patients = Manifest.read(tiny_cohort).split["folds"][0]
    unit = tmp_path / "crossval" / "unet" / "dice" / "fold0"
    unit.mkdir(parents=True)
    build_model("unet", (32, 32, 1), filters=(4, 8)).save(unit / "best.keras")
    settings = Settings(data_dir=str(tiny_cohort), data_fingerprint="-", split_file=None, split_sha256=None,
                        epsilons=(0.0, 0.5), attack="fgsm", attack_loss="same", filters=(4, 8), image_size=32,
                        train=TrainConfig(precision="float32"))
    UnitRecord(Unit("crossval", "unet", "dice", 0), settings, UnitPatients([], [], patients), {}, {}).write(tmp_path)
    # The reference areas of the first evaluation patient, at the size the network sees.
    ds = make_dataset(tiny_cohort, patients[:1], batch_size=1, image_size=32)
    areas = {int(e["slice_index"][0]): float(e["mask"].numpy().sum()) for e in ds}
    largest = max(areas, key=areas.get)
    assert list(areas.values()).count(areas[largest]) == 1  # the premise: one largest slice

    res = figures.attack_slice(unit)
    assert res["patient_id"] == patients[0] and res["slice_index"] == largest and res["gt_area"] == areas[largest]
    assert res["mask"].sum() == areas[largest] and [o["epsilon"] for o in res["outs"]] == [0.0, 0.5]
    paths = figures.attack_figure(unit, "test", tmp_path / "figure")
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]


def test_an_ensemble_figure_attacks_each_eps_with_its_worst_member(tmp_path):
    import pandas as pd

    from tfrobseg.experiment.attacks import AttackSpec

    fgsm, pgd = AttackSpec.of("fgsm"), AttackSpec.of("pgd", {"steps": 2})
    ens = AttackSpec.of("ensemble", members=[fgsm, pgd])
    rows = [("fgsm", "P1", 0.5, ""), ("ensemble", "P1", 0.0, ""), ("ensemble", "P1", 0.5, "pgd"),
            ("ensemble", "P1", 1.0, "fgsm"), ("ensemble", "P2", 0.5, "fgsm")]
    pd.DataFrame(rows, columns=["attack", "patient_id", "epsilon", "worst_attack"]).to_csv(
        tmp_path / "metrics.csv", index=False)
    assert figures._figure_attacks(tmp_path, ens, "P1", [0.0, 0.5, 1.0]) == [(fgsm, [0.0, 1.0]), (pgd, [0.5])]
    assert figures._figure_attacks(tmp_path, pgd, "P1", [0.0, 0.5]) == [(pgd, [0.0, 0.5])]
