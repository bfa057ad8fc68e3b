"""Run (or resume) a phase's grid of units into a results folder, one at a time or several at once.

* ``crossval``: for each model × loss × fold k, train on the other folds of the training part
  (early stopping on the validation split), attack every slice of fold k at every ε, and score
  each patient in 3D (Tables I and III).
* ``holdout``: for each model × loss, train on the whole training part (early stopping on the
  validation split), attack the hold-out test split (Tables II and IV).

Completed units are skipped on a re-run; an interrupted unit, or one whose files no longer match its
marker's checksums, is restarted from scratch (:mod:`tfrobseg.experiment.store`); a unit another process
holds is left to it, so several processes or machines can share one results folder. Progress goes to the terminal and to ``<out>/log.txt``.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.errors import UnitsFailed
from tfrobseg.experiment import store
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import MARKER, Unit, make_grid, select_shard
from tfrobseg.io import atomic_write_csv
from tfrobseg.locks import current_holder, describe_holder

__all__ = ["run_grid"]

_WORKER_SLOT = 0


def _log(out_dir: Path, message: str, quiet: bool = False) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
    with open(out_dir / "log.txt", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    if not quiet:
        print(message, flush=True)


def _worker_init(slots: Any, threads: int, deterministic: bool) -> None:
    # Runs once per worker process, before TensorFlow starts: claim a terminal row for the progress
    # bars, and fix the thread pools (their sizes change the floating-point results on a CPU) and
    # op determinism to the run's settings, whatever the number of workers.
    global _WORKER_SLOT
    _WORKER_SLOT = int(slots.get())
    from tfrobseg.console import setup_console

    setup_console()  # the parent's choices (quiet or --verbose, progress style) come in the environment
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


@dataclass
class _Outcome:
    """What a worker sends back for a unit: its metrics, the one-line reason it failed, or why it was left
    to another process (``skipped``)."""

    metrics: pd.DataFrame | None
    seconds: float
    error: str | None = None
    skipped: str | None = None


def _worker_run(job: tuple[Unit, Settings, Path, bool]) -> _Outcome:
    from tfrobseg.errors import TrainingDiverged
    from tfrobseg.locks import FileLock, LockHeld

    unit, settings, out_dir, progress = job
    t0 = time.perf_counter()
    lock = FileLock(store.lock_path(unit, out_dir))
    try:
        lock.acquire()  # held from before the half-finished folder is cleared until the marker or failure is written
    except LockHeld as exc:  # another process took the unit since the parent looked
        return _Outcome(None, 0.0, skipped=f"being computed by {describe_holder(exc.holder)}")
    try:
        if store.is_complete(unit, out_dir):
            return _Outcome(None, 0.0, skipped="completed by another process")
        store.reset_unit(unit, out_dir)
        from tfrobseg.experiment.runner import run_unit

        try:
            metrics = run_unit(unit, settings, out_dir, progress=progress, position=_WORKER_SLOT)
        except Exception as exc:  # noqa: BLE001 (one unit's failure must not take the others down: record, report)
            reason = str(exc) if isinstance(exc, TrainingDiverged) else f"{type(exc).__name__}: {exc}"
            reason = " ".join(reason.split())
            store.write_failure(unit, out_dir, reason, traceback.format_exc())
            return _Outcome(None, time.perf_counter() - t0, reason)
        return _Outcome(metrics, time.perf_counter() - t0)
    finally:
        lock.release()


def _unit_summary(df: pd.DataFrame) -> str:
    """Clean and attacked mean Dice of a unit under the run's first attack (the one of the tables)."""
    from tfrobseg.reporting.tables import first_attack_rows

    df, _ = first_attack_rows(df)
    clean = df.loc[df["epsilon"] == 0, "dice"].mean()
    attacked = df.loc[df["epsilon"] > 0, "dice"].mean()
    return f"clean Dice {clean:.3f}, attacked mean Dice {attacked:.3f}"


@dataclass
class _Plan:
    """The units of a grid this call computes, and those another process is computing."""

    todo: list[Unit]
    elsewhere: list[str]
    complete: int


def _plan(grid: list[Unit], out: Path, max_units: int | None, say) -> _Plan:
    """The incomplete units of ``grid`` no other process holds (at most ``max_units``). A unit whose files
    differ from its marker's checksums is recomputed; its folder is cleared by the worker, under its lock."""
    todo, elsewhere, complete = [], [], 0
    for k, unit in enumerate(grid, 1):
        d = unit.directory(out)
        problems = store.unit_problems(d) if (d / MARKER).is_file() else None
        if problems == []:
            complete += 1
            say(f"[{k}/{len(grid)}] skip {unit.uid} (complete)")
            continue
        holder = current_holder(store.lock_path(unit, out))
        if holder is not None:
            elsewhere.append(unit.uid)
            say(f"[{k}/{len(grid)}] skip {unit.uid} (being computed by {describe_holder(holder)})")
            continue
        if problems:
            say(f"[{k}/{len(grid)}] {unit.uid} is not complete ({'; '.join(problems)}): recomputing it")
        elif d.exists():
            say(f"[{k}/{len(grid)}] {unit.uid} was interrupted or failed earlier: restarting it from scratch")
        todo.append(unit)
    if max_units is not None and len(todo) > max_units:
        todo = todo[:max_units]
        say(f"computing {max_units} unit(s) in this call (--max-units)")
    return _Plan(todo, elsewhere, complete)


def _compute(todo: list[Unit], settings: Settings, out: Path, jobs: int, progress: bool, say, tag
             ) -> tuple[dict[str, str], list[str]]:
    """Compute the units in ``jobs`` worker processes; returns ``{unit id: reason}`` of those that failed
    and the ids of those another process took first.

    Always in workers, even for ``jobs = 1``: every unit then runs with the same thread pools and
    determinism settings (:attr:`Settings.threads`), which a process that already started
    TensorFlow could not change, so its numbers do not depend on ``jobs``.
    """
    if not todo:
        return {}, []
    import multiprocessing

    from tfrobseg.parallel import process_map

    jobs = min(jobs, len(todo))
    failures, elsewhere = {}, []
    # A queue of terminal rows, one per worker, so that their progress bars do not overwrite each other.
    with multiprocessing.get_context("spawn").Manager() as manager:
        slots = manager.Queue()
        for slot in range(jobs):
            slots.put(slot)
        results = process_map(_worker_run, [(u, settings, out, progress) for u in todo], workers=jobs,
                              initializer=_worker_init, initargs=(slots, settings.threads, settings.deterministic),
                              on_submit=lambda job: say(f"{tag(job[0])} start {job[0].uid}"), max_in_flight=jobs,
                              # A worker keeps the traced model of its last unit (train_model's reuse_key):
                              # it gets the next fold of the same model and loss.
                              affinity=lambda job: (job[0].model, job[0].loss))
        for job, outcome in results:
            uid = job[0].uid
            if outcome.skipped is not None:
                elsewhere.append(uid)
                say(f"{tag(job[0])} skip {uid} ({outcome.skipped})")
            elif outcome.error is None:
                say(f"{tag(job[0])} done {uid} in {outcome.seconds:.0f} s ({_unit_summary(outcome.metrics)})")
            else:
                failures[uid] = outcome.error
                say(f"{tag(job[0])} FAILED {uid} after {outcome.seconds:.0f} s: {outcome.error} "
                    f"(details: {job[0].directory(out) / store.FAILURE_NAME})")
    return failures, elsewhere


def run_grid(
    phase: str,
    settings: Settings,
    out_dir: str | os.PathLike,
    *,
    models: Sequence[str],
    losses: Sequence[str],
    folds: Sequence[int | None],
    shard: tuple[int, int] = (1, 1),
    overwrite: bool = False,
    max_units: int | None = None,
    jobs: int = 1,
    progress: bool = True,
    quiet: bool = False,
    data: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Run (or resume) a phase's grid into ``out_dir``; returns the combined metrics of the phase.

    Refuses (:class:`tfrobseg.errors.SettingsMismatchError`) when ``out_dir`` holds a run with
    other settings, unless ``overwrite``; ``data`` (:meth:`~tfrobseg.dataset.manifest.Manifest.fingerprint`,
    read from ``settings.data_dir`` when None) lets the refusal say what changed in the data. Units another
    process holds (their lock, :func:`tfrobseg.experiment.store.lock_path`) are skipped and named. ``max_units`` stops after that many units were *computed*
    in this call (skipped complete units do not count), e.g. for time-sliced cluster jobs.
    ``jobs > 1`` trains that many units at once in worker processes, each with
    :attr:`Settings.threads` threads: graph tracing is single-threaded Python, so two workers keep
    two cores busy where one process would leave one idle while it traces.

    Raises:
        UnitsFailed: after every other unit ran, when some failed (each has ``FAILED.json`` and no
            marker; a re-run retries them).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = Path(out_dir)
    if data is None:
        from tfrobseg.dataset.manifest import Manifest

        data = Manifest.read(settings.data_dir).fingerprint()
    out.mkdir(parents=True, exist_ok=True)
    store.check_settings(out, settings.fingerprint(), data=data, overwrite=overwrite)
    grid = select_shard(make_grid(phase, list(models), list(losses), list(folds)), shard)

    def say(message: str) -> None:
        _log(out, message, quiet)

    def tag(unit: Unit) -> str:
        return f"[{grid.index(unit) + 1}/{len(grid)}]"

    say(f"{phase}: {len(grid)} units in this shard ({shard[0]}/{shard[1]})")
    plan = _plan(grid, out, max_units, say)
    say(f"{plan.complete} unit(s) already complete, {len(plan.todo)} to compute in this call")
    failures, taken = _compute(plan.todo, settings, out, jobs, progress, say, tag)
    elsewhere = plan.elsewhere + taken
    if elsewhere:
        say(f"{len(elsewhere)} unit(s) left to other processes sharing {out} ({', '.join(elsewhere)}): the results "
            "and tables of this call hold only the complete units; run the same command again when they finish")
    combined = store.collect_metrics(out, phase)
    if not combined.empty:
        atomic_write_csv(out / f"results_{phase}.csv", combined)
    if failures:
        raise UnitsFailed(failures)
    return combined
