"""tfrobseg.experiment.defenses (experiments/defenses.py): the chosen defenses and their options, the rows the
report reads, and the checks made before any folder is created."""

import json
import re

import pandas as pd
import pytest

from tfrobseg.defenses.config import BASELINE
from tfrobseg.defenses.masking import with_view
from tfrobseg.errors import OptionError
from tfrobseg.experiment import defenses as D
from tfrobseg.experiment.units import Unit


def test_default_defenses_and_the_builtin_preset_options():
    assert [c.name for c in D.resolve_defenses(None, None, None)] == list(D.DEFENSE_NAMES)
    assert [c.name for c in D.resolve_defenses("all", None, "builtin")] == list(D.DEFENSE_NAMES)
    configs = D.resolve_defenses(None, None, "builtin")
    assert [c.name for c in configs] == list(D.BUILTIN_DEFENSES)
    by_name = {c.name: c for c in configs}
    assert by_name["pgd_adversarial"]["steps"] == 2 and by_name["trades"]["steps"] == 2
    assert by_name["distillation"]["temperature"] == 5.0 and by_name["uniform_noise"]["radius"] == 0.5
    assert {c.name: c["steps"] for c in D.resolve_defenses("pgd_adversarial,trades", None, None)} == \
        {"pgd_adversarial": 7, "trades": 10}  # the sources' own without the preset


def _args(argv):
    return D.build_parser("defenses").parse_args(argv)


def test_preset_attack_options_fill_only_what_the_user_left_and_the_attacks_take():
    args = _args([])
    D._preset_attack_options(args, "builtin")
    assert (args.attack, args.epsilons, args.steps, args.ensemble_members) == \
        ("fgsm,ensemble", D.BUILTIN_EPSILONS, 5, "fgsm,pgd")
    args = _args(["--attack", "fgsm", "--epsilons", "0.5"])
    D._preset_attack_options(args, "builtin")
    assert (args.epsilons, args.steps, args.ensemble_members) == ((0.5,), None, None)  # FGSM takes no steps
    args = _args(["--steps", "2"])
    D._preset_attack_options(args, None)  # the user's data: the study's eps, every attack's own options
    assert (args.epsilons, args.steps, args.ensemble_members) == (D.study.EPSILONS, 2, None)


def test_scoped_and_unscoped_defense_options():
    configs = D.resolve_defenses("adversarial,trades,distillation",
                                 ["epsilon=0.25", "trades.steps=2", "distillation.temperature=20"], "builtin")
    assert len(configs) == 3
    by_name = {c.name: c for c in configs}
    # An unscoped option goes to every chosen defense that takes it; a scoped one to its defense only;
    # the user's value wins over the preset's.
    assert by_name["adversarial"]["epsilon"] == 0.25 and by_name["trades"]["epsilon"] == 0.25
    assert by_name["trades"]["steps"] == 2 and by_name["distillation"]["temperature"] == 20.0
    assert by_name["trades"].slug == "trades-epsilon0.25-steps2"


@pytest.mark.parametrize(("text", "items", "message"), [
    ("armour", None, "unknown defense"),
    ("", None, "unknown defense"),
    ("adversarial", ["temperature=5"], "none of the chosen defenses (adversarial) takes temperature"),
    ("adversarial", ["trades.steps=3"], "trades is not among the chosen defenses"),
    ("adversarial", ["armour.steps=3"], "'armour' is not a chosen defense"),
    ("adversarial", ["epsilon=-1"], "epsilon must be a number > 0"),
])
def test_bad_defense_choices(text, items, message):
    with pytest.raises(OptionError, match=re.escape(message)):
        D.resolve_defenses(text, items, None)


def _unit_rows(unit, params):
    return pd.DataFrame({"phase": unit.phase, "model": unit.model, "loss": unit.loss, "fold": unit.fold,
                         "attack": "fgsm", "attack_params": params, "attack_loss": unit.loss,
                         "patient_id": ["p1", "p2"], "epsilon": [0.0, 0.5], "dice": [0.9, 0.5]})


def test_collected_rows_carry_the_defense_and_the_view():
    unit = Unit("crossval", "unet", "dice", 0)
    check = with_view("{}", 100.0)
    folders = {BASELINE: _unit_rows(unit, "{}"),
               "distillation": pd.concat([_unit_rows(unit, "{}"), _unit_rows(unit, check)], ignore_index=True)}
    rows = D.defense_rows(folders)
    assert list(rows.groupby(["defense", "view"]).size().items()) == [
        ((BASELINE, "deployed"), 2), (("distillation", "T=100"), 2), (("distillation", "deployed"), 2)]
    assert set(rows["attack_params"]) == {"{}"}  # the attack's own parameters, the view taken out
    assert json.loads(check)["attacked_at_temperature"] == 100.0


@pytest.mark.parametrize(("argv", "message"), [
    (["--defense", "armour"], "unknown defense"),
    (["--split", "s.json"], "--split is for --phase holdout"),
    (["--phase", "holdout", "--folds", "0"], "--folds is for --phase crossval"),
    (["--defense-option", "temperature=5", "--defense", "trades"], "takes temperature"),
])
def test_bad_options_stop_before_any_folder_is_created(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert D.main(["--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_an_incomplete_comparison_says_why_there_is_no_report(tmp_path, capsys):
    fold0, fold1 = Unit("crossval", "unet", "dice", 0), Unit("crossval", "unet", "dice", 1)
    folders = {BASELINE: pd.concat([_unit_rows(fold0, "{}"), _unit_rows(fold1, "{}")], ignore_index=True),
               "adversarial": _unit_rows(fold0, "{}")}  # its fold 1 not computed yet (--max-units)
    assert D._report(tmp_path, folders, 0) == 0
    out = capsys.readouterr().out
    assert "No report yet" in out and "Run the same command again" in out
    assert (tmp_path / "defenses_results.csv").is_file() and not (tmp_path / "report").exists()
