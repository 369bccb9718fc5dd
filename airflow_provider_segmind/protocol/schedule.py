"""When to ask about a v2 job and what each answer means: the poll schedule and the watch's state machine.

:class:`PollSchedule` says how long to wait after each answer; :class:`PollTracker` digests each
answer or error and says stop (with an outcome) or call again (after a delay). Neither does I/O or
reads a clock, so the deferrable trigger and the blocking loop reach the same outcome on the same
answers, and the rules are testable without sockets.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_segmind.exceptions import (
    SegmindError,
    SegmindJobFailedError,
    SegmindRateLimitError,
    SegmindRequestNotFoundError,
)
from airflow_provider_segmind.protocol.responses import JobStatusResponse
from airflow_provider_segmind.protocol.retry import RATE_LIMIT_MAX_WAIT
from airflow_provider_segmind.protocol.text import MAX_ERROR_TEXT, redact
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL, SegmindJobStatus

#: A v2 request's status and result stay retrievable this long after submission, then answer 404.
RESULT_RETENTION_SECONDS: Final = 3600.0
#: How long a watch waits out uninterrupted 429s (each with a wait hint) before giving up: past the
#: result's retention there is nothing left to fetch anyway.
RATE_LIMIT_PATIENCE_SECONDS: Final = RESULT_RETENTION_SECONDS
#: Typical inference seconds per model, where known: the model-dependent part of the schedule.
#: SD3 Large: ~9.6 s per image (Segmind's model page).
KNOWN_INFERENCE_SECONDS: Final[Mapping[str, float]] = {SD3_LARGE_MODEL: 9.6}
#: Shortest plausible inference, as a fraction of the typical one: no poll is spent before it.
_MIN_RUNTIME_FRACTION: Final = 0.8
#: Past this multiple of the typical inference, the job is late: polls slow down.
_SLOW_AFTER_FACTOR: Final = 1.5

#: Jitter source of trackers not given one (private, so user code seeding ``random`` cannot
#: synchronize the retries of every job).
_TRACKER_RNG: Final = random.Random()

#: Outcomes a poll step can end with (the trigger's terminal event statuses, plus ``completed``,
#: which means "fetch the result now", and ``None``, which means "poll again after ``delay``").
OUTCOME_COMPLETED: Final = "completed"
OUTCOME_FAILED: Final = "failed"
OUTCOME_EXPIRED: Final = "expired"
OUTCOME_TIMEOUT: Final = "timeout"
OUTCOME_ERROR: Final = "error"


def _finite_non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"PollSchedule.{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PollSchedule:
    """When to ask Segmind about a v2 job: the one schedule the trigger and the sync poll loop share.

    Every status call may count against the account's rate limit (Free 5/min, Pro 50/min: docs.segmind.com/
    api-reference/rate-limits; whether polls count is undocumented, the contract check tells) and the
    official SDK spends one per second per job. This schedule spends calls where they carry
    information, using what the API tells us and the model's typical runtime:

    1. No call for ``initial_delay`` after submit: nothing can have finished yet.
    2. While QUEUED, one call every ``queued_interval``: the point is to notice when inference
       starts, because that pins down when it can end.
    3. When PROCESSING is first seen, inference began after the last QUEUED answer; no call before
       that moment plus ``min_runtime`` (the model's shortest plausible inference), because the job
       cannot be done earlier (except one every ``max_interval``, should that wait be longer).
    4. From then on, one call every ``interval``: this bounds the detection latency (completion ->
       noticed) by ``interval`` plus a round trip.
    5. A job still PROCESSING ``slow_after`` seconds after it can have started is late (bigger
       input, a cold GPU, an unknown model): the interval grows by ``slowdown`` times the overrun,
       up to ``max_interval``, so an hour-long job costs minutes of calls, not thousands.
    6. After a transient error the next call waits ``error_backoff`` doubled per consecutive error
       (with jitter, capped at ``max_interval``); a 429 waits at least what the server asked
       (``Retry-After`` / reset header), capped at ``rate_limit_max_wait``, plus up to half an
       ``interval`` of jitter.

    7. Once processing, no wait is shorter than ``interval_fraction`` of the time since submit
       (0 = off, the default): a job that has run for minutes is not polled every second, yet its
       completion is still noticed within that fraction of its runtime. Learned schedules set it
       (:mod:`~airflow_provider_segmind.protocol.learning`).

    ``expected_runtime`` (seconds, 0 = none) is a hint of the model's inference time for a model
    the triggerer has not seen finish yet; :func:`~airflow_provider_segmind.protocol.learning.place`
    turns it (or what completed jobs took) into ``min_runtime``/``slow_after``/``interval_fraction``.
    On its own it changes nothing: the tracker reads only the fields above.

    Nothing is tuned to one job length: the waits follow the observed QUEUED -> PROCESSING
    transition, so queue time is measured rather than guessed, and only the model's inference
    runtime (``min_runtime``, ``slow_after``) comes from :meth:`for_model`. With the defaults for SD3
    Large and jobs drawn from queue 0-5 s + inference 8-12 s, a job costs ~6 status calls (the SDK
    ~14) with a detection latency below ``interval``.

    All fields are plain floats (seconds, except the ``slowdown`` ratio) so the schedule travels in
    trigger kwargs as a dict (:meth:`to_dict`) and old dicts still load (:meth:`from_dict`).
    """

    initial_delay: float = 2.0
    queued_interval: float = 2.0
    min_runtime: float = 0.0
    interval: float = 1.25
    slow_after: float = 15.0
    slowdown: float = 0.25
    max_interval: float = 30.0
    error_backoff: float = 1.0
    rate_limit_max_wait: float = RATE_LIMIT_MAX_WAIT
    interval_fraction: float = 0.0
    expected_runtime: float = 0.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, _finite_non_negative(name, getattr(self, name)))
        if self.interval <= 0 or self.queued_interval <= 0:
            raise ValueError("PollSchedule.interval and queued_interval must be > 0 (a zero interval hammers the API)")
        if self.max_interval < max(self.interval, self.queued_interval):
            raise ValueError("PollSchedule.max_interval must be >= interval and queued_interval")
        if self.interval_fraction >= 1:
            raise ValueError("PollSchedule.interval_fraction must be < 1 (a fraction of the time since submit)")

    @classmethod
    def for_model(cls, model: str | None, **overrides: float) -> PollSchedule:
        """The schedule for ``model``: its typical runtime sets ``min_runtime``/``slow_after``.

        Unknown slugs get no ``min_runtime`` (poll every ``interval`` once processing) and start
        slowing down after 15 s, which suits fast models and long video jobs alike.
        """
        typical = KNOWN_INFERENCE_SECONDS.get(model or "")
        values = runtime_hint(typical) if typical is not None else {}
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict[str, float]:
        """Plain ``{name: float}``, for trigger kwargs."""
        return {name: float(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PollSchedule:
        """Rebuild from :meth:`to_dict` output; missing keys take defaults, unknown keys are ignored.

        Kwargs written by an older or newer provider version must still load in the triggerer.
        """
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__ and v is not None}
        # A triggerer rebuilds thousands of triggers carrying the same dict: validated schedules are
        # memoized (frozen, so sharing one is safe). Types are part of the key so that, e.g., True
        # is still refused where 1 is accepted; unhashable values skip the memo and fail as before.
        if cls is not PollSchedule:
            return cls(**known)
        try:
            items = tuple(sorted((k, type(v), v) for k, v in known.items()))
            hash(items)
        except TypeError:
            return cls(**known)
        return _schedule_from_items(items)

    def delay_after_status(
        self,
        status: SegmindJobStatus,
        *,
        now: float,
        started_at: float,
        last_queued_at: float | None,
        processing_since: float | None,
        first_processing: bool,
    ) -> float:
        """Seconds to wait after a non-terminal status answer (pure; the caller passes the clock).

        :param started_at: when watching began (the submit time, when known).
        :param last_queued_at: the last time the job was known QUEUED (the submit time counts), or
            ``None`` if its history is unknown (a sensor given someone else's request id).
        :param processing_since: the earliest time inference can have started, once PROCESSING.
        :param first_processing: whether this answer is the first PROCESSING one.
        """
        if status is SegmindJobStatus.QUEUED:
            overrun = (now - started_at) - self.slow_after
            return min(self.max_interval, max(self.queued_interval, self.slowdown * overrun))
        since = processing_since if processing_since is not None else now
        earliest_done = since + self.min_runtime
        if last_queued_at is not None and self.min_runtime > 0 and (first_processing or now < earliest_done):
            # A skip longer than ``max_interval`` (a learned minutes-long runtime) is taken in steps
            # of ``max_interval``: a job that fails early is still noticed within it.
            return min(self.max_interval, max(self.interval, earliest_done - now))
        overrun = (now - since) - max(self.slow_after, self.min_runtime)
        proportional = self.interval_fraction * (now - started_at)
        return min(self.max_interval, max(self.interval, proportional, self.slowdown * overrun))

    def delay_after_error(self, error: BaseException, consecutive: int, *, rand: float = 1.0) -> float:
        """Seconds to wait after the ``consecutive``-th transient error in a row.

        :param rand: a number in [0, 1) for jitter (so many triggers do not retry in lockstep);
            1.0 gives the deterministic upper bound.
        """
        if isinstance(error, SegmindRateLimitError) and error.retry_after is not None:
            # Every trigger limited in the same window is told the same reset time: spread them over
            # half an interval after it, or they all come back at once and are limited again.
            waited = max(self.interval, min(error.retry_after, self.rate_limit_max_wait))
            return waited + 0.5 * self.interval * min(max(rand, 0.0), 1.0)
        ceiling = min(self.max_interval, self.error_backoff * 2.0 ** max(0, consecutive - 1))
        return max(self.interval, ceiling / 2 + (ceiling / 2) * min(max(rand, 0.0), 1.0))


def runtime_hint(typical: float) -> dict[str, float]:
    """``min_runtime`` and ``slow_after`` for a model whose inference typically takes ``typical`` s.

    The one rule for a known model (:meth:`PollSchedule.for_model`) and a seeded one
    (``PollSchedule.expected_runtime``, see :func:`~airflow_provider_segmind.protocol.learning.place`).
    """
    return {
        "min_runtime": round(typical * _MIN_RUNTIME_FRACTION, 3),
        "slow_after": round(typical * _SLOW_AFTER_FACTOR, 3),
    }


@functools.lru_cache(maxsize=64)
def _schedule_from_items(items: tuple[tuple[str, type, Any], ...]) -> PollSchedule:
    """:meth:`PollSchedule.from_dict`'s memo (exceptions are not cached: a bad dict raises every time)."""
    return PollSchedule(**{name: value for name, _, value in items})


@dataclass(frozen=True)
class PollStep:
    """What to do after one poll: stop with ``outcome``, or call again after ``delay`` seconds.

    ``transition`` is ``(old, new)`` when the job's status changed (``old`` may be ``None``), so
    both loops log each transition exactly once. ``error`` is the exception behind a failed
    ``expired``/``error`` outcome or a counted transient failure; ``message`` is a redacted text.
    """

    outcome: str | None
    delay: float = 0.0
    message: str = ""
    transition: tuple[SegmindJobStatus | None, SegmindJobStatus] | None = None
    error: BaseException | None = None
    status: JobStatusResponse | None = None


class PollTracker:
    """The decision logic of watching one v2 job, shared by the trigger (async) and the sync loop.

    It performs no I/O and reads no clock: the loop calls the API, passes each answer or error with
    the current time, and gets back a :class:`PollStep`. So the deferrable and the blocking paths
    reach the same outcome on the same answers, and the rules are testable without sockets.

    Rules: COMPLETED -> fetch the result (and from then on only the result is retried: the
    status is known, and another status call per failed fetch would spend the rate limit that made
    the fetch fail); FAILED -> ``failed`` with the server's text; 404 -> ``expired``; transient
    errors (5xx, transport, a 429 without a wait hint) are waited out and end the watch only after
    ``max_consecutive_errors`` in a row (-> ``error`` with the last error); a 429 that says how
    long to wait is congestion, not a failure: it is waited out without counting, for at most
    ``RATE_LIMIT_PATIENCE_SECONDS`` of uninterrupted limiting; any other error -> ``error`` at
    once; past ``deadline`` -> ``timeout`` (after one last look, so a job that just finished is
    not reported as timed out).
    """

    def __init__(
        self,
        schedule: PollSchedule,
        *,
        started_at: float,
        deadline: float | None = None,
        submitted: bool = True,
        max_consecutive_errors: int = 10,
        last_status: SegmindJobStatus | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        :param started_at: the submit time if known, else when watching began.
        :param submitted: whether ``started_at`` is the submit time (the job was QUEUED then).
        :param last_status: a status this watcher itself already observed, for logging; ``None``
            (the default) makes the first status answer a "first seen" step, not a transition.
        """
        if max_consecutive_errors < 1:
            raise ValueError("max_consecutive_errors must be at least 1")
        self.schedule = schedule
        self.started_at = started_at
        self.deadline = deadline
        self.max_consecutive_errors = max_consecutive_errors
        self.last_status = last_status
        self.last_queued_at: float | None = started_at if submitted else None
        self.processing_since: float | None = None
        self.consecutive_errors = 0
        #: Start of the current run of rate-limited answers (``None`` outside one).
        self.rate_limited_since: float | None = None
        self.polls = 0
        # One process-wide generator by default: seeding a fresh ``random.Random()`` reads the OS
        # entropy pool and costs more than a whole status decision, once per watched job.
        self._rng = rng or _TRACKER_RNG

    def first_delay(self, now: float) -> float:
        """Seconds until the first call: ``initial_delay`` after submit (0 if that has passed)."""
        if self.last_queued_at is None:
            return 0.0
        return self._bounded(max(0.0, self.started_at + self.schedule.initial_delay - now), now)

    def _bounded(self, delay: float, now: float) -> float:
        """Never sleep past the deadline: the last call happens at the deadline."""
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - now))
        return delay

    def _timed_out(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def _timeout_step(self, now: float, step: PollStep) -> PollStep:
        return PollStep(
            OUTCOME_TIMEOUT,
            message=f"the job was not finished by its deadline ({self.deadline:.0f}, {now - self.started_at:.1f} s "
            "after watching began)",
            transition=step.transition,
            error=step.error,
            status=step.status,
        )

    def on_status(self, answer: JobStatusResponse, now: float) -> PollStep:
        """Digest one status answer taken at ``now``."""
        self.polls += 1
        self.consecutive_errors = 0
        self.rate_limited_since = None
        status = answer.status
        transition = (self.last_status, status) if status is not self.last_status else None
        self.last_status = status
        if status is SegmindJobStatus.COMPLETED:
            return PollStep(OUTCOME_COMPLETED, transition=transition, status=answer)
        if status is SegmindJobStatus.FAILED:
            return PollStep(OUTCOME_FAILED, message=answer.error or "", transition=transition, status=answer)
        first_processing = False
        if status is SegmindJobStatus.QUEUED:
            self.last_queued_at = now
        elif self.processing_since is None:
            first_processing = True
            self.processing_since = self.last_queued_at if self.last_queued_at is not None else now
        step = PollStep(None, transition=transition, status=answer)
        if self._timed_out(now):
            return self._timeout_step(now, step)
        delay = self.schedule.delay_after_status(
            status,
            now=now,
            started_at=self.started_at,
            last_queued_at=self.last_queued_at,
            processing_since=self.processing_since,
            first_processing=first_processing,
        )
        return PollStep(None, delay=self._bounded(delay, now), transition=transition, status=answer)

    def on_error(self, error: BaseException, now: float) -> PollStep:
        """Digest an error from a status or result call made at ``now``."""
        self.polls += 1
        message = redact(str(error) or type(error).__name__)[:MAX_ERROR_TEXT]
        if isinstance(error, SegmindRequestNotFoundError):
            return PollStep(OUTCOME_EXPIRED, message=message, error=error)
        if isinstance(error, SegmindJobFailedError):
            return PollStep(OUTCOME_FAILED, message=error.error_text or message, error=error)
        if not (isinstance(error, SegmindError) and error.transient):
            return PollStep(OUTCOME_ERROR, message=message, error=error)
        if isinstance(error, SegmindRateLimitError) and error.retry_after is not None:
            # Waiting is what the server asked for, so it does not count as a failed call. Under a
            # saturated plan limit every trigger sees runs of 429s; counting them would fail jobs
            # that are fine. The patience bound keeps a limit that never lifts from looping forever.
            if self.rate_limited_since is None:
                self.rate_limited_since = now
            if now - self.rate_limited_since >= RATE_LIMIT_PATIENCE_SECONDS:
                return PollStep(
                    OUTCOME_ERROR,
                    message=f"rate limited without a break for {now - self.rate_limited_since:.0f} s; the last: "
                    f"{message}",
                    error=error,
                )
        else:
            self.consecutive_errors += 1
        if self.consecutive_errors >= self.max_consecutive_errors:
            return PollStep(
                OUTCOME_ERROR,
                message=f"{self.consecutive_errors} consecutive transient errors; the last: {message}",
                error=error,
            )
        step = PollStep(None, message=message, error=error)
        if self._timed_out(now):
            return self._timeout_step(now, step)
        delay = self.schedule.delay_after_error(error, self.consecutive_errors, rand=self._rng.random())
        return PollStep(None, delay=self._bounded(delay, now), message=message, error=error)
