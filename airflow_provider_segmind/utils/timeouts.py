"""When a wait for a Segmind job ends: the provider's own bound or the task's ``execution_timeout``.

Airflow 3.1 to 3.3 apply a task's ``execution_timeout`` only while a worker runs the task (a
``SIGALRM`` around ``execute``, and again, in full, around each resume: ``_run_execute_callable`` in
the Task SDK's ``task_runner.py``, "TODO: handle timeout in case of deferral"). The time a task
spends deferred is bounded only by ``defer(timeout=...)`` (the task instance's ``trigger_timeout``,
enforced by the scheduler's ``check_trigger_timeouts``, which fails the task with a bare "Trigger
timeout"); the Execution API drops ``execution_timeout`` there ("TODO: HANDLE execution timeout
later"). Airflow 2 folded it in from the try's start, and so do the official providers (dbt Cloud
passes ``timeout=self.execution_timeout`` to ``defer``).

So every wait here ends at the **earlier** of two deadlines:

- its own bound: an operator's ``job_timeout`` from the start of the wait, a sensor's ``timeout``;
- the task's ``execution_timeout`` counted from the try's start (``context["ti"].start_date``,
  which Airflow keeps across a deferral), so what the try already spent (rendering, the submit,
  a history search) counts against it.

Which one set the deadline travels with the wait (the trigger's ``deadline_cause``, copied into its
``timeout`` event), so the task's error names it. A blocking wait ends :data:`WORKER_MARGIN` seconds
(at most a tenth of ``execution_timeout``) before the execution deadline, so the provider's message
comes before Airflow's ``SIGALRM``. A deferral with an ``execution_timeout`` also passes Airflow's
own ``timeout``, :data:`DEFERRAL_GRACE` seconds after the execution deadline: a backstop that fails
the task even if no triggerer runs the trigger; :func:`is_deferral_timeout` recognises that resume,
so the error still names ``execution_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

__all__ = [
    "DEFERRAL_GRACE",
    "EXECUTION_TIMEOUT",
    "JOB_TIMEOUT",
    "SENSOR_TIMEOUT",
    "WORKER_MARGIN",
    "WaitDeadline",
    "execution_timeout_phrase",
    "is_deferral_timeout",
    "tag_timeout",
    "try_started_at",
    "wait_deadline",
]

#: The ``deadline_cause`` values: which bound ended (or would end) a wait.
EXECUTION_TIMEOUT: Final = "execution_timeout"
JOB_TIMEOUT: Final = "job_timeout"
SENSOR_TIMEOUT: Final = "timeout"

#: Seconds a blocking wait ends before the execution deadline (at most a tenth of ``execution_timeout``).
WORKER_MARGIN: Final = 5.0
#: Seconds after the execution deadline at which Airflow itself ends a deferral (the backstop).
DEFERRAL_GRACE: Final = 60.0

#: What Airflow's scheduler resumes a task with when its deferral's own timeout passed.
_TRIGGER_FAIL: Final = "__fail__"
_TRIGGER_TIMEOUT: Final = "Trigger timeout"


def try_started_at(context: Mapping[str, Any], now: float) -> float:
    """When this try started (epoch seconds): the task instance's ``start_date``, else ``now``.

    Airflow 3 keeps a try's ``start_date`` across a deferral (the resumed run gets the first start
    back). A start date missing, unreadable or in the future (clock skew) counts as ``now``.
    """
    start = getattr(context.get("ti"), "start_date", None)
    if not isinstance(start, datetime):
        return now
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return min(start.timestamp(), now)


@dataclass(frozen=True)
class WaitDeadline:
    """Where one wait ends (:func:`wait_deadline`).

    :param at: the deadline, epoch seconds (may already have passed).
    :param cause: :data:`EXECUTION_TIMEOUT` or the wait's own bound (:data:`JOB_TIMEOUT`, :data:`SENSOR_TIMEOUT`).
    :param execution_deadline: the try's start plus ``execution_timeout``, if the task has one.
    :param started_at: the try's start, epoch seconds.
    """

    at: float
    cause: str
    execution_deadline: float | None
    started_at: float

    def defer_timeout(self, now: float) -> timedelta | None:
        """Airflow's own deferral timeout: the execution deadline plus :data:`DEFERRAL_GRACE` (``None`` without one)."""
        if self.execution_deadline is None:
            return None
        return timedelta(seconds=max(0.0, self.execution_deadline - now) + DEFERRAL_GRACE)


def wait_deadline(
    own_at: float,
    own_cause: str,
    execution_timeout: timedelta | None,
    context: Mapping[str, Any],
    *,
    blocking: bool,
    now: float | None = None,
) -> WaitDeadline:
    """The earlier of the wait's own deadline (``own_at``) and the try's execution deadline.

    ``blocking``: the wait runs on the worker, under Airflow's ``SIGALRM``: it ends
    :data:`WORKER_MARGIN` seconds (at most a tenth of ``execution_timeout``) before the execution
    deadline, so the provider's own timeout, with its message, comes first. A tie goes to
    ``execution_timeout``.
    """
    now = time.time() if now is None else now
    started = try_started_at(context, now)
    seconds = execution_timeout.total_seconds() if isinstance(execution_timeout, timedelta) else None
    if seconds is None:
        return WaitDeadline(own_at, own_cause, None, started)
    execution_deadline = started + seconds
    ends = execution_deadline - (min(WORKER_MARGIN, seconds / 10) if blocking else 0.0)
    if ends <= own_at:
        return WaitDeadline(ends, EXECUTION_TIMEOUT, execution_deadline, started)
    return WaitDeadline(own_at, own_cause, execution_deadline, started)


def execution_timeout_phrase(execution_timeout: timedelta | None, own: str, own_seconds: float) -> str:
    """How an error names the execution deadline: ``the task's execution_timeout=600 s, counted from ...``."""
    seconds = execution_timeout.total_seconds() if isinstance(execution_timeout, timedelta) else None
    named = f"execution_timeout={seconds:g} s" if seconds is not None else "execution_timeout"
    return f"the task's {named}, counted from the try's start, ran out before {own}={own_seconds:g} s"


def tag_timeout(event: dict[str, Any], cause: str | None) -> dict[str, Any]:
    """A wait's event with ``deadline_cause`` added when it is a ``timeout`` (other events as they are)."""
    if cause and event.get("status") == "timeout":
        return {**event, "deadline_cause": cause}
    return event


def is_deferral_timeout(next_method: str, next_kwargs: Mapping[str, Any] | None) -> bool:
    """Whether Airflow resumes a task because its deferral's own timeout passed (the scheduler's "Trigger timeout")."""
    if next_method != _TRIGGER_FAIL:
        return False
    error = (next_kwargs or {}).get("error")
    return str(getattr(error, "value", error)) == _TRIGGER_TIMEOUT
