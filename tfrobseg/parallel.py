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

__all__ = ["process_map"]

T = TypeVar("T")


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
) -> Iterator[tuple[Any, T]]:
    """Yield ``(job, fn(job))`` computed in ``workers`` processes.

    Results come as they finish, or in job order with ``ordered``. ``fn``, the jobs and the
    results must be picklable; ``on_submit(job)`` is called as each job is queued.
    ``start_method`` other than ``"spawn"`` is for callers that know no TensorFlow is loaded.
    """
    jobs = list(jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = multiprocessing.get_context(start_method)
    with ProcessPoolExecutor(min(workers, max(len(jobs), 1)), mp_context=ctx, initializer=initializer,
                             initargs=initargs) as pool:
        futures = {}
        for job in jobs:
            futures[pool.submit(fn, job)] = job
            if on_submit is not None:
                on_submit(job)
        try:
            if ordered:
                for fut, job in futures.items():
                    yield job, fut.result()
                return
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield futures[fut], fut.result()  # re-raises a worker's error here
        finally:
            for fut in futures:
                fut.cancel()
