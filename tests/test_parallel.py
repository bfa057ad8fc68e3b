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
