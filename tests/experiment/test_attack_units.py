"""Several attacks per unit, and experiments/attack.py on a tiny trained results folder (no retraining).

One tiny real unit (cross-validation U-Net + BCE, fold 0: 32 px, filters 4, 8, one epoch, ε 0.5) is trained
once with ``--attack fgsm,ensemble --ensemble-members fgsm,noise``; each test attacks a copy of its folder.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.experiment import runner, store
from tfrobseg.experiment.attack_units import main
from tfrobseg.experiment.attacks import AttackSpec
from tfrobseg.experiment.cli import build_parser
from tfrobseg.experiment.settings import resolve_settings
from tfrobseg.experiment.units import Unit
from tfrobseg.experiment.verify import verify_results
from tfrobseg.locks import FileLock
from tfrobseg.reporting.tables import first_attack_rows, write_tables

pytestmark = pytest.mark.slow  # the module's unit trains for about ten seconds

UNIT = Unit("crossval", "unet", "bce", 0)
UID = UNIT.uid
TINY = ["--model", "unet", "--loss", "bce", "--max-epochs", "1", "--filters", "4,8", "--image-size", "32", "--no-xla",
        "--epsilons", "0.5", "--attack", "fgsm,ensemble", "--ensemble-members", "fgsm,noise"]
CASE = ["patient_id", "epsilon"]


@pytest.fixture(scope="module")
def trained(tiny_cohort, tmp_path_factory) -> Path:
    settings, _ = resolve_settings(build_parser("crossval").parse_args(TINY), Path(tiny_cohort), None, gpus=0)
    out = tmp_path_factory.mktemp("trained")
    store.check_settings(out, settings.fingerprint(), data=Manifest.read(tiny_cohort).fingerprint())
    runner.run_unit(UNIT, settings, out, progress=False)
    return out


@pytest.fixture
def results(trained, tmp_path) -> Path:
    out = tmp_path / "res"
    shutil.copytree(trained, out)
    return out


def _attack(out, *argv) -> int:
    return main(["--results", str(out), "--no-progress", *map(str, argv)])


def _key(spec: AttackSpec) -> str:
    return spec.key(loss="bce", epsilons=(0.0, 0.5), batch_size=4)


PGD = AttackSpec.of("pgd", {"steps": 2})
ENSEMBLE = AttackSpec.of("ensemble", members=[AttackSpec.of("fgsm"), PGD])


def _by_case(rows: pd.DataFrame, attack: str, params: str | None = None) -> pd.DataFrame:
    rows = rows[(rows["attack"] == attack) & ((rows["attack_params"] == params) if params else True)]
    return rows.sort_values(CASE).reset_index(drop=True)


# --------------------------------------------------------------------------- several attacks in one unit
def test_a_unit_writes_every_chosen_attack_and_the_tables_use_the_first(trained, tmp_path):
    rows = store.tidy_rows(pd.read_csv(UNIT.directory(trained) / store.METRICS_NAME))
    assert list(dict.fromkeys(rows["attack"])) == ["fgsm", "ensemble", "noise"]  # chosen, then the other member
    assert {"attack_params", "worst_attack"} <= set(rows.columns)
    fgsm, noise, ens = (_by_case(rows, a) for a in ("fgsm", "noise", "ensemble"))
    assert len(fgsm) == len(noise) == len(ens) == 2 * 2  # 2 patients of fold 0 x ε {0, 0.5}
    assert (ens["dice"] <= np.minimum(fgsm["dice"], noise["dice"])).all()
    clean = ens["epsilon"] == 0
    assert (ens.loc[clean, "worst_attack"] == "").all() and (ens.loc[clean, "dice"] == fgsm.loc[clean, "dice"]).all()
    worst = np.where(noise["dice"] < fgsm["dice"], "noise", "fgsm")[~clean]
    assert list(ens.loc[~clean, "worst_attack"]) == list(worst)
    assert json.loads(ens["attack_params"].iloc[0]) == [{"attack": "fgsm", "params": {}},
                                                        {"attack": "noise", "params": {}}]
    report = verify_results(trained)
    assert not [f for f in report.findings if f.level == "problem" and f.where == UID]
    # Tables I-IV average the run's first attack only, and say so.
    first, note = first_attack_rows(store.collect_metrics(trained))
    assert set(first["attack"]) == {"fgsm"} and note.startswith("attack: fgsm, the run's first; its other attacks")
    written = write_tables(store.collect_metrics(trained), tmp_path / "tables")
    table = pd.read_csv(written.paths["table_III_values.csv"])
    assert table["n_cases"].sum() == len(fgsm) // 2  # the attacked rows of FGSM only
    assert "its other attacks (ensemble" in written.paths["table_III.md"].read_text(encoding="utf-8")
    assert "One attack: fgsm, the run's first" in written.overview.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- experiments/attack.py
def test_attack_py_adds_attacks_without_retraining_and_a_rerun_skips(results, capsys):
    unit_dir = UNIT.directory(results)
    model_mtime = (unit_dir / store.MODEL_NAME).stat().st_mtime_ns
    assert _attack(results, "--attack", "pgd,ensemble", "--ensemble-members", "fgsm,pgd", "--steps", "2") == 0
    out = capsys.readouterr().out
    assert f"done {UID} pgd {{\"steps\": 2}} in" in out and f"skip {UID} fgsm (in metrics.csv)" in out
    assert f"done {UID} ensemble of fgsm, pgd {{\"steps\": 2}} in" in out
    assert "1 computed" not in out and "2 computed, 1 already there (skipped)" in out
    assert "Mean Dice over 1 unit(s)" in out
    record = store.AttackRecord.read(unit_dir / "attacks" / f"{_key(PGD)}.json")
    assert record.model_sha256 == store.UnitMarker.read(unit_dir).sha256[store.MODEL_NAME]
    assert (record.spec, record.epsilons, record.rows, record.attack_loss) == (
        {"attack": "pgd", "params": {"steps": 2}}, [0.0, 0.5], 4, "bce")
    ens_record = store.AttackRecord.read(unit_dir / "attacks" / f"{_key(ENSEMBLE)}.json")
    assert ens_record.sources == {"fgsm": "metrics.csv", "pgd": f"attacks/{_key(PGD)}.json"}
    assert (unit_dir / store.MODEL_NAME).stat().st_mtime_ns == model_mtime and store.is_complete(UNIT, results)

    rows = store.collect_attack_rows(results)
    assert sorted(rows.groupby(["attack", "attack_params"]).groups) == sorted([
        ("fgsm", "{}"), ("noise", "{}"), ("pgd", PGD.attack_params), ("ensemble", ENSEMBLE.attack_params),
        ("ensemble", '[{"attack": "fgsm", "params": {}}, {"attack": "noise", "params": {}}]')])
    assert not rows.duplicated(list(store.ROW_KEYS)).any() and len(rows) == 5 * 4
    ens, pgd, fgsm = (_by_case(rows, a, p) for a, p in (("ensemble", ENSEMBLE.attack_params),
                                                         ("pgd", PGD.attack_params), ("fgsm", "{}")))
    assert (ens["dice"] <= np.minimum(pgd["dice"], fgsm["dice"])).all()
    assert (ens["dice"] == np.minimum(pgd["dice"], fgsm["dice"])).all()

    # A re-run skips every unit x attack, without touching the records.
    mtimes = {p: p.stat().st_mtime_ns for p in (unit_dir / "attacks").iterdir()}
    assert _attack(results, "--attack", "pgd,ensemble", "--ensemble-members", "fgsm,pgd", "--steps", "2") == 0
    out = capsys.readouterr().out
    assert f"skip {UID} pgd {{\"steps\": 2}} (in attacks/{_key(PGD)}.json)" in out
    assert "0 computed, 3 already there (skipped)" in out
    assert mtimes == {p: p.stat().st_mtime_ns for p in (unit_dir / "attacks").iterdir()}
    # The same rows again from collect_attack_rows: a record whose rows are also the unit's is read once.
    assert len(store.collect_attack_rows(results)) == len(rows)


def test_a_folder_whose_units_name_the_data_relatively_is_attacked_from_anywhere(results, tmp_path, capsys,
                                                                                monkeypatch):
    # The default --data (data/builtin) is recorded in config.json as given, relative to where the run started;
    # run.json has it absolute. The units are still found complete from another working directory.
    config = UNIT.directory(results) / "config.json"
    record = json.loads(config.read_text())
    data = Path(record["settings"]["data_dir"])
    record["settings"]["data_dir"] = data.name
    config.write_text(json.dumps(record))
    monkeypatch.chdir(tmp_path)
    assert not (tmp_path / data.name).exists()
    assert _attack(results, "--attack", "pgd", "--steps", "1") == 0
    out = capsys.readouterr().out
    assert "1 computed" in out, out


def test_the_random_attacks_draw_from_the_runs_seed(results, monkeypatch):
    import dataclasses

    import tfrobseg.attacks
    from tfrobseg.experiment.units import UnitRecord

    calls = []
    monkeypatch.setattr(tfrobseg.attacks, "attack_dataset", lambda *args, **kwargs: calls.append(kwargs) or iter(()))
    settings = UnitRecord.read(UNIT.directory(results)).settings
    settings = dataclasses.replace(settings, train=dataclasses.replace(settings.train, seed=7))
    evaluation = runner.Evaluation(UNIT, settings, None, None, {}, progress=False)
    for spec in (PGD, AttackSpec.of("fgsm")):
        evaluation.score(spec, epsilons=(0.0, 0.5), attack_loss="bce", batch_size=4)
    assert calls[0]["seed"] == 7 and "seed" not in calls[1]  # FGSM draws nothing


def test_a_record_of_another_model_or_changed_rows_is_recomputed(results, capsys):
    unit_dir = UNIT.directory(results)
    assert _attack(results, "--attack", "pgd", "--steps", "2") == 0
    capsys.readouterr()
    csv, path = store.AttackRecord.paths(unit_dir, _key(PGD))
    first = pd.read_csv(csv)
    raw = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**raw, "model_sha256": "0" * 64}), encoding="utf-8")
    assert store.collect_attack_rows(results)["attack"].eq("pgd").sum() == 0  # a stale record is never read
    assert _attack(results, "--attack", "pgd", "--steps", "2") == 0
    out = capsys.readouterr().out
    assert f"{UID} pgd {{\"steps\": 2}}: its record is stale (made on another best.keras (SHA-256 differs)): " \
           "recomputing it" in out and "1 computed" in out
    assert store.AttackRecord.read(path).model_sha256 == raw["model_sha256"]
    pd.testing.assert_frame_equal(pd.read_csv(csv), first)  # seeded: the same rows again
    csv.write_text(csv.read_text(encoding="utf-8").replace("pgd", "pgd "), encoding="utf-8")
    assert _attack(results, "--attack", "pgd", "--steps", "2") == 0
    assert "SHA-256 differs from its record (changed or corrupt)): recomputing it" in capsys.readouterr().out


def test_attack_py_scores_with_the_unit_runners_code(results, capsys):
    # FGSM with a per-image loss does not depend on the batch size: another batch size (another key) must give
    # the unit's own FGSM rows again.
    assert _attack(results, "--attack", "fgsm", "--batch-size", "3") == 0
    assert "1 computed" in capsys.readouterr().out
    key = AttackSpec.of("fgsm").key(loss="bce", epsilons=(0.0, 0.5), batch_size=3)
    again = pd.read_csv(UNIT.directory(results) / "attacks" / f"{key}.csv")
    own = pd.read_csv(UNIT.directory(results) / store.METRICS_NAME)
    own = own[own["attack"] == "fgsm"].reset_index(drop=True)
    assert list(again.columns) == list(own.columns)
    # (An empty worst_attack column reads back as NaN: the tidy frame makes it "".)
    pd.testing.assert_frame_equal(store.tidy_rows(again), store.tidy_rows(own), check_dtype=False, check_exact=True)


@pytest.mark.parametrize(("argv", "message"), [
    (["--attack", "fgsmx"], "error: --attack: unknown attack(s) fgsmx; choose from fgsm,"),
    (["--attack", "fgsm", "--steps", "2"], "error: --steps: none of the chosen attacks (fgsm) takes it"),
    (["--attack", "pgd", "--units", "holdout/*"], "error: --results {out}: no complete unit matches --units holdout/*"),
    (["--attack", "pgd", "--attack-loss", "nope"], "error: --attack-loss 'nope': 'same' or one of"),
])
def test_bad_calls_are_one_error_line_before_any_work(results, capsys, argv, message):
    assert _attack(results, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message.format(out=results)) and len(err.splitlines()) == 1, err
    assert not (UNIT.directory(results) / "attacks").exists()


def test_a_folder_without_a_run_is_refused(tmp_path, capsys):
    assert main(["--results", str(tmp_path), "--attack", "pgd"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'run.json'}: not a readable run file")
    assert main(["--results", str(tmp_path / "none"), "--attack", "pgd"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_failing_attack_is_named_and_the_others_are_kept(results, capsys, monkeypatch):
    score = runner.Evaluation.score

    def failing(self, spec, **kwargs):
        if spec.name == "pgd":
            raise RuntimeError("boom")
        return score(self, spec, **kwargs)

    monkeypatch.setattr(runner.Evaluation, "score", failing)
    assert _attack(results, "--attack", "pgd,ifgsm,ensemble", "--ensemble-members", "fgsm,pgd", "--steps", "1") == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"failed: {UID} pgd: RuntimeError: boom", f"failed: {UID} ensemble: member pgd failed"]
    names = sorted(p.name.split("-")[0] for p in (UNIT.directory(results) / "attacks").glob("*.json"))
    assert names == ["ifgsm"]
    assert not list((UNIT.directory(results) / "attacks").glob("pgd-*"))


def test_an_attack_another_process_holds_is_left_to_it(results, capsys):
    with FileLock(store.attack_lock_path(UNIT, results, _key(PGD))):
        assert _attack(results, "--attack", "ensemble", "--ensemble-members", "fgsm,pgd", "--steps", "2") == 0
    out = capsys.readouterr().out
    assert f"skip {UID} pgd {{\"steps\": 2}} (being computed by process" in out
    assert f"skip {UID} ensemble of fgsm, pgd {{\"steps\": 2}} (member pgd is being computed by another process" in out
    assert "0 computed, 1 already there (skipped), 2 left to other processes, 0 failed" in out
    assert not (UNIT.directory(results) / "attacks").exists()
