"""Run (or resume) a phase's grid of units into a results folder, one at a time or several at once.

* ``crossval``: for each model × loss × fold k, train on the other folds of the training part
  (early stopping on the validation split), attack every slice of fold k at every ε, and score
  each patient in 3D (Tables I and III).
* ``holdout``: for each model × loss, train on the whole training part (early stopping on the
  validation split), attack the hold-out test split (Tables II and IV).

Completed units are skipped on a re-run; an interrupted unit, or one whose files no longer match its
marker's checksums, is restarted from scratch (:mod:`tfrobseg.experiment.store`); a unit another process
holds is left to it, so several processes or machines can share one results folder. Progress goes to the terminal and to ``<out>/log.txt``.

The units are computed here, in worker processes, or submitted to a SLURM cluster as one job array
(:mod:`tfrobseg.experiment.executor`), each task running :func:`array_unit`: the same code as a worker.
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

from tfrobseg.errors import UnitsFailed, UnitsSubmitted
from tfrobseg.experiment import store
from tfrobseg.experiment.executor import SUBMIT_DIR, ExecutorConfig
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import MARKER, Unit, make_grid, select_shards
from tfrobseg.locks import current_holder, describe_holder

__all__ = ["GridRun", "array_unit", "run_grid", "run_grids", "shard_units"]

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
    from tfrobseg.parallel import configure_threads

    configure_threads(threads, deterministic)


@dataclass
class _Outcome:
    """What a worker sends back for a unit: its metrics, the one-line reason it failed, or why it was left
    to another process (``skipped``)."""

    metrics: pd.DataFrame | None
    seconds: float
    error: str | None = None
    skipped: str | None = None


def _worker_run(job: tuple[Unit, Settings, Path, bool], gpus: int = 0) -> _Outcome:
    """Compute one unit under its lock (a local worker's job, and a SLURM task's: :func:`array_unit`). ``gpus``:
    the GPUs the settings were made for on another machine (``--gpus-per-unit``); this one must have them."""
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
        problem = _node_problem(settings, gpus)
        if problem is not None:
            store.write_failure(unit, out_dir, problem, problem)
            return _Outcome(None, 0.0, problem)
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


def array_unit(unit: Unit, settings: Settings, out_dir: Path, gpus: int = 0) -> str:
    """What one SLURM array task computes (:class:`~tfrobseg.experiment.executor.ArrayTask` set its process up as
    :func:`_worker_init` does): the unit, exactly as a local worker does. Returns ``"done: <summary>"`` or
    ``"skipped: <why>"``; raises RuntimeError with the one-line reason when the unit failed (its FAILED.json
    written), so that SLURM records the task as failed. ``gpus``: the GPUs the settings were made for
    (``--gpus-per-unit``); a node with fewer fails the unit, naming them."""
    outcome = _worker_run((unit, settings, Path(out_dir), False), gpus=gpus)
    if outcome.error is not None:
        raise RuntimeError(f"{unit.uid}: {outcome.error}")
    if outcome.skipped is not None:
        return f"skipped: {outcome.skipped}"
    return f"done: {_unit_summary(outcome.metrics)}"


def _node_problem(settings: Settings, wanted: int) -> str | None:
    """Why this node cannot compute a unit as its settings say (None when it can): they were made for ``wanted``
    GPUs (``--gpus-per-unit``), and a node with fewer would train another number of replicas, or in float32
    instead of mixed precision, and give other numbers."""
    from tfrobseg.experiment.executor import local_gpus

    gpus = local_gpus() if wanted else 0
    if gpus < wanted:
        return (f"this node has {gpus} GPU(s), the run's settings were made for {wanted} (--gpus-per-unit; precision "
                f"{settings.train.precision}, {settings.replicas} replica(s)): submit to a partition whose nodes "
                "have them (--partition)")
    return None


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


def _plan(grid: list[Unit], out: Path, say) -> _Plan:
    """The incomplete units of ``grid`` no other process holds. A unit whose files differ from its marker's
    checksums is recomputed; its folder is cleared by the worker, under its lock."""
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
    return _Plan(todo, elsewhere, complete)


@dataclass
class GridRun:
    """One results folder's grid: what :func:`run_grids` computes into ``out_dir`` (``data`` as for
    :func:`run_grid`)."""

    phase: str
    settings: Settings
    out_dir: Path
    models: Sequence[str]
    losses: Sequence[str]
    folds: Sequence[int | None]
    shard: tuple[int, int] = (1, 1)
    data: dict[str, Any] | None = None


@dataclass
class _Prepared:
    """A run whose folder was checked, its grid selected and planned."""

    run: GridRun
    grid: list[Unit]
    plan: _Plan
    quiet: bool
    prefix: str = ""  # "<folder name>: " when several runs share the terminal

    def say(self, message: str) -> None:
        _log(self.run.out_dir, self.prefix + message, self.quiet)

    def tag(self, unit: Unit) -> str:
        return f"[{self.grid.index(unit) + 1}/{len(self.grid)}]"


def _compute(todo: list[tuple[_Prepared, Unit]], jobs: int, progress: bool
             ) -> tuple[dict[str, str], list[tuple[_Prepared, str]]]:
    """Compute the units in ``jobs`` worker processes; returns ``{unit id: reason}`` of those that failed
    (ids prefixed with their folder's name when the runs are several) and the units another process took
    first, with their run.

    Always in workers, even for ``jobs = 1``: every unit then runs with the same thread pools and
    determinism settings (:attr:`Settings.threads`), which a process that already started
    TensorFlow could not change, so its numbers do not depend on ``jobs``.
    """
    if not todo:
        return {}, []
    import multiprocessing

    from tfrobseg.parallel import process_map

    first = todo[0][0].run.settings
    jobs = min(jobs, len(todo))
    failures, elsewhere = {}, []
    by_job = {(u, p.run.out_dir): p for p, u in todo}

    def on_submit(job: tuple) -> None:
        prepared = by_job[(job[0], job[2])]
        prepared.say(f"{prepared.tag(job[0])} start {job[0].uid}")

    # A queue of terminal rows, one per worker, so that their progress bars do not overwrite each other.
    with multiprocessing.get_context("spawn").Manager() as manager:
        slots = manager.Queue()
        for slot in range(jobs):
            slots.put(slot)
        results = process_map(_worker_run, [(u, p.run.settings, p.run.out_dir, progress) for p, u in todo],
                              workers=jobs, initializer=_worker_init,
                              initargs=(slots, first.threads, first.deterministic), on_submit=on_submit,
                              max_in_flight=jobs,
                              # A worker keeps the traced model of its last unit (train_model's reuse_key):
                              # it gets the next fold of the same model, loss and defense.
                              affinity=lambda job: (job[0].model, job[0].loss, repr(job[1].defense)))
        for job, outcome in results:
            prepared = by_job[(job[0], job[2])]
            uid, tag, say = job[0].uid, prepared.tag(job[0]), prepared.say
            if outcome.skipped is not None:
                elsewhere.append((prepared, job[0].uid))
                say(f"{tag} skip {uid} ({outcome.skipped})")
            elif outcome.error is None:
                say(f"{tag} done {uid} in {outcome.seconds:.0f} s ({_unit_summary(outcome.metrics)})")
            else:
                failures[prepared.prefix + uid] = outcome.error
                say(f"{tag} FAILED {uid} after {outcome.seconds:.0f} s: {outcome.error} "
                    f"(details: {job[0].directory(job[2]) / store.FAILURE_NAME})")
    return failures, elsewhere


def _submit(todo: list[tuple[_Prepared, Unit]], executor: ExecutorConfig
            ) -> tuple[dict[str, str], list[tuple[_Prepared, str]]]:
    """Submit the units as one job array (:func:`array_unit` each) into the first run's ``<out>/slurm/``; with
    ``--wait`` follow it and return what :func:`_compute` returns, else raise :class:`UnitsSubmitted`."""
    if not todo:
        return {}, []
    from tfrobseg.experiment.executor import record_submissions, submit_array

    first, phases = todo[0][0], sorted({p.run.phase for p, _ in todo})
    folder = first.run.out_dir / SUBMIT_DIR
    tasks = [(p.prefix + u.uid, array_unit, (u, p.run.settings, p.run.out_dir, executor.gpus_per_unit)) for p, u in todo]
    submission = submit_array(tasks, executor, folder, name=f"tfrobseg-{'-'.join(phases)}",
                              threads=first.run.settings.threads, deterministic=first.run.settings.deterministic)
    for k, (prepared, unit) in enumerate(todo):
        prepared.say(f"{prepared.tag(unit)} submitted {unit.uid} (job {submission.jobs[k].job_id})")
    for prepared in {id(p): p for p, _ in todo}.values():
        record_submissions(prepared.run.out_dir, [(u.uid, job) for (p, u), job in zip(todo, submission.jobs)
                                                  if p is prepared])
    outs = " ".join(sorted({str(p.run.out_dir) for p, _ in todo}))
    if not executor.wait:
        raise UnitsSubmitted(
            f"{len(todo)} unit(s) submitted as job array {submission.array_id} (its tasks' logs in {folder}). "
            "Follow it with squeue / sacct; when it has ended, run the same command again (it submits only units "
            "not complete, e.g. failed ones, and writes the tables or the report once all are), or check and merge "
            f"the folder with: python experiments/verify.py --merge --results {outs}")
    submission.follow(first.say)
    failures, elsewhere = {}, []
    for (prepared, unit), task in zip(todo, submission.outcomes()):
        tag, say, out = prepared.tag(unit), prepared.say, prepared.run.out_dir
        if task.error is not None:  # the unit's own failure (its FAILED.json), or a task killed before it wrote one
            reason = store.read_failure(unit.directory(out)) if (unit.directory(out) / store.FAILURE_NAME).is_file() \
                else f"array task {task.job_id} ended without completing it ({task.error}); its log: {task.log}"
            failures[prepared.prefix + unit.uid] = reason
            say(f"{tag} FAILED {unit.uid}: {reason}")
            continue
        status = str(task.result)
        if status.startswith("skipped"):
            elsewhere.append((prepared, unit.uid))
        say(f"{tag} {status.split(':', 1)[0]} {unit.uid} in job {task.job_id} ({status.split(': ', 1)[-1]})")
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
    executor: ExecutorConfig | None = None,
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

    ``executor`` (:class:`~tfrobseg.experiment.executor.ExecutorConfig`): ``--executor slurm`` submits the units
    to compute as one job array instead (``jobs`` then means nothing).

    Raises:
        UnitsFailed: after every other unit ran, when some failed (each has ``FAILED.json`` and no
            marker; a re-run retries them).
        UnitsSubmitted: the units were submitted to SLURM and not waited for.
    """
    run = GridRun(phase, settings, Path(out_dir), models, losses, folds, shard, data)
    return run_grids([run], overwrite=overwrite, max_units=max_units, jobs=jobs, progress=progress, quiet=quiet,
                     executor=executor)[0]


def run_grids(runs: Sequence[GridRun], *, overwrite: bool = False, max_units: int | None = None, jobs: int = 1,
              progress: bool = True, quiet: bool = False, executor: ExecutorConfig | None = None
              ) -> list[pd.DataFrame]:
    """:func:`run_grid` for several results folders at once (e.g. one per defense): every folder is checked
    first, then the units of all of them share one pool of ``jobs`` workers. Returns each folder's combined
    metrics, in ``runs``' order; the runs must agree on the threads and determinism of a unit's process
    (:attr:`Settings.threads`, :attr:`Settings.deterministic`), which a worker fixes when it starts.

    Raises:
        UnitsFailed: after every other unit ran, when some failed (ids prefixed with their folder's name
            when ``runs`` has several).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if len({(r.settings.threads, r.settings.deterministic) for r in runs}) > 1:
        raise ValueError("run_grids: the runs differ in threads or determinism; run them separately")
    grids = shard_units(runs)
    prepared = [_prepare(run, grid, overwrite, quiet, _prefix(run, runs)) for run, grid in zip(runs, grids)]
    todo = [(p, unit) for p in prepared for unit in p.plan.todo]
    if max_units is not None and len(todo) > max_units:
        todo = todo[:max_units]
        for p in {id(p): p for p, _ in todo}.values():
            p.say(f"computing {max_units} unit(s) in this call (--max-units)")
    if executor is not None and executor.remote:
        failures, taken = _submit(todo, executor)
    else:
        failures, taken = _compute(todo, jobs, progress)
    combined = []
    for p in prepared:
        mine = p.plan.elsewhere + [uid for q, uid in taken if q is p]
        if mine:
            p.say(f"{len(mine)} unit(s) left to other processes sharing {p.run.out_dir} ({', '.join(mine)}): the "
                  "results and tables of this call hold only the complete units; run the same command again when "
                  "they finish")
        combined.append(store.write_results(p.run.out_dir, p.run.phase))
    if failures:
        raise UnitsFailed(failures)
    return combined


def shard_units(runs: Sequence[GridRun]) -> list[list[Unit]]:
    """Each run's units in the call's shard (:func:`~tfrobseg.experiment.units.select_shards`: the runs' grids one
    after the other); the runs share one ``--shard``."""
    if len({r.shard for r in runs}) > 1:
        raise ValueError("the runs differ in their shard; one call has one --shard")
    return select_shards([make_grid(r.phase, list(r.models), list(r.losses), list(r.folds)) for r in runs],
                         runs[0].shard)


def _prefix(run: GridRun, runs: Sequence[GridRun]) -> str:
    """What a run's lines start with when several share the terminal: its folder's name, or its phase when they
    share a folder (``experiments/study.py``: cross-validation and hold-out)."""
    if len(runs) == 1:
        return ""
    return f"{run.phase}: " if len({r.out_dir for r in runs}) == 1 else f"{run.out_dir.name}: "


def _prepare(run: GridRun, grid: list[Unit], overwrite: bool, quiet: bool, prefix: str) -> _Prepared:
    """Check ``run``'s folder against its settings (refusing another run's folder) and plan its ``grid`` (the units
    of its shard)."""
    out = run.out_dir
    data = run.data
    if data is None:
        from tfrobseg.dataset.manifest import Manifest

        data = Manifest.read(run.settings.data_dir).fingerprint()
    out.mkdir(parents=True, exist_ok=True)
    store.check_settings(out, run.settings.fingerprint(), data=data, overwrite=overwrite)

    def say(message: str) -> None:
        _log(out, prefix + message, quiet)

    say(f"{run.phase}: {len(grid)} units in this shard ({run.shard[0]}/{run.shard[1]})")
    plan = _plan(grid, out, say)
    say(f"{plan.complete} unit(s) already complete, {len(plan.todo)} to compute in this call")
    return _Prepared(run, grid, plan, quiet, prefix)
