"""Issue 24 item 3: ``wait_for_completion=False`` submits, records and returns without waiting.

The submit is the same as a waiting task's (the request record, the claim, the filled seed); only
the wait is left out. A sensor downstream waits for the request by its id. A retry of the task
re-attaches to the recorded request (the same id, no second bill); a clear submits anew.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_segmind.operators._records import STATE_STORE_KEY
from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.sensors.segmind import SegmindJobSensor
from airflow_provider_segmind.utils.results import XCOM_REQUEST_ID
from tests.support.jobs import (
    FAST_SCHEDULE,
    PROMPT,
    DictTaskStateStore,
    ManualClock,
    make_context,
    use_emulator,
)


def submit_only(**kwargs: Any) -> SegmindTextToImageOperator:
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("poll_schedule", FAST_SCHEDULE)
    return SegmindTextToImageOperator(task_id="submit", wait_for_completion=False, **kwargs)


@pytest.fixture
def held(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ManualClock]:
    """An emulator whose jobs stay QUEUED until the test moves its clock."""
    clock = ManualClock()
    emulator = emulator_factory(clock=clock)
    use_emulator(monkeypatch, emulator)
    return emulator, clock


@pytest.mark.parametrize("deferrable", [False, True], ids=["blocking", "deferrable"])
def test_submit_only_returns_the_request_without_waiting(held: tuple[Any, ManualClock], deferrable: bool) -> None:
    emu, _ = held
    store = DictTaskStateStore()
    context = make_context(store)
    summary = submit_only(deferrable=deferrable, aspect_ratio="16:9").execute(context)  # no TaskDeferred either

    request_id = context["ti"].xcom[XCOM_REQUEST_ID]
    assert summary["request_id"] == request_id
    assert summary["status"] == "QUEUED"  # what the submit answered
    assert summary["wait_for_completion"] is False
    assert summary["output_url"] is None
    assert summary["output_urls"] == []
    assert summary["images"] == []
    assert summary["model"] == SD3_LARGE_MODEL
    assert summary["params"]["aspect_ratio"] == "16:9"
    assert summary["retrievable_until"]
    # The seed the operator filled is in the summary, as for a waiting task, and is the one sent.
    assert summary["seed_filled"] is True
    assert summary["seed"] == emu.job(request_id)["params"]["seed"] == summary["params"]["seed"]
    stats = emu.stats()
    assert stats["submissions"] == 1
    assert stats["status_polls"] == 0  # nothing waited for
    assert stats["result_fetches"] == 0
    assert store.values[STATE_STORE_KEY]["request_id"] == request_id  # recorded for a retry
    assert "segmind_output_url" not in context["ti"].xcom


def test_a_retry_of_a_submit_only_task_returns_the_same_request(held: tuple[Any, ManualClock]) -> None:
    """Try 1 submitted and recorded, then failed (e.g. its worker died before Airflow recorded the
    success): try 2 finds the record and returns the same request id without a second bill."""
    emu, clock = held
    store = DictTaskStateStore()
    first = submit_only().execute(make_context(store, try_number=1, max_tries=2))
    again = submit_only().execute(make_context(store, try_number=2, max_tries=2))
    assert again["request_id"] == first["request_id"]
    assert again["status"] == "QUEUED"  # the status the retry read
    assert again["seed"] == first["seed"]
    assert emu.stats()["submissions"] == 1
    # Once the job is done, a retry still returns that request: here with its output.
    clock.advance(120)
    done = submit_only().execute(make_context(store, try_number=3, max_tries=2))
    assert done["request_id"] == first["request_id"]
    assert done["status"] == "COMPLETED"
    assert done["output_url"]
    assert emu.stats()["submissions"] == 1


def test_a_cleared_submit_only_task_submits_anew(held: tuple[Any, ManualClock]) -> None:
    emu, clock = held
    store = DictTaskStateStore()
    first = submit_only().execute(make_context(store, try_number=1, max_tries=0))
    clock.advance(120)  # the first job completed
    # A clear raises max_tries: a new generation, a new (billed) job with a new seed.
    cleared = submit_only().execute(make_context(store, try_number=2, max_tries=1))
    assert cleared["request_id"] != first["request_id"]
    assert cleared["status"] == "QUEUED"
    assert emu.stats()["submissions"] == 2


def test_the_sensor_picks_up_a_submit_only_request(held: tuple[Any, ManualClock]) -> None:
    """The split pattern without a @task calling the hook: submit-only, then the sensor by request id."""
    emu, clock = held
    context = make_context(DictTaskStateStore())
    submitted = SegmindRunOperator(
        task_id="submit",
        model=SD3_LARGE_MODEL,
        inputs={"prompt": PROMPT, "seed": 7},
        wait_for_completion=False,
    ).execute(context)
    assert submitted["seed"] == 7
    assert "seed_filled" not in submitted
    sensor = SegmindJobSensor(
        task_id="wait", request_id=submitted["request_id"], model=SD3_LARGE_MODEL, poke_interval=0.05, timeout=30
    )
    assert sensor.poke(make_context()) is False  # still QUEUED
    clock.advance(120)
    result = sensor.execute(make_context())
    assert result["request_id"] == submitted["request_id"]
    assert result["status"] == "COMPLETED"
    assert result["output_url"]
    assert emu.stats()["submissions"] == 1
