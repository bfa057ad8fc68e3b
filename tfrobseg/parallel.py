"""Worker processes for the package's three parallel loops (patients, metrics, experiment units).

Workers are started with ``spawn``, never ``fork``: forking a process in which TensorFlow has
already started its threads can deadlock the child. On an error in the parent (or a worker's
exception, re-raised here) the jobs not yet started are cancelled, so nothing runs on after a
failure.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, TypeVar

__all__ = ["configure_threads", "process_map"]

T = TypeVar("T")


def configure_threads(threads: int, deterministic: bool) -> bool:
    """Give this process TensorFlow thread pools of ``threads`` (intra- and inter-op) and, with ``deterministic``,
    op determinism: what a unit's process computes with, wherever it runs (a local worker, a SLURM task, the
    calibration, the extra attacks of the related-work experiments). The pools' sizes change a CPU's rounding, so
    they are part of a run's settings. Returns False when TensorFlow already runs in this process with other pools,
    which can then no longer be set (op determinism still is)."""
    import tensorflow as tf

    pools = tf.config.threading
    ok = True
    if (pools.get_intra_op_parallelism_threads(), pools.get_inter_op_parallelism_threads()) != (threads, threads):
        try:
            pools.set_intra_op_parallelism_threads(threads)
            pools.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            ok = False
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return ok


def process_map(
    fn: Callable[..., T],
    jobs: Sequence[Any] | Iterable[Any],
    *,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    ordered: bool = False,
    on_submit: Callable[[Any], None] | None = None,
    start_method: str = "spawn",
    max_in_flight: int | None = None,
    affinity: Callable[[Any], Any] | None = None,
) -> Iterator[tuple[Any, T]]:
    """Yield ``(job, fn(job))`` computed in ``workers`` processes.

    Results come as they finish, or in job order with ``ordered``. ``fn``, the jobs and the
    results must be picklable; ``on_submit(job)`` is called as each job is queued. With
    ``max_in_flight = workers`` a job is queued only when a worker is free, so ``on_submit`` marks
    its start (the experiment grid logs it so); by default every job is queued at once.
    ``start_method`` other than ``"spawn"`` is for callers that know no TensorFlow is loaded.

    ``affinity(job)`` (with ``max_in_flight = workers``): a key of what a worker keeps warm from a job
    (e.g. a traced model). The jobs start out with different keys, and when a job finishes, the next
    job queued is one with its key if any is left: the worker that just became free (the only idle
    one) takes it. Only the order of the jobs changes, never what a job computes.
    """
    jobs = list(jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
    limit = len(jobs) if max_in_flight is None else max_in_flight
    ctx = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(min(workers, max(len(jobs), 1)), mp_context=ctx, initializer=initializer,
                             initargs=initargs) as pool:
        pending = list(enumerate(jobs))
        futures: dict[Any, tuple[int, Any]] = {}

        def submit_next(after: Any = None) -> None:
            if not pending:
                return
            position = 0
            if affinity is not None:
                busy = {affinity(job) for _, job in futures.values()}
                keys = [affinity(job) for _, job in pending]
                wanted = affinity(after) if after is not None else None
                same = [i for i, key in enumerate(keys) if after is not None and key == wanted]
                fresh = [i for i, key in enumerate(keys) if key not in busy]
                position = (same or fresh or [0])[0]
            index, job = pending.pop(position)
            futures[pool.submit(fn, job)] = (index, job)
            if on_submit is not None:
                on_submit(job)

        try:
            for _ in range(limit):
                submit_next()
            finished_early: dict[int, tuple[Any, T]] = {}
            next_index = 0
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                # Job order among those that finished together, so that ``ordered`` never waits on itself.
                for fut in sorted(finished, key=lambda f: futures[f][0]):
                    index, job = futures.pop(fut)
                    result = fut.result()  # re-raises a worker's error here
                    submit_next(after=job)
                    if not ordered:
                        yield job, result
                        continue
                    finished_early[index] = (job, result)
                    while next_index in finished_early:
                        yield finished_early.pop(next_index)
                        next_index += 1
        finally:
            for fut in futures:
                fut.cancel()
