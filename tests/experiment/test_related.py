"""The related-work experiments: their tables from hand-made rows, the papers' numbers, options and presets."""

import argparse

import numpy as np
import pandas as pd
import pytest

from tfrobseg.experiment import attack_loss, related, two_readers
from tfrobseg.experiment import settings as S
from tfrobseg.reporting.related import load_related, related_source


def _rows(dice: dict[tuple[str, str, float], list[float]], loss: str = "dice_focal", **extra) -> pd.DataFrame:
    """Tidy rows: ``dice[(model, attack_loss, eps)]`` lists one Dice per patient."""
    out = []
    for (model, attack_loss_, eps), values in dice.items():
        for k, v in enumerate(values):
            out.append({"phase": "crossval", "model": model, "loss": extra.get("training", loss), "attack": "fgsm",
                        "attack_loss": attack_loss_, "patient_id": f"P{k}", "epsilon": eps, "dice": v,
                        "hd95": 2.0 + k})
    return pd.DataFrame(out)


def test_attack_success_table_is_wang_and_xu_eq7_on_the_mean_dice():
    rows = _rows({("unet", "dice_focal", 0.0): [0.8, 0.6], ("unet", "dice_focal", 0.1): [0.4, 0.2],
                  ("unet", "bce", 0.0): [0.8, 0.6], ("unet", "bce", 0.1): [0.1, 0.3],
                  ("unet", "dice_focal", 0.25): [0.0, 0.0]})
    table = attack_loss.attack_success_table(rows, 0.1, {"unet": 1_234_000})
    row = table.iloc[0]
    assert row["Model"] == "U-Net" and row["Parameters"] == "1.23M" and row["Normal"] == pytest.approx(0.7)
    # The training loss first, then the others in the paper's order.
    assert list(table.columns[3:]) == ["FGSM Dice-Focal (training)", "AS Dice-Focal (training)", "FGSM BCE", "AS BCE"]
    assert row["FGSM Dice-Focal (training)"] == pytest.approx(0.3)
    assert row["AS Dice-Focal (training)"] == pytest.approx((0.7 - 0.3) / 0.7, abs=1e-4)
    assert row["AS BCE"] == pytest.approx((0.7 - 0.2) / 0.7, abs=1e-4)
    with pytest.raises(ValueError, match="eps 0.5 was not attacked"):
        attack_loss.attack_success_table(rows, 0.5)


def test_paper_tables_are_the_printed_numbers():
    table = attack_loss.paper_table().set_index("Model")
    assert table.at["EffB7 U-Net++", "Normal"] == 0.8024 and table.at["EffB7 U-Net++", "FGSM BCE"] == 0.3750
    # Wang & Xu: BCE was the most successful attack loss for every model of their Table II.
    assert (table["AS BCE"] > table["AS Dice-Focal (training)"]).all()
    assert table.at["VGG U-Net", "AS BCE"] == pytest.approx((0.7509 - 0.4063) / 0.7509, abs=1e-4)
    thakur = two_readers.paper_table().set_index("Loss")
    assert thakur.at["Adaptive Focal Loss Function", "DSC"] == pytest.approx(0.940013)
    assert list(load_related("003")["column"].unique()) == ["f2", "dice", "specificity", "sensitivity", "precision"]
    assert "Wang" in related_source("001") and "Thakur" not in related_source("001")
    with pytest.raises(ValueError, match="unknown paper"):
        load_related("005")


def test_two_readers_table_orders_the_losses_and_tests_against_focal():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, 8)
    rows = pd.concat([_rows({("unet", "bce", 0.0): list(base + shift), ("unet", "bce", 0.1): list(base - 0.3)},
                            training=loss) for loss, shift in (("adaptive_focal", 0.05), ("focal", 0.0),
                                                               ("ag_bce", 0.0))])
    table = two_readers.two_readers_table(rows, 0.1)
    assert list(table["Loss"]) == ["Focal", "AG-BCE", "Adaptive Focal"]
    assert table["p vs focal (Bonferroni)"].iloc[0] == "—"
    # Every patient better by 0.05: the smallest two-sided p of 8 pairs, 2/2^8, times 2 comparisons.
    assert float(table["p vs focal (Bonferroni)"].iloc[2]) == pytest.approx(2 * 2 / 2**8, rel=1e-2)
    assert float(table["p vs focal (Bonferroni)"].iloc[1]) == 1.0  # identical to focal
    assert table["DSC"].iloc[1].startswith(f"{base.mean():.3f} ±")


def test_describe_cases_names_the_patients_and_the_protocol():
    rows = _rows({("unet", "bce", 0.0): [0.5, 0.6, 0.7]})
    assert related.describe_cases(rows) == ("3 patient(s) per model x loss, each network evaluated on the patients "
                                            "it did not train on (cross-validation)")
    assert "hold-out" in related.describe_cases(rows.assign(phase="holdout"))


def test_experiment_parser_and_preset_fill_only_what_the_user_left_out():
    parser = related.experiment_parser(attack_loss.EXPERIMENT, attack_loss._options)
    args = parser.parse_args([])
    assert args.model.split(",") == ["unet", "unet_plus_plus", "unet_efficientnet", "unet_plus_plus_efficientnet"]
    assert args.loss == "dice_focal" and args.epsilons is None and args.image_size is None
    assert attack_loss.EXPERIMENT.apply_preset(args) == "builtin"
    assert args.image_size == 64 and args.epsilons == (0.05, 0.1, 0.25) and args.out == "results/attack_loss/builtin"
    assert args.folds == "0"
    given = parser.parse_args(["--data", "data/mine", "--image-size", "96", "--epsilons", "0.5"])
    assert attack_loss.EXPERIMENT.apply_preset(given) is None
    assert (given.image_size, given.epsilons, given.out) == (96, (0.5,), "results/attack_loss/mine")
    readers = related.experiment_parser(two_readers.EXPERIMENT).parse_args(["--data", "d"])
    two_readers.EXPERIMENT.apply_preset(readers)
    assert readers.attack_loss == "bce" and readers.phase == "crossval"


def test_attack_loss_options_are_checked_before_any_work(tmp_path, capsys):
    assert attack_loss.main(["--attack-losses", "ag_bce", "--out", str(tmp_path / "x")]) == 2
    assert "--attack-losses: ag_bce" in capsys.readouterr().err
    assert attack_loss.main(["--table-epsilon", "0.3", "--out", str(tmp_path / "x")]) == 2
    assert "--table-epsilon 0.3 is not among" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_loss_options_are_parsed_per_loss_and_checked():
    assert S.resolve_loss_options(["tversky.alpha=0.7", "tversky.beta=0.3"], ["tversky", "dice"]) == \
        {"tversky": {"alpha": 0.7, "beta": 0.3}}
    for items, message in ((["dice.smooth=1"], "'dice' is not a loss of this run"),
                           (["tversky.alpha"], "expected LOSS.KEY=VALUE"),
                           (["tversky.gamma=2"], "--loss-option tversky"),
                           (["tversky.alpha=2"], "alpha")):
        with pytest.raises(SystemExit, match=message):
            S.resolve_loss_options(items, ["tversky"])


def test_settings_use_the_loss_options_and_keep_old_fingerprints(tiny_cohort):
    from tfrobseg.experiment import cli

    args = cli.build_parser("crossval").parse_args(["--loss", "tversky", "--loss-option", "tversky.alpha=0.7"])
    settings, _ = S.resolve_settings(args, tiny_cohort, None, gpus=0, loss_names=["tversky"])
    assert settings.loss("tversky").get_config()["alpha"] == 0.7
    assert settings.loss("dice").get_config()["smooth"] == 1.0
    assert settings.fingerprint()["loss_options"] == {"tversky": {"alpha": 0.7}}
    assert S.Settings.from_json(settings.to_json()) == settings
    plain, _ = S.resolve_settings(cli.build_parser("crossval").parse_args([]), tiny_cohort, None, gpus=0)
    assert "loss_options" not in plain.fingerprint()  # folders made before loss options keep their hash


def test_two_reader_losses_need_an_attack_loss(tiny_cohort, capsys):
    from tfrobseg.experiment import cli

    args = cli.build_parser("crossval").parse_args(["--data", str(tiny_cohort), "--loss", "ag_bce"])
    with pytest.raises(SystemExit, match="--attack-loss"):
        cli.prepare_run("crossval", args)


def test_experiment_defaults_mapping_is_not_shared():
    a = related.Experiment("a", "", "unet", "dice", {})
    assert a.defaults == {} and isinstance(a.defaults, dict)
    args = argparse.Namespace(data="d", out=None, epsilons=None)
    a.apply_preset(args)
    assert args.epsilons is None and args.out == "results/a/d"


def test_model_options_are_parsed_per_model_and_checked(tiny_cohort):
    from tfrobseg.experiment import cli

    names = ["unet_efficientnet", "unet"]
    assert S.resolve_model_options(["unet_efficientnet.variant=b1", "unet_efficientnet.weights=none"], names) == \
        {"unet_efficientnet": {"variant": "b1", "weights": None}}
    for items, message in ((["unet.variant=b1"], "unet takes no option"),
                           (["unet_3d.dilation_rates=1"], "not a model of this run"),
                           (["unet_efficientnet.variant"], "expected MODEL.KEY=VALUE")):
        with pytest.raises(SystemExit, match=message):
            S.resolve_model_options(items, names)
    argv = ["--data", str(tiny_cohort), "--model", "unet_efficientnet", "--loss", "dice", "--image-size", "32",
            "--filters", "4,8", "--model-option", "unet_efficientnet.variant=b9"]
    with pytest.raises(SystemExit, match="--model unet_efficientnet: .*variant"):
        cli.prepare_run("crossval", cli.build_parser("crossval").parse_args(argv))
