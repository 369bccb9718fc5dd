"""Helpers for the operator, trigger and sensor tests: connection wiring, context stand-ins, loops.

Everything talks to the real emulator over loopback; nothing here mocks HTTP. The only stand-ins
are the bits of a task's runtime context that a unit test has no Airflow runtime for: a task
instance that records XCom pushes, and (for branch tests only) a dict-backed task state store.
The real store is exercised through ``dag.test()`` in
``tests/unit/operators/test_segmind_dag_test.py``. ``emu`` (``jobs_emu``): the fixture the unit
tests use by default (``tests/unit/conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import Any

import pytest

from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger

#: A poll schedule for the emulator's fast profile (jobs take ~0.25 s): tests stay quick.
FAST_SCHEDULE: dict[str, float] = {
    "initial_delay": 0.05,
    "queued_interval": 0.05,
    "interval": 0.05,
    "max_interval": 0.2,
    "error_backoff": 0.02,
    "rate_limit_max_wait": 0.5,
}
PROMPT = "a lighthouse at dawn, watercolour"


def use_emulator(
    monkeypatch: pytest.MonkeyPatch,
    emu: Any,
    *,
    key: str | None = None,
    conn_id: str = "segmind_default",
    extra: dict[str, Any] | None = None,
) -> None:
    """Point a Segmind connection at ``emu`` through the environment (no database needed)."""
    conn: dict[str, Any] = {
        "conn_type": "segmind",
        "password": emu.api_key if key is None else key,
        "host": emu.base_url,
    }
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


class RecordingTI:
    """The part of a task instance operators touch in a unit test: XCom pushes, recorded."""

    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}
        self.dag_id = "unit_dag"
        self.run_id = "manual__unit"
        self.task_id = "unit_task"
        self.try_number = 1
        self.map_index = -1
        self._first_run: Any = None

    def get_first_reschedule_date(self, context: Any) -> Any:
        """Reschedule-mode sensors measure their timeout from their first run, as the database would."""
        from datetime import datetime

        first = self._first_run
        if first is None:
            self._first_run = datetime.now(tz=UTC)
        return first

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom must be JSON-serializable
        self.xcom[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        """This task instance's own XComs (what an operator pulls of its own, e.g. after a resume)."""
        return self.xcom.get(key)


class DictTaskStateStore:
    """A dict-backed stand-in for Airflow 3.3's ``task_state_store`` (same ``get``/``set``/``delete`` shape).

    Used only by unit tests that need a specific stored state (QUEUED, FAILED, expired...) that a
    ``dag.test()`` run cannot easily produce; the real store is covered in ``test_dag_test.py``.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.retention: dict[str, timedelta | None] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = json.loads(json.dumps(value))  # JSON values only, like the real one
        self.retention[key] = retention

    def delete(self, key: str) -> None:
        self.values.pop(key, None)  # no-op for a missing key, like the real one


class DyingStore(DictTaskStateStore):
    """A store whose worker "dies" (``SystemExit``) when the request id is about to be recorded:
    the submit was accepted, the attempt record is in the store, the request record never lands."""

    def __init__(self) -> None:
        super().__init__()
        self.dead = False

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if not self.dead and "request_id" in value:
            self.dead = True
            raise SystemExit("worker killed between the accepted submit and the record write (emulated)")
        super().set(key, value, retention=retention)


class FailingTaskStateStore(DictTaskStateStore):
    """A store whose ``get``/``set``/``delete`` raise, as Airflow 3.3's does when the API server cannot answer.

    The real accessor raises ``AirflowRuntimeError`` (from the supervisor's error response); any
    exception must be tolerated the same way, so a plain ``RuntimeError`` stands in for it here.
    """

    def __init__(self, *failing: str) -> None:
        super().__init__()
        self.failing = set(failing)

    def _maybe_fail(self, operation: str) -> None:
        if operation in self.failing:
            raise RuntimeError(f"task state store {operation} failed: API server returned 500 (emulated)")

    def get(self, key: str, default: Any = None) -> Any:
        self._maybe_fail("get")
        return super().get(key, default)

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        self._maybe_fail("set")
        super().set(key, value, retention=retention)

    def delete(self, key: str) -> None:
        self._maybe_fail("delete")
        super().delete(key)


def make_context(store: DictTaskStateStore | None = None, **ti_fields: Any) -> dict[str, Any]:
    """A task's context; ``ti_fields`` set task instance fields (e.g. ``try_number``, ``max_tries``)."""
    ti = RecordingTI()
    for name, value in ti_fields.items():
        setattr(ti, name, value)
    context: dict[str, Any] = {"ti": ti}
    if store is not None:
        context["task_state_store"] = store
    return context


def run_trigger(trigger: SegmindJobTrigger, *, timeout: float = 30.0) -> list[Any]:
    """Run a trigger to completion on a fresh event loop, as the triggerer would; return its events."""

    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))


def finish_deferred(op: Any, context: dict[str, Any], deferred: Any) -> Any:
    """What Airflow does after a deferral: run the trigger, then end the task or resume it.

    A ``TaskSuccessEvent`` (``end_from_trigger``) ends the task in the triggerer: its XComs are
    pushed and nothing runs on the worker (``airflow.models.trigger.handle_event_submit``); any
    other event resumes the task with the defer's kwargs and the event's payload.
    """
    from airflow.triggers.base import TaskSuccessEvent

    (event,) = run_trigger(deferred.trigger)
    if isinstance(event, TaskSuccessEvent):
        for key, value in (event.xcoms or {}).items():
            context["ti"].xcom_push(key=key, value=value)
        return (event.xcoms or {}).get("return_value")
    return getattr(op, deferred.method_name)(context, **{**(deferred.kwargs or {}), "event": event.payload})


def wait_for(predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition") -> None:
    """Wait (briefly sleeping) until ``predicate()`` holds; the emulator's jobs advance in real time."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def job_status(emu: Any, request_id: str) -> str:
    job = emu.job(request_id)
    return str(job["status"]) if job else "UNKNOWN"


def captured_logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything logged so far: stdlib logging (caplog) and structlog's console output (Airflow 3.3)."""
    out = capsys.readouterr()
    return caplog.text + out.out + out.err


class ManualClock:
    """An emulator clock the test moves by hand: a job stays QUEUED/PROCESSING until told otherwise."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(name="emu")
def jobs_emu(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fast emulator (queue 0.05 s, inference 0.2 s), reachable as connection ``segmind_default``."""
    use_emulator(monkeypatch, emulator)
    return emulator
