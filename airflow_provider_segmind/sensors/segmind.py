"""SegmindJobSensor: wait for a Segmind v2 request that something else submitted."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_segmind.exceptions import SegmindError, SegmindJobFailedError, SegmindRequestNotFoundError
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import DEFAULT_CONN_ID, SegmindJobStatus
from airflow_provider_segmind.triggers.events import validate_event
from airflow_provider_segmind.triggers.job_watch import DEFAULT_MAX_CONSECUTIVE_ERRORS, SINGLE_ATTEMPT
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger, ends_from_trigger, task_trigger_kwargs
from airflow_provider_segmind.utils.deferral import FreshRetryResume
from airflow_provider_segmind.utils.results import result_summary
from airflow_provider_segmind.utils.timeouts import (
    EXECUTION_TIMEOUT,
    SENSOR_TIMEOUT,
    execution_timeout_phrase,
    is_deferral_timeout,
    wait_deadline,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["SegmindJobSensor"]

#: The end of an execution_timeout error: what became of the job, and what a retry does.
_KEEPS_RUNNING = (
    "The job keeps running (Segmind cannot cancel) and its result stays retrievable for 1 hour after "
    "submission; a retry of this sensor waits for the same request."
)


class SegmindJobSensor(FreshRetryResume, BaseSensorOperator):
    """Wait for a Segmind v2 request (by id) in ``poke``, ``reschedule`` or deferrable mode.

    Succeeds when the request is COMPLETED and returns the same JSON-safe summary as the operators
    (pushed to XCom). A FAILED request (e.g. a content-safety block) or an expired one (404 after
    Segmind's 1 hour retention) fails the sensor at once with the reason instead of waiting for
    ``timeout``, or skips it when ``soft_fail=True``. Transient errors (429, 5xx, dropped
    connections) count as "not done yet"; ``timeout`` bounds them.

    Deferrable mode looks once on the worker, then hands the wait to
    :class:`~airflow_provider_segmind.triggers.segmind.SegmindJobTrigger` with the sensor's
    ``timeout`` as an absolute deadline inside the trigger (so a triggerer restart does not reset
    it), or the task's ``execution_timeout`` counted from the try's start when that comes first
    (Airflow 3 does not apply ``execution_timeout`` to a deferred task; the error then names it
    and the sensor's retries apply, as for any ``execution_timeout``). The trigger polls on
    :class:`~airflow_provider_segmind.protocol.PollSchedule`; in poke and reschedule modes
    ``poke_interval`` applies as usual, and Airflow applies ``execution_timeout`` to each worker run.

    :param request_id: the v2 request id (e.g. pulled from XCom ``segmind_request_id``). Templated.
    :param segmind_conn_id: the ``segmind`` connection; it must hold the key that submitted the job.
    :param model: the model slug, for the summary and the trigger's schedule (optional). Templated.
    :param deferrable: defaults to ``[operators] default_deferrable``.
    :param poll_schedule: the trigger's schedule (a PollSchedule or its dict form).
    :param max_consecutive_errors: transient errors in a row the trigger tolerates.
    :param end_from_trigger: deferrable mode: on success the trigger ends the sensor itself with
        the same return value, instead of resuming it on a worker. ``None`` (default): on unless
        the sensor has outlets (see :func:`~airflow_provider_segmind.triggers.segmind.ends_from_trigger`);
        ``False``: always resume on the worker.
    """

    template_fields: Sequence[str] = ("request_id", "model", "segmind_conn_id")
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        request_id: str,
        segmind_conn_id: str = DEFAULT_CONN_ID,
        model: str = "",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_schedule: PollSchedule | Mapping[str, float] | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        end_from_trigger: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.request_id = request_id
        self.segmind_conn_id = segmind_conn_id
        self.model = model
        self.deferrable = deferrable
        self.poll_schedule = (
            poll_schedule.to_dict()
            if isinstance(poll_schedule, PollSchedule)
            else (PollSchedule.from_dict(poll_schedule).to_dict() if poll_schedule is not None else None)
        )
        self.max_consecutive_errors = max_consecutive_errors
        self.end_from_trigger = end_from_trigger

    def _fail(self, message: str, *, retryable: bool = False) -> NoReturn:
        """Fail now (no waiting for ``timeout``), or skip under ``soft_fail``."""
        if self.soft_fail:
            raise AirflowSkipException(f"{message} (soft_fail: skipping)")
        if retryable:
            raise AirflowException(message)
        raise AirflowFailException(message)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_segmind.hooks.segmind import SegmindHook

        hook = SegmindHook(self.segmind_conn_id, retry_policy=SINGLE_ATTEMPT)
        request_id = self.request_id
        try:
            try:
                status = hook.get_status(request_id)
                if status.status is SegmindJobStatus.FAILED:
                    self._fail(f"Segmind job {request_id} FAILED: {status.error or 'no reason given'}")
                if status.status is not SegmindJobStatus.COMPLETED:
                    self.log.info("Segmind request %s is %s.", request_id, status.status.value)
                    return False
                result = hook.get_result(request_id)
            except SegmindRequestNotFoundError as err:
                self._fail(f"Segmind request {request_id} expired or is unknown: {err}")
            except SegmindJobFailedError as err:
                self._fail(f"Segmind job {request_id} FAILED: {err.error_text or err}")
            except SegmindError as err:
                if err.transient:
                    self.log.warning("Segmind request %s: transient error, will look again: %s", request_id, err)
                    return False
                self._fail(str(err))
        finally:
            hook.close()
        self.log.info("Segmind request %s is COMPLETED.", request_id)
        summary = result_summary(result, model=self.model or "", status_metrics=status.metrics)
        return PokeReturnValue(is_done=True, xcom_value=summary)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if isinstance(first, PokeReturnValue) and first.is_done:
            return first.xcom_value
        now = time.time()
        deadline = wait_deadline(
            now + float(self.timeout), SENSOR_TIMEOUT, self.execution_timeout, context, blocking=False, now=now
        )
        self.defer(
            trigger=SegmindJobTrigger(
                request_id=self.request_id,
                conn_id=self.segmind_conn_id,
                model=self.model or "",
                deadline=deadline.at,
                submitted_at=None,
                poll_schedule=self.poll_schedule,
                max_consecutive_errors=self.max_consecutive_errors,
                # The sensor keeps no request record: nothing is left for a worker to clean up.
                end_from_trigger=ends_from_trigger(
                    self.end_from_trigger,
                    outlets=self.outlets,
                    record_in_variable=False,
                    log=self.log,
                    on_success_callback=self.on_success_callback,
                    task=self,
                    context=context,
                ),
                push_return_value=bool(self.do_xcom_push),
                deadline_cause=deadline.cause,
                **task_trigger_kwargs(self, context),
            ),
            method_name="execute_complete",
            # Only a backstop for execution_timeout (see airflow_provider_segmind.utils.timeouts).
            timeout=deadline.defer_timeout(now),
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Name the ``execution_timeout`` when Airflow itself ended the deferral (its backstop, see ``execute``)."""
        if self.execution_timeout and is_deferral_timeout(next_method, next_kwargs):
            self._execution_timed_out(
                f"Airflow ended the wait for Segmind request {self.request_id}, and no trigger had reported by then "
                "(is a triggerer running?)"
            )
        return super().resume_execution(next_method, next_kwargs, context)

    def _execution_timed_out(self, message: str) -> NoReturn:
        """``execution_timeout`` ended the wait: a task timeout (retries apply), or a skip under ``soft_fail``."""
        why = execution_timeout_phrase(self.execution_timeout, "timeout", float(self.timeout))
        text = f"{message}: {why}. {_KEEPS_RUNNING}"
        if self.soft_fail:
            raise AirflowSkipException(f"{text} (soft_fail: skipping)")
        raise AirflowTaskTimeout(text)

    def execute_complete(self, context: Context, event: dict[str, Any] | str | None = None) -> Any:
        """Resume from the trigger: success returns the summary; anything else fails (or skips).

        A bare ``"success"`` is a trigger that ended the sensor itself, resumed anyway by an Airflow
        that does not apply ``TaskSuccessEvent`` (``dag.test()``, which passes only the state): the
        request is looked at once more and its summary returned (Segmind's answer decides).
        """
        if event == "success":
            self.log.info(
                "Segmind request %s: the trigger ended this sensor, but this Airflow resumed it on the worker "
                "(dag.test() does not apply TaskSuccessEvent); reading the result again.",
                self.request_id,
            )
            again = self.poke(context)
            if isinstance(again, PokeReturnValue) and again.is_done:
                return again.xcom_value
            self._fail(f"Segmind request {self.request_id} is not COMPLETED after its trigger said so", retryable=True)
        try:
            checked = validate_event(event)
        except ValueError as err:
            self._fail(f"Sensor {self.task_id} resumed with an invalid event: {err}", retryable=True)
        status, message = checked["status"], str(checked.get("message") or "")
        if status == "success":
            return dict(checked["result"])
        if status == "timeout":
            if checked.get("deadline_cause") == EXECUTION_TIMEOUT:
                self._execution_timed_out(message)
            if self.soft_fail:
                raise AirflowSkipException(f"{message} (soft_fail: skipping)")
            raise AirflowSensorTimeout(f"{message} (sensor timeout {float(self.timeout):g} s)")
        if status == "error":
            self._fail(message, retryable=checked.get("retryable") is not False)
        self._fail(message)
