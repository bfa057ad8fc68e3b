"""tfrobseg.experiment.attacks (AttackSpec, the command line's attack options) and the settings that record them."""

import json

import pytest

from tfrobseg.errors import OptionError, SettingsMismatchError
from tfrobseg.experiment import cli, store
from tfrobseg.experiment.attacks import AttackSpec, evaluation_order, resolve_attacks
from tfrobseg.experiment.settings import Settings, resolve_attack_options
from tfrobseg.io import config_hash


def test_a_spec_takes_only_the_options_of_its_attack_with_valid_values():
    assert AttackSpec.of("fgsm").attack_params == "{}"
    pgd = AttackSpec.of("pgd", {"steps": 3, "alpha": 1})
    assert pgd.attack_params == '{"alpha": 1.0, "steps": 3}' and pgd.options == {"alpha": 1.0, "steps": 3}
    assert pgd == AttackSpec.of("pgd", {"alpha": 1.0, "steps": 3}) and hash(pgd) == hash(AttackSpec.of("pgd", {
        "steps": 3, "alpha": 1.0}))
    for name, options, message in (("fgsm", {"steps": 3}, "attack 'fgsm' takes no option steps"),
                                   ("pgd", {"steps": 0}, "steps must be a positive int"),
                                   ("pgd", {"alpha": -1.0}, "alpha must be finite and >= 0"),
                                   ("pgd", {"random_start": "no"}, "random_start must be a bool"),
                                   ("segpgd2", {}, "unknown attack 'segpgd2'")):
        with pytest.raises(ValueError, match=message):
            AttackSpec.of(name, options)
    with pytest.raises(ValueError, match="takes no options of its own"):
        AttackSpec.of("ensemble", {"steps": 2}, members=[pgd])


def test_the_step_options_of_the_contract_are_checked():
    from tfrobseg.attacks.params import check_params

    assert check_params(step_factor=2.5, restarts=2, momentum=1.0, best_iterate=True) == {
        "step_factor": 2.5, "restarts": 2, "momentum": 1.0, "best_iterate": True}
    assert check_params(step_factor=None)["step_factor"] is None
    for bad, message in (({"step_factor": 0.0}, "step_factor must be > 0"), ({"restarts": 0}, "restarts must be"),
                         ({"momentum": -0.5}, "momentum must be finite"), ({"best_iterate": 1}, "best_iterate must")):
        with pytest.raises(ValueError, match=message):
            check_params(**bad)


def test_the_key_names_what_changes_the_rows_and_is_stable():
    pgd = AttackSpec.of("pgd", {"steps": 3})
    key = pgd.key(loss="bce", epsilons=[0.0, 0.5], batch_size=4)
    # Pinned: a key computed by another version must find the same files (resume).
    assert key == "pgd-" + __import__("hashlib").sha256(json.dumps(
        {"attack": "pgd", "batch_size": 4, "epsilons": [0.0, 0.5], "loss": "bce", "params": {"steps": 3}},
        sort_keys=True).encode()).hexdigest()[:12]
    assert key == pgd.key(loss="bce", epsilons=(0, 0.5 + 1e-13), batch_size=4)
    others = {pgd.key(loss="dice", epsilons=[0.0, 0.5], batch_size=4),
              pgd.key(loss="bce", epsilons=[0.0, 1.0], batch_size=4),
              pgd.key(loss="bce", epsilons=[0.0, 0.5], batch_size=2),
              AttackSpec.of("pgd", {"steps": 4}).key(loss="bce", epsilons=[0.0, 0.5], batch_size=4)}
    assert key not in others and len(others) == 4
    ens = AttackSpec.of("ensemble", members=[AttackSpec.of("fgsm"), pgd])
    assert AttackSpec.from_json(json.loads(json.dumps(ens.to_json()))) == ens
    assert ens.key(loss="bce", epsilons=[0.5], batch_size=4) != AttackSpec.of(
        "ensemble", members=[AttackSpec.of("fgsm"), AttackSpec.of("pgd")]).key(loss="bce", epsilons=[0.5], batch_size=4)


def test_command_line_options_go_to_the_attacks_that_take_them():
    fgsm, pgd = resolve_attacks("fgsm,pgd", {"steps": 3, "random_start": False, "alpha": None})
    assert (fgsm.options, pgd.options) == ({}, {"steps": 3, "random_start": False})
    gaussian, pgd = resolve_attacks("gaussian,pgd", {"match": "segpgd", "steps": 3})
    assert (gaussian.options, pgd.options) == ({"match": "segpgd", "steps": 3}, {"steps": 3})
    (ens,) = resolve_attacks("ensemble", {"steps": 2}, "fgsm,pgd,fgsm")
    assert [m.label for m in ens.members] == ["fgsm", 'pgd {"steps": 2}']
    from tfrobseg.attacks import ATTACKS
    from tfrobseg.attacks.ensemble import DEFAULT_MEMBERS

    missing = [m for m in DEFAULT_MEMBERS if m not in ATTACKS]
    if missing:  # before the segmentation attacks are merged, the default ensemble names what it lacks
        with pytest.raises(ValueError, match=f"--ensemble-members: {', '.join(missing)} not an attack"):
            resolve_attacks("ensemble")
    else:
        assert tuple(m.name for m in resolve_attacks("ensemble")[0].members) == DEFAULT_MEMBERS


@pytest.mark.parametrize(("names", "options", "members", "message"), [
    ("fgsm", {"steps": 3}, None, "--steps: none of the chosen attacks (fgsm) takes it; it is taken by"),
    ("fgsm,noise", {"random_start": False}, None, "--no-random-start: none of the chosen attacks (fgsm, noise)"),
    ("pgd,noise", {"match": "fgsm"}, None, "--match: none of the chosen attacks (pgd, noise) takes it"),
    ("gaussian", {"match": "rician"}, None, "--match: match must be one of"),
    ("pgd", {"steps": 0}, None, "--steps: steps must be a positive int, got 0"),
    ("fgsm,fgsmx", {}, None, "--attack: unknown attack(s) fgsmx; choose from fgsm,"),
    ("pgd", {}, "fgsm", "--ensemble-members: only with --attack ensemble"),
    ("ensemble", {}, "fgsm,nope", "--ensemble-members: nope not an attack"),
    (" , ", {}, None, "--attack: no attack named"),
])
def test_bad_attack_options_are_one_line(names, options, members, message):
    with pytest.raises(ValueError) as err:
        resolve_attacks(names, options, members)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_evaluation_order_lists_the_chosen_then_the_other_members():
    fgsm, pgd, noise = (AttackSpec.of(n) for n in ("fgsm", "pgd", "noise"))
    ens = AttackSpec.of("ensemble", members=[fgsm, pgd])
    assert evaluation_order([noise, ens, fgsm]) == [noise, ens, fgsm, pgd]


def test_crossval_refuses_an_option_no_chosen_attack_takes(capsys):
    assert cli.main("crossval", ["--attack", "fgsm", "--steps", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --steps: none of the chosen attacks (fgsm) takes it") and len(err.splitlines()) == 1
    args = cli.build_parser("holdout").parse_args(["--attack", "fgsm,ensemble", "--ensemble-members", "fgsm,noise",
                                                   "--no-random-start"])
    with pytest.raises(OptionError, match="--no-random-start: none of the chosen attacks \\(fgsm, noise\\)"):
        resolve_attack_options(args)


def test_settings_record_the_attack_options():
    args = cli.build_parser("crossval").parse_args(["--attack", "pgd,ensemble", "--ensemble-members", "fgsm,pgd",
                                                    "--steps", "3", "--no-random-start"])
    attack, options, members = resolve_attack_options(args)
    assert (attack, options, members) == ("pgd,ensemble", {"steps": 3, "random_start": False}, ("fgsm", "pgd"))
    assert resolve_attack_options(cli.build_parser("crossval").parse_args([])) == ("fgsm", {}, ())
    assert cli.build_parser("crossval").parse_args(["--step-factor", "1"]).step_factor == 1.0
    with pytest.raises(SystemExit):  # the command line offers the two rules ε/k and 2.5ε/k
        cli.build_parser("crossval").parse_args(["--step-factor", "2"])


# The settings of the built-in run (crossval.py --model recurrent_unet, 18 units) as its run.json holds them,
# written by tfrobseg before issue 15, with their hash.
OLD_RUN = {"attack": "fgsm", "attack_loss": "same", "attack_precision": "model",
           "data_dir": "/tmp/accept/main/data/builtin", "data_fingerprint": "e80ce1a3cbdd69df", "deterministic": False,
           "epsilons": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], "filters": [8, 16, 32, 64, 128],
           "image_size": 48, "preset": "builtin", "replicas": 1, "split_sha256": None, "threads": 1, "threshold": 0.5,
           "train": {"batch_norm_momentum": 0.9, "batch_size": 4, "early_stopping_patience": 10, "learning_rate": 0.001,
                     "max_epochs": 12, "min_learning_rate": 1e-06, "output_prior": 0.05, "plateau_factor": 0.5,
                     "plateau_patience": 2, "precision": "float32", "seed": 0, "strategy": "default", "xla": False}}
OLD_HASH = "f01162eafbf2b656"


def test_a_folder_made_before_the_attack_options_takes_a_rerun_with_the_defaults(tmp_path):
    assert config_hash(OLD_RUN) == OLD_HASH
    store.RunFile(OLD_HASH, OLD_RUN, None).write(tmp_path)
    settings = Settings.from_json({**OLD_RUN, "split_file": None})
    assert settings.attack_options == {} and settings.ensemble_members == ()
    assert store.check_settings(tmp_path, settings.fingerprint()) == OLD_HASH  # accepted, unchanged
    with pytest.raises(SettingsMismatchError, match="differing: attack_options"):
        store.check_settings(tmp_path, Settings.from_json({**OLD_RUN, "split_file": None,
                                                           "attack_options": {"steps": 3}}).fingerprint())
    ens = Settings.from_json({**OLD_RUN, "split_file": None, "attack": "fgsm,ensemble",
                              "ensemble_members": ["fgsm", "pgd"]})
    assert ens.evaluated_attacks() == ("fgsm", "ensemble", "pgd") and settings.evaluated_attacks() == ("fgsm",)
    assert Settings.from_json(json.loads(json.dumps(ens.to_json()))) == ens
