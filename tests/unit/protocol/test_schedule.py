"""The poll schedule and tracker, as pure logic: cost in status calls and detection latency.

These replay job timelines against :class:`PollTracker` on a simulated clock (no sockets, no
sleeping): what is asserted is the number of status calls a job costs against Segmind's rate
limits, and how late a finished job is noticed, compared with the official SDK (1 call a second
from t=0). The emulator-backed tests check the same code over HTTP.
"""

from __future__ import annotations

import random
import statistics

import pytest

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindRateLimitError,
    SegmindRequestNotFoundError,
    SegmindServerError,
    SegmindTransportError,
)
from airflow_provider_segmind.protocol.responses import JobStatusResponse
from airflow_provider_segmind.protocol.schedule import (
    OUTCOME_COMPLETED,
    OUTCOME_ERROR,
    OUTCOME_EXPIRED,
    OUTCOME_FAILED,
    OUTCOME_TIMEOUT,
    RATE_LIMIT_PATIENCE_SECONDS,
    PollSchedule,
    PollTracker,
)
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL, SegmindJobStatus

RTT = 0.01  # seconds per HTTP round trip in the simulation


def sdk_calls(completion: float) -> tuple[int, float]:
    """The SDK's ``wait()``: a status call at t=0 and then every second (plus the round trip)."""
    t, calls = 0.0, 0
    while True:
        calls += 1
        if t >= completion:
            return calls, t - completion
        t += 1.0 + RTT


def tracker_calls(schedule: PollSchedule, queue: float, inference: float) -> tuple[int, float]:
    """Our calls for a job that is QUEUED for ``queue`` s, then PROCESSING for ``inference`` s."""
    done = queue + inference
    tracker = PollTracker(schedule, started_at=0.0, last_status=SegmindJobStatus.QUEUED)
    t, calls = tracker.first_delay(0.0), 0
    while True:
        calls += 1
        status = (
            SegmindJobStatus.QUEUED
            if t < queue
            else SegmindJobStatus.PROCESSING
            if t < done
            else SegmindJobStatus.COMPLETED
        )
        step = tracker.on_status(JobStatusResponse("r", status), t)
        if step.outcome == OUTCOME_COMPLETED:
            return calls, t - done
        assert step.outcome is None
        t += step.delay + RTT


def simulate(schedule: PollSchedule, queue: tuple[float, float], inference: tuple[float, float], n: int = 5000):
    rng = random.Random(20240601)
    ours, sdk, latency = [], [], []
    for _ in range(n):
        q, i = rng.uniform(*queue), rng.uniform(*inference)
        calls, late = tracker_calls(schedule, q, i)
        ours.append(calls)
        latency.append(late)
        sdk.append(sdk_calls(q + i)[0])
    latency.sort()
    return statistics.mean(ours), statistics.mean(sdk), latency[int(0.95 * n)]


def test_sd3_schedule_halves_the_sdk_calls_with_prompt_detection() -> None:
    """The benchmark's job mix (queue 0-5 s + inference 8-12 s): <= half the SDK's calls, p95 <= 1.5 s."""
    ours, sdk, p95 = simulate(PollSchedule.for_model(SD3_LARGE_MODEL), (0, 5), (8, 12))
    assert ours <= 0.5 * sdk, (ours, sdk)
    assert p95 <= 1.5, p95


def test_schedule_is_not_tuned_to_one_duration() -> None:
    """Long queues and slow or fast jobs still finish, with bounded latency, never hammering."""
    sd3 = PollSchedule.for_model(SD3_LARGE_MODEL)
    ours, sdk, p95 = simulate(sd3, (0, 30), (8, 12), n=1000)  # long queues: measured, not guessed
    assert ours <= 0.5 * sdk
    assert p95 <= 1.5
    ours, sdk, _ = simulate(sd3, (0, 5), (30, 90), n=1000)  # much slower than typical: polls thin out
    assert ours <= 0.5 * sdk
    generic = PollSchedule.for_model("some-video-model")
    ours, sdk, p95 = simulate(generic, (0, 5), (60, 180), n=500)
    assert ours <= 0.35 * sdk
    assert p95 <= 0.25 * 180 + generic.interval  # latency stays a fraction of the runtime
    ours, sdk, p95 = simulate(generic, (0, 1), (1, 3), n=1000)  # fast models are still seen promptly
    assert p95 <= 1.5


def test_rate_limit_waits_what_the_server_asked() -> None:
    schedule = PollSchedule(interval=1.0, rate_limit_max_wait=65.0)
    tracker = PollTracker(schedule, started_at=0.0, max_consecutive_errors=5)
    step = tracker.on_error(SegmindRateLimitError("429", retry_after=12.0), now=3.0)
    assert step.outcome is None
    assert 12.0 <= step.delay <= 12.0 + 0.5 * schedule.interval  # plus jitter, never less
    capped = tracker.on_error(SegmindRateLimitError("429", retry_after=600.0), now=16.0)
    assert 65.0 <= capped.delay <= 65.0 + 0.5 * schedule.interval
    # Without a hint, back off exponentially (with jitter), capped at max_interval.
    delays = [tracker.on_error(SegmindServerError("502"), now=100.0).delay for _ in range(2)]
    assert all(1.0 <= d <= schedule.max_interval for d in delays)


def test_transient_errors_end_the_watch_only_after_a_run_of_them() -> None:
    tracker = PollTracker(PollSchedule(), started_at=0.0, max_consecutive_errors=3)
    assert tracker.on_error(SegmindServerError("500"), 1.0).outcome is None
    assert tracker.on_error(SegmindTransportError("reset"), 2.0).outcome is None
    # A good answer resets the count.
    assert tracker.on_status(JobStatusResponse("r", SegmindJobStatus.PROCESSING), 3.0).outcome is None
    assert tracker.on_error(SegmindServerError("500"), 4.0).outcome is None
    assert tracker.on_error(SegmindServerError("500"), 5.0).outcome is None
    step = tracker.on_error(SegmindServerError("503 last"), 6.0)
    assert step.outcome == OUTCOME_ERROR
    assert "3 consecutive" in step.message
    assert "503 last" in step.message


def test_permanent_errors_and_terminal_states_end_it_at_once() -> None:
    tracker = PollTracker(PollSchedule(), started_at=0.0)
    assert tracker.on_error(SegmindAuthenticationError("401 bad key"), 1.0).outcome == OUTCOME_ERROR
    assert tracker.on_error(SegmindRequestNotFoundError("404"), 1.0).outcome == OUTCOME_EXPIRED
    failed = tracker.on_status(JobStatusResponse("r", SegmindJobStatus.FAILED, error="Content blocked"), 2.0)
    assert failed.outcome == OUTCOME_FAILED
    assert failed.message == "Content blocked"


def test_deadline_gives_one_last_look_then_times_out() -> None:
    tracker = PollTracker(PollSchedule(interval=5.0, max_interval=30.0), started_at=0.0, deadline=12.0)
    step = tracker.on_status(JobStatusResponse("r", SegmindJobStatus.PROCESSING), 10.0)
    assert step.outcome is None
    assert step.delay == pytest.approx(2.0)
    assert tracker.on_status(JobStatusResponse("r", SegmindJobStatus.PROCESSING), 12.0).outcome == OUTCOME_TIMEOUT
    late = PollTracker(PollSchedule(), started_at=0.0, deadline=12.0)
    assert late.on_status(JobStatusResponse("r", SegmindJobStatus.COMPLETED), 50.0).outcome == OUTCOME_COMPLETED


def test_transitions_are_reported_once() -> None:
    tracker = PollTracker(PollSchedule(), started_at=0.0, last_status=SegmindJobStatus.QUEUED)
    seen = [
        tracker.on_status(JobStatusResponse("r", status), float(t)).transition
        for t, status in enumerate(
            [
                SegmindJobStatus.QUEUED,
                SegmindJobStatus.PROCESSING,
                SegmindJobStatus.PROCESSING,
                SegmindJobStatus.COMPLETED,
            ]
        )
    ]
    assert seen == [
        None,
        (SegmindJobStatus.QUEUED, SegmindJobStatus.PROCESSING),
        None,
        (SegmindJobStatus.PROCESSING, SegmindJobStatus.COMPLETED),
    ]


def test_schedule_round_trips_as_plain_floats_and_tolerates_other_versions() -> None:
    schedule = PollSchedule.for_model(SD3_LARGE_MODEL, interval=0.5)
    data = schedule.to_dict()
    assert all(type(v) is float for v in data.values())
    assert PollSchedule.from_dict(data) == schedule
    # Written by an older version (fewer keys) or a newer one (unknown keys): still loads.
    assert PollSchedule.from_dict({"interval": 0.5, "added_in_v9": 1.0}).interval == 0.5
    assert PollSchedule.from_dict(None) == PollSchedule()


@pytest.mark.parametrize(
    "bad",
    [{"interval": 0}, {"queued_interval": -1}, {"max_interval": 0.5, "interval": 1.0}, {"slowdown": float("nan")}],
)
def test_invalid_schedules_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="PollSchedule"):
        PollSchedule(**bad)


def test_rate_limit_waits_are_spread_so_triggers_do_not_return_in_lockstep() -> None:
    schedule = PollSchedule(interval=2.0)
    error = SegmindRateLimitError("429", retry_after=10.0)
    delays = {schedule.delay_after_error(error, 1, rand=r / 10) for r in range(10)}
    assert len(delays) == 10
    assert min(delays) == 10.0
    assert max(delays) < 11.0


def test_rate_limits_with_a_wait_hint_do_not_count_as_errors_but_are_bounded() -> None:
    tracker = PollTracker(PollSchedule(), started_at=0.0, max_consecutive_errors=2)
    limited = SegmindRateLimitError("429", retry_after=30.0)
    for minute in range(50):  # far more than max_consecutive_errors
        assert tracker.on_error(limited, now=60.0 * minute).outcome is None
    # A good answer ends the run of limiting...
    assert tracker.on_status(JobStatusResponse("r", SegmindJobStatus.PROCESSING), 3001.0).outcome is None
    assert tracker.on_error(limited, now=3002.0).outcome is None
    # ...and a limit that never lifts ends the watch once the result could no longer be fetched.
    step = tracker.on_error(limited, now=3002.0 + RATE_LIMIT_PATIENCE_SECONDS)
    assert step.outcome == OUTCOME_ERROR
    assert "rate limited without a break" in step.message
    # A 429 without a hint counts like any transient error.
    fresh = PollTracker(PollSchedule(), started_at=0.0, max_consecutive_errors=2)
    assert fresh.on_error(SegmindRateLimitError("429"), 1.0).outcome is None
    assert fresh.on_error(SegmindRateLimitError("429"), 2.0).outcome == OUTCOME_ERROR
