"""SegmindJobTrigger: wait for a Segmind v2 job in the triggerer, plus the pieces its callers share.

The trigger is only a polling loop, as in the official dbt Cloud provider: the hook owns all I/O,
:class:`~airflow_provider_segmind.protocol.PollTracker` owns every decision (when to call, what an
answer or an error means), and this module turns the outcome into one event. The blocking twin of
the loop, :func:`wait_for_job`, lives here too, next to the async one, so an operator that does not
defer polls on the same schedule and ends with the same event.

Also here, because the trigger, the operators and the sensor all need them:

- :func:`result_summary`: the small JSON-safe dict a task returns (and pushes to XCom);
- :func:`validate_event`: the allow-list check every ``execute_complete`` starts with.

Event schema (the payload of the single :class:`TriggerEvent`)::

    {"status": "success" | "failed" | "expired" | "timeout" | "error",
     "request_id": str, "model": str, "message": str (what happened, for a human),
     "result": {...}          # success: result_summary()
     "error": str | None      # failed: the server's reason; expired/error: the last error
     "error_type": str | None # error: the exception class
     "retryable": bool        # error: whether a task retry can help (False for a bad key)
     "deadline": float | None # the absolute deadline (epoch seconds), when one was set
     "polls": int}            # status/result calls this trigger made

No event ever carries the API key: the key lives only in the hook's private settings, and every
error text is passed through :func:`~airflow_provider_segmind.protocol.redact` with the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_segmind.protocol import (
    MAX_ERROR_TEXT,
    OUTCOME_COMPLETED,
    OUTCOME_ERROR,
    OUTCOME_EXPIRED,
    OUTCOME_FAILED,
    OUTCOME_TIMEOUT,
    RESULT_RETENTION_SECONDS,
    JobResult,
    PollSchedule,
    PollStep,
    PollTracker,
    RetryPolicy,
    SegmindJobStatus,
    parse_int,
    redact,
)
from airflow_provider_segmind.protocol.learning import LEARNED_RUNTIMES

if TYPE_CHECKING:
    from logging import Logger

__all__ = [
    "EVENT_STATUSES",
    "SegmindJobTrigger",
    "result_summary",
    "summarize_params",
    "validate_event",
    "wait_for_job",
]

#: The only statuses an event may have; ``execute_complete`` refuses anything else.
EVENT_SUCCESS: Final = "success"
EVENT_STATUSES: Final = frozenset({EVENT_SUCCESS, OUTCOME_FAILED, OUTCOME_EXPIRED, OUTCOME_TIMEOUT, OUTCOME_ERROR})
DEFAULT_CONN_ID: Final = "segmind_default"
DEFAULT_MAX_CONSECUTIVE_ERRORS: Final = 10
#: One HTTP attempt per call: the tracker does the waiting, so the sync and async loops agree.
SINGLE_ATTEMPT: Final = RetryPolicy(max_attempts=1)

# ---------------------------------------------------------------------------------------------
# The result summary (what a task returns; must stay well under XCom's comfortable 48 KB)
# ---------------------------------------------------------------------------------------------

#: Parameter names that look like credentials are masked in summaries.
_SECRET_NAME_PARTS: Final = ("key", "token", "secret", "password", "passwd", "authorization", "credential", "cookie")
#: Longest string parameter kept whole (SD3 prompts go up to 10,000 characters); longer ones are
#: inline data (a base64 input image) and are replaced by a note.
_MAX_PARAM_TEXT: Final = 10_000
_MAX_URL: Final = 4_096
_MAX_IMAGES: Final = 32
#: A summary above this is shrunk further (prompts clipped): XCom rows should stay small.
_SUMMARY_BUDGET_BYTES: Final = 40_000
_METRIC_NAMES: Final = ("queue_time", "inference_time", "total_time", "cost", "remaining_credits")


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def _plain(value: Any, *, depth: int = 0, text_limit: int = _MAX_PARAM_TEXT) -> Any:
    """A JSON-safe, bounded copy of a parameter value (inline data replaced by a note)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        if len(value) > text_limit:
            return f"<omitted: {len(value):,} characters of inline data>"
        return redact(value)
    if depth >= 4:
        return "<omitted: nested too deep>"
    if isinstance(value, Mapping):
        return {str(k): _masked(str(k), v, depth=depth + 1, text_limit=text_limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v, depth=depth + 1, text_limit=text_limit) for v in value[:64]]
        return items + ([f"<omitted: {len(value) - 64} more items>"] if len(value) > 64 else [])
    return redact(str(value))[:200]


def _masked(name: str, value: Any, *, depth: int, text_limit: int) -> Any:
    if any(part in name.lower() for part in _SECRET_NAME_PARTS) and value not in (None, ""):
        return "***"
    return _plain(value, depth=depth, text_limit=text_limit)


def summarize_params(params: Mapping[str, Any] | None, *, text_limit: int = _MAX_PARAM_TEXT) -> dict[str, Any]:
    """The request's parameters as they may appear in XCom: JSON-safe, no secrets, no inline data.

    Credential-looking names are masked, key-shaped strings are redacted, and long strings (a
    base64 input image) are replaced by a note with their length.
    """
    if not params:
        return {}
    return {str(k): _masked(str(k), v, depth=1, text_limit=text_limit) for k, v in params.items()}


def _image_entry(image: Mapping[str, Any]) -> dict[str, Any] | None:
    url = image.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > _MAX_URL:
        return None
    entry: dict[str, Any] = {"url": url}
    for name in ("content_type", "file_name"):
        value = image.get(name)
        entry[name] = value[:200] if isinstance(value, str) else None
    # Numeric strings are parsed, not dropped (segmind-api.md, "Added 2026-11-30").
    entry["file_size"] = parse_int(image.get("file_size"))
    seed = parse_int(image.get("seed"))
    if seed is not None:
        entry["seed"] = seed
    return entry


def _metrics(*sources: Mapping[str, Any] | None) -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for source in sources:
        for name in _METRIC_NAMES:
            number = _number((source or {}).get(name))
            if number is not None:
                out[name] = number
    return out


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def result_summary(
    result: JobResult,
    *,
    model: str,
    status_metrics: Mapping[str, Any] | None = None,
    submitted_at: float | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The small, JSON-safe description of a COMPLETED job that a task returns (and XCom stores).

    It holds ids, URLs and numbers, never image bytes. When the model returned the image inline
    (``base64: true``) the summary says ``"output_inline": true`` and carries no data: the result
    stays retrievable by ``request_id`` until ``retrievable_until`` (1 hour after submission), and
    a transfer operator re-fetches it through the hook to write it to storage.
    """
    images = [entry for entry in (_image_entry(i) for i in result.images[:_MAX_IMAGES]) if entry]
    urls = [u for u in result.output_urls if len(u) <= _MAX_URL][:_MAX_IMAGES]
    summary: dict[str, Any] = {
        "request_id": result.request_id,
        "model": model,
        "status": SegmindJobStatus.COMPLETED.value,
        "output_url": urls[0] if urls else None,
        "output_urls": urls,
        "output_inline": result.base64_image is not None,
        "images": images,
        "seed": result.seed,
        "metrics": _metrics(status_metrics, result.metrics),
        "retrievable_until": _iso(submitted_at + RESULT_RETENTION_SECONDS) if submitted_at else None,
        "params": summarize_params(params),
    }
    return fit_summary(summary)


def fit_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Keep a summary under the XCom budget: clip parameter strings if it is still too big."""
    if len(json.dumps(summary)) <= _SUMMARY_BUDGET_BYTES:
        return summary
    shrunk = dict(summary)
    shrunk["params"] = summarize_params(summary.get("params"), text_limit=500)
    shrunk["images"] = summary.get("images", [])[:4]
    shrunk["output_urls"] = summary.get("output_urls", [])[:4]
    shrunk["truncated"] = True
    return shrunk


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def _event(
    status: str,
    *,
    request_id: str,
    model: str,
    message: str,
    deadline: float | None,
    polls: int,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "status": status,
        "request_id": request_id,
        "model": model,
        "message": message,
        "deadline": deadline,
        "polls": polls,
        **extra,
    }


def outcome_event(
    step: PollStep,
    *,
    request_id: str,
    model: str,
    deadline: float | None,
    polls: int,
    secrets: Iterable[str | None] = (),
) -> dict[str, Any]:
    """The terminal event for a non-success :class:`PollStep` outcome (failed/expired/timeout/error)."""
    text = redact(step.message, secrets)[:MAX_ERROR_TEXT]
    common: dict[str, Any] = {"request_id": request_id, "model": model, "deadline": deadline, "polls": polls}
    if step.outcome == OUTCOME_FAILED:
        return _event(
            OUTCOME_FAILED,
            message=f"Segmind job {request_id} FAILED: {text or 'no reason given'}",
            error=text or None,
            **common,
        )
    if step.outcome == OUTCOME_EXPIRED:
        return _event(
            OUTCOME_EXPIRED,
            message=f"Segmind request {request_id} is gone (HTTP 404): it is unknown or its 1 hour retention "
            "passed before the job was seen finished",
            error=text or None,
            **common,
        )
    if step.outcome == OUTCOME_TIMEOUT:
        when = _iso(deadline) if deadline is not None else "?"
        return _event(
            OUTCOME_TIMEOUT,
            message=f"Segmind request {request_id} was still not finished at its deadline {when}",
            error=None,
            **common,
        )
    error = step.error
    return _event(
        OUTCOME_ERROR,
        message=f"Gave up watching Segmind request {request_id}: {text}",
        error=text,
        error_type=type(error).__name__ if error is not None else None,
        retryable=bool(getattr(error, "task_retry_helps", True)),
        **common,
    )


def success_event(
    result: JobResult,
    *,
    model: str,
    status_metrics: Mapping[str, Any] | None,
    submitted_at: float | None,
    deadline: float | None,
    polls: int,
) -> dict[str, Any]:
    summary = result_summary(result, model=model, status_metrics=status_metrics, submitted_at=submitted_at)
    return _event(
        EVENT_SUCCESS,
        request_id=result.request_id,
        model=model,
        message=f"Segmind job {result.request_id} COMPLETED",
        deadline=deadline,
        polls=polls,
        result=summary,
    )


def validate_event(event: Any) -> dict[str, Any]:
    """Check a trigger event against the allow-list; raise ``ValueError`` saying what is wrong.

    ``None`` or an empty or unknown event means something other than this trigger resumed the
    task (or a bug): it must fail loudly, never pass as success (Airflow #69506, #34017).
    """
    if not isinstance(event, Mapping) or not event:
        raise ValueError(f"expected a Segmind trigger event (a non-empty dict), got {event!r:.200}")
    status = event.get("status")
    if status not in EVENT_STATUSES:
        raise ValueError(f"unknown Segmind trigger event status {status!r}; expected one of {sorted(EVENT_STATUSES)}")
    if not isinstance(event.get("request_id"), str) or not event["request_id"]:
        raise ValueError("the Segmind trigger event has no request_id")
    if status == EVENT_SUCCESS and not isinstance(event.get("result"), Mapping):
        raise ValueError("the Segmind trigger success event has no result")
    return dict(event)


def describe_transition(
    request_id: str,
    old: SegmindJobStatus | None,
    new: SegmindJobStatus,
    metrics: Mapping[str, Any] | None = None,
) -> str:
    """One log line per status change this watcher observed, e.g. ``PROCESSING -> COMPLETED (queue 0.1 s, ...)``.

    ``old`` is ``None`` for the first status a watcher sees: that line says ``first seen PROCESSING``,
    never a transition from a status it did not see (a trigger taken over by another triggerer, or
    a retry re-attaching, may first see the job long after it left QUEUED).
    """
    parts = []
    values = _metrics(metrics)
    for name, label, unit in (
        ("queue_time", "queue", " s"),
        ("inference_time", "inference", " s"),
        ("cost", "cost", " credits"),
        ("remaining_credits", "remaining", " credits"),
    ):
        if name in values:
            parts.append(f"{label} {values[name]:g}{unit}")
    details = f" ({', '.join(parts)})" if parts else ""
    if old is None:
        return f"Segmind request {request_id}: first seen {new.value}{details}"
    return f"Segmind request {request_id}: {old.value} -> {new.value}{details}"


# ---------------------------------------------------------------------------------------------
# The two loops: async (trigger) and blocking (non-deferrable operator)
# ---------------------------------------------------------------------------------------------


def _new_tracker(
    schedule: PollSchedule,
    *,
    submitted_at: float | None,
    deadline: float | None,
    max_consecutive_errors: int,
    now: float,
    model: str = "",
) -> PollTracker:
    return PollTracker(
        LEARNED_RUNTIMES.schedule_for(model, schedule),  # placed where this model's jobs finished
        started_at=submitted_at if submitted_at is not None else now,
        submitted=submitted_at is not None,
        deadline=deadline,
        max_consecutive_errors=max_consecutive_errors,
        # No assumed status: each watcher logs only what it saw. Even right after a submit the
        # first poll may find the job PROCESSING, and a trigger resumed by another triggerer
        # knows nothing of the statuses its predecessor saw.
    )


#: Set once :func:`_import_transport` has finished in this process: later triggers skip the thread hop.
_transport_imported = False


def _import_transport() -> None:
    """Import the hook's modules (sync HTTP stack, aiohttp); cheap once they are loaded."""
    global _transport_imported
    import aiohttp  # noqa: F401

    import airflow_provider_segmind.hooks.segmind  # noqa: F401

    _transport_imported = True


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
    schedule = schedule or PollSchedule.for_model(model)
    tracker = _new_tracker(
        schedule,
        submitted_at=submitted_at,
        deadline=deadline,
        max_consecutive_errors=max_consecutive_errors,
        now=clock(),
        model=model,
    )
    secrets = [hook.get_settings().api_key]
    common: dict[str, Any] = {"request_id": request_id, "model": model, "deadline": deadline}
    refused: set[str] = set()  # keys answered 401/403 during this wait

    def rotated() -> bool:
        """On 401/403, read the connection again (no cache): go on only with a key not refused yet."""
        refused.add(hook.get_settings().api_key)
        new_key: str | None = None
        reload_error: Exception | None = None
        try:
            new_key = hook.reload_settings().api_key
            secrets.append(new_key)
        except Exception as error:
            reload_error = error
        return _rotation_outcome(
            new_key, refused, log=log, request_id=request_id, conn_id=conn_id, reload_error=reload_error
        )

    try:
        delay = tracker.first_delay(clock())
        completed: PollStep | None = None  # the COMPLETED status step, once seen
        while True:
            if delay > 0:
                sleep(delay)
            if completed is None:
                try:
                    step = tracker.on_status(hook.get_status(request_id), clock())
                except Exception as err:
                    step = tracker.on_error(err, clock())
                    if _key_refused(err):
                        if rotated():
                            delay = 0.0
                            continue
                        step = _still_refused(err, conn_id)
                _log_step(log, request_id, step)
                if step.outcome == OUTCOME_COMPLETED:
                    completed = step
            if completed is not None:
                # Once COMPLETED, only the result call is retried (see PollTracker).
                try:
                    result = hook.get_result(request_id)
                except Exception as err:
                    step = tracker.on_error(err, clock())
                    if _key_refused(err):
                        if rotated():
                            delay = 0.0
                            continue
                        step = _still_refused(err, conn_id)
                    _log_step(log, request_id, step)
                else:
                    _log_completed(log, request_id, completed, result)
                    LEARNED_RUNTIMES.observe(model, _status_metrics(completed), result.metrics)
                    return success_event(
                        result,
                        model=model,
                        status_metrics=_status_metrics(completed),
                        submitted_at=submitted_at,
                        deadline=deadline,
                        polls=tracker.polls + 1,
                    )
            if step.outcome is not None and step.outcome != OUTCOME_COMPLETED:
                return outcome_event(step, polls=tracker.polls, secrets=secrets, **common)
            delay = step.delay
    finally:
        hook.close()


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


class SegmindJobTrigger(BaseTrigger):
    """Poll a Segmind v2 request until it ends; emit exactly one event (see the module docstring).

    Serialized kwargs are plain values only (they are stored in the metadata database and shown
    by ``repr`` and the REST API): the connection id, the request id, the model, the poll schedule
    as floats, the absolute deadline and the submit time, both epoch seconds. Never the key: the
    trigger resolves the connection itself, asynchronously, in the triggerer.

    Kwargs are a persisted schema. Every argument added after the first release has a default, and
    unknown arguments (written by a newer provider) are ignored, so a triggerer running any version
    can load them. Rebuilding from :meth:`serialize` yields an equal trigger that keeps the original
    deadline, which is how a triggerer restart resumes the same job.

    Polling shares one aiohttp session per event loop between all Segmind triggers (the hook's
    :meth:`~airflow_provider_segmind.hooks.segmind.SegmindHook.shared_session`), released on every
    path, cancellation included. The trigger only reads (GET), so two triggerers running it at once
    (HA) is harmless.

    :param request_id: the v2 request to watch.
    :param conn_id: the ``segmind`` connection.
    :param model: the model slug, for the schedule's defaults and the result summary.
    :param deadline: absolute time (epoch seconds) after which a still-running job ends in a
        ``timeout`` event. ``None``: wait until the request ends or expires (1 hour retention).
    :param submitted_at: when the job was submitted (epoch seconds), if known: the schedule's
        first wait counts from it, and the summary says until when the result can be fetched.
    :param poll_schedule: :meth:`PollSchedule.to_dict` output; ``None`` means
        ``PollSchedule.for_model(model)``.
    :param max_consecutive_errors: transient errors in a row (429, 5xx, connection) tolerated
        before giving up with an ``error`` event.
    """

    def __init__(
        self,
        *,
        request_id: str,
        conn_id: str = DEFAULT_CONN_ID,
        model: str = "",
        deadline: float | None = None,
        submitted_at: float | None = None,
        poll_schedule: Mapping[str, float] | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        **unknown: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.request_id = request_id
        self.conn_id = conn_id
        self.model = model or ""
        self.deadline = float(deadline) if deadline is not None else None
        self.submitted_at = float(submitted_at) if submitted_at is not None else None
        self.schedule = (
            PollSchedule.from_dict(poll_schedule) if poll_schedule is not None else PollSchedule.for_model(self.model)
        )
        self.max_consecutive_errors = int(max_consecutive_errors)
        # Kwargs from a newer provider version: ignored (logged when the trigger runs).
        self._unknown_kwargs = sorted(unknown)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "conn_id": self.conn_id,
                "model": self.model,
                "deadline": self.deadline,
                "submitted_at": self.submitted_at,
                "poll_schedule": self.schedule.to_dict(),
                "max_consecutive_errors": self.max_consecutive_errors,
            },
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SegmindJobTrigger):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        classpath, kwargs = self.serialize()
        return hash((classpath, json.dumps(kwargs, sort_keys=True)))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll, then yield one event. The HTTP session is released before the event is yielded."""
        event = await self._watch()
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def _watch(self) -> dict[str, Any]:
        # The first trigger in a triggerer process would otherwise import requests, tenacity and
        # aiohttp (~1 s on a busy host) inside the event loop, stalling every other trigger. Once
        # an import has completed, the hop to a thread (~0.2 ms of CPU per trigger) buys nothing.
        # (The flag is set only after the imports finish, so a trigger that starts while another
        # one's import is still running in a thread hops too, instead of waiting on the import
        # lock inside the loop.)
        if not _transport_imported:
            await asyncio.to_thread(_import_transport)
        from airflow_provider_segmind.hooks.segmind import SegmindHook

        if self._unknown_kwargs:
            self.log.warning("Ignoring trigger kwargs from a newer provider version: %s", self._unknown_kwargs)
        hook = SegmindHook(self.conn_id, retry_policy=SINGLE_ATTEMPT)
        tracker = _new_tracker(
            self.schedule,
            submitted_at=self.submitted_at,
            deadline=self.deadline,
            max_consecutive_errors=self.max_consecutive_errors,
            now=time.time(),
            model=self.model,
        )
        common: dict[str, Any] = {"request_id": self.request_id, "model": self.model, "deadline": self.deadline}
        secrets: list[str | None] = []
        refused: set[str] = set()  # keys answered 401/403 during this watch

        async def rotated() -> bool:
            """On 401/403, read the connection again (no cache): go on only with a key not refused yet.

            The key may have been rotated while the job ran (the hook's settings and the loop's
            cache hold the old one); only a key that is refused again, or unchanged, ends the watch.
            """
            refused.add((await hook.aget_settings()).api_key)
            new_key: str | None = None
            reload_error: Exception | None = None
            try:
                new_key = (await hook.areload_settings()).api_key
                secrets.append(new_key)
            except Exception as error:
                reload_error = error
            return _rotation_outcome(
                new_key,
                refused,
                log=self.log,
                request_id=self.request_id,
                conn_id=self.conn_id,
                reload_error=reload_error,
            )

        try:
            secrets.append((await hook.aget_settings()).api_key)
            async with hook.shared_session() as session:
                delay = tracker.first_delay(time.time())
                completed: PollStep | None = None  # the COMPLETED status step, once seen
                while True:
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if completed is None:
                        try:
                            answer = await hook.aget_status(self.request_id, session=session, retry=False)
                        except asyncio.CancelledError:
                            raise
                        except Exception as err:
                            step = tracker.on_error(err, time.time())
                            if _key_refused(err):
                                if await rotated():
                                    delay = 0.0
                                    continue
                                step = _still_refused(err, self.conn_id)
                        else:
                            step = tracker.on_status(answer, time.time())
                        _log_step(self.log, self.request_id, step)
                        if step.outcome == OUTCOME_COMPLETED:
                            completed = step
                    if completed is not None:
                        # Once COMPLETED, only the result call is retried (see PollTracker).
                        try:
                            result = await hook.aget_result(self.request_id, session=session, retry=False)
                        except asyncio.CancelledError:
                            raise
                        except Exception as err:
                            step = tracker.on_error(err, time.time())
                            if _key_refused(err):
                                if await rotated():
                                    delay = 0.0
                                    continue
                                step = _still_refused(err, self.conn_id)
                            _log_step(self.log, self.request_id, step)
                        else:
                            _log_completed(self.log, self.request_id, completed, result)
                            LEARNED_RUNTIMES.observe(self.model, _status_metrics(completed), result.metrics)
                            return success_event(
                                result,
                                model=self.model,
                                status_metrics=_status_metrics(completed),
                                submitted_at=self.submitted_at,
                                deadline=self.deadline,
                                polls=tracker.polls + 1,
                            )
                    if step.outcome is not None and step.outcome != OUTCOME_COMPLETED:
                        return outcome_event(step, polls=tracker.polls, secrets=secrets, **common)
                    delay = step.delay
        except asyncio.CancelledError:
            self.log.info(
                "Stopped watching Segmind request %s (trigger cancelled); the job itself keeps running "
                "and its result stays retrievable for 1 hour after submission.",
                self.request_id,
            )
            raise
        except Exception as err:
            # Setting the watch up failed (e.g. the connection is missing or has no key).
            step = tracker.on_error(err, time.time())
            if step.outcome is None:
                step = PollStep(OUTCOME_ERROR, message=step.message, error=err)
            return outcome_event(step, polls=tracker.polls, secrets=secrets, **common)

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed the task. Segmind has no cancel endpoint: only say so.

        The job runs to its end and is billed; its result stays retrievable by request id for
        1 hour after submission. Nothing remote is attempted.
        """
        self.log.warning(
            "Task killed while Segmind request %s (model %s) may still be running: Segmind has no cancel "
            "endpoint, so it will finish and be billed; its result stays retrievable by request id for "
            "1 hour after submission.",
            self.request_id,
            self.model or "?",
        )
