"""tfrobseg.reporting.attack_comparison and figures/attack_comparison.py: means and stds against hand
computations, labels of an attack run with several settings, attack order, the figure's line styles, errors."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tfrobseg.reporting import attack_comparison as ac

REPO = Path(__file__).resolve().parents[2]
UNIT0 = "crossval/unet/bce/fold0"


def _row(attack, patient, eps, dice, *, fold=0, params="{}", pct=None, phase="crossval"):
    row = {"phase": phase, "model": "unet", "loss": "bce", "fold": fold, "attack": attack, "attack_params": params,
           "worst_attack": "", "patient_id": patient, "epsilon": eps, "dice": dice, "hd95": 10 * (1 - dice),
           "assd": 2 * (1 - dice)}
    if pct is not None:
        row["epsilon_pct_std"] = pct
    return row


def _frame():
    """fold 0: FGSM at ε 0 / 0.5 for patients A, B, C; fold 1: FGSM at ε 0.5 for D."""
    dice = {"A": (0.9, 0.2), "B": (0.8, 0.4), "C": (0.7, 0.9)}
    pct = {"A": 10.0, "B": 40.0, "C": 20.0}  # ε 0.5 as % of each case's intensity std
    rows = [_row("fgsm", p, e, d, pct=pct[p] * e / 0.5) for p, ds in dice.items() for e, d in zip((0.0, 0.5), ds)]
    rows.append(_row("fgsm", "D", 0.5, 0.1, fold=1, pct=50.0))
    return pd.DataFrame(rows)


def test_mean_and_sample_std_of_one_unit_by_hand():
    s = ac.summarize_attacks(_frame(), unit=UNIT0)
    at = s[s["epsilon"] == 0.5].iloc[0]
    # Dice 0.2, 0.4, 0.9: mean 0.5; deviations -0.3, -0.1, 0.4, squares 0.09 + 0.01 + 0.16 = 0.26, / (3 - 1).
    assert at["dice_mean"] == pytest.approx(0.5)
    assert at["dice_std"] == pytest.approx(math.sqrt(0.13))
    assert (at["n"], at["n_units"], at["label"]) == (3, 1, "FGSM")
    # HD95 = 10 (1 - Dice): 8, 6, 1 -> mean 5, std 10 sqrt(0.13).
    assert at["hd95_mean"] == pytest.approx(5.0) and at["hd95_std"] == pytest.approx(10 * math.sqrt(0.13))
    # The median of 10, 40, 20 % is 20 %.
    assert at["epsilon_pct_std_median"] == pytest.approx(20.0)


def test_all_units_pool_their_patients():
    s = ac.summarize_attacks(_frame())
    at = s[s["epsilon"] == 0.5].iloc[0]
    # 0.2, 0.4, 0.9, 0.1: mean 0.4; squares 0.04 + 0 + 0.25 + 0.09 = 0.38, / 3.
    assert (at["n"], at["n_units"]) == (4, 2)
    assert at["dice_mean"] == pytest.approx(0.4) and at["dice_std"] == pytest.approx(math.sqrt(0.38 / 3))
    assert at["epsilon_pct_std_median"] == pytest.approx(30.0)  # median of 10, 40, 20, 50
    assert s.loc[s["epsilon"] == 0.0, "n"].item() == 3


def test_attacks_in_order_unknown_ones_last():
    names = ["rician", "zeta", "ensemble", "apgd", "noise", "fgsm", "dag", "gaussian", "pgd", "alpha", "segpgd",
             "cospgd", "ifgsm"]
    rows = pd.DataFrame([_row(a, "A", e, 0.5) for a in names for e in (0.5, 0.1)])
    s = ac.summarize_attacks(rows)
    assert list(pd.unique(s["attack"])) == ["fgsm", "ifgsm", "pgd", "segpgd", "cospgd", "apgd", "dag", "ensemble",
                                            "noise", "gaussian", "rician", "alpha", "zeta"]
    assert list(s["epsilon"][:2]) == [0.1, 0.5]


def test_an_attack_with_several_settings_gets_the_differing_options():
    p10 = json.dumps({"seed": 0, "steps": 10, "step_factor": 2.5})
    p40 = json.dumps({"step_factor": 2.5, "steps": 40, "seed": 0})  # same keys, another order
    p40m = json.dumps({"seed": 0, "steps": 40, "step_factor": 2.5, "momentum": 0.9})
    rows = pd.DataFrame([_row("pgd", "A", 0.5, 0.3, params=p10), _row("pgd", "B", 0.5, 0.5, params=p10),
                         _row("pgd", "A", 0.5, 0.1, params=p40), _row("pgd", "A", 0.5, 0.0, params=p40m),
                         _row("fgsm", "A", 0.5, 0.6, params=None)])
    labels = ac.attack_labels(rows)
    assert list(labels["label"]) == ["PGD (steps=10)"] * 2 + ["PGD (steps=40)", "PGD (momentum=0.9, steps=40)", "FGSM"]
    assert labels["attack_params"].iat[2] == json.dumps(json.loads(p40), sort_keys=True)
    s = ac.summarize_attacks(rows)
    assert list(s["label"]) == ["FGSM", "PGD (momentum=0.9, steps=40)", "PGD (steps=10)", "PGD (steps=40)"]
    assert s.loc[s["label"] == "PGD (steps=10)", "dice_mean"].item() == pytest.approx(0.4)


def test_attack_loss_is_a_setting_and_the_units_own_loss_is_one():
    # Two units trained with bce and dice, each attacked with its own loss (metrics.csv) and with tversky.
    rows = []
    for loss, own in (("bce", 0.3), ("dice", 0.5)):
        rows += [{**_row("fgsm", "A", 0.5, own), "loss": loss, "attack_loss": loss},
                 {**_row("fgsm", "A", 0.5, own - 0.1), "loss": loss, "attack_loss": "tversky"}]
    rows = pd.DataFrame(rows)
    assert list(ac.attack_labels(rows)["label"]) == ["FGSM (attack_loss=same)", "FGSM (attack_loss=tversky)"] * 2
    s = ac.summarize_attacks(rows)  # a unit's two rows differ in the attack loss only: not repeats
    assert list(s["label"]) == ["FGSM (attack_loss=same)", "FGSM (attack_loss=tversky)"]
    same = s[s["attack_loss"] == "same"].iloc[0]
    assert (same["label"], same["n"], same["n_units"]) == ("FGSM (attack_loss=same)", 2, 2)
    assert same["dice_mean"] == pytest.approx(0.4)
    # One attack loss for all: no suffix.
    assert set(ac.attack_labels(rows[rows["attack_loss"] == rows["loss"]])["label"]) == {"FGSM"}


def test_ensemble_members_label():
    def members(steps):
        return json.dumps([{"attack": "fgsm", "params": {}}, {"attack": "pgd", "params": {"steps": steps}}])

    rows = pd.DataFrame([_row("ensemble", "A", 0.5, 0.1, params=members(3)),
                         _row("ensemble", "A", 0.5, 0.2, params=members(20))])
    assert list(ac.attack_labels(rows)["label"]) == ["ensemble (robust) (members=fgsm+pgd(steps=3))",
                                                     "ensemble (robust) (members=fgsm+pgd(steps=20))"]
    with pytest.raises(ValueError, match="attack_params must be a JSON object or list, got '3'"):
        ac.attack_labels(pd.DataFrame([_row("pgd", "A", 0.5, 0.1, params="3")]))


def test_unit_selection_and_errors():
    rows = pd.concat([_frame(), pd.DataFrame([_row("fgsm", "E", 0.5, 0.3, fold=-1, phase="holdout")])])
    assert list(ac.select_unit(rows, "holdout/unet/bce/holdout")["patient_id"]) == ["E"]
    with pytest.raises(LookupError, match=r"no unit 'crossval/unet/bce/fold7' in the rows; units: crossval/unet/bce/"
                                          r"fold0, crossval/unet/bce/fold1, holdout/unet/bce/holdout$"):
        ac.select_unit(rows, "crossval/unet/bce/fold7")
    with pytest.raises(LookupError, match="no attack rows"):
        ac.summarize_attacks(pd.DataFrame())
    with pytest.raises(ValueError, match="metric 'iou' is not one of dice, hd95, assd"):
        ac.check_metric("iou")
    twice = pd.concat([_frame(), _frame().iloc[:1]])
    with pytest.raises(ValueError, match="1 row.s. repeat a unit × attack setting × patient × ε"):
        ac.summarize_attacks(twice)


def test_table_cells_and_headers():
    s = ac.summarize_attacks(_frame(), unit=UNIT0)
    table = ac.format_attack_table(s, "dice")
    assert list(table.columns) == ["attack", "ε=0 (0.0 % σ)", "ε=0.5 (20.0 % σ)", "n"]
    assert table.iloc[0].tolist() == ["FGSM", "0.800 ± 0.100", "0.500 ± 0.361", "3"]


def test_figure_styles_ensemble_black_bold_controls_dashed():
    rows = pd.DataFrame([_row(a, "A", e, 0.5 - e / 4) for a in ("fgsm", "ensemble", "gaussian", "pgd")
                         for e in (0.0, 0.5, 1.0)])
    fig = ac.plot_attacks(ac.summarize_attacks(rows), "dice")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert list(lines) == ["FGSM", "PGD", "ensemble (robust)", "Gaussian noise"]
    ens, noise = lines["ensemble (robust)"], lines["Gaussian noise"]
    assert ens.get_color() == "black" and ens.get_linewidth() > max(lines["FGSM"].get_linewidth(), 2)
    assert noise.get_linestyle() == "--" and lines["FGSM"].get_linestyle() == "-"
    assert list(ens.get_ydata()) == pytest.approx([0.5, 0.375, 0.25])


def test_write_files(tmp_path):
    paths = ac.write_attack_comparison(_frame(), tmp_path, unit=UNIT0, metric="hd95")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == [
        "figures/attacks_hd95_vs_eps.pdf", "figures/attacks_hd95_vs_eps.png", "tables/attacks.csv",
        "tables/attacks.md"]
    csv = pd.read_csv(tmp_path / "tables" / "attacks.csv")
    assert csv.loc[csv["epsilon"] == 0.5, "dice_std"].item() == pytest.approx(math.sqrt(0.13))
    md = (tmp_path / "tables" / "attacks.md").read_text(encoding="utf-8")
    assert md.index("HD95 (mm) vs ε") < md.index("Dice vs ε")  # the chosen metric first
    assert "| FGSM | 2.00 ± 1.00 | 5.00 ± 3.61 | 3 |" in md


def _script():
    spec = importlib.util.spec_from_file_location("attack_comparison_script", REPO / "figures" / "attack_comparison.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("args", "message"), [
    (["--unit", "crossval/unet/dice/fold0"], "no unit 'crossval/unet/dice/fold0' in the rows"),
    (["--metric", "iou"], "error: --metric: metric 'iou' is not one of dice, hd95, assd"),
    (["--empty"], "no attack rows"),
])
def test_script_errors_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, message):
    from tfrobseg.experiment import store

    empty = "--empty" in args
    monkeypatch.setattr(store, "collect_attack_rows", lambda d: pd.DataFrame() if empty else _frame(), raising=False)
    argv = ["--results", str(tmp_path)] + [a for a in args if a != "--empty"]
    assert _script().main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "tables").exists()
    assert _script().main(["--results", str(tmp_path / "nowhere")]) == 2


def test_script_writes(tmp_path, monkeypatch, capsys):
    from tfrobseg.experiment import store

    monkeypatch.setattr(store, "collect_attack_rows", lambda d: _frame(), raising=False)
    assert _script().main(["--results", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "figures" / "attacks_dice_vs_eps.png").is_file()
    assert "# Attacks compared: all 2 units" in capsys.readouterr().out
