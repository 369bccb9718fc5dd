"""How a Segmind watch ends: the one event a trigger (or the blocking wait) returns, and its checks.

Event schema (the payload of the single :class:`~airflow.triggers.base.TriggerEvent`)::

    {"status": "success" | "failed" | "expired" | "timeout" | "error",
     "request_id": str, "model": str, "message": str (what happened, for a human),
     "result": {...}          # success: results.result_summary()
     "error": str | None      # failed: the server's reason; expired/error: the last error
     "error_type": str | None # error: the exception class
     "retryable": bool        # error: whether a task retry can help (False for a bad key)
     "deadline": float | None # the absolute deadline (epoch seconds), when one was set
     "polls": int,            # status/result calls this watch made
     "filled_seed": int,      # a trigger's event only, when the operator filled the seed: it comes
                              # back with the event (dag.test() resumes with the event alone)
     "try_number": int}       # a trigger's: the try that deferred (deferral.py), when the task said

No event ever carries the API key: every error text is passed through
:func:`~airflow_provider_segmind.protocol.redact` with the keys the watch used.
:func:`validate_event` is the allow-list check every ``execute_complete`` starts with, and
:func:`describe_transition` the one log line per status change a watch observed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from airflow_provider_segmind.protocol.responses import JobResult
from airflow_provider_segmind.protocol.schedule import (
    OUTCOME_ERROR,
    OUTCOME_EXPIRED,
    OUTCOME_FAILED,
    OUTCOME_TIMEOUT,
    PollStep,
)
from airflow_provider_segmind.protocol.text import MAX_ERROR_TEXT, redact
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus
from airflow_provider_segmind.utils.results import job_metrics, result_summary, utc_iso

__all__ = [
    "EVENT_STATUSES",
    "EVENT_SUCCESS",
    "EVENT_TRY_NUMBER",
    "describe_transition",
    "event_filled_seed",
    "outcome_event",
    "success_event",
    "try_number_of",
    "validate_event",
]

#: The only statuses an event may have; ``execute_complete`` refuses anything else.
EVENT_SUCCESS: Final = "success"
EVENT_STATUSES: Final = frozenset({EVENT_SUCCESS, OUTCOME_FAILED, OUTCOME_EXPIRED, OUTCOME_TIMEOUT, OUTCOME_ERROR})
#: The key a trigger stamps its events with: the number of the try that deferred (see ``deferral.py``).
EVENT_TRY_NUMBER: Final = "try_number"


def try_number_of(context: Any) -> int | None:
    """The running try's number (``context["ti"].try_number``), if the context has one."""
    ti = context.get("ti") if isinstance(context, Mapping) else None
    number = getattr(ti, "try_number", None)
    return number if isinstance(number, int) and not isinstance(number, bool) else None


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
        when = utc_iso(deadline) if deadline is not None else "?"
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
    """The ``success`` event of a COMPLETED job: its :func:`~airflow_provider_segmind.utils.results.result_summary`."""
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


def event_filled_seed(event: Mapping[str, Any]) -> int | None:
    """The seed the operator filled, as its trigger carried it in the event (``None`` if it did not)."""
    seed = event.get("filled_seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else None


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
    values = job_metrics(metrics)
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
