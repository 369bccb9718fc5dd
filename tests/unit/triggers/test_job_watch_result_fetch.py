"""After COMPLETED only the result call is retried, on both paths (trigger and blocking loop).

A failed result fetch used to send the watch back to status polling: one more status call per
failed fetch, and, because each good status answer reset the error count, a result endpoint that
kept failing (a saturated rate limit) could be retried forever. These tests start watching a job
that has already COMPLETED, so exactly one status call is expected, whatever the result call does.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.triggers.events import validate_event
from airflow_provider_segmind.triggers.job_watch import wait_for_job
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from tests.support.jobs import FAST_SCHEDULE, PROMPT, job_status, run_trigger, wait_for

PATHS = ["trigger", "blocking"]


def completed_job(emu: Any) -> str:
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    wait_for(lambda: job_status(emu, request_id) == "COMPLETED", what="the job to complete")
    return request_id


def watch(path: str, request_id: str, max_consecutive_errors: int) -> dict[str, Any]:
    """Watch an already finished job (no submit time: the first status call goes out at once)."""
    deadline = time.time() + 60
    if path == "trigger":
        trigger = SegmindJobTrigger(
            request_id=request_id,
            model=SD3_LARGE_MODEL,
            deadline=deadline,
            poll_schedule=FAST_SCHEDULE,
            max_consecutive_errors=max_consecutive_errors,
        )
        events = run_trigger(trigger)
        assert len(events) == 1
        return validate_event(events[0].payload)
    return validate_event(
        wait_for_job(
            request_id,
            model=SD3_LARGE_MODEL,
            schedule=PollSchedule.from_dict(FAST_SCHEDULE),
            deadline=deadline,
            max_consecutive_errors=max_consecutive_errors,
        )
    )


@pytest.mark.parametrize("path", PATHS)
def test_failed_result_fetches_retry_the_result_only(emu: Any, path: str) -> None:
    request_id = completed_job(emu)
    emu.script([{"endpoint": "result", "fault": "500", "times": 3}])
    event = watch(path, request_id, max_consecutive_errors=5)
    assert event["status"] == "success"
    assert event["result"]["request_id"] == request_id
    stats = emu.stats()
    assert stats["status_polls"] == 1
    assert stats["result_fetches"] == 4
    assert event["polls"] == 5  # one status call, four result calls


@pytest.mark.parametrize("path", PATHS)
def test_a_result_endpoint_that_keeps_failing_ends_in_an_error_event(emu: Any, path: str) -> None:
    request_id = completed_job(emu)
    emu.script([{"endpoint": "result", "fault": "502", "times": 2}])
    event = watch(path, request_id, max_consecutive_errors=2)
    assert event["status"] == "error"
    assert "2 consecutive" in event["error"]
    assert event["retryable"] is True
    assert emu.stats()["status_polls"] == 1


@pytest.mark.parametrize("path", PATHS)
def test_rate_limited_result_fetches_are_waited_out_without_counting(emu: Any, path: str) -> None:
    request_id = completed_job(emu)
    emu.configure(fault_retry_after=0.05)
    emu.script([{"endpoint": "result", "fault": "429", "times": 6}])
    event = watch(path, request_id, max_consecutive_errors=2)  # 6 x 429 > 2: they must not count
    assert event["status"] == "success"
    assert emu.stats()["status_polls"] == 1
    assert emu.stats()["result_fetches"] == 7
