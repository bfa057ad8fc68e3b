"""tfrobseg.parallel.process_map: results, order, at most ``max_in_flight`` jobs queued, errors."""

import math
import time

import pytest

from tfrobseg.parallel import process_map


def test_results_in_job_order_and_as_they_finish():
    jobs = [4.0, 9.0, 16.0, 25.0]
    assert list(process_map(math.sqrt, jobs, workers=2, ordered=True)) == [(j, math.sqrt(j)) for j in jobs]
    assert sorted(process_map(math.sqrt, jobs, workers=2)) == [(j, math.sqrt(j)) for j in jobs]


def test_max_in_flight_queues_a_job_only_when_one_finished():
    # The next job is queued (on_submit) when an earlier one came back, before that result is yielded.
    def events(**kwargs):
        log = []
        for job, _ in process_map(time.sleep, [0.2, 0.0, 0.1], workers=1,
                                  on_submit=lambda job: log.append(f"queue {job}"), **kwargs):
            log.append(f"done {job}")
        return log

    assert events(max_in_flight=1) == ["queue 0.2", "queue 0.0", "done 0.2", "queue 0.1", "done 0.0", "done 0.1"]
    assert events() == ["queue 0.2", "queue 0.0", "queue 0.1", "done 0.2", "done 0.0", "done 0.1"]
    with pytest.raises(ValueError, match="max_in_flight must be >= 1"):
        list(process_map(math.sqrt, [1.0], workers=1, max_in_flight=0))


def test_a_worker_error_is_raised_in_the_parent():
    with pytest.raises(ValueError, match="math domain error"):
        list(process_map(math.sqrt, [1.0, -1.0], workers=1, max_in_flight=1))


def _worker_pid(job):
    import os

    time.sleep(0.05)
    return os.getpid()


def test_affinity_sends_a_workers_next_job_of_its_own_kind():
    """Jobs (group, fold): each of the two workers starts on its own group and then gets that group's
    other folds, so groups a and b each run in one process (where its traced model is kept); the last
    group is shared when both workers are free (keeping both busy comes first)."""
    jobs = [(group, fold) for group in "abc" for fold in range(3)]
    started = []
    results = list(process_map(_worker_pid, jobs, workers=2, max_in_flight=2, affinity=lambda job: job[0],
                               on_submit=started.append))
    pids = {}
    for (group, _), pid in results:
        pids.setdefault(group, set()).add(pid)
    assert len(pids["a"]) == 1 and len(pids["b"]) == 1 and pids["a"] != pids["b"], pids
    assert started[:2] == [("a", 0), ("b", 0)]  # different groups first
    assert sorted(job for job, _ in results) == sorted(jobs)  # every job once
