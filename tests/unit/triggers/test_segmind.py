"""SegmindJobTrigger against the emulator: every terminal event, restarts, faults, secrets, cleanup."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from airflow_provider_segmind.hooks import _cache as hook_module
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.triggers.events import EVENT_STATUSES, validate_event
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from tests.support.jobs import (
    FAST_SCHEDULE,
    PROMPT,
    ManualClock,
    captured_logs,
    job_status,
    run_trigger,
    use_emulator,
)

CLASSPATH = "airflow_provider_segmind.triggers.segmind.SegmindJobTrigger"


def submit(emu: Any, **params: Any) -> tuple[str, float]:
    """Submit a job straight through the hook (what the operator does before deferring)."""
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT, **params}).request_id
    return request_id, time.time()


def trigger_for(request_id: str, submitted_at: float | None = None, **overrides: Any) -> SegmindJobTrigger:
    kwargs: dict[str, Any] = {
        "request_id": request_id,
        "conn_id": "segmind_default",
        "model": SD3_LARGE_MODEL,
        "deadline": time.time() + 60,
        "submitted_at": submitted_at,
        "poll_schedule": FAST_SCHEDULE,
        "max_consecutive_errors": 5,
    }
    kwargs.update(overrides)
    return SegmindJobTrigger(**kwargs)


def only_event(trigger: SegmindJobTrigger) -> dict[str, Any]:
    events = run_trigger(trigger)
    assert len(events) == 1, "a trigger must emit exactly one event"
    payload = events[0].payload
    assert payload["status"] in EVENT_STATUSES
    json.dumps(payload)  # events are stored as JSON
    return validate_event(payload)


# ------------------------------------------------------------------ serialization


def test_serialize_round_trip_is_plain_json_without_the_key(emu: Any) -> None:
    trigger = trigger_for("req-1", submitted_at=1_700_000_000.5, deadline=1_700_003_600.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain values only
    assert set(kwargs) == {
        "request_id",
        "conn_id",
        "model",
        "deadline",
        "submitted_at",
        "poll_schedule",
        "max_consecutive_errors",
        "end_from_trigger",
        "summary_params",
        "filled_seed",
        "push_return_value",
        "deadline_cause",
        "try_number",
        "multiple_outputs",
        "push_mapped_length",
        "dag_result",
    }
    rebuilt = SegmindJobTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt == trigger
    assert hash(rebuilt) == hash(trigger)
    assert rebuilt.deadline == 1_700_003_600.5
    assert rebuilt.schedule == PollSchedule.from_dict(FAST_SCHEDULE)
    for text in (json.dumps(kwargs), repr(trigger), repr(rebuilt)):
        assert emu.api_key not in text


def test_kwargs_from_other_versions_still_load() -> None:
    """Kwargs are a persisted schema: an older row (fewer keys) and a newer one (extra keys) load."""
    old = SegmindJobTrigger(request_id="req-old", conn_id="segmind_default", deadline=1_700_000_000.0)
    assert old.model == ""
    assert old.submitted_at is None
    assert old.max_consecutive_errors >= 1
    assert old.schedule == PollSchedule.for_model("")
    assert old.end_from_trigger is False  # a trigger deferred by an older version resumes its task as before
    newer = SegmindJobTrigger(request_id="req-new", added_in_a_future_version={"x": 1})
    assert newer.serialize()[1]["request_id"] == "req-new"
    assert "added_in_a_future_version" not in newer.serialize()[1]


# ------------------------------------------------------------------ outcomes


def test_success_event_carries_a_small_result_summary(emu: Any) -> None:
    request_id, submitted_at = submit(emu, seed=42)
    event = only_event(trigger_for(request_id, submitted_at))
    assert event["status"] == "success"
    summary = event["result"]
    assert summary["request_id"] == request_id
    assert summary["model"] == SD3_LARGE_MODEL
    assert summary["status"] == "COMPLETED"
    assert summary["output_url"].startswith(emu.base_url + "/media/")
    assert summary["output_urls"] == [summary["output_url"]]
    assert summary["output_inline"] is False
    (image,) = summary["images"]
    assert image["url"] == summary["output_url"]
    assert image["content_type"] == "image/jpeg"
    assert image["file_size"] > 0
    assert summary["seed"] == 42
    assert {"queue_time", "inference_time", "cost", "remaining_credits"} <= set(summary["metrics"])
    assert summary["retrievable_until"]  # known because the submit time travelled in the kwargs
    assert len(json.dumps(event)) < 48_000
    stats = emu.stats()
    assert stats["submissions"] == 1
    assert stats["result_fetches"] == 1


def test_base64_output_is_never_put_in_the_event(emu: Any) -> None:
    request_id, submitted_at = submit(emu, base64=True)
    event = only_event(trigger_for(request_id, submitted_at))
    summary = event["result"]
    assert summary["output_inline"] is True
    assert summary["output_url"] is None
    assert summary["images"] == []
    assert len(json.dumps(event)) < 4_000  # ids and numbers only, no image data
    # The result stays retrievable by request id (a transfer operator re-fetches it).
    assert SegmindHook().get_result(request_id).base64_image


def test_content_safety_block_is_a_failed_event_with_the_servers_text(emu: Any) -> None:
    request_id, submitted_at = submit(emu, prompt="__unsafe__ a forbidden thing")
    event = only_event(trigger_for(request_id, submitted_at))
    assert event["status"] == "failed"
    assert "Content blocked" in event["error"]
    assert request_id in event["message"]
    assert emu.stats()["result_fetches"] == 0  # FAILED status already carries the reason


def test_expired_request_is_an_expired_event(emu: Any) -> None:
    request_id, submitted_at = submit(emu)
    emu.expire(request_id)
    event = only_event(trigger_for(request_id, submitted_at))
    assert event["status"] == "expired"
    assert "404" in event["message"]
    assert request_id in event["message"]


def test_deadline_gives_a_timeout_event_and_leaves_the_job_alone(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(inference_time=30.0)
    use_emulator(monkeypatch, emu)
    request_id, submitted_at = submit(emu)
    deadline = time.time() + 0.4
    event = only_event(trigger_for(request_id, submitted_at, deadline=deadline))
    assert event["status"] == "timeout"
    assert event["deadline"] == deadline
    assert job_status(emu, request_id) == "PROCESSING"  # nothing remote was done to it


def test_error_event_only_after_a_run_of_consecutive_transient_faults(emu: Any) -> None:
    request_id, submitted_at = submit(emu)
    emu.script([{"endpoint": "status", "fault": "500", "times": 3}])
    event = only_event(trigger_for(request_id, submitted_at, max_consecutive_errors=3))
    assert event["status"] == "error"
    assert "3 consecutive" in event["error"]
    assert "HTTP 500" in event["error"]
    assert event["retryable"] is True
    assert emu.stats()["status_polls"] == 3


def test_transient_429_5xx_and_resets_do_not_end_the_watch(emu: Any) -> None:
    request_id, submitted_at = submit(emu)
    emu.configure(fault_retry_after=0.05)
    emu.script(
        [
            {"endpoint": "status", "fault": "429"},
            {"endpoint": "status", "fault": "502"},
            {"endpoint": "status", "fault": "reset_before"},
            {"endpoint": "status", "fault": "html502"},
            {"endpoint": "result", "fault": "500"},
        ]
    )
    event = only_event(trigger_for(request_id, submitted_at, max_consecutive_errors=5))
    assert event["status"] == "success"
    assert event["result"]["request_id"] == request_id
    assert emu.stats()["scripted_pending"] == {}


def test_a_wrong_key_is_an_error_at_once_and_not_retryable(emu: Any, monkeypatch: Any) -> None:
    request_id, submitted_at = submit(emu)
    use_emulator(monkeypatch, emu, key="SG_ffffffffffffffff")
    event = only_event(trigger_for(request_id, submitted_at, max_consecutive_errors=10))
    assert event["status"] == "error"
    assert event["retryable"] is False
    assert event["error_type"] == "SegmindAuthenticationError"
    assert emu.stats()["responses"].get("401") == 1  # one call, no retrying a bad key
    assert "SG_ffffffffffffffff" not in json.dumps(event)


def test_missing_connection_is_an_error_event(monkeypatch: Any) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SEGMIND_NOPE", raising=False)
    event = only_event(trigger_for("req-x", conn_id="segmind_nope"))
    assert event["status"] == "error"  # an event the task can report, not a crashed trigger
    assert event["error"]
    assert event["request_id"] == "req-x"


# ------------------------------------------------------------------ restarts and cleanup


def test_rebuilt_trigger_finishes_the_same_job_and_keeps_the_deadline(emulator_factory: Any, monkeypatch: Any) -> None:
    """A triggerer restart: the running trigger is cancelled, then rebuilt from serialize() elsewhere."""
    clock = ManualClock()
    emu = emulator_factory(clock=clock, queue_time=1.0, inference_time=10.0)
    use_emulator(monkeypatch, emu)
    request_id, submitted_at = submit(emu)
    clock.advance(2.0)  # the job is PROCESSING, and stays so until the clock moves again
    first = trigger_for(request_id, submitted_at)

    async def start_then_cancel() -> None:
        task = asyncio.ensure_future(first.run().__anext__())
        await asyncio.sleep(0.3)  # let it poll a few times
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert hook_module._SHARED_SESSIONS.open_sessions() == 0  # released on cancellation

    asyncio.run(start_then_cancel())
    assert emu.stats()["status_polls"] >= 1
    assert job_status(emu, request_id) == "PROCESSING"

    _classpath, kwargs = first.serialize()
    rebuilt = SegmindJobTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt == first
    assert rebuilt.deadline == first.deadline
    clock.advance(10.0)  # the job completes while no trigger runs
    event = only_event(rebuilt)
    assert event["status"] == "success"
    assert event["request_id"] == request_id
    assert event["deadline"] == first.deadline
    assert emu.stats()["submissions"] == 1


def test_many_triggers_share_one_session_and_release_it(emu: Any) -> None:
    jobs = [submit(emu) for _ in range(4)]

    seen_open: set[int] = set()

    async def collect(trigger: SegmindJobTrigger) -> list[Any]:
        return [event async for event in trigger.run()]

    async def watch_sessions() -> None:
        while True:
            seen_open.add(hook_module._SHARED_SESSIONS.open_sessions())
            await asyncio.sleep(0.01)

    async def run_all() -> list[list[Any]]:
        watcher = asyncio.ensure_future(watch_sessions())
        try:
            return await asyncio.gather(*(collect(trigger_for(rid, at)) for rid, at in jobs))
        finally:
            watcher.cancel()

    results = asyncio.run(run_all())
    assert [events[0].payload["status"] for events in results] == ["success"] * 4
    assert max(seen_open) == 1  # four triggers, one HTTP session
    assert hook_module._SHARED_SESSIONS.open_sessions() == 0
    stats = emu.stats()
    assert stats["connections"] < stats["status_polls"] + stats["result_fetches"]  # keep-alive reuse


def test_on_kill_only_logs_the_orphaned_request(emu: Any, caplog: pytest.LogCaptureFixture, capsys: Any) -> None:
    request_id, submitted_at = submit(emu)
    trigger = trigger_for(request_id, submitted_at)
    before = emu.stats()
    with caplog.at_level(logging.INFO):
        asyncio.run(trigger.on_kill())
    logs = captured_logs(caplog, capsys)
    assert request_id in logs
    assert "no cancel endpoint" in logs
    after = emu.stats()
    assert after["status_polls"] == before["status_polls"]
    assert after["submissions"] == 1


def test_the_key_never_reaches_logs_events_or_repr(emu: Any, caplog: pytest.LogCaptureFixture, capsys: Any) -> None:
    ok_id, ok_at = submit(emu)
    bad_id, bad_at = submit(emu, prompt="__fail__ please")
    emu.script([{"endpoint": "status", "fault": "500", "times": 2}])
    with caplog.at_level(logging.DEBUG):
        events = [only_event(trigger_for(ok_id, ok_at)), only_event(trigger_for(bad_id, bad_at))]
    assert [e["status"] for e in events] == ["success", "failed"]
    logs = captured_logs(caplog, capsys)
    assert emu.api_key not in logs + json.dumps(events) + repr(trigger_for(ok_id, ok_at))
    assert "transient error" in logs
    assert "FAILED" in json.dumps(events)


def test_each_status_transition_is_logged_once(
    emulator_factory: Any, monkeypatch: Any, caplog: Any, capsys: Any
) -> None:
    emu = emulator_factory(queue_time=0.3, inference_time=0.4)
    use_emulator(monkeypatch, emu)
    request_id, submitted_at = submit(emu)
    with caplog.at_level(logging.INFO):
        assert only_event(trigger_for(request_id, submitted_at))["status"] == "success"
    logs = captured_logs(caplog, capsys)
    assert emu.stats()["status_polls"] > 3  # several polls per state...
    assert logs.count("QUEUED -> PROCESSING") == 1  # ...but one line per transition
    assert logs.count("PROCESSING -> COMPLETED") == 1
    completed_line = next(line for line in logs.splitlines() if "PROCESSING -> COMPLETED" in line)
    assert "queue 0.3 s" in completed_line
    assert "inference 0.4 s" in completed_line
    assert "cost 0.04" in completed_line


@pytest.mark.parametrize("seen_first", ["PROCESSING", "COMPLETED"])
def test_a_trigger_taken_over_logs_only_what_it_observed(
    emulator_factory: Any, monkeypatch: Any, caplog: Any, capsys: Any, seen_first: str
) -> None:
    """A surviving triggerer resumes the trigger from its serialized kwargs after the job left QUEUED.

    It never saw QUEUED (nor, for a finished job, PROCESSING), so it must log the first status it
    saw as "first seen", not a transition from a status it only assumed.
    """
    clock = ManualClock()
    emu = emulator_factory(clock=clock, queue_time=1.0, inference_time=10.0)
    use_emulator(monkeypatch, emu)
    request_id, submitted_at = submit(emu)
    clock.advance(2.0 if seen_first == "PROCESSING" else 20.0)
    assert job_status(emu, request_id) == seen_first
    _, kwargs = trigger_for(request_id, submitted_at).serialize()
    taken_over = SegmindJobTrigger(**kwargs)  # what the other triggerer builds from the database row

    async def finish_job_while_watched() -> list[Any]:
        async def advance() -> None:
            while job_status(emu, request_id) != "COMPLETED":
                await asyncio.sleep(0.2)  # let the trigger poll the job as it is now first
                clock.advance(20.0)

        mover = asyncio.create_task(advance())
        try:
            return [event async for event in taken_over.run()]
        finally:
            mover.cancel()

    with caplog.at_level(logging.INFO):
        events = asyncio.run(asyncio.wait_for(finish_job_while_watched(), 30))
    assert [e.payload["status"] for e in events] == ["success"]
    logs = captured_logs(caplog, capsys)
    assert f"first seen {seen_first}" in logs
    assert "QUEUED" not in logs  # never observed, so never logged
    if seen_first == "PROCESSING":
        assert logs.count("PROCESSING -> COMPLETED") == 1
    else:
        assert "-> COMPLETED" not in logs
