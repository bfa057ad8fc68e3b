"""tfrobseg.experiment.settings and the command line: the study's protocol, the built-in preset, options."""

import json
import re
from pathlib import Path

import pytest

from tfrobseg import study
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.experiment import cli
from tfrobseg.experiment import settings as S
from tfrobseg.training import TrainConfig


def test_parser_defaults_are_the_study():
    args = cli.build_parser("crossval").parse_args([])
    assert args.model == "all" and args.loss == "all" and args.attack == "fgsm" and args.attack_loss == "same"
    assert args.epsilons == study.EPSILONS and args.batch_size == 4
    assert args.xla is None and args.precision is None  # resolved at run time (GPU / preset)
    with pytest.raises(SystemExit):
        cli.build_parser("crossval").parse_args(["--epsilons", "-0.1"])
    assert cli.build_parser("holdout").parse_args(["--split", "x.json"]).split == "x.json"


# --------------------------------------------------------------------------- study defaults and presets
STUDY_PROTOCOL = {  # Apostolidis et al., II-H, and our documented choices where the paper is silent
    "learning_rate": 1e-4, "batch_size": 4, "max_epochs": 150, "plateau_patience": 2, "plateau_factor": 0.5,
    "min_learning_rate": 1e-6, "early_stopping_patience": 10,
}


def _settings(data_dir, argv=(), phase="crossval", preset=None, gpus=0):
    args = cli.build_parser(phase).parse_args(list(argv))
    return S.resolve_settings(args, Path(data_dir), preset, gpus=gpus)


def test_study_run_resolves_to_the_paper_protocol(tiny_cohort):
    settings, jobs = _settings(tiny_cohort, ["--data", str(tiny_cohort)])
    assert {k: getattr(settings.train, k) for k in STUDY_PROTOCOL} == STUDY_PROTOCOL
    assert settings.epsilons == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert settings.filters == (16, 32, 64, 128, 256) and settings.image_size == 256
    assert (settings.attack, settings.attack_loss, settings.threshold) == ("fgsm", "same", 0.5)
    assert settings.preset is None and jobs == 1 and settings.train.xla is True
    assert settings.train.precision == "float32" and settings.train.seed == 0
    assert (settings.train.strategy, settings.replicas, settings.deterministic) == ("default", 1, False)
    assert _settings(tiny_cohort, gpus=1)[0].train.precision == "mixed_float16"
    # The study's values are TrainConfig's own defaults: one home.
    assert {k: getattr(TrainConfig(precision="float32"), k) for k in STUDY_PROTOCOL} == STUDY_PROTOCOL


def test_settings_defaults_and_fingerprint(tiny_cohort):
    # Settings built in code (not from the command line) default to the study's protocol too.
    required = {"data_dir": str(tiny_cohort), "data_fingerprint": "abc", "split_file": "s.json", "split_sha256": None,
                "epsilons": (0.0, 0.5), "attack": "fgsm", "attack_loss": "same", "filters": (16, 32), "image_size": 256}
    settings = S.Settings(**required, train=TrainConfig(precision="float32"))
    assert {k: getattr(settings.train, k) for k in STUDY_PROTOCOL} == STUDY_PROTOCOL
    assert settings.threshold == 0.5 and settings.preset is None
    fp = settings.fingerprint()
    assert fp["data_dir"] == str(Path(tiny_cohort).resolve()) and "split_file" not in fp
    assert fp["epsilons"] == [0.0, 0.5] and fp["train"]["plateau_factor"] == 0.5 and json.loads(json.dumps(fp)) == fp
    # The training configuration is fingerprinted as a whole, and the record reads back equal.
    other = S.Settings(**required, train=TrainConfig(precision="float32", plateau_factor=0.1))
    assert other.fingerprint() != fp
    assert S.Settings.from_json(settings.to_json()) == settings
    assert settings.attack_loss_for("dice") == "dice"
    assert S.Settings(**{**required, "attack_loss": "bce"}, train=settings.train).attack_loss_for("dice") == "bce"


def test_holdout_split_file_is_part_of_the_settings(tiny_cohort, tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["Synthetic-0002"], "test": ["Synthetic-0003"]}))
    settings, _ = _settings(tiny_cohort, ["--split", str(split)], phase="holdout")
    assert settings.split_file == str(split) and len(settings.split_sha256) == 64
    assert _settings(tiny_cohort, phase="holdout")[0].split_file is None


def test_builtin_preset_choices_and_overrides(tiny_cohort):
    settings, jobs = _settings(tiny_cohort, preset="builtin")
    t = settings.train
    assert (t.max_epochs, t.learning_rate, settings.filters, settings.image_size, jobs) == (
        12, 1e-3, (8, 16, 32, 64, 128), 48, 2)
    assert (t.batch_norm_momentum, t.output_prior) == (0.9, 0.05)
    assert t.early_stopping_patience == 10 and settings.preset == "builtin"
    # Outside the preset: the study's (None: the layers' own momentum, a zero output bias).
    study_train = _settings(tiny_cohort)[0].train
    assert (study_train.batch_norm_momentum, study_train.output_prior) == (None, None)
    assert t.xla is False and _settings(tiny_cohort, preset="builtin", gpus=1)[0].train.xla is True
    # What the user gives always wins over the preset.
    argv = ["--max-epochs", "3", "--learning-rate", "0.5", "--filters", "4,8", "--image-size", "32", "--jobs", "1",
            "--early-stopping-patience", "2", "--xla", "--epsilons", "0.3,0.1", "--strategy", "mirrored",
            "--batch-norm-momentum", "0.5", "--output-prior", "none"]
    settings, jobs = _settings(tiny_cohort, argv, preset="builtin")
    t = settings.train
    assert (t.max_epochs, t.learning_rate, settings.filters, settings.image_size, jobs) == (3, 0.5, (4, 8), 32, 1)
    assert t.early_stopping_patience == 2 and t.xla is True and settings.epsilons == (0.0, 0.1, 0.3)
    assert (t.strategy, t.seed, t.precision) == ("mirrored", 0, "float32")
    assert (t.batch_norm_momentum, t.output_prior) == (0.5, None)  # 'none' turns the preset's prior off


def test_threads_do_not_follow_jobs_and_execution_settings_are_fingerprinted(tiny_cohort, monkeypatch):
    # Thread-pool sizes change a CPU's rounding, so a unit's threads must not follow --jobs (a resume
    # with another --jobs would change its numbers); they follow the cores and the *default* jobs.
    monkeypatch.setattr(S.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(S.os, "cpu_count", lambda: 8)
    for preset, threads in ((None, 8), ("builtin", 4)):
        assert {_settings(tiny_cohort, ["--jobs", j], preset=preset)[0].threads for j in ("1", "2", "3")} == {threads}
    base = _settings(tiny_cohort)[0]
    for argv, key in ((["--threads", "3"], "threads"), (["--deterministic"], "deterministic")):
        changed = _settings(tiny_cohort, argv)[0]
        assert changed.fingerprint() != base.fingerprint() and changed.fingerprint()[key] != base.fingerprint()[key]
    assert _settings(tiny_cohort, ["--threads", "3", "--deterministic"])[0].to_json()["deterministic"] is True
    with pytest.raises(SystemExit, match="--threads must be >= 1"):
        _settings(tiny_cohort, ["--threads", "0"])


def test_attack_precision_option(tiny_cohort, monkeypatch):
    from tfrobseg.experiment import runner
    from tfrobseg.experiment.units import Unit

    base, chosen = _settings(tiny_cohort)[0], _settings(tiny_cohort, ["--attack-precision", "float32"])[0]
    assert (base.attack_precision, chosen.attack_precision) == ("model", "float32")
    assert chosen.fingerprint() != base.fingerprint() and chosen.fingerprint()["attack_precision"] == "float32"
    with pytest.raises(SystemExit, match="unknown --attack-precision 'half'; choose from model, float32"):
        cli._check_names(cli.build_parser("crossval").parse_args(["--attack-precision", "half"]))
    # The unit's attack gets it.
    import tfrobseg.attacks
    import tfrobseg.experiment.scoring

    seen = {}

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise StopIteration

    monkeypatch.setattr(tfrobseg.attacks, "attack_dataset", capture)
    monkeypatch.setattr(tfrobseg.experiment.scoring, "load_volumes", lambda ds, expected=None: {})
    with pytest.raises(StopIteration):
        runner.attack_and_score(Unit("crossval", "unet", "bce", 0), chosen, None, None, [], False, 0)
    assert seen["attack_precision"] == "float32"


def test_strategy_and_replicas_are_resolved_into_the_fingerprint(tiny_cohort, monkeypatch):
    # "auto" means different strategies on different machines: the fingerprint holds what it became.
    monkeypatch.delenv("TF_CONFIG", raising=False)
    one, four = _settings(tiny_cohort, gpus=1)[0], _settings(tiny_cohort, gpus=4)[0]
    assert (one.train.strategy, one.replicas) == ("default", 1) and (four.train.strategy, four.replicas) == ("mirrored", 4)
    assert one.fingerprint()["replicas"] == 1 and four.fingerprint()["train"]["strategy"] == "mirrored"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
                                                "task": {"type": "chief", "index": 0}}))
    multi = _settings(tiny_cohort, gpus=2)[0]
    assert (multi.train.strategy, multi.replicas) == ("multiworker", 6)


def test_default_data_is_the_builtin_cohort(tmp_path, monkeypatch, capsys):
    import tfrobseg.dataset.synthetic

    calls = []

    def fake_prepare(out_dir, **kwargs):
        calls.append(out_dir)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Manifest(parameters=PrepConfig(), seed=0, synthetic=True).write(out_dir)
        return Path(out_dir)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tfrobseg.dataset.synthetic, "prepare_builtin", fake_prepare)
    assert S.resolve_data(None) == (Path("data/builtin"), "builtin")
    assert calls == ["data/builtin"] and "preparing the built-in synthetic cohort" in capsys.readouterr().out
    assert S.resolve_data(None) == (Path("data/builtin"), "builtin") and len(calls) == 1  # prepared once
    # A cohort prepared by an older tfrobseg (another data format) is prepared again, saying why.
    manifest = json.loads(Path("data/builtin/manifest.json").read_text())
    Path("data/builtin/manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    assert S.resolve_data(None) == (Path("data/builtin"), "builtin") and len(calls) == 2
    assert "format_version 1" in capsys.readouterr().out
    assert S.default_out_dir(None, Path("data/builtin"), "builtin") == Path("results/builtin")
    assert S.default_out_dir(None, Path("/x/px_prepared"), None) == Path("results/px_prepared")
    assert S.default_out_dir("r", Path("data/builtin"), "builtin") == Path("r")
    with pytest.raises(SystemExit, match="no manifest"):
        S.resolve_data(str(tmp_path / "nothing"))


@pytest.mark.parametrize("argv, ok", [(["--image-size", "16"], True), (["--image-size", "15"], False),
                                      (["--batch-size", "1", "--max-epochs", "1"], True), (["--batch-size", "0"], False),
                                      (["--max-epochs", "0"], False),
                                      (["--learning-rate", "-1"], False)])
def test_settings_bounds(tiny_cohort, argv, ok):
    if ok:
        assert _settings(tiny_cohort, argv)[0]
    else:
        with pytest.raises(SystemExit):
            _settings(tiny_cohort, argv)


# --------------------------------------------------------------------------- defenses
def test_defense_is_part_of_the_settings_only_when_chosen(tiny_cohort):
    plain, _ = _settings(tiny_cohort, ["--data", str(tiny_cohort)])
    assert plain.defense is None and "defense" not in plain.fingerprint()  # folders made before defenses keep theirs
    defended, _ = _settings(tiny_cohort, ["--data", str(tiny_cohort), "--defense", "pgd_adversarial",
                                          "--defense-option", "steps=3", "--defense-option", "epsilon=0.25"])
    assert defended.defense.name == "pgd_adversarial"
    assert defended.defense["steps"] == 3 and defended.defense["epsilon"] == 0.25 and defended.defense["beta"] == 0.5
    fp = defended.fingerprint()
    assert fp["defense"] == {"name": "pgd_adversarial",
                             "options": {"beta": 0.5, "epsilon": 0.25, "step_factor": 2.5, "steps": 3}}
    # The record reads back to the same settings (config.json / run.json).
    assert S.Settings.from_json(json.loads(json.dumps(defended.to_json()))) == defended
    assert S.Settings.from_json(json.loads(json.dumps(plain.to_json()))) == plain


@pytest.mark.parametrize(("argv", "message"), [
    (["--defense", "armour"], "unknown defense 'armour'"),
    (["--defense-option", "epsilon=0.1"], "--defense-option needs --defense"),
    (["--defense", "trades", "--defense-option", "temperature=2"], "not an option of trades"),
    (["--defense", "adversarial", "--defense-option", "beta=1.5"], "beta must be a number in [0, 1]"),
    (["--defense", "adversarial", "--defense-option", "beta"], "expected key=value"),
    (["--defense", "pgd_adversarial", "--defense-option", "steps=2.5"], "steps must be an integer >= 1"),
])
def test_bad_defense_options_are_one_line_errors(tiny_cohort, argv, message):
    with pytest.raises(S.OptionError, match=re.escape(message)):
        _settings(tiny_cohort, ["--data", str(tiny_cohort), *argv])
