"""Key rotation while a job runs: the trigger and the blocking wait re-read the connection on 401/403.

The emulator models accounts (several keys of one account see the same jobs and credits) and lets
a test add and revoke keys at run time through ``POST /_emulator/keys``, so a rotation happens for
real: the job is submitted with key A, the connection's password becomes key B, key A is revoked,
and the next poll with A gets a genuine 401. The emulator runs on a hand-moved clock, so the job is
still running at the rotation whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_segmind.emulator.state import key_label
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.triggers.events import validate_event
from airflow_provider_segmind.triggers.job_watch import wait_for_job
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from tests.support.jobs import FAST_SCHEDULE, PROMPT, ManualClock, captured_logs, use_emulator, wait_for

KEY_B = "SG_rotated0b1c2d3e4f5a6b7"
KEY_C = "SG_neverknown9f8e7d6c5b4a"


def change_keys(emu: Any, **body: str) -> dict[str, Any]:
    """``POST /_emulator/keys`` over HTTP, as a test harness or a demo would."""
    response = requests.post(f"{emu.base_url}/_emulator/keys", json=body, timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def polls_with(emu: Any, key: str, request_id: str) -> int:
    """Status/result calls for ``request_id`` that carried ``key`` (the emulator records key labels only)."""
    marker = f"<redacted:{key_label(key)}>"
    return sum(
        1
        for entry in emu.requests_log(f"/v2/requests/{request_id}")
        if any(name.lower() == "x-api-key" and value == marker for name, value in entry["headers"].items())
    )


@pytest.fixture
def held(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, ManualClock]:
    """An emulator whose jobs stay QUEUED until the test moves its clock; connection ``segmind_default``."""
    clock = ManualClock()
    emu = emulator_factory(clock=clock)
    use_emulator(monkeypatch, emu)
    return emu, clock


def submit(emu: Any) -> str:
    return SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id


def trigger_for(request_id: str) -> SegmindJobTrigger:
    return SegmindJobTrigger(
        request_id=request_id,
        model=SD3_LARGE_MODEL,
        deadline=time.time() + 60,
        submitted_at=time.time(),
        poll_schedule=FAST_SCHEDULE,
    )


def watch_while(trigger: SegmindJobTrigger, during: Callable[[], None]) -> dict[str, Any]:
    """Run the trigger on a fresh loop while ``during`` (blocking) runs in a thread; return its one event."""

    async def scenario() -> list[Any]:
        async def collect() -> list[Any]:
            return [event async for event in trigger.run()]

        watch = asyncio.create_task(collect())
        try:
            await asyncio.to_thread(during)
        except BaseException:
            watch.cancel()
            raise
        return await asyncio.wait_for(watch, 30)

    events = asyncio.run(scenario())
    assert len(events) == 1
    return validate_event(events[0].payload)


def rotate_after_first_poll(
    emu: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch, request_id: str, *, new_key: str | None
) -> Callable[[], None]:
    """Once key A has polled the job: the connection gets ``new_key`` (if any), A is revoked, the job ends."""
    key_a = emu.api_key

    def during() -> None:
        wait_for(lambda: polls_with(emu, key_a, request_id) >= 1, what="a poll with key A")
        if new_key is not None:
            use_emulator(monkeypatch, emu, key=new_key)
        if new_key == KEY_B:
            change_keys(emu, add=KEY_B, same_account_as=key_a, revoke=key_a)
        else:
            change_keys(emu, revoke=key_a)
        clock.advance(30)  # the job is COMPLETED now, for whoever may still see it

    return during


# ------------------------------------------------------------------ the emulator's accounts


def test_keys_of_one_account_share_jobs_and_credits_and_a_revoked_key_is_refused(held: Any) -> None:
    emu, clock = held
    key_a = emu.api_key
    request_id = submit(emu)
    view = change_keys(emu, add=KEY_B, same_account_as=key_a)
    account = key_label(key_a)
    assert view["accounts"][account]["key_labels"] == sorted([key_label(key_a), key_label(KEY_B)])
    assert KEY_B not in json.dumps(view)
    assert key_a not in json.dumps(view)
    change_keys(emu, add=KEY_C)  # a key of another account
    clock.advance(30)

    def get(path: str, key: str) -> requests.Response:
        return requests.get(f"{emu.base_url}{path}", headers={"x-api-key": key}, timeout=10)

    assert get(f"/v2/requests/{request_id}/status", KEY_B).json()["status"] == "COMPLETED"
    assert get("/v1/get-user-credits", KEY_B).json() == get("/v1/get-user-credits", key_a).json()
    assert get(f"/v2/requests/{request_id}/status", KEY_C).status_code == 404  # not its account's job

    change_keys(emu, revoke=key_a)
    assert get(f"/v2/requests/{request_id}/status", key_a).status_code == 401
    assert get(f"/v2/requests/{request_id}", KEY_B).json()["status"] == "COMPLETED"
    view = requests.get(f"{emu.base_url}/_emulator/keys", timeout=10).json()
    assert view["revoked_key_labels"] == [key_label(key_a)]
    assert view["accounts"][account]["key_labels"] == [key_label(KEY_B)]
    refused = requests.post(f"{emu.base_url}/_emulator/keys", json={"revoke": "SG_unknown"}, timeout=10)
    assert refused.status_code == 400
    assert "SG_unknown" not in refused.text  # errors name labels, never keys
    assert requests.post(f"{emu.base_url}/_emulator/keys", json={"bogus": 1}, timeout=10).status_code == 400
    emu.reset()
    assert get("/v1/get-user-credits", key_a).status_code == 200  # reset restores the configured keys
    assert get("/v1/get-user-credits", KEY_B).status_code == 401


# ------------------------------------------------------------------ the trigger (triggerer path)


def test_trigger_goes_on_with_the_rotated_key(held: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    emu, clock = held
    key_a = emu.api_key
    request_id = submit(emu)
    event = watch_while(
        trigger_for(request_id), rotate_after_first_poll(emu, clock, monkeypatch, request_id, new_key=KEY_B)
    )
    assert event["status"] == "success", event
    assert event["result"]["request_id"] == request_id
    stats = emu.stats()
    assert stats["submissions"] == 1
    assert stats["responses"]["401"] == 1  # key A was refused once, then key B took over
    assert polls_with(emu, KEY_B, request_id) >= 2  # status and result, with the new key
    text = json.dumps(event) + caplog.text
    assert key_a not in text
    assert KEY_B not in text


@pytest.mark.parametrize("new_key", [None, KEY_C], ids=["revoked-no-replacement", "replacement-refused-too"])
def test_trigger_ends_when_the_key_is_still_refused(
    held: Any, monkeypatch: pytest.MonkeyPatch, caplog: Any, new_key: str | None
) -> None:
    emu, clock = held
    key_a = emu.api_key
    request_id = submit(emu)
    event = watch_while(
        trigger_for(request_id), rotate_after_first_poll(emu, clock, monkeypatch, request_id, new_key=new_key)
    )
    assert event["status"] == "error"
    assert event["retryable"] is False
    assert event["error_type"] == "SegmindAuthenticationError"
    assert "also after reading the connection again" in event["message"]
    # A with no replacement: one refusal. C replacing A: A refused, then C refused, then the end.
    assert emu.stats()["responses"]["401"] == (1 if new_key is None else 2)
    text = json.dumps(event) + caplog.text
    assert key_a not in text
    assert KEY_C not in text


@pytest.mark.parametrize(
    ("answer", "status", "error_type"),
    [(404, "expired", None), (403, "error", "SegmindForbiddenError"), (401, "error", "SegmindAuthenticationError")],
)
def test_a_job_of_another_account_ends_the_watch_clearly_whatever_segmind_answers(
    held: Any, monkeypatch: pytest.MonkeyPatch, answer: int, status: str, error_type: str | None
) -> None:
    """What Segmind answers for another account's request id is not documented. The emulator says
    404 by default and can say 403 or 401: each ends the watch with a clear event, without
    touching the job, after at most one re-read of the connection, and without a retry loop."""
    emu, _ = held
    request_id = submit(emu)
    emu.configure(foreign_request_status=answer)
    change_keys(emu, add=KEY_C)  # a key of another account
    use_emulator(monkeypatch, emu, key=KEY_C)
    event = watch_while(trigger_for(request_id), lambda: None)
    assert event["status"] == status
    assert event.get("error_type") == error_type
    if status == "error":
        assert event["retryable"] is False
        assert "also after reading the connection again" in event["message"]
    stats = emu.stats()
    assert stats["responses"][str(answer)] == 1
    assert stats["submissions"] == 1
    assert KEY_C not in json.dumps(event)


# ------------------------------------------------------------------ the blocking wait (worker path)


def rotating_sleep(during: Callable[[], None]) -> Callable[[float], None]:
    """``wait_for_job``'s sleep: rotates once, right after the first poll was made."""
    calls = 0

    def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first sleep comes before the first poll, the second after it
            during()
        time.sleep(min(seconds, 0.01))

    return sleep


def test_blocking_wait_goes_on_with_the_rotated_key(held: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    emu, clock = held
    request_id = submit(emu)
    during = rotate_after_first_poll(emu, clock, monkeypatch, request_id, new_key=KEY_B)
    event = wait_for_job(
        request_id, model=SD3_LARGE_MODEL, schedule=PollSchedule.from_dict(FAST_SCHEDULE), sleep=rotating_sleep(during)
    )
    assert event["status"] == "success", event
    assert emu.stats()["responses"]["401"] == 1
    assert emu.stats()["submissions"] == 1
    assert polls_with(emu, KEY_B, request_id) >= 2


def test_blocking_wait_ends_when_the_key_is_revoked_without_replacement(
    held: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, clock = held
    key_a = emu.api_key
    request_id = submit(emu)
    during = rotate_after_first_poll(emu, clock, monkeypatch, request_id, new_key=None)
    event = wait_for_job(
        request_id, model=SD3_LARGE_MODEL, schedule=PollSchedule.from_dict(FAST_SCHEDULE), sleep=rotating_sleep(during)
    )
    assert event["status"] == "error"
    assert event["retryable"] is False
    assert "also after reading the connection again" in event["message"]
    assert key_a not in json.dumps(event)


# ------------------------------------------------------------------ a deferred task in dag.test()


@pytest.fixture
def rotation_thread() -> Iterator[Callable[[Callable[[], None]], None]]:
    """Run a rotation in a background thread while ``dag.test()`` runs; joined at teardown."""
    threads: list[threading.Thread] = []
    failures: list[BaseException] = []

    def start(during: Callable[[], None]) -> None:
        def run() -> None:
            try:
                during()
            except BaseException as err:
                failures.append(err)

        thread = threading.Thread(target=run, daemon=True, name="segmind-rotation")
        threads.append(thread)
        thread.start()

    yield start
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures


@pytest.mark.parametrize("new_key", [KEY_B, None], ids=["rotated", "revoked-no-replacement"])
def test_deferred_task_survives_a_key_rotation_mid_job(
    airflow_db: Path,
    dags_folder: Path,
    held: Any,
    monkeypatch: pytest.MonkeyPatch,
    rotation_thread: Any,
    caplog: Any,
    capsys: Any,
    new_key: str | None,
) -> None:
    """Submitted with key A; while the job runs the connection (an env var) gets key B and A is revoked:
    the deferred task succeeds with one paid submission. Revoked with no replacement: the task fails
    at once (no task retry, although ``retries=1``) with an error that names neither key."""
    from tests.unit.operators.test_segmind_dag_test import _BROKEN, run_dag, write_dag

    if _BROKEN is not None:
        pytest.skip(_BROKEN)
    emu, clock = held
    key_a = emu.api_key
    credits_before = emu.stats()["credits"][key_label(key_a)]
    dag_id = f"segmind_rotation_{'b' if new_key else 'none'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i", prompt="a lighthouse", deferrable=True, poll_schedule=FAST,
                retries=1, retry_delay=timedelta(seconds=0),
            )
        """,
    )

    def during() -> None:
        wait_for(lambda: len(emu.jobs()) == 1, timeout=60, what="the submit")
        request_id = emu.jobs()[0]["request_id"]
        rotate_after_first_poll(emu, clock, monkeypatch, request_id, new_key=new_key)()

    rotation_thread(during)
    dr = run_dag(path, dag_id)
    logs = captured_logs(caplog, capsys)
    stats = emu.stats()
    assert stats["submissions"] == 1  # one paid submission, whatever happened to the key
    assert stats["credits"][key_label(key_a)] == pytest.approx(credits_before - emu.config.cost)
    (ti,) = dr.get_task_instances()
    if new_key is not None:
        assert dr.state == "success"
        assert ti.state == "success"
        assert stats["responses"]["401"] == 1
    else:
        assert dr.state == "failed"
        assert ti.state == "failed"
        assert ti.try_number == 1  # non-retryable: the retry was not used
        assert "also after reading the connection again" in logs
    assert key_a not in logs
    assert KEY_B not in logs
