"""Issue 28 item 1: a per-key request budget both transports honour, so a deployment sized by the key's
limit (docs.segmind.com/api-reference/rate-limits: Free 5, Pro 50 a minute) never gets a 429.

The split is a pure rule (``protocol/rate_budget.py``); the waiting is ``hooks/_budget.py``, checked
against the emulator with its per-key limit on every request (``rate_limit_scope="all"``) and a
sped-up window (the ``rate_limit_window`` extra), so a whole minute's behaviour takes seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.hooks import _budget
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.rate_budget import RateBudget, budgeted_schedule, priority
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL, Endpoint
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger

WINDOW_S = 3.0


def set_conn(monkeypatch: pytest.MonkeyPatch, emu: Any, **extra: Any) -> None:
    conn = {"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))


@pytest.fixture(autouse=True)
def fresh_budgets() -> None:
    _budget._BUDGETS.clear()


# ------------------------------------------------------------------ the split (pure)


@pytest.mark.parametrize(
    ("limit", "slots", "triggerers", "split", "images"),
    [
        # Pro, a 5-slot pool: 14.8 images a minute of the 16.7 the limit allows (a slot submits once
        # per 15.25 s spacing + 5 s turnaround); 4 slots at 4/min each would make 11.9.
        (50, 5, 1, (4, 30), 14.81),
        (50, 4, 1, (5, 30), 13.95),
        (5, 1, 1, (2, 3), 1.5),  # Free: 1.5 of 1.67
        (50, 1, 1, (32, 18), 8.69),  # one slot cannot submit faster than its turnaround allows
        (1000, 16, 2, (43, 156), 149.57),
    ],
)
def test_the_split_lets_the_most_images_through_within_the_limit(
    limit: int, slots: int, triggerers: int, split: tuple[int, int], images: float
) -> None:
    budget = RateBudget(limit, worker_slots=slots, triggerers=triggerers)
    assert budget.split() == split
    assert budget.images_per_minute() == pytest.approx(images, abs=0.01)
    worker, triggerer = split
    assert worker * slots + triggerer * triggerers <= limit


@pytest.mark.parametrize(("turnaround", "split"), [(0.0, (4, 34)), (3.0, (5, 30)), (10.0, (6, 26))])
def test_the_turnaround_picks_the_split_and_never_the_total(turnaround: float, split: tuple[int, int]) -> None:
    """A slot submits once per spacing plus turnaround: the longer the turnaround, the larger the
    worker share that keeps up with the triggerer; the sum stays under the limit whatever it is."""
    budget = RateBudget(50, worker_slots=4, triggerers=1, task_turnaround_s=turnaround)
    assert budget.split() == split
    assert split[0] * 4 + split[1] <= 50


def test_every_split_stays_within_the_limit() -> None:
    for limit in range(3, 80):
        for slots in range(1, limit - 1):
            for triggerers in (1, 2):
                if limit < 2 * triggerers + 1:
                    continue
                if slots + 2 * triggerers > limit:
                    with pytest.raises(ValueError, match="make the Segmind tasks' pool at most"):
                        RateBudget(limit, worker_slots=slots, triggerers=triggerers)
                    continue
                budget = RateBudget(limit, worker_slots=slots, triggerers=triggerers)
                worker, triggerer = budget.split()
                assert worker >= 1
                assert triggerer >= 2
                assert worker * slots + triggerer * triggerers <= limit
                # The guard: one more request than the share cannot fit in the window.
                assert budget.spacing("worker") * worker > 60
                assert budget.spacing("triggerer") * triggerer > 60


def test_results_then_polls_then_the_rest() -> None:
    assert priority(Endpoint.SUBMIT) < priority(Endpoint.RESULT) < priority(Endpoint.STATUS)
    assert priority(Endpoint.STATUS) < priority(Endpoint.CREDITS) == priority(Endpoint.HISTORY)


# ------------------------------------------------------------------ the connection extras


def test_the_extras_become_the_budget(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, requests_per_minute="50", rate_limit_worker_slots=4)
    assert SegmindHook().get_settings().rate_budget == RateBudget(50, worker_slots=4, triggerers=1)
    set_conn(monkeypatch, emulator, requests_per_minute="50", rate_limit_worker_slots=4, rate_limit_task_turnaround="9")
    assert SegmindHook().get_settings().rate_budget == RateBudget(50, worker_slots=4, task_turnaround_s=9.0)
    set_conn(monkeypatch, emulator)
    assert SegmindHook().get_settings().rate_budget is None  # no extra: nothing waits
    for extra, named in (
        ({"requests_per_minute": "5.5"}, "whole number"),
        ({"requests_per_minute": 5, "rate_limit_worker_slots": 8}, "pool at most 3 slots"),
        ({"requests_per_minute": 0}, "at least 1"),
        ({"requests_per_minute": 50, "rate_limit_task_turnaround": -1}, "rate_limit_task_turnaround"),
    ):
        set_conn(monkeypatch, emulator, **extra)
        with pytest.raises(SegmindInvalidParametersError, match=named):
            SegmindHook().get_settings()


# ------------------------------------------------------------------ both transports, against the emulator


def test_a_worker_and_a_triggerer_in_one_process_get_no_429(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker calls on a thread and triggerer calls on an event loop, at once, both budgeted: the
    emulator (6 requests per window, every request counted, per key) answers none of them 429."""
    emu = emulator_factory(rate_limit=6, rate_limit_window=WINDOW_S, rate_limit_scope="all")
    set_conn(monkeypatch, emu, requests_per_minute=6, rate_limit_window=WINDOW_S, max_retries=0)
    hook = SegmindHook()
    request_id = hook.submit(SD3_LARGE_MODEL, {"prompt": "a lighthouse"}).request_id
    worker_calls: list[float] = []

    def worker() -> None:
        for _ in range(3):
            worker_calls.append(SegmindHook().get_credits())

    async def triggerer() -> list[Any]:
        async_hook = SegmindHook()
        async with async_hook.shared_session() as session:
            return [await async_hook.aget_status(request_id, session=session) for _ in range(6)]

    thread = threading.Thread(target=worker)
    thread.start()
    statuses = asyncio.run(triggerer())
    thread.join()
    stats = emu.stats()
    assert (len(worker_calls), len(statuses)) == (3, 6)
    assert stats["rate_limited"] == 0
    assert all(counts.get("rate_limited", 0) == 0 for counts in stats["per_key"].values())
    assert emu.api_key not in repr(_budget._BUDGETS)  # the budgets are keyed by a hash


def test_without_the_budget_the_same_calls_are_answered_429(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: the same limit, no ``requests_per_minute``."""
    emu = emulator_factory(rate_limit=6, rate_limit_window=WINDOW_S, rate_limit_scope="all")
    set_conn(monkeypatch, emu, max_retries=0)
    hook = SegmindHook()
    answers = []
    for _ in range(8):
        try:
            answers.append(hook.get_credits())
        except Exception as err:  # the 7th and 8th: SegmindRateLimitError
            answers.append(type(err).__name__)
    assert answers.count("SegmindRateLimitError") == 2
    assert emu.stats()["rate_limited"] == 2


def test_on_the_loop_a_result_goes_before_waiting_polls_and_credits(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = emulator_factory(rate_limit=20, rate_limit_window=WINDOW_S, rate_limit_scope="all")
    set_conn(monkeypatch, emu, requests_per_minute=20, rate_limit_window=WINDOW_S)
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": "a lighthouse"}).request_id

    async def scenario() -> None:
        hook = SegmindHook()
        async with hook.shared_session() as session:
            while not (await hook.aget_status(request_id, session=session)).status.is_terminal:
                pass  # the budget paces these polls
            # The turn just taken is spent: all three below queue, in this order of arrival.
            await asyncio.gather(
                hook.aget_credits(session=session),
                hook.aget_status(request_id, session=session),
                hook.aget_result(request_id, session=session),
            )

    asyncio.run(scenario())
    sent = [entry["path"] for entry in emu.requests_log()[-3:]]  # in the order they arrived
    assert sent[0] == f"/v2/requests/{request_id}"  # the result
    assert sent[1] == f"/v2/requests/{request_id}/status"
    assert "credits" in sent[2]
    assert emu.stats()["rate_limited"] == 0


# ------------------------------------------------------------------ the poll schedule under a budget


def test_under_a_budget_the_first_poll_waits_for_the_slow_end_of_the_runtime() -> None:
    sd3 = PollSchedule.for_model(SD3_LARGE_MODEL)
    budgeted = budgeted_schedule(sd3)
    assert budgeted.initial_delay == sd3.slow_after == 14.4
    assert budgeted == replace(sd3, initial_delay=14.4)  # nothing else changes


def test_a_budgeted_trigger_spends_one_status_call_on_a_finished_job(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real trigger, its key budgeted: one status (COMPLETED) and one result per image."""
    emu = emulator_factory(rate_limit=20, rate_limit_window=WINDOW_S, rate_limit_scope="all")
    set_conn(monkeypatch, emu, requests_per_minute=20, rate_limit_window=WINDOW_S)
    submitted = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": "a lighthouse"})
    schedule = PollSchedule(initial_delay=0.05, queued_interval=0.05, interval=0.05, slow_after=1.0)
    trigger = SegmindJobTrigger(
        request_id=submitted.request_id,
        conn_id="segmind_default",
        model=SD3_LARGE_MODEL,
        deadline=time.time() + 60,
        submitted_at=time.time(),
        poll_schedule=schedule.to_dict(),
    )

    async def events() -> list[Any]:
        return [event async for event in trigger.run()]

    (event,) = asyncio.run(events())
    assert event.payload["status"] == "success"
    stats = emu.stats()
    assert (stats["status_polls"], stats["result_fetches"], stats["rate_limited"]) == (1, 1, 0)
