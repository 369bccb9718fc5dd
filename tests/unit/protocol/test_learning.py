"""Polls that learn a model's runtime, as pure rules: the bounded book, seeding, and where polls land.

Job timelines are replayed against :class:`PollTracker` on a simulated clock (no sockets, no
sleeping): what is asserted is how many status calls a job costs and how late its completion is
noticed, compared with the official SDK (a call every second from t=0). The trigger-level test
against the emulator is ``tests/unit/triggers/test_segmind_learning.py``.
"""

from __future__ import annotations

import random

import pytest

from airflow_provider_segmind.protocol.learning import (
    LEARNED_INTERVAL_FRACTION,
    MIN_SAMPLES,
    RuntimeBook,
    estimated_range,
    place,
)
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from tests.unit.protocol.test_schedule import RTT, sdk_calls, tracker_calls

VIDEO = "some-video-model"


def learned_book(model: str, queue: tuple[float, float], inference: tuple[float, float], warm: int) -> RuntimeBook:
    rng = random.Random(7)
    book = RuntimeBook()
    for _ in range(warm):
        book.observe(model, {"queue_time": rng.uniform(*queue), "inference_time": rng.uniform(*inference)})
    return book


# ------------------------------------------------------------------ the book: bounded, LRU, validated


def test_book_is_bounded_in_models_and_samples_and_drops_the_least_recently_used() -> None:
    book = RuntimeBook(max_models=3, samples_per_model=4)
    for model in ("a", "b", "c"):
        for i in range(10):
            book.observe(model, {"inference_time": float(i), "queue_time": 0.5})
    assert book.samples("a") == ((0.5,) * 4, (6.0, 7.0, 8.0, 9.0))  # only the last 4, oldest first
    book.schedule_for("b", PollSchedule())  # reading a model counts as using it
    book.observe("d", {"inference_time": 1.0})
    assert book.models() == ["a", "b", "d"]  # c, the least recently used, was dropped
    assert book.samples("c") == ((), ())
    with pytest.raises(ValueError, match="at least one model"):
        RuntimeBook(max_models=0)


@pytest.mark.parametrize(
    "metrics",
    [
        {},
        {"queue_time": 1.0},
        {"inference_time": float("nan")},
        {"inference_time": -1.0},
        {"inference_time": True},
        {"inference_time": "9.6"},
        {"inference_time": 3601.0},
    ],
)
def test_a_job_without_a_usable_inference_time_teaches_nothing(metrics: dict[str, object]) -> None:
    book = RuntimeBook()
    book.observe(SD3_LARGE_MODEL, metrics)
    book.observe("", {"inference_time": 5.0})  # no model, nothing to key it on
    assert book.models() == []


def test_later_metrics_win_and_a_missing_queue_time_leaves_the_queue_window_alone() -> None:
    book = RuntimeBook()
    book.observe(VIDEO, {"inference_time": 13.06}, {"inference_time": 12.0, "queue_time": 0.2}, None)
    book.observe(VIDEO, {"inference_time": 11.0})
    assert book.samples(VIDEO) == ((0.2,), (12.0, 11.0))


# ------------------------------------------------------------------ fallbacks: unknown, too few, seed, restart


def test_unknown_model_and_too_few_runs_keep_the_default_schedule() -> None:
    book = RuntimeBook()
    default = PollSchedule.for_model(SD3_LARGE_MODEL)
    assert book.schedule_for("never-seen", PollSchedule.for_model("never-seen")) == PollSchedule.for_model("never-seen")
    for _ in range(MIN_SAMPLES - 1):
        book.observe(SD3_LARGE_MODEL, {"inference_time": 30.0})
    assert book.schedule_for(SD3_LARGE_MODEL, default) == default
    book.observe(SD3_LARGE_MODEL, {"inference_time": 30.0})
    assert book.schedule_for(SD3_LARGE_MODEL, default) != default


def test_a_seed_places_polls_for_a_model_never_seen_like_a_known_typical_runtime() -> None:
    seeded = place(PollSchedule(expected_runtime=9.6))
    known = PollSchedule.for_model(SD3_LARGE_MODEL)
    assert (seeded.min_runtime, seeded.slow_after) == (known.min_runtime, known.slow_after)
    assert seeded.interval_fraction == LEARNED_INTERVAL_FRACTION
    assert place(PollSchedule()) == PollSchedule()  # no seed, nothing learned: unchanged


def test_learned_runs_replace_the_seed_and_a_restart_starts_from_the_seed_again() -> None:
    base = PollSchedule.from_dict({"expected_runtime": 240.0})  # what an operator passes in poll_schedule
    book = learned_book(VIDEO, (0.0, 5.0), (60.0, 90.0), warm=12)
    learned = book.schedule_for(VIDEO, base)
    assert learned.min_runtime < 60.0 < 90.0 < learned.slow_after < 240.0
    book.clear()  # a triggerer restart: the process and its book are new
    assert book.schedule_for(VIDEO, base) == place(base) == RuntimeBook().schedule_for(VIDEO, base)
    assert place(base).min_runtime == 192.0


def test_the_new_fields_travel_as_floats_and_old_dicts_still_load() -> None:
    schedule = place(PollSchedule.for_model(VIDEO, expected_runtime=75.0))
    assert PollSchedule.from_dict(schedule.to_dict()) == schedule
    old = {k: v for k, v in PollSchedule().to_dict().items() if k not in ("interval_fraction", "expected_runtime")}
    assert PollSchedule.from_dict(old) == PollSchedule()
    with pytest.raises(ValueError, match="interval_fraction"):
        PollSchedule(interval_fraction=1.0)


# ------------------------------------------------------------------ where the polls land


def test_estimated_range_widens_with_few_runs_and_tightens_with_many() -> None:
    few = estimated_range([70.0, 80.0])
    many = estimated_range([60.0 + 30.0 * i / 31 for i in range(32)])
    assert few == (60.0, 90.0)
    assert many[0] == pytest.approx(59.03, abs=0.01)
    assert many[1] == pytest.approx(90.97, abs=0.01)


@pytest.mark.parametrize(
    ("model", "queue", "inference"),
    [
        (SD3_LARGE_MODEL, (0.0, 5.0), (8.0, 12.0)),
        (VIDEO, (0.0, 5.0), (60.0, 90.0)),
        (VIDEO, (0.0, 5.0), (180.0, 600.0)),
        (VIDEO, (50.0, 80.0), (8.0, 12.0)),  # a busy queue
    ],
    ids=["sd3-8-12s", "60-90s", "3-10min", "busy-queue"],
)
def test_learned_polls_meet_the_latency_goal_with_half_the_sdk_calls(
    model: str, queue: tuple[float, float], inference: tuple[float, float]
) -> None:
    """After 16 runs: p95 latency <= max(1.5 s, 5% of the job's runtime), calls <= 0.5x the SDK's."""
    book = learned_book(model, queue, inference, warm=16)
    schedule = book.schedule_for(model, PollSchedule.for_model(model))
    rng = random.Random(11)
    ours, sdk, ratios = 0, 0, []
    for _ in range(400):
        q, i = rng.uniform(*queue), rng.uniform(*inference)
        calls, late = tracker_calls(schedule, q, i)
        ours += calls
        sdk += sdk_calls(q + i)[0]
        ratios.append(late / max(1.5, 0.05 * (q + i)))
    ratios.sort()
    assert ratios[int(0.95 * len(ratios))] <= 1.0
    assert ours <= 0.5 * sdk


def test_learned_polls_beat_the_default_schedule_on_long_jobs() -> None:
    """Today's schedule backs off past 15 s and notices a 60-90 s job up to ~18 s late."""
    default = PollSchedule.for_model(VIDEO)
    learned = learned_book(VIDEO, (0.0, 5.0), (60.0, 90.0), warm=16).schedule_for(VIDEO, default)
    rng = random.Random(3)
    jobs = [(rng.uniform(0, 5), rng.uniform(60, 90)) for _ in range(200)]
    before = [tracker_calls(default, q, i) for q, i in jobs]
    after = [tracker_calls(learned, q, i) for q, i in jobs]
    assert max(late for _, late in after) < 0.5 * max(late for _, late in before)
    assert sum(calls for calls, _ in after) < sum(calls for calls, _ in before)


def test_past_the_learned_range_polls_back_off_but_never_stop() -> None:
    """A job far longer than every learned run (a cold GPU) is still seen finished, at a bounded cost."""
    schedule = learned_book(VIDEO, (0.0, 1.0), (8.0, 12.0), warm=16).schedule_for(VIDEO, PollSchedule())
    calls, late = tracker_calls(schedule, 0.5, 1800.0)
    assert late <= schedule.max_interval + RTT
    assert calls < 1800.0 / schedule.max_interval + 40
