"""A results folder shared by two processes (unit locks), and experiments/verify.py on broken copies of it.

One tiny real unit (hold-out U-Net + BCE: 32 px, filters 4, 8, one epoch, ε 0.5) is computed once while
another process holds the lock of a second unit (U-Net + Dice); each check of verify.py is then tested by
breaking a copy of that folder.
"""

import json
import os
import runpy
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.errors import UnitFilesError
from tfrobseg.experiment import store
from tfrobseg.experiment.cli import build_parser
from tfrobseg.experiment.grid import _plan, _worker_run, run_grid
from tfrobseg.experiment.settings import resolve_settings
from tfrobseg.experiment.units import Unit
from tfrobseg.experiment.verify import verify_results
from tfrobseg.locks import FileLock, current_holder

pytestmark = pytest.mark.slow  # the module's unit trains for about half a minute

REPO = Path(__file__).resolve().parents[2]
BCE, DICE = Unit("holdout", "unet", "bce", None), Unit("holdout", "unet", "dice", None)
HOLD = "from tfrobseg.locks import FileLock; import sys, time; FileLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


@pytest.fixture(scope="module")
def shared(tiny_cohort, tmp_path_factory):
    """The results folder after a run that found U-Net + Dice held by another process."""
    root = tmp_path_factory.mktemp("shared")
    data = root / "data"
    shutil.copytree(tiny_cohort, data, ignore=shutil.ignore_patterns("raw"))
    out = root / "res"
    argv = ["--max-epochs", "1", "--filters", "4,8", "--image-size", "32", "--no-xla", "--epsilons", "0.5"]
    settings, _ = resolve_settings(build_parser("holdout").parse_args(argv), data, None, gpus=0)
    other = subprocess.Popen([sys.executable, "-c", HOLD, str(store.lock_path(DICE, out))], stdout=subprocess.PIPE,
                             text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert other.stdout.readline().strip() == "held"
        run_grid("holdout", settings, out, models=["unet"], losses=["bce", "dice"], folds=[None], max_units=1,
                 progress=False, quiet=True)
    finally:
        other.kill()
        other.wait()
    return {"out": out, "data": data, "pid": other.pid}


def _copy(shared, tmp_path) -> Path:
    out = tmp_path / "res"
    shutil.copytree(shared["out"], out)
    return out


def _lines(report, level="problem"):
    return [f.line() for f in report.findings if f.level == level]


def _script(*argv):
    return runpy.run_path(str(REPO / "experiments/verify.py"))["main"]([str(a) for a in argv])


# --------------------------------------------------------------------------- two processes, one results folder
def test_a_unit_held_by_another_process_is_left_to_it(shared):
    out = shared["out"]
    log = (out / "log.txt").read_text(encoding="utf-8")
    assert f"skip holdout/unet/dice/holdout (being computed by process {shared['pid']} on host " \
           f"{socket.gethostname()})" in log
    assert "1 unit(s) left to other processes sharing" in log and "(holdout/unet/dice/holdout)" in log
    assert store.is_complete(BCE, out) and not DICE.directory(out).exists()  # never cleared nor started
    assert current_holder(store.lock_path(DICE, out)) is None  # released with its process
    assert current_holder(store.lock_path(BCE, out)) is None  # released once the marker was written


def test_a_worker_leaves_a_unit_taken_since_the_plan(shared, tmp_path):
    out = _copy(shared, tmp_path)
    with FileLock(store.lock_path(DICE, out)):
        outcome = _worker_run((DICE, None, out, False))
    assert outcome.skipped == f"being computed by process {os.getpid()} on host {socket.gethostname()}"
    assert _worker_run((BCE, None, out, False)).skipped == "completed by another process"


# --------------------------------------------------------------------------- verify.py
def test_a_clean_folder_verifies(shared, capsys):
    report = verify_results(shared["out"])
    assert report.ok and report.complete == 1 and not _lines(report, "warning"), report.findings
    assert any("models not run" in line for line in _lines(report, "info"))  # the study grid: information only
    assert _script("--results", shared["out"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("1 unit(s) complete, 0 running; 0 problem(s), 0 warning(s)")


def test_a_changed_model_is_reported_recomputed_and_refused_by_the_figures(shared, tmp_path, capsys):
    from tfrobseg.reporting.figures import make_figures

    out = _copy(shared, tmp_path)
    model = BCE.directory(out) / "best.keras"
    raw = bytearray(model.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    model.write_bytes(bytes(raw))
    assert _lines(verify_results(out)) == [("problem: holdout/unet/bce/holdout: best.keras: SHA-256 differs from the one "
                                           "in DONE.json (changed or corrupt); a re-run of its command recomputes the unit")]
    assert _script("--results", out) == 1 and "1 problem(s)" in capsys.readouterr().out
    said = []
    plan = _plan([BCE], out, said.append)
    assert plan.todo == [BCE] and "holdout/unet/bce/holdout is not complete (best.keras: SHA-256 differs" in said[0]
    # train=False: the fallback panel reads the damaged unit (the study's figure units are not trained here).
    with pytest.raises(UnitFilesError, match=r"^holdout/unet/bce/holdout: best.keras: SHA-256 differs"):
        make_figures(out, train=False)
    assert not (out / "figures").exists()  # nothing written


def test_an_unloadable_model_without_checksums_is_named_by_the_figures(shared, tmp_path):
    from tfrobseg.reporting.figures import make_figures

    out = _copy(shared, tmp_path)
    d = BCE.directory(out)
    (d / "best.keras").write_bytes(b"not a model")
    (d / "DONE.json").write_text(json.dumps({"unit": BCE.uid}))  # a marker from before checksums
    report = verify_results(out)
    assert report.ok and _lines(report, "warning") == [
        ("warning: holdout/unet/bce/holdout: no checksums recorded in DONE.json (made by an older tfrobseg): its "
        "files cannot be checked")]
    with pytest.raises(UnitFilesError, match=rf"^{d}: best.keras cannot be loaded \("):
        make_figures(out, train=False)
    assert not (out / "figures").exists()


def test_metrics_rows_and_settings_must_match_the_record(shared, tmp_path):
    out = _copy(shared, tmp_path)
    d = BCE.directory(out)
    metrics = pd.read_csv(d / "metrics.csv")
    metrics.iloc[:-1].to_csv(d / "metrics.csv", index=False)
    store.write_marker(BCE, out)  # checksums of the shortened file: only the row count is wrong
    assert _lines(verify_results(out)) == [(f"problem: {BCE.uid}: metrics.csv has {len(metrics) - 1} rows, config.json "
                                           f"lists 1 evaluated patient(s) x 2 eps = 2; recompute the unit")]
    metrics.to_csv(d / "metrics.csv", index=False)
    store.write_marker(BCE, out)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    config["settings"]["train"]["seed"] = 7
    (d / "config.json").write_text(json.dumps(config), encoding="utf-8")
    [line] = _lines(verify_results(out))
    assert line.startswith(f"problem: {BCE.uid}: made with other settings than run.json (differing: train.seed)")


def test_failed_interrupted_and_running_units(shared, tmp_path):
    out = _copy(shared, tmp_path)
    failed, interrupted, running = (Unit("holdout", "unet", loss, None) for loss in ("dice", "tversky", "focal"))
    store.write_failure(failed, out, "TrainingDiverged: NaN", "traceback")
    interrupted.directory(out).mkdir(parents=True)
    running.directory(out).mkdir(parents=True)
    with FileLock(store.lock_path(running, out)):
        report = verify_results(out)
    assert _lines(report) == [
        "problem: holdout/unet/dice/holdout: failed (TrainingDiverged: NaN); a re-run of its command retries it",
        ("problem: holdout/unet/tversky/holdout: started but not complete (no DONE.json: interrupted); a re-run of its "
        "command restarts it")]
    [line] = _lines(report, "running")
    assert line.startswith(f"running: holdout/unet/focal/holdout: being computed by process {os.getpid()} on host")


def test_folds_missing_inside_a_model_and_loss(shared, tmp_path):
    out = _copy(shared, tmp_path)
    shutil.copytree(BCE.directory(out), out / "crossval/unet/bce/fold0")
    assert "problem: crossval/unet/bce: fold(s) 1, 2 missing (have fold0): its table rows average fewer folds; run " \
           "crossval.py --model unet --loss bce --folds 1,2" in _lines(verify_results(out))


def test_data_that_changed_or_no_longer_reads(shared, tmp_path):
    manifest = Manifest.read(shared["data"])
    pid = manifest.split["test"][0]
    record = shared["data"] / manifest.patients[pid].record
    saved = record.read_bytes()
    try:
        record.write_bytes(saved[: len(saved) // 2])  # cut inside a record
        problems = _lines(verify_results(shared["out"]))
    finally:
        record.write_bytes(saved)
    # The manifest is unchanged (same content hash): the damaged file itself is the one problem.
    assert len(problems) == 1 and problems[0].startswith(f"problem: data: {pid}: {record}: ")



def test_a_manifest_that_changed_since_the_run_says_what(shared):
    path = shared["data"] / "manifest.json"
    saved = path.read_bytes()
    manifest = Manifest.read(shared["data"])
    manifest.seed += 1  # another seed: another split of the same records
    manifest.resplit()
    try:
        manifest.write(shared["data"])
        problems = _lines(verify_results(shared["out"]))
    finally:
        path.write_bytes(saved)
    assert len(problems) == 1 and problems[0].startswith(
        f"problem: data: {shared['data']} changed since the run started (")
    assert problems[0].endswith("): new units would not match the others")

def test_usage_errors_and_an_older_run_file(shared, tmp_path, capsys):
    assert _script("--results", tmp_path / "missing") == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'missing'}: no such folder\n"
    assert _script("--results", tmp_path) == 2 and "no run.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _script("--results", tmp_path, "--bogus")
    out = _copy(shared, tmp_path)
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    run["settings"]["manifest_sha256"] = run["settings"].pop("data_fingerprint")
    (out / "run.json").write_text(json.dumps(run), encoding="utf-8")
    report = verify_results(out)
    assert _lines(report, "warning")[0].startswith("warning: run.json: made by an older tfrobseg")
