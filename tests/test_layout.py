"""Import boundaries of the package: reading prepared data, training and reporting stay light."""

import json
import subprocess
import sys

import pytest

HEAVY_FOR = {
    # module imported -> modules it must not pull in
    "tfrobseg.dataset.pipeline": ["SimpleITK", "tfrobseg.dataset.prepare", "tfrobseg.dataset.dicom"],
    "tfrobseg.dataset.manifest": ["SimpleITK", "tensorflow"],
    "tfrobseg.training": ["SimpleITK", "tfrobseg.dataset.prepare"],
    "tfrobseg.reporting.tables": ["SimpleITK", "tensorflow", "tfrobseg.experiment.runner"],
    "tfrobseg.reporting.grid": ["SimpleITK", "tensorflow", "tfrobseg.experiment.runner"],
    "tfrobseg.reporting.defense_table": ["SimpleITK", "tensorflow", "keras", "tfrobseg.experiment.runner"],
    "tfrobseg.reporting.figures": ["SimpleITK", "tfrobseg.experiment.runner", "tfrobseg.experiment.grid",
                                   "tfrobseg.experiment.cli"],
    "tfrobseg.experiment.units": ["SimpleITK", "tensorflow"],
    "tfrobseg.experiment.settings": ["SimpleITK", "tensorflow"],
    # the scripts' --dry-run imports it before it knows whether it will count anything
    "tfrobseg.experiment.cost": ["SimpleITK", "tensorflow", "keras"],
    "tfrobseg.study": ["numpy", "tensorflow"],
    # --help of the scripts: TensorFlow's start-up lines would read like errors.
    "tfrobseg.experiment.cli": ["tensorflow", "SimpleITK"],
    "tfrobseg.dataset.cli": ["tensorflow", "SimpleITK"],
}


@pytest.mark.parametrize("module", sorted(HEAVY_FOR))
def test_import_does_not_pull_in(module):
    # A fresh interpreter: this test process has everything loaded already.
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not set(HEAVY_FOR[module]) & loaded, f"{module} imports {sorted(set(HEAVY_FOR[module]) & loaded)}"


def test_an_unknown_attack_is_refused_naming_the_choices():
    from tfrobseg.experiment import cli

    args = cli.build_parser("crossval").parse_args(["--attack", "nope"])
    with pytest.raises(SystemExit, match=r"--attack: unknown attack\(s\) nope; choose from fgsm, ifgsm"):
        cli._check_names(args)
