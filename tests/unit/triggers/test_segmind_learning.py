"""Triggers of one process learn a model's runtime from completed jobs, over HTTP against the emulator.

The pure rules (bounds, seeding, placement) are in ``tests/unit/protocol/test_learning.py``; here the real
:class:`SegmindJobTrigger` feeds the process's book and the next trigger of the same model reads it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.learning import LEARNED_RUNTIMES, MIN_SAMPLES
from airflow_provider_segmind.triggers.job_watch import wait_for_job
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from tests.support.jobs import PROMPT, use_emulator

MODEL = "some-video-model"
#: Dense polls (every 0.05 s, no runtime hint): what a model nobody has seen gets.
SCHEDULE = {"initial_delay": 0.05, "queued_interval": 0.05, "interval": 0.05, "max_interval": 0.5}


def _submit(count: int) -> list[tuple[str, float]]:
    hook = SegmindHook()
    try:
        return [(hook.submit(MODEL, {"prompt": PROMPT}).request_id, time.time()) for _ in range(count)]
    finally:
        hook.close()


def _watch(jobs: list[tuple[str, float]], schedule: dict[str, float] = SCHEDULE) -> list[dict[str, Any]]:
    """Run one trigger per job, all on one event loop (as in a triggerer); return their events."""

    async def one(request_id: str, submitted_at: float) -> dict[str, Any]:
        trigger = SegmindJobTrigger(
            request_id=request_id,
            model=MODEL,
            submitted_at=submitted_at,
            deadline=time.time() + 30,
            poll_schedule=schedule,
        )
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1
        return dict(events[0])

    async def all_of() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(rid, at) for rid, at in jobs)))

    return asyncio.run(asyncio.wait_for(all_of(), 60))


def test_a_later_job_of_the_same_model_is_polled_fewer_times(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(queue_time=0.05, inference_time=1.0)
    use_emulator(monkeypatch, emu)
    first = _watch(_submit(MIN_SAMPLES))
    assert [event["status"] for event in first] == ["success"] * MIN_SAMPLES
    queue_times, inference_times = LEARNED_RUNTIMES.samples(MODEL)
    assert inference_times == (1.0,) * MIN_SAMPLES  # what the emulator reported
    assert queue_times == (0.05,) * MIN_SAMPLES

    before = emu.stats()["status_polls"]
    (second,) = _watch(_submit(1))
    assert second["status"] == "success"
    second_calls = emu.stats()["status_polls"] - before
    assert second_calls == second["polls"] - 1  # the event counts the result call too
    assert second_calls < min(event["polls"] - 1 for event in first)


def test_the_blocking_wait_learns_and_uses_the_same_book(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(queue_time=0.05, inference_time=1.0)
    use_emulator(monkeypatch, emu)
    from airflow_provider_segmind.protocol.schedule import PollSchedule

    schedule = PollSchedule.from_dict(SCHEDULE)
    first = []
    for _ in range(MIN_SAMPLES):  # one at a time, as non-deferrable tasks do
        ((request_id, submitted_at),) = _submit(1)
        first.append(wait_for_job(request_id, model=MODEL, schedule=schedule, submitted_at=submitted_at))
    assert len(LEARNED_RUNTIMES.samples(MODEL)[1]) == MIN_SAMPLES
    (second,) = _watch(_submit(1))  # a trigger in the same process reads what the blocking waits learned
    assert second["polls"] < min(event["polls"] for event in first)


def test_a_seed_places_the_first_job_of_a_model_never_seen(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(queue_time=0.05, inference_time=1.0)
    use_emulator(monkeypatch, emu)
    (plain,) = _watch(_submit(1))
    LEARNED_RUNTIMES.clear()  # as after a triggerer restart: nothing learned, only the seed
    (seeded,) = _watch(_submit(1), {**SCHEDULE, "expected_runtime": 1.0})
    assert seeded["status"] == plain["status"] == "success"
    assert seeded["polls"] < plain["polls"]
