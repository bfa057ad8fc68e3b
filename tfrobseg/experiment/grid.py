"""Run (or resume) a phase's grid of units into a results folder, one at a time or several at once.

* ``crossval``: for each model × loss × fold k, train on the other folds of the training part
  (early stopping on the validation split), attack every slice of fold k at every ε, and score
  each patient in 3D (Tables I and III).
* ``holdout``: for each model × loss, train on the whole training part (early stopping on the
  validation split), attack the hold-out test split (Tables II and IV).

Completed units are skipped on a re-run; an interrupted unit is restarted from scratch
(:mod:`tfrobseg.experiment.store`). Progress goes to the terminal and to ``<out>/log.txt``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.experiment import store
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import Unit, make_grid, select_shard
from tfrobseg.io import atomic_write_csv

__all__ = ["run_grid"]

_WORKER_SLOT = 0


def _log(out_dir: Path, message: str, quiet: bool = False) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
    with open(out_dir / "log.txt", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    if not quiet:
        print(message, flush=True)


def _worker_init(slots: Any, threads: int) -> None:
    # Runs once per worker process: claim a terminal row for its progress bars and share the
    # cores between the workers (TensorFlow's thread pools are fixed at its first use).
    global _WORKER_SLOT
    _WORKER_SLOT = int(slots.get())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _timed_run(job: tuple[Unit, Settings, Path, bool], position: int = 0) -> tuple[pd.DataFrame, float]:
    from tfrobseg.experiment.runner import run_unit

    unit, settings, out_dir, progress = job
    t0 = time.perf_counter()
    df = run_unit(unit, settings, out_dir, progress=progress, position=position)
    return df, time.perf_counter() - t0


def _worker_run(job: tuple[Unit, Settings, Path, bool]) -> tuple[pd.DataFrame, float]:
    return _timed_run(job, position=_WORKER_SLOT + 1)


def _unit_summary(df: pd.DataFrame) -> str:
    clean = df.loc[df["epsilon"] == 0, "dice"].mean()
    attacked = df.loc[df["epsilon"] > 0, "dice"].mean()
    return f"clean Dice {clean:.3f}, attacked mean Dice {attacked:.3f}"


def _units_to_compute(grid: list[Unit], out: Path, max_units: int | None, say) -> list[Unit]:
    """The incomplete units of ``grid`` (at most ``max_units``), their half-written folders cleared."""
    todo = []
    for k, unit in enumerate(grid, 1):
        if unit.is_complete(out):
            say(f"[{k}/{len(grid)}] skip {unit.uid} (complete)")
        else:
            todo.append(unit)
    if max_units is not None and len(todo) > max_units:
        todo = todo[:max_units]
        say(f"computing {max_units} unit(s) in this call (--max-units)")
    for unit in todo:
        if store.reset_unit(unit, out):
            say(f"[{grid.index(unit) + 1}/{len(grid)}] {unit.uid} was interrupted earlier: restarting it from scratch")
    return todo


def _compute(todo: list[Unit], settings: Settings, out: Path, jobs: int, progress: bool, say, tag) -> None:
    """Compute the units, in this process or in ``jobs`` worker processes sharing the cores."""
    if jobs == 1 or len(todo) <= 1:
        for unit in todo:
            say(f"{tag(unit)} start {unit.uid}")
            df, seconds = _timed_run((unit, settings, out, progress))
            say(f"{tag(unit)} done {unit.uid} in {seconds:.0f} s ({_unit_summary(df)})")
        return
    import multiprocessing

    from tfrobseg.parallel import process_map

    jobs = min(jobs, len(todo))
    # A queue of terminal rows, one per worker, so that their progress bars do not overwrite each other.
    with multiprocessing.get_context("spawn").Manager() as manager:
        slots = manager.Queue()
        for slot in range(jobs):
            slots.put(slot)
        threads = max(1, (os.cpu_count() or 1) // jobs)
        results = process_map(_worker_run, [(u, settings, out, progress) for u in todo], workers=jobs,
                              initializer=_worker_init, initargs=(slots, threads),
                              on_submit=lambda job: say(f"{tag(job[0])} queued {job[0].uid}"))
        for job, (df, seconds) in results:
            say(f"{tag(job[0])} done {job[0].uid} in {seconds:.0f} s ({_unit_summary(df)})")


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
) -> pd.DataFrame:
    """Run (or resume) a phase's grid into ``out_dir``; returns the combined metrics of the phase.

    Refuses (:class:`tfrobseg.errors.SettingsMismatchError`) when ``out_dir`` holds a run with
    other settings, unless ``overwrite``. ``max_units`` stops after that many units were *computed*
    in this call (skipped complete units do not count), e.g. for time-sliced cluster jobs.
    ``jobs > 1`` trains that many units at once in worker processes, each with its share of the
    cores: graph tracing is single-threaded Python, so two workers keep two cores busy where one
    process would leave one idle while it traces.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store.check_settings(out, settings.fingerprint(), overwrite=overwrite)
    grid = select_shard(make_grid(phase, list(models), list(losses), list(folds)), shard)

    def say(message: str) -> None:
        _log(out, message, quiet)

    def tag(unit: Unit) -> str:
        return f"[{grid.index(unit) + 1}/{len(grid)}]"

    done = store.completed_units(out, grid)
    say(f"{phase}: {len(grid)} units in this shard ({shard[0]}/{shard[1]}), {len(done)} already complete")
    todo = _units_to_compute(grid, out, max_units, say)
    _compute(todo, settings, out, jobs, progress, say, tag)
    combined = store.collect_metrics(out, phase)
    if not combined.empty:
        atomic_write_csv(out / f"results_{phase}.csv", combined)
    return combined
