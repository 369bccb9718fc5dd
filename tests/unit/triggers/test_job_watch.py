"""The one polling loop: the blocking and the async driver run the same watch to the same end.

:class:`~airflow_provider_segmind.triggers.job_watch.JobWatch` holds the rules once; ``run_blocking`` (the
non-deferrable operators) and ``run_async`` (the trigger) only perform its actions. Here both run
the same scripted job against the emulator (real HTTP over loopback, on a clock the sleeps move,
so the job's progress and the schedule are the same in both runs) and must ask for the same
actions, get the same answers, log the same lines and end with the same event.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from airflow_provider_segmind.emulator.state import key_label
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.triggers import segmind as trigger_module
from airflow_provider_segmind.triggers.events import validate_event
from airflow_provider_segmind.triggers.job_watch import (
    SINGLE_ATTEMPT,
    Action,
    AsyncCalls,
    BlockingCalls,
    Call,
    JobWatch,
    Sleep,
    run_async,
    run_blocking,
    wait_for_job,
)
from tests.support.jobs import FAST_SCHEDULE, PROMPT, ManualClock, use_emulator
from tests.unit.triggers.test_job_watch_key_rotation import KEY_B, change_keys

SCHEDULE = PollSchedule.from_dict(FAST_SCHEDULE)
STARTED_AT = time.time()


class ListLog:
    """A logger that keeps each formatted line, with its level."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(("INFO", message % args))

    def warning(self, message: str, *args: Any) -> None:
        self.lines.append(("WARNING", message % args))


def _answer(action: Action, answer: Any) -> Any:
    """What a trace keeps of an answer: the status, that a result came, a key's label (never the key)."""
    if action is Call.STATUS:
        return answer.status.value
    if action is Call.RESULT:
        return len(answer.output_urls)
    if action in (Call.KEY, Call.RELOAD_KEY):
        return key_label(answer)
    return answer


class Scenario:
    """One job script; ``at_sleep`` maps an n-th sleep (1-based) to something that happens meanwhile."""

    def __init__(
        self,
        emu: Any,
        clock: ManualClock,
        monkeypatch: pytest.MonkeyPatch,
        *,
        faults: list[dict[str, Any]],
        at_sleep: dict[int, Callable[[], None]] | None = None,
        deadline_in: float | None = None,
    ) -> None:
        self.emu, self.clock, self.monkeypatch = emu, clock, monkeypatch
        #: Where each run's clock starts: every run sees the same times (the emulator forgets its jobs).
        self.started_at = STARTED_AT
        self.faults, self.at_sleep, self.deadline_in = faults, at_sleep or {}, deadline_in
        self.trace: list[tuple[str, Any]] = []
        self.log = ListLog()
        self.sleeps = 0

    def start(self) -> tuple[JobWatch, SegmindHook]:
        """Fresh emulator state and connection, the clock at its start, a job submitted, the faults queued."""
        self.emu.reset()
        self.clock.now = self.started_at
        use_emulator(self.monkeypatch, self.emu)
        request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
        self.request_id = request_id
        self.emu.script(self.faults)
        now = self.clock()
        watch = JobWatch(
            request_id,
            conn_id="segmind_default",
            model=SD3_LARGE_MODEL,
            schedule=SCHEDULE,
            deadline=now + self.deadline_in if self.deadline_in is not None else None,
            submitted_at=now,
            max_consecutive_errors=5,
            log=self.log,
            clock=self.clock,
            rng=random.Random(7),
        )
        return watch, SegmindHook("segmind_default", retry_policy=SINGLE_ATTEMPT)

    def slept(self, seconds: float) -> None:
        self.sleeps += 1
        self.clock.advance(seconds)
        happening = self.at_sleep.get(self.sleeps)
        if happening is not None:
            happening()

    def record(self, action: Action, answer: Any = None, error: Exception | None = None) -> None:
        name = f"sleep {action.seconds:.6f}" if isinstance(action, Sleep) else action.value
        self.trace.append((name, type(error).__name__ if error is not None else _answer(action, answer)))

    def outcome(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event and the log with the (per-run) request id and deadline taken out; the trace."""
        checked = validate_event(event)
        text = repr({k: v for k, v in checked.items() if k not in ("request_id", "deadline")})
        return {
            "status": checked["status"],
            "event": text.replace(self.request_id, "<id>"),
            "log": [(level, line.replace(self.request_id, "<id>")) for level, line in self.log.lines],
            "trace": self.trace,
        }


def run_with_blocking_driver(scenario: Scenario) -> dict[str, Any]:
    watch, hook = scenario.start()
    calls = BlockingCalls(hook, scenario.request_id, sleep=scenario.slept)

    def perform(action: Action) -> Any:
        try:
            answer = calls(action)
        except Exception as err:
            scenario.record(action, error=err)
            raise
        scenario.record(action, answer)
        return answer

    try:
        watch.secrets.append(hook.get_settings().api_key)
        return scenario.outcome(run_blocking(watch.steps(), perform))
    finally:
        hook.close()


def run_with_async_driver(scenario: Scenario) -> dict[str, Any]:
    watch, hook = scenario.start()

    async def slept(seconds: float) -> None:
        await asyncio.to_thread(scenario.slept, seconds)  # may call the emulator's control API (blocking)

    async def main() -> dict[str, Any]:
        watch.secrets.append((await hook.aget_settings()).api_key)
        async with hook.shared_session() as session:
            calls: Callable[[Action], Awaitable[Any]] = AsyncCalls(
                hook, scenario.request_id, session=session, sleep=slept
            )

            async def perform(action: Action) -> Any:
                try:
                    answer = await calls(action)
                except Exception as err:
                    scenario.record(action, error=err)
                    raise
                scenario.record(action, answer)
                return answer

            return await run_async(watch.steps(), perform)

    return scenario.outcome(asyncio.run(asyncio.wait_for(main(), 30)))


@pytest.fixture
def held(emulator_factory: Any) -> tuple[Any, ManualClock]:
    """An emulator on a hand-moved clock: jobs advance only when a driver sleeps."""
    clock = ManualClock()
    # A 429's reset time is far off: the wait is the schedule's cap, not "reset minus the wall clock".
    return emulator_factory(clock=clock, fault_retry_after=30.0), clock


def rotate_key(emu: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """The connection gets key B of the same account; key A is revoked (the next poll with A gets a 401)."""

    def rotate() -> None:
        key_a = emu.api_key
        use_emulator(monkeypatch, emu, key=KEY_B)
        change_keys(emu, add=KEY_B, same_account_as=key_a, revoke=key_a)

    return rotate


def revoke_key(emu: Any) -> Callable[[], None]:
    return lambda: change_keys(emu, revoke=emu.api_key)


Settings = Callable[[Any, pytest.MonkeyPatch], dict[str, Any]]
#: name -> (the scenario's settings, the event status it ends with, a step its trace must show)
SCENARIOS: dict[str, tuple[Settings, str, Callable[[Any], tuple[str, Any]]]] = {
    "transient faults, then success": (
        lambda emu, mp: {
            "faults": [
                {"endpoint": "status", "fault": "500"},
                {"endpoint": "status", "fault": "504"},
                {"endpoint": "status", "fault": "none"},
                {"endpoint": "status", "fault": "429"},
                {"endpoint": "result", "fault": "502"},
            ]
        },
        "success",
        lambda emu: ("result", "SegmindServerError"),
    ),
    "key rotated mid-job": (
        lambda emu, mp: {"faults": [], "at_sleep": {2: rotate_key(emu, mp)}},
        "success",
        lambda emu: ("reload_key", key_label(KEY_B)),
    ),
    "key revoked, no new key": (
        lambda emu, mp: {"faults": [], "at_sleep": {2: revoke_key(emu)}},
        "error",
        lambda emu: ("reload_key", key_label(emu.api_key)),
    ),
    "deadline passes": (
        lambda emu, mp: {"faults": [{"endpoint": "status", "fault": "500", "times": 3}], "deadline_in": 0.1},
        "timeout",
        lambda emu: ("status", "SegmindServerError"),
    ),
    "too many errors": (
        lambda emu, mp: {"faults": [{"endpoint": "status", "fault": "502", "times": 10}]},
        "error",
        lambda emu: ("status", "SegmindServerError"),
    ),
}


def scenario(name: str, emu: Any, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    return Scenario(emu, clock, monkeypatch, **SCENARIOS[name][0](emu, monkeypatch))


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_blocking_and_the_async_driver_run_the_same_watch(
    held: tuple[Any, ManualClock], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    emu, clock = held
    blocking = run_with_blocking_driver(scenario(name, emu, clock, monkeypatch))
    in_loop = run_with_async_driver(scenario(name, emu, clock, monkeypatch))
    assert in_loop == blocking
    _, status, must_show = SCENARIOS[name]
    assert blocking["status"] == status
    assert must_show(emu) in blocking["trace"]


def test_wait_for_job_is_the_blocking_driver(held: tuple[Any, ManualClock], monkeypatch: pytest.MonkeyPatch) -> None:
    """``wait_for_job`` (what non-deferrable operators call) ends as the blocking driver does."""
    emu, clock = held
    direct = run_with_blocking_driver(scenario("transient faults, then success", emu, clock, monkeypatch))
    through = scenario("transient faults, then success", emu, clock, monkeypatch)
    _, hook = through.start()
    hook.close()
    event = wait_for_job(
        through.request_id,
        model=SD3_LARGE_MODEL,
        schedule=SCHEDULE,
        submitted_at=clock(),
        max_consecutive_errors=5,
        log=through.log,
        sleep=through.slept,
        clock=clock,
    )
    outcome = through.outcome(event)
    assert (outcome["status"], outcome["event"], outcome["log"]) == (direct["status"], direct["event"], direct["log"])


def test_a_cancelled_async_watch_stops_without_an_event(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancellation is not thrown into the watch (it would count as an error): it propagates."""
    use_emulator(monkeypatch, emulator)
    hook = SegmindHook("segmind_default", retry_policy=SINGLE_ATTEMPT)
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    watch = JobWatch(
        request_id,
        conn_id="segmind_default",
        model=SD3_LARGE_MODEL,
        schedule=PollSchedule(initial_delay=30, queued_interval=30, interval=30, max_interval=30),
        deadline=None,
        submitted_at=time.time(),
        max_consecutive_errors=5,
    )

    async def main() -> None:
        async with hook.shared_session() as session:
            steps = watch.steps()
            task = asyncio.create_task(run_async(steps, AsyncCalls(hook, request_id, session=session)))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert steps.gi_frame is None  # the watch was closed, not left suspended

    asyncio.run(main())
    assert watch.tracker.polls == 0


def test_the_watch_names_have_one_home() -> None:
    """Nothing was published before issue 26: the watch, event and summary names live in one module each,
    and the trigger module no longer re-exports them (the trigger class keeps its stored classpath)."""
    for name in ("wait_for_job", "result_summary", "summarize_params", "fit_summary", "DEFAULT_MAX_CONSECUTIVE_ERRORS"):
        assert name not in trigger_module.__all__
    assert trigger_module.SegmindJobTrigger.__module__ == "airflow_provider_segmind.triggers.segmind"
