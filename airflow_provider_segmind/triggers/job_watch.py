"""The one polling loop: watch a Segmind job until it ends, for the trigger and the blocking wait alike.

The loop is written once, without I/O, as a generator (:meth:`JobWatch.steps`): it yields what to
do next (sleep some seconds, call the status or result endpoint, read or re-read the connection's
key) and is sent back the answer, or thrown the error, and it returns the final event. Two thin
drivers run it: :func:`run_blocking` on a worker (:func:`wait_for_job`, for operators with
``deferrable=False``) and :func:`run_async` in the triggerer
(:class:`~airflow_provider_segmind.triggers.segmind.SegmindJobTrigger`). So a rule changed here
holds for deferrable and blocking tasks alike: same schedule, same key-rotation handling, same log
lines, same events.

Every decision about an answer or an error (when to call next, what it means) belongs to the pure
:class:`~airflow_provider_segmind.protocol.PollTracker`; this module adds what a watch does around
it: the COMPLETED -> result fetch, the re-read of a rotated key on 401/403, logging and the event.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from airflow_provider_segmind.protocol.learning import LEARNED_RUNTIMES
from airflow_provider_segmind.protocol.responses import JobResult
from airflow_provider_segmind.protocol.retry import RetryPolicy
from airflow_provider_segmind.protocol.schedule import (
    OUTCOME_COMPLETED,
    OUTCOME_ERROR,
    PollSchedule,
    PollStep,
    PollTracker,
)
from airflow_provider_segmind.protocol.text import MAX_ERROR_TEXT, redact
from airflow_provider_segmind.protocol.vocabulary import DEFAULT_CONN_ID, SegmindJobStatus
from airflow_provider_segmind.triggers.events import describe_transition, outcome_event, success_event
from airflow_provider_segmind.utils import metrics

if TYPE_CHECKING:
    from collections.abc import Mapping
    from logging import Logger

    import aiohttp

    from airflow_provider_segmind.hooks.segmind import SegmindHook

__all__ = [
    "DEFAULT_MAX_CONSECUTIVE_ERRORS",
    "SINGLE_ATTEMPT",
    "AsyncCalls",
    "BlockingCalls",
    "Call",
    "JobWatch",
    "Sleep",
    "run_async",
    "run_blocking",
    "wait_for_job",
]

DEFAULT_MAX_CONSECUTIVE_ERRORS: Final = 10
#: One HTTP attempt per call: the tracker does the waiting, so the sync and async loops agree.
SINGLE_ATTEMPT: Final = RetryPolicy(max_attempts=1)


class Call(enum.Enum):
    """An I/O step the watch asks its driver for; the driver sends back the answer or throws the error."""

    STATUS = "status"  #: the job's status (a JobStatusResponse)
    RESULT = "result"  #: the job's result (a JobResult)
    KEY = "key"  #: the connection's key as the hook currently holds it (cached)
    RELOAD_KEY = "reload_key"  #: the connection's key read again, bypassing every cache


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait ``seconds`` before the next call; the driver sends back nothing."""

    seconds: float


Action: TypeAlias = Call | Sleep
#: What :meth:`JobWatch.steps` is: yields actions, is sent their answers, returns the event.
WatchSteps: TypeAlias = Generator[Action, Any, dict[str, Any]]


class JobWatch:
    """The rules of one watch of one job, without I/O (see the module docstring).

    Create it when the watch starts (the schedule counts from then, or from ``submitted_at``),
    add the key the hook resolved to :attr:`secrets`, then run :meth:`steps` with a driver.

    :param log: where transitions, transient errors and key rotations are logged (``None``: nowhere).
    :param clock: epoch seconds now (tests move it by hand).
    :param rng: the backoff jitter's source (``None``: the tracker's process-wide one).
    """

    def __init__(
        self,
        request_id: str,
        *,
        conn_id: str,
        model: str,
        schedule: PollSchedule,
        deadline: float | None,
        submitted_at: float | None,
        max_consecutive_errors: int,
        log: Logger | Any = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.request_id = request_id
        self.conn_id = conn_id
        self.model = model
        self.deadline = deadline
        self.submitted_at = submitted_at
        self.log = log
        self.clock = clock
        now = clock()
        self.tracker = PollTracker(
            LEARNED_RUNTIMES.schedule_for(model, schedule),  # placed where this model's jobs finished
            started_at=submitted_at if submitted_at is not None else now,
            submitted=submitted_at is not None,
            deadline=deadline,
            max_consecutive_errors=max_consecutive_errors,
            rng=rng,
            # No assumed status: each watcher logs only what it saw. Even right after a submit the
            # first poll may find the job PROCESSING, and a trigger resumed by another triggerer
            # knows nothing of the statuses its predecessor saw.
        )
        #: Every key this watch used: redacted from every event text.
        self.secrets: list[str | None] = []
        #: Keys answered 401/403 during this watch.
        self.refused: set[str] = set()
        #: When the status answer that showed the job COMPLETED arrived (for the detection-delay metric).
        self.completed_seen_at: float | None = None

    def steps(self) -> WatchSteps:
        """The watch itself: poll on the tracker's schedule until the job ends; return its event.

        Status calls until the job is COMPLETED, then (at once) result calls: once COMPLETED, only
        the result call is retried (see PollTracker).
        """
        tracker, clock = self.tracker, self.clock
        delay = tracker.first_delay(clock())
        completed: PollStep | None = None  # the COMPLETED status step, once seen
        while True:
            if delay > 0:
                yield Sleep(delay)
            call = Call.STATUS if completed is None else Call.RESULT
            try:
                answer = yield call
            except Exception as err:
                step = tracker.on_error(err, clock())
                if _key_refused(err):
                    if (yield from self._rotated()):
                        delay = 0.0
                        continue
                    step = _still_refused(err, self.conn_id)
            else:
                if completed is not None:
                    _log_completed(self.log, self.request_id, completed, answer)
                    LEARNED_RUNTIMES.observe(self.model, _status_metrics(completed), answer.metrics)
                    event = success_event(
                        answer,
                        model=self.model,
                        status_metrics=_status_metrics(completed),
                        submitted_at=self.submitted_at,
                        deadline=self.deadline,
                        polls=tracker.polls + 1,
                    )
                    metrics.watch_ended(event, seen_at=self.completed_seen_at, submitted_at=self.submitted_at)
                    return event
                step = tracker.on_status(answer, clock())
            _log_step(self.log, self.request_id, step)
            if step.outcome == OUTCOME_COMPLETED:
                completed, delay = step, 0.0
                self.completed_seen_at = clock()
                continue
            if step.outcome is not None:
                return self._outcome(step)
            delay = step.delay

    def _rotated(self) -> Generator[Action, Any, bool]:
        """On 401/403, read the connection again (no cache): go on only with a key not refused yet.

        The key may have been rotated while the job ran (the hook's settings and the loop's cache
        hold the old one); only a key that is refused again, or unchanged, ends the watch.
        """
        self.refused.add((yield Call.KEY))
        new_key: str | None = None
        reload_error: Exception | None = None
        try:
            new_key = yield Call.RELOAD_KEY
            self.secrets.append(new_key)
        except Exception as error:
            reload_error = error
        return _rotation_outcome(
            new_key,
            self.refused,
            log=self.log,
            request_id=self.request_id,
            conn_id=self.conn_id,
            reload_error=reload_error,
        )

    def _outcome(self, step: PollStep) -> dict[str, Any]:
        event = outcome_event(
            step,
            request_id=self.request_id,
            model=self.model,
            deadline=self.deadline,
            polls=self.tracker.polls,
            secrets=self.secrets,
        )
        metrics.watch_ended(event, seen_at=None, submitted_at=self.submitted_at)
        return event

    def gave_up(self, error: Exception) -> dict[str, Any]:
        """The ``error`` event when the watch itself failed (e.g. the connection is missing or has no key)."""
        step = self.tracker.on_error(error, self.clock())
        if step.outcome is None:
            step = PollStep(OUTCOME_ERROR, message=step.message, error=error)
        return self._outcome(step)


# ---------------------------------------------------------------------------------------------
# The two drivers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Done:
    event: dict[str, Any]


def _resume(steps: WatchSteps, answer: Any, failure: Exception | None) -> Action | _Done:
    """Hand the watch the last action's answer (or throw it the action's error): its next action, or its event."""
    try:
        return steps.send(answer) if failure is None else steps.throw(failure)
    except StopIteration as done:
        return _Done(done.value)


def run_blocking(steps: WatchSteps, perform: Callable[[Action], Any]) -> dict[str, Any]:
    """Run a watch on this thread: ``perform`` each action, hand its answer or error back; return the event."""
    try:
        action = _resume(steps, None, None)
        while not isinstance(action, _Done):
            try:
                answer, failure = perform(action), None
            except Exception as err:
                answer, failure = None, err
            action = _resume(steps, answer, failure)
        return action.event
    finally:
        steps.close()


async def run_async(steps: WatchSteps, perform: Callable[[Action], Awaitable[Any]]) -> dict[str, Any]:
    """:func:`run_blocking` for an event loop. Cancellation is not handed to the watch: it propagates."""
    try:
        action = _resume(steps, None, None)
        while not isinstance(action, _Done):
            try:
                answer, failure = await perform(action), None
            except Exception as err:
                answer, failure = None, err
            action = _resume(steps, answer, failure)
        return action.event
    finally:
        steps.close()


class BlockingCalls:
    """Performs a watch's actions with the hook's blocking methods (one HTTP attempt each)."""

    def __init__(self, hook: SegmindHook, request_id: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.hook, self.request_id, self.sleep = hook, request_id, sleep

    def __call__(self, action: Action) -> Any:
        if isinstance(action, Sleep):
            self.sleep(action.seconds)
            return None
        if action is Call.STATUS:
            return self.hook.get_status(self.request_id)
        if action is Call.RESULT:
            return self.hook.get_result(self.request_id)
        if action is Call.KEY:
            return self.hook.get_settings().api_key
        return self.hook.reload_settings().api_key


class AsyncCalls:
    """Performs a watch's actions with the hook's async methods on a shared ``aiohttp`` session."""

    def __init__(
        self,
        hook: SegmindHook,
        request_id: str,
        *,
        session: aiohttp.ClientSession,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.hook, self.request_id, self.session, self.sleep = hook, request_id, session, sleep

    async def __call__(self, action: Action) -> Any:
        if isinstance(action, Sleep):
            await self.sleep(action.seconds)
            return None
        if action is Call.STATUS:
            return await self.hook.aget_status(self.request_id, session=self.session, retry=False)
        if action is Call.RESULT:
            return await self.hook.aget_result(self.request_id, session=self.session, retry=False)
        if action is Call.KEY:
            return (await self.hook.aget_settings()).api_key
        return (await self.hook.areload_settings()).api_key


def wait_for_job(
    request_id: str,
    *,
    conn_id: str = DEFAULT_CONN_ID,
    model: str = "",
    schedule: PollSchedule | None = None,
    deadline: float | None = None,
    submitted_at: float | None = None,
    max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
    log: Logger | Any = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Block until the job ends; return the same event :class:`SegmindJobTrigger` would emit.

    For operators with ``deferrable=False``: same schedule, same tracker, same outcomes, one HTTP
    attempt per call (the tracker waits between them), on the worker.
    """
    from airflow_provider_segmind.hooks.segmind import SegmindHook

    hook = SegmindHook(conn_id, retry_policy=SINGLE_ATTEMPT)
    watch = JobWatch(
        request_id,
        conn_id=conn_id,
        model=model,
        schedule=schedule or PollSchedule.for_model(model),
        deadline=deadline,
        submitted_at=submitted_at,
        max_consecutive_errors=max_consecutive_errors,
        log=log,
        clock=clock,
    )
    watch.secrets.append(hook.get_settings().api_key)
    try:
        return run_blocking(watch.steps(), BlockingCalls(hook, request_id, sleep=sleep))
    finally:
        hook.close()


# ---------------------------------------------------------------------------------------------
# Key rotation and logging
# ---------------------------------------------------------------------------------------------


def _key_refused(error: BaseException) -> bool:
    """A 401/403 answer: the key may have been rotated (or revoked) while the job ran."""
    from airflow_provider_segmind.exceptions import SegmindAuthenticationError, SegmindForbiddenError

    return isinstance(error, (SegmindAuthenticationError, SegmindForbiddenError))


def _still_refused(error: BaseException, conn_id: str) -> PollStep:
    """The watch's end when the connection, read again, still holds a refused key (names no key)."""
    message = redact(str(error) or type(error).__name__)
    return PollStep(
        OUTCOME_ERROR,
        message=f"the key in connection {conn_id!r} is refused, also after reading the connection again. The job "
        "keeps running: put a working key of the same account in the connection and re-run the task within the "
        f"hour to fetch its result. {message}"[:MAX_ERROR_TEXT],
        error=error,
    )


def _rotation_outcome(
    new_key: str | None, refused: set[str], *, log: Any, request_id: str, conn_id: str, reload_error: Exception | None
) -> bool:
    """Whether the watch goes on with ``new_key`` (a key not refused yet); logs why, never the key."""
    if new_key is not None and new_key not in refused:
        if log is not None:
            log.warning(
                "Segmind request %s: the API key was refused (401/403); the connection %r now holds another key, "
                "continuing the watch with it.",
                request_id,
                conn_id,
            )
        return True
    if log is not None and reload_error is not None:
        log.warning(
            "Segmind request %s: the API key was refused and reading the connection %r again failed: %s",
            request_id,
            conn_id,
            redact(str(reload_error), refused),
        )
    return False


def _info_enabled(log: Any) -> bool:
    """Whether ``log`` would emit INFO: transition lines are built only then (thousands of triggers
    share the triggerer's CPU, and formatting a line nobody sees is pure waste). Loggers without
    ``isEnabledFor`` are assumed to want everything."""
    is_enabled_for = getattr(log, "isEnabledFor", None)
    return True if is_enabled_for is None else bool(is_enabled_for(logging.INFO))


def _log_step(log: Any, request_id: str, step: PollStep) -> None:
    if log is None:
        return
    if step.transition and step.transition[1] is not SegmindJobStatus.COMPLETED and _info_enabled(log):
        log.info("%s", describe_transition(request_id, *step.transition, metrics=_status_metrics(step)))
    if step.outcome is None and step.error is not None:
        log.warning(
            "Segmind request %s: transient error, polling again in %.1f s: %s", request_id, step.delay, step.message
        )


def _status_metrics(step: PollStep) -> Mapping[str, Any] | None:
    return step.status.metrics if step.status is not None else None


def _log_completed(log: Any, request_id: str, step: PollStep, result: JobResult) -> None:
    if log is not None and _info_enabled(log):
        old = step.transition[0] if step.transition else None  # None: COMPLETED is the first status seen
        metrics = {**(_status_metrics(step) or {}), **result.metrics}
        log.info("%s", describe_transition(request_id, old, SegmindJobStatus.COMPLETED, metrics=metrics))
