"""The defenses' registry and options (tfrobseg.defenses.config): defaults, types, ranges, labels, JSON."""

import subprocess
import sys

import pytest

from tfrobseg.defenses import (
    DEFENSE_NAMES,
    DEFENSES,
    DefenseConfig,
    parse_defense_options,
    resolve_defense,
)


def test_the_registry_names_the_issues_defenses_with_their_published_defaults():
    assert DEFENSE_NAMES == ("adversarial", "fast_adversarial", "pgd_adversarial", "trades", "distillation",
                             "uniform_noise", "gaussian_noise")
    assert dict(resolve_defense("adversarial").options) == {"beta": 0.5, "epsilon": 0.5}
    assert resolve_defense("fast_adversarial")["step_factor"] == 1.25  # Wong et al.: alpha = 1.25 eps
    assert dict(resolve_defense("pgd_adversarial").options) == {"beta": 0.5, "epsilon": 0.5, "step_factor": 2.5,
                                                                "steps": 7}
    assert dict(resolve_defense("trades").options) == {"beta": 6.0, "epsilon": 0.5, "step_factor": 2.5, "steps": 10}
    assert resolve_defense("distillation")["temperature"] == 100.0
    assert resolve_defense("uniform_noise")["radius"] == 0.01  # Liu et al.
    assert resolve_defense("gaussian_noise")["sigma"] == 0.01


@pytest.mark.parametrize("name", DEFENSE_NAMES)
def test_every_default_is_inside_its_own_range_and_resolves_to_itself(name):
    spec = DEFENSES[name]
    config = resolve_defense(name)
    assert dict(config.options) == dict(spec.defaults)
    assert config.label == config.slug == name and config.changed == {}
    assert DefenseConfig.from_json(config.to_json()) == config
    assert spec.source and spec.summary


def test_options_take_their_defaults_type_and_name_the_changed_ones():
    config = resolve_defense("pgd_adversarial", {"steps": 3.0, "epsilon": "0.25"})
    assert config["steps"] == 3 and isinstance(config["steps"], int)
    assert isinstance(config["epsilon"], float)
    assert config.changed == {"epsilon": 0.25, "steps": 3}
    assert config.label == "pgd_adversarial(epsilon=0.25, steps=3)"
    assert config.slug == "pgd_adversarial-epsilon0.25-steps3"
    assert DefenseConfig.from_json(config.to_json()) == config
    assert hash(config) == hash(resolve_defense("pgd_adversarial", {"epsilon": 0.25, "steps": 3}))  # a reuse key


@pytest.mark.parametrize(("name", "options", "message"), [
    ("madry", {}, "--defense: unknown defense 'madry'; choose from adversarial, "),
    ("adversarial", {"steps": 3}, "--defense-option steps: not an option of adversarial (its options: epsilon, beta)"),
    ("adversarial", {"beta": 1.5}, "--defense-option beta=1.5: adversarial's beta must be a number in [0, 1]"),
    ("adversarial", {"beta": -0.1}, "beta must be a number in [0, 1]"),
    ("adversarial", {"epsilon": 0}, "--defense-option epsilon=0: adversarial's epsilon must be a number > 0"),
    ("trades", {"beta": -1}, "trades's beta must be a number >= 0"),
    ("pgd_adversarial", {"steps": 2.5}, "--defense-option steps=2.5: pgd_adversarial's steps must be an integer >= 1"),
    ("pgd_adversarial", {"steps": 0}, "steps must be an integer >= 1"),
    ("distillation", {"temperature": 0.5}, "distillation's temperature must be a number >= 1"),
    ("uniform_noise", {"radius": "wide"}, "--defense-option radius=wide: uniform_noise's radius must be a number"),
    ("gaussian_noise", {"sigma": float("nan")}, "gaussian_noise's sigma must be a number"),
])
def test_bad_options_are_refused_in_one_line_naming_the_option(name, options, message):
    with pytest.raises(ValueError, match="^[^\n]*$") as error:
        resolve_defense(name, options)
    assert message in str(error.value)


def test_boundary_values_are_accepted():
    assert resolve_defense("adversarial", {"beta": 0})["beta"] == 0.0
    assert resolve_defense("adversarial", {"beta": 1})["beta"] == 1.0
    assert resolve_defense("trades", {"beta": 0})["beta"] == 0.0
    assert resolve_defense("distillation", {"temperature": 1})["temperature"] == 1.0


def test_parse_defense_options():
    assert parse_defense_options(["epsilon=0.25", " beta = 1"]) == {"epsilon": 0.25, "beta": 1.0}
    assert parse_defense_options(None) == {}
    for items, message in ((["epsilon"], "expected key=value"), (["=1"], "expected key=value"),
                           (["beta=1", "beta=0"], "--defense-option beta given twice"),
                           (["beta=half"], "'half' is not a number")):
        with pytest.raises(ValueError, match=message):
            parse_defense_options(items)


def test_the_configuration_does_not_start_tensorflow():
    code = ("import sys; from tfrobseg.defenses import resolve_defense; resolve_defense('trades'); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
