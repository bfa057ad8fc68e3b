"""The executors of the grid commands (tfrobseg.experiment.executor): options, the sbatch file submitit makes from
them, the one-line errors, and the SLURM path end to end on submitit's local cluster."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tfrobseg.experiment import store
from tfrobseg.experiment.executor import (
    add_executor_options,
    executor_argv,
    read_submissions,
    record_submissions,
    resolve_executor,
)
from tfrobseg.experiment.units import Unit
from tfrobseg.locks import current_holder, read_holder

# Imported here, not inside a test: submitit's logging binds handlers to sys.stdout / sys.stderr as they are when it
# is first imported, and a test's captured streams are closed after it (a [test] extra: CI has it).
submitit = pytest.importorskip("submitit")

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model", "unet", "--loss", "dice", "--epsilons", "0.5", "--max-epochs", "1", "--filters", "4,8",
        "--image-size", "32", "--no-xla", "--no-progress", "--seed", "0", "--threads", "1"]
SLURM = ["--executor", "slurm", "--submitit-cluster", "local", "--gpus-per-unit", "0", "--cpus-per-unit", "1"]


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=None)
    add_executor_options(p)
    return p.parse_args(argv)


def _fake_srun(tmp_path, monkeypatch):
    """An ``srun`` on the PATH: submitit's SLURM executor looks for one before it writes an sbatch file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_the_options_make_the_sbatch_file_a_user_expects(tmp_path, monkeypatch):
    _fake_srun(tmp_path, monkeypatch)
    config = resolve_executor(_parse("--executor", "slurm", "--partition", "gpu", "--gpus-per-unit", "2",
                                     "--cpus-per-unit", "16", "--mem", "64", "--time", "600", "--array-parallelism",
                                     "10", "--slurm-option", "account=lab", "--slurm-option", "qos=long",
                                     "--setup", "module load cuda"))
    executor = submitit.AutoExecutor(folder=str(tmp_path / "sb"), cluster="slurm")
    executor.update_parameters(**config.parameters("tfrobseg-crossval"))
    text = executor._executor._make_submission_file_text("python -m task", "UID")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--cpus-per-task=16", "--mem=64GB", "--time=600",
                 "--account=lab", "--qos=long", "--job-name=tfrobseg-crossval", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in text, line
    assert "\nmodule load cuda\n" in text
    assert executor._executor.parameters["array_parallelism"] == 10


def test_executor_options_survive_being_passed_on(tmp_path, monkeypatch):
    _fake_srun(tmp_path, monkeypatch)
    args = _parse("--executor", "slurm", "--partition", "gpu", "--mem", "32", "--slurm-option", "account=lab",
                  "--setup", "source venv/bin/activate", "--wait", "--submitit-cluster", "local")
    assert resolve_executor(_parse(*executor_argv(args))) == resolve_executor(args)
    assert executor_argv(_parse()) == []


@pytest.mark.parametrize("argv, message", [
    (["--wait"], "--wait: options of --executor slurm"),
    (["--partition", "gpu", "--mem", "8"], "--partition, --mem: options of --executor slurm"),
    (["--executor", "slurm", "--jobs", "2"], "--jobs is for --executor local"),
    (["--executor", "slurm", "--slurm-option", "account"], "expected KEY=VALUE"),
    (["--executor", "slurm", "--time", "0"], "--time and --array-parallelism >= 1"),
])
def test_bad_executor_options_are_one_line_naming_the_option(argv, message):
    with pytest.raises(SystemExit, match=message):
        resolve_executor(_parse(*argv))


def test_slurm_without_srun_says_where_to_submit_from(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SystemExit, match="srun not found"):
        resolve_executor(_parse("--executor", "slurm"))


def test_without_the_extra_slurm_is_one_line_saying_how_to_install_it(tiny_cohort, tmp_path):
    # submitit made unimportable, as in an environment without the [cluster] extra.
    code = ("import sys; sys.modules['submitit'] = None\n"
            "from tfrobseg.experiment.cli import main\n"
            f"sys.exit(main('crossval', {['--data', str(tiny_cohort), '--out', str(tmp_path / 'out'), *TINY, '--executor', 'slurm']!r}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", cwd=REPO,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --executor slurm needs submitit, an optional extra: pip install 'tfrobseg[cluster]'"]
    assert not (tmp_path / "out").exists()


def test_verify_names_a_submitted_unit_that_never_started(tmp_path):
    from tfrobseg.experiment.verify import verify_results

    store.RunFile("h", {}).write(tmp_path)
    job = SimpleNamespace(job_id="4242_3", paths=SimpleNamespace(stderr=tmp_path / "slurm" / "4242_3_0_log.err"))
    unit = Unit("crossval", "unet", "dice", 0)
    record_submissions(tmp_path, [(unit.uid, job)])
    assert read_submissions(tmp_path)[unit.uid].job_id == "4242_3"
    lines = [f.line() for f in verify_results(tmp_path).findings]
    assert any(line.startswith("problem: crossval/unet/dice/fold0: submitted as array task 4242_3") and
               "squeue -j 4242" in line for line in lines), lines
    unit.directory(tmp_path).mkdir(parents=True)  # started (then interrupted): the unit's own problem, not this one
    assert not any("never started" in f.line() for f in verify_results(tmp_path).findings)


def _script(*args: str) -> SimpleNamespace:
    """Run crossval.py; its output goes to a file, not a pipe: the tasks of submitit's local cluster inherit the
    script's stdout and would hold a pipe open until they end."""
    with open(Path(str(args[args.index("--out") + 1])).parent / "script.log", "w+", encoding="utf-8") as log:
        code = subprocess.run([sys.executable, str(REPO / "experiments" / "crossval.py"), *map(str, args)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=REPO, check=False, timeout=600,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).returncode
        log.seek(0)
        stdout = log.read()
    assert code == 0, stdout[-4000:]
    return SimpleNamespace(stdout=stdout)


def _wait_for(condition, what: str, timeout: float = 300.0, poll: float = 0.02):
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(poll)


@pytest.mark.slow
def test_slurm_array_on_submitits_local_cluster_resumes_a_killed_unit_and_equals_a_local_run(tiny_cohort, tmp_path):
    local, out = tmp_path / "local", tmp_path / "slurm"
    _script("--data", tiny_cohort, "--out", local, *TINY, "--no-tables")
    grid = [Unit("crossval", "unet", "dice", k) for k in range(3)]

    # Submitted without --wait: the call ends at once, the three tasks run on.
    submitted = _script("--data", tiny_cohort, "--out", out, *TINY, *SLURM)
    assert "3 unit(s) submitted as job array" in submitted.stdout
    victim = grid[1]
    lock = store.lock_path(victim, out)
    # Its holder's name is written once the lock is taken (never probed by taking it: the task could then miss it);
    # its folder is made as the unit starts.
    _wait_for(lambda: read_holder(lock).get("pid") and victim.directory(out).is_dir(), "the unit to start")
    os.kill(int(read_holder(lock)["pid"]), signal.SIGKILL)  # the task's process, mid-unit (a node lost, an OOM kill)
    _wait_for(lambda: all(store.is_complete(u, out) for u in grid if u != victim)
              and current_holder(lock) is None, "the other tasks")
    assert not store.is_complete(victim, out) and victim.directory(out).is_dir()

    resubmitted = _script("--data", tiny_cohort, "--out", out, *TINY, *SLURM, "--wait", "--no-tables")
    assert "was interrupted or failed earlier: restarting it from scratch" in resubmitted.stdout
    assert f"submitted {victim.uid}" in resubmitted.stdout
    assert sum("submitted crossval/" in line for line in resubmitted.stdout.splitlines()) == 1
    assert f"done {victim.uid} in job" in resubmitted.stdout

    again = _script("--data", tiny_cohort, "--out", out, *TINY, *SLURM, "--wait", "--no-tables")
    assert "3 unit(s) already complete, 0 to compute in this call" in again.stdout
    assert "submitted" not in again.stdout

    ours, theirs = (pd.read_csv(d / "results_crossval.csv") for d in (out, local))
    pd.testing.assert_frame_equal(ours, theirs)
    verify = subprocess.run([sys.executable, str(REPO / "experiments" / "verify.py"), "--results", str(out), "--merge"],
                            capture_output=True, encoding="utf-8", cwd=REPO, check=False)
    assert verify.returncode == 0, verify.stdout
    assert f"merged: {out / 'results_crossval.csv'} ({len(theirs)} rows of the crossval units)" in verify.stdout
    assert set(read_submissions(out)) == {u.uid for u in grid}

    # experiments/attack.py: a task per unit, the same rows as attacking here.
    attack = ["--attack", "pgd", "--steps", "1", "--units", "crossval/unet/dice/fold1", "--no-progress"]
    for results, extra in ((out, [*SLURM, "--wait"]), (local, [])):
        proc = subprocess.run([sys.executable, str(REPO / "experiments" / "attack.py"), "--results", str(results),
                               *attack, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, encoding="utf-8",
                              cwd=REPO, check=False, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    ours, theirs = (store.collect_attack_rows(d) for d in (out, local))
    pd.testing.assert_frame_equal(ours[ours["attack"] == "pgd"].reset_index(drop=True),
                                  theirs[theirs["attack"] == "pgd"].reset_index(drop=True))


def test_a_node_with_fewer_gpus_than_the_settings_fails_the_unit_by_name(tmp_path):
    from tfrobseg.experiment.grid import array_unit

    unit = Unit("holdout", "unet", "dice", None)
    settings = SimpleNamespace(train=SimpleNamespace(precision="mixed_float16"), replicas=2)
    with pytest.raises(RuntimeError, match=r"holdout/unet/dice/holdout: this node has 0 GPU\(s\), the run's settings "
                                           r"were made for 2 \(--gpus-per-unit; precision mixed_float16, 2 replica"):
        array_unit(unit, settings, tmp_path, gpus=2)
    assert "this node has 0 GPU(s)" in store.read_failure(unit.directory(tmp_path))
    assert not (unit.directory(tmp_path) / "DONE.json").exists()


def test_dry_run_of_the_study_lists_120_units_and_a_total_and_creates_nothing(tiny_cohort, tmp_path, capsys):
    from tfrobseg.experiment.cli import main

    out = tmp_path / "out"
    argv = ["--data", str(tiny_cohort), "--out", str(out), "--image-size", "64", "--filters", "4,8,16", "--dry-run",
            "--throughput", "5000"]
    assert main("study", argv) == 0
    lines = capsys.readouterr().out.splitlines()
    units = [line for line in lines if line.startswith(("crossval/", "holdout/"))]
    assert len(units) == 120 and len({line.split()[0] for line in units}) == 120
    assert f"{out} (crossval): 90 unit(s), 0 complete, 90 would run" in lines
    assert f"{out} (holdout): 30 unit(s), 0 complete, 30 would run" in lines
    assert any(line.startswith("120 unit(s): ") and "CPU-hours in total" in line and "5000 GMAC/s given" in line
               for line in lines), lines[-3:]
    assert not out.exists()

    # On SLURM with GPUs: GPU-hours, and the time limit set against the longest unit.
    assert main("crossval", [*argv[:-1], "5000", "--executor", "slurm", "--gpus-per-unit", "2", "--folds", "0",
                             "--model", "unet", "--loss", "dice", "--time", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("1 unit(s): ") and "GPU-hours in total (2 GPU(s) per unit" in line for line in lines)
    assert any(line.startswith("--time 1 min per unit; the longest unit's estimate is") for line in lines)
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--throughput", "100"], "--throughput is an option of --dry-run"),
    (["--calibrate"], "--calibrate is an option of --dry-run"),
    (["--dry-run"], "--dry-run needs one of --throughput GMAC/S"),
    (["--dry-run", "--throughput", "100", "--calibrate"], "--dry-run needs one of --throughput GMAC/S"),
    (["--dry-run", "--throughput", "0"], "--throughput 0: must be > 0"),
])
def test_cost_options_are_checked_before_anything(tiny_cohort, tmp_path, capsys, argv, message):
    from tfrobseg.experiment.cli import main

    assert main("crossval", ["--data", str(tiny_cohort), "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {message}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_an_array_task_sets_the_runs_threads_and_determinism_before_its_work():
    """What a local worker's initializer does (the thread pools change a CPU's rounding): here in a fresh process,
    as a SLURM task starts."""
    code = ("from tfrobseg.experiment.executor import ArrayTask\n"
            "def work():\n"
            "    import tensorflow as tf\n"
            "    from tensorflow.python.framework import config\n"
            "    t = tf.config.threading\n"
            "    return (t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads(),\n"
            "            config.is_op_determinism_enabled())\n"
            "print(ArrayTask(work, 3, True)())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, encoding="utf-8", cwd=REPO, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "(3, 3, True)", proc.stderr[-2000:]
