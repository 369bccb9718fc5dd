"""Failures by cause: a listener records why a Segmind task failed; the page counts those records.

Why a listener and an XCom: a failed task's exception lives only in its log, which the api-server
cannot query by cause. Airflow calls ``on_task_instance_failed`` in the task's own process with the
exception (``airflow.sdk.execution_time.task_runner.finalize``), so the cause is classified there
and written as the XCom :data:`XCOM_FAILURE` of that task instance: Airflow's own database, read
by the page through the auth manager's DAG filter. Airflow clears a task instance's XComs when its
next try starts, so what remains are the failures no retry has replaced (a try that failed and a
retry that succeeded leaves nothing; a task that is still retrying shows its last failed try).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from airflow.listeners import hookimpl

#: The XCom key of a failed Segmind task's cause.
XCOM_FAILURE: Final = "segmind_failure"
_PACKAGE: Final = "airflow_provider_segmind."

#: Error class name -> cause, most specific first (the first class of the error's chain that is listed wins).
_CAUSES: Final = (
    ("SegmindContentBlockedError", "content_blocked"),
    ("SegmindInvalidInputJobError", "invalid_input"),
    ("SegmindJobFailedError", "job_failed"),
    ("SegmindInsufficientCreditsError", "insufficient_credits"),
    ("SegmindInvalidParametersError", "invalid_parameters"),
    ("SegmindRateLimitError", "rate_limited"),
    ("SegmindAuthenticationError", "authentication"),
    ("SegmindForbiddenError", "authentication"),
    ("SegmindModelRetiredError", "model_not_found"),
    ("SegmindModelNotFoundError", "model_not_found"),
    ("SegmindRequestNotFoundError", "request_expired"),
    ("SegmindServerError", "server_error"),
    ("SegmindOutputRefusedError", "output_refused"),
    ("SegmindOutputDownloadError", "output_download"),
    ("S3ObjectConflictError", "s3_conflict"),
    ("S3WriteError", "s3_write"),
    ("SegmindTransportError", "transport"),
    ("AirflowTaskTimeout", "timeout"),
    ("SegmindError", "segmind_error"),
)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the errors it was raised from (``AirflowFailException`` wraps the typed one)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def failure_cause(error: BaseException | str | None) -> str:
    """A short cause for the page's "failures by cause": from the error's classes, else its message.

    ``timeout`` also covers a job or sensor wait that ended at its bound (the operators raise a
    plain ``AirflowException`` naming ``job_timeout``); ``credit_guard`` the ``min_credits`` floor.
    """
    if error is None:
        return "unknown"
    if isinstance(error, str):
        return "timeout" if "timeout" in error.lower() else "other"
    names = [{klass.__name__ for klass in type(link).__mro__} for link in _chain(error)]
    for class_name, cause in _CAUSES:
        if any(class_name in classes for classes in names):
            return cause
    text = str(error)
    if "credit guard" in text:
        return "credit_guard"
    if "job_timeout" in text or "timeout=" in text:
        return "timeout"
    return type(error).__name__


def _is_segmind_task(task_instance: Any) -> bool:
    task = getattr(task_instance, "task", None)
    return task is not None and type(task).__module__.startswith(_PACKAGE)


class FailureListener:
    """Records the cause of a failed try of any of this provider's operators (see the module docstring)."""

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        # Only in the task's own process (a RuntimeTaskInstance with its operator and xcom_push); the
        # scheduler's or api-server's calls (a task marked failed by hand, a lost worker) have no error.
        if not _is_segmind_task(task_instance) or not callable(getattr(task_instance, "xcom_push", None)):
            return
        task = task_instance.task
        record = {
            "cause": failure_cause(error),
            "error": type(error).__name__ if isinstance(error, BaseException) else None,
            "operator": type(task).__name__,
            "model": getattr(task, "model", None) if isinstance(getattr(task, "model", None), str) else None,
            "try_number": getattr(task_instance, "try_number", None),
        }
        try:
            task_instance.xcom_push(key=XCOM_FAILURE, value=record)
        except Exception:
            task_instance.log.warning("Could not record the failure's cause for the Segmind page.", exc_info=True)


#: The instance Airflow's plugin manager registers (listeners are modules or instances).
failure_listener: Final = FailureListener()


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed Segmind task instance, as the page lists it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    cause: str
    model: str | None
    day: str


def failures_from_rows(rows: Iterable[tuple[str, str, str, int, Any, datetime]]) -> list[Failure]:
    """Failures from ``(dag_id, run_id, task_id, map_index, value, timestamp)`` rows of the XCom table."""
    failures = []
    for dag_id, run_id, task_id, map_index, value, timestamp in rows:
        if isinstance(value, str):  # stored as a JSON string by some Airflow versions
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        record = value if isinstance(value, dict) else {}
        failures.append(
            Failure(
                dag_id=dag_id,
                run_id=run_id,
                task_id=task_id,
                map_index=map_index,
                cause=str(record.get("cause") or "unknown"),
                model=record.get("model") if isinstance(record.get("model"), str) else None,
                day=timestamp.date().isoformat(),
            )
        )
    return failures


def recorded_failures(dag_ids: set[str], since: datetime) -> list[Failure]:
    """The failure records of ``dag_ids`` since ``since``, from Airflow's metadata database (api-server side)."""
    if not dag_ids:
        return []
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(
        XComModel.dag_id,
        XComModel.run_id,
        XComModel.task_id,
        XComModel.map_index,
        XComModel.value,
        XComModel.timestamp,
    ).where(XComModel.key == XCOM_FAILURE, XComModel.dag_id.in_(sorted(dag_ids)), XComModel.timestamp >= since)
    with create_session() as session:
        rows = [
            (dag_id, run_id, task_id, map_index, XComModel.deserialize_value(_Row(value)), timestamp)
            for dag_id, run_id, task_id, map_index, value, timestamp in session.execute(query)
        ]
    return failures_from_rows(rows)


@dataclass
class _Row:
    """What ``XComModel.deserialize_value`` reads from a result row: its ``value``."""

    value: Any
