"""Operators that run a Segmind v2 job: submit on the worker, wait (deferred or not), return a summary.

The orchestration follows the official dbt Cloud provider: the hook owns all I/O, the trigger
(:class:`~airflow_provider_segmind.triggers.segmind.SegmindJobTrigger`) is only a polling loop,
and the operator submits, defers with ``timeout=None`` (the absolute deadline travels inside the
trigger, so a triggerer restart cannot reset it), and turns the trigger's event into a return
value or an error in :meth:`execute_complete`. Without deferral the operator polls on the worker
with the same schedule and the same decision logic, and ends in the same ``execute_complete``.

Exactly-once submission
-----------------------
Segmind bills every submit and has neither an idempotency key nor a cancel endpoint, so **a retry
after a failed or interrupted try re-attaches to the job it already paid for; a cleared task whose
last try succeeded generates anew.** The rules, per Airflow line and record store, and what the
request history may answer are in ``docs/exactly-once.md``. The invariants this code keeps:

- The request record (request id, model, parameter fingerprint, filled seed, submit time, and the
  submitting try's number and ``max_tries``) is written right after the submit, before any wait; with
  the request history on, an "attempt" record is written before the submit is sent.
- A retry of the same clear generation re-attaches to the recorded job (QUEUED/PROCESSING: wait;
  COMPLETED: fetch; status unreadable: wait rather than pay twice); FAILED, expired or changed
  parameters submit anew. A clear is told by a higher ``max_tries`` and generates anew, new seed included.
- A submit whose outcome is unknown is never resent blindly: the history is searched for the one
  unclaimed request with the same body (``_claims.py``); none or several -> the task fails without
  retries (:func:`~airflow_provider_segmind.protocol.retry.submit_outcome_unknown`). Airflow's own
  ``ResumableJobMixin`` (3.3+) documents the window left without the history: a worker dying between
  the accepted submit and the record write.
- Both stores (the 3.3+ task state store, else a Variable) are best effort
  (:class:`~airflow_provider_segmind.operators._records._GuardedStore`): a record that cannot be read,
  written or deleted is logged and never fails the try nor abandons a billed job.

Where the code lives: this module holds the operators (their arguments, the wait, the result);
the rules above are implemented in ``_reconcile.py`` (record lifecycle, submit, resume) and ``_history.py`` (request
history lookups), the record in ``_records.py``, the body's validation and seed in ``_params.py``,
and the extra link (:class:`SegmindOutputLink`) here, under the path ``get_provider_info`` registers.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowTaskTimeout,
    BaseOperatorLink,
    conf,
)

from airflow_provider_segmind.exceptions import (
    SegmindError,
    SegmindInvalidParametersError,
    SegmindRequestNotFoundError,
)
from airflow_provider_segmind.operators._history import DEFAULT_HISTORY_WAIT
from airflow_provider_segmind.operators._image_input import (
    DEFAULT_URL_EXPIRY,
    S3ImageInput,
    S3ImageInputs,
    allowed_for,
    check_transport,
    replace_s3_values,
    s3_inputs_of,
)
from airflow_provider_segmind.operators._params import (
    _optional_number,
    _schedule_dict,
    _seconds,
    fills_seed,
    fresh_seed,
    recorded_seed,
    refuse_unlisted_model,
    summary_params,
    validated,
)
from airflow_provider_segmind.operators._reconcile import _Reconciler
from airflow_provider_segmind.operators._records import (
    REQUEST_STORES,
    VariableRequestStore,
    _fingerprint,
    _no_try_follows,
    read_record,
)
from airflow_provider_segmind.protocol.errors import job_failed_error
from airflow_provider_segmind.protocol.params import invalid_parameters
from airflow_provider_segmind.protocol.schedule import RESULT_RETENTION_SECONDS, PollSchedule
from airflow_provider_segmind.protocol.text import sentences
from airflow_provider_segmind.protocol.vocabulary import (
    DEFAULT_CONN_ID,
    SD3_LARGE_IMG2IMG_MODEL,
    SD3_LARGE_MODEL,
    SegmindJobStatus,
)
from airflow_provider_segmind.triggers.events import event_filled_seed, validate_event
from airflow_provider_segmind.triggers.job_watch import DEFAULT_MAX_CONSECUTIVE_ERRORS, wait_for_job
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger, ends_from_trigger, task_trigger_kwargs
from airflow_provider_segmind.utils import metrics
from airflow_provider_segmind.utils.deferral import FreshRetryResume
from airflow_provider_segmind.utils.results import (
    XCOM_OUTPUT_URL,
    XCOM_REQUEST_ID,
    completed_summary,
    output_link,
    submitted_summary,
    summarize_params,
)
from airflow_provider_segmind.utils.task_failure import raise_for_task
from airflow_provider_segmind.utils.timeouts import (
    EXECUTION_TIMEOUT,
    JOB_TIMEOUT,
    execution_timeout_phrase,
    is_deferral_timeout,
    tag_timeout,
    wait_deadline,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_segmind.hooks.segmind import SegmindHook

__all__ = ["SegmindImageToImageOperator", "SegmindOutputLink", "SegmindRunOperator", "SegmindTextToImageOperator"]

# XCom keys pushed besides the return value (defined in results, where the trigger reads them too).
DEFAULT_JOB_TIMEOUT: Final = RESULT_RETENTION_SECONDS
#: The end of every timeout error: what became of the job, and what a retry does.
_NOT_CANCELLED: Final = (
    "The job was not cancelled (Segmind cannot cancel) and its result stays retrievable for 1 hour after "
    "submission; a retry of this task waits for the same request instead of submitting again (unless "
    "request_store='none')."
)


class SegmindOutputLink(BaseOperatorLink):
    """Extra link "Segmind output": the first generated output URL of the try that just ended.

    Segmind's output URLs are public, unguessable and kept about 7 days; the link is empty for a
    task that produced none (failed, or an inline ``base64`` output).

    Airflow 3 calls ``get_link`` once, in the task's own process when the try ends (the UI then
    reads the stored result), on the operator instance that ran the try. So the URL is read from
    that instance, not looked up in XCom: a lookup of a key a failed try never pushed made Airflow's
    client log an ``XCom not found`` error after every failed Segmind task.
    """

    name = "Segmind output"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return output_link(getattr(operator, "output_url", None))


class _SegmindJobOperator(FreshRetryResume, _Reconciler):
    """Submit one Segmind v2 job and wait for it (shared by the two public operators).

    :param segmind_conn_id: the ``segmind`` connection (password = API key).
    :param deferrable: free the worker slot while the job runs (needs a triggerer). Defaults to
        ``[operators] default_deferrable``.
    :param job_timeout: seconds (or a timedelta) to wait for the job, per try; default 1 hour, the
        time Segmind keeps a result. Turned into an absolute deadline inside the trigger. The task's
        ``execution_timeout``, counted from the try's start, also ends the wait, deferred or not;
        the earlier of the two wins and the error names it (:mod:`~airflow_provider_segmind.utils.timeouts`).
    :param wait_for_completion: ``False``: submit (recorded and claimed as always), push
        ``segmind_request_id`` and return at once, without waiting: the return value says the
        request and its status (``QUEUED``), no output (``wait_for_completion: false``). A
        :class:`~airflow_provider_segmind.sensors.segmind.SegmindJobSensor` downstream waits for it.
        ``deferrable`` then changes nothing. A retry re-attaches to the recorded request (the same
        request id, no new submit), as when waiting. Default ``True``.
    :param poll_schedule: a :class:`~airflow_provider_segmind.protocol.PollSchedule` or its dict
        form (prefer the dict in ``partial()``); default ``PollSchedule.for_model(model)``.
    :param max_consecutive_errors: transient errors in a row (429, 5xx, resets) tolerated while
        waiting before the task fails; none of them fails it on its own.
    :param max_cost: USD, the most one job of this task may cost: with the connection's
        ``max_spend_per_day`` it is the room reserved for the job; with or without it, a model whose
        charge today (Segmind's request history) is above it is refused before the submit. Default
        ``None``: the model's highest charge today is the estimate. See docs/operating.md.
    :param min_credits: if set, check the balance (a free call) before a billed submit and fail
        without retries when it is below this floor. Paid and free credits both count (both are
        spendable).
    :param strict_params: refuse parameters the model is not known to take (only Stable Diffusion
        3 Large's are known). Default ``False``: they are sent, with a warning in the task log.
    :param request_store: where a try records its request so a retry reuses it instead of paying
        again: ``auto`` (``task_state_store`` on Airflow 3.3+, else a Variable), ``task_state_store``,
        ``variable`` or ``none`` (a retry submits a new job).
    :param history_wait: seconds, at most, that a submit whose outcome is unknown (or an earlier
        try's submit whose request id was never recorded) is looked for in Segmind's request
        history, polled every ``min(10, history_wait / 6)`` s; default 120. A bound: each lookup
        fits in the time left (the first reads for at least 2 s). Nothing, or more than one
        unclaimed candidate, at the end: the task fails without retries (docs/exactly-once.md,
        "The safe rule"). Only with the connection's ``history_lookup`` on (the default).
    :param fill_seed: fill a random ``seed`` (0..4294967294) when none is given, so every body is
        unique (a lost submit can be told apart in the history) and every image has a known seed,
        recorded in the summary. ``None`` (default): for models known to take ``seed`` (Stable
        Diffusion 3); ``True``/``False`` for any model.
    :param end_from_trigger: deferrable only: on success the trigger ends the task itself, pushing
        the same XComs, so one worker process runs per image instead of two (submit, then resume).
        Failures, timeouts and errors still resume on the worker. ``None`` (default): on where it
        changes nothing visible (see :func:`~airflow_provider_segmind.triggers.segmind.ends_from_trigger`:
        not with outlets, not with a Variable request record, i.e. off by default on Airflow 3.1/3.2, not
        while OpenLineage is on); ``False``: always resume on the worker (task listeners then see the success).
    :param aws_conn_id: the AWS connection ``s3://`` inputs are read with (the Amazon provider's
        ``S3Hook``); default ``aws_default``.
    :param image_transport: how an ``s3://`` input (any field, or an item of a list) is sent to Segmind:
        ``presigned`` (a short-lived presigned GET URL), ``base64`` (the bytes inline), or ``auto``
        (default: ``presigned`` when the S3 client's real endpoint is AWS S3 itself for its region,
        ``base64`` for any other endpoint, however it is set, which Segmind may not reach). See
        ``operators/_image_input.py``.
    :param presigned_url_expiry: seconds a presigned input URL stays valid (60..3600, default 900).
    """

    operator_extra_links = (SegmindOutputLink(),)
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        model: str = SD3_LARGE_MODEL,
        segmind_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        job_timeout: float | timedelta | None = DEFAULT_JOB_TIMEOUT,
        poll_schedule: PollSchedule | Mapping[str, float] | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        min_credits: float | None = None,
        request_store: str = "auto",
        strict_params: bool = False,
        history_wait: float = DEFAULT_HISTORY_WAIT,
        fill_seed: bool | None = None,
        end_from_trigger: bool | None = None,
        aws_conn_id: str = "aws_default",
        image_transport: str = "auto",
        presigned_url_expiry: float = DEFAULT_URL_EXPIRY,
        wait_for_completion: bool = True,
        max_cost: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.wait_for_completion = wait_for_completion
        if max_cost is not None and (isinstance(max_cost, bool) or not float(max_cost) > 0):
            raise ValueError(f"Invalid parameter 'max_cost': got {max_cost!r}. Allowed: a positive number of USD.")
        self.max_cost = float(max_cost) if max_cost is not None else None
        #: The job's estimate the spend check reserved (``None``: no cap and no max_cost, or unknown).
        self._spend_estimate: float | None = None
        self._spend_checked = False
        check_transport(image_transport, presigned_url_expiry)
        self.aws_conn_id = aws_conn_id
        self.image_transport = image_transport
        self.presigned_url_expiry = presigned_url_expiry
        #: Each ``s3://`` input as given in the body (any field, or an item of a list) -> what
        #: :meth:`_inspect_inputs` found behind it.
        self._input_images: dict[str, S3ImageInput] = {}
        if request_store not in REQUEST_STORES:
            raise ValueError(
                f"Invalid parameter 'request_store': got {request_store!r}. Allowed: {', '.join(REQUEST_STORES)}."
            )
        self.request_store = request_store
        self.model = model
        self.segmind_conn_id = segmind_conn_id
        self.deferrable = deferrable
        self.job_timeout = _seconds(job_timeout, DEFAULT_JOB_TIMEOUT)
        self.poll_schedule = _schedule_dict(poll_schedule)
        if max_consecutive_errors < 1:
            raise ValueError("max_consecutive_errors must be at least 1")
        self.max_consecutive_errors = max_consecutive_errors
        self.min_credits = min_credits
        self.strict_params = strict_params
        if history_wait < 0:
            raise ValueError(f"Invalid parameter 'history_wait': got {history_wait!r}. Allowed: seconds >= 0.")
        self.history_wait = float(history_wait)
        self.fill_seed = fill_seed
        self.end_from_trigger = end_from_trigger
        self._history_warned = False
        #: This try submits although an earlier try's request existed (the job.resubmitted metric).
        self._resubmitting = False
        self.request_id: str | None = None
        #: The first output URL once this try succeeded (what :class:`SegmindOutputLink` shows).
        self.output_url: str | None = None
        #: The return value once this try succeeded (what :meth:`get_openlineage_facets_on_complete` reports).
        self.result_summary: dict[str, Any] | None = None

    # ------------------------------------------------------------------ parameters

    def build_params(self) -> dict[str, Any]:
        """The request body before validation (after templating)."""
        raise NotImplementedError

    def _validated(self) -> tuple[str, dict[str, Any]]:
        """Model and body, validated after templating and before any request (errors fail without retries)."""
        return validated(self.model, self.build_params, strict=self.strict_params, warn=self.log.warning)

    def _summary_params(self) -> dict[str, Any]:
        return summary_params(self.model, self.build_params, strict=self.strict_params)

    # ------------------------------------------------------------------ s3:// inputs

    @cached_property
    def _image_inputs(self) -> S3ImageInputs:
        return S3ImageInputs(self.aws_conn_id, self.image_transport, self.presigned_url_expiry, self.log)

    def _inspect_inputs(self, params: Mapping[str, Any]) -> None:
        """Check every ``s3://`` input (any field, or in a list) before anything is billed.

        Every bad one is named in one error (``input_image``, ``images[1]``...), as a bad parameter
        is: the task fails without retries and nothing is submitted. A transient S3 error raises
        as it is (a retry may help).
        """
        problems: list[tuple[str, str, str]] = []
        causes: list[SegmindInvalidParametersError] = []
        for field, uri in s3_inputs_of(params):
            if uri in self._input_images:
                continue
            try:
                self._input_images[uri] = self._image_inputs.inspect(uri, field)
            except SegmindInvalidParametersError as err:
                causes.append(err)
                problems += err.problems or [(field, str(err), allowed_for(field))]
        if problems:
            error = causes[0] if len(causes) == 1 else invalid_parameters(problems)
            raise AirflowFailException(str(error)) from error

    def _inspected(self, field: str, uri: str) -> S3ImageInput:
        """The inspected input behind ``uri`` (inspected now if :meth:`_inspect_inputs` did not see it)."""
        found = self._input_images.get(uri)
        if found is None:
            try:
                found = self._input_images[uri] = self._image_inputs.inspect(uri, field)
            except SegmindInvalidParametersError as err:
                raise AirflowFailException(str(err)) from err
        return found

    def _fingerprinted(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The body as the request record's fingerprint sees it: each S3 input by its stable identity
        (URI, ETag, version and transport: the same on every try, changed by a new object)."""
        return replace_s3_values(params, lambda field, uri: self._inspected(field, uri).identity)

    def _wire_body(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The body as sent to Segmind: each S3 input as its presigned URL or base64 (made here, never stored)."""
        return replace_s3_values(params, lambda field, uri: self._image_inputs.wire_value(self._inspected(field, uri)))

    # ------------------------------------------------------------------ helpers

    @cached_property
    def hook(self) -> SegmindHook:
        from airflow_provider_segmind.hooks.segmind import SegmindHook

        return SegmindHook(self.segmind_conn_id)

    def _raise(self, err: SegmindError) -> NoReturn:
        """Re-raise a typed error; as ``AirflowFailException`` when a task retry cannot help."""
        raise_for_task(err)

    def _schedule(self, model: str) -> PollSchedule:
        if self.poll_schedule is not None:
            return PollSchedule.from_dict(self.poll_schedule)
        return PollSchedule.for_model(model)

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> Any:
        model, params = self._validated()
        metrics.bind_task(context["ti"], model)  # every metric this try emits carries its dag, task and model
        self._inspect_inputs(params)  # s3:// inputs: checked now, before any record is read or anything billed
        store = self._store(context)
        record = read_record(store, self.log) if store is not None else None
        fills = fills_seed(model, params, fill_seed=self.fill_seed)
        if store is None:
            self.log.debug("request_store='none': a task retry will submit a new job.")
        elif record is not None:
            # An earlier try's request is looked for with the body that try sent (its filled seed).
            seed = recorded_seed(model, self._fingerprinted(params), record) if fills else None
            earlier = params if seed is None else {**params, "seed": seed}
            fingerprint = _fingerprint(model, self._fingerprinted(earlier))
            resumed = self._resume(context, store, record, model, earlier, fingerprint, seed)
            if resumed is not None:
                return resumed
            self._resubmitting = True  # an earlier try's request could not serve: this submit pays again
        # A new submit: a new seed where the provider fills one (a seed belongs to one generation).
        filled_seed = fresh_seed() if fills else None
        if filled_seed is not None:
            # Filled before the fingerprint: the body sent (and recorded) is the one a lost submit is found by.
            params = {**params, "seed": filled_seed}
            self.log.info("No seed given: using random seed %d (recorded in the result).", filled_seed)
        fingerprint = _fingerprint(model, self._fingerprinted(params))
        refuse_unlisted_model(self.hook, model)  # issue 23: an unknown or retired slug, before anything is billed
        self._credit_guard()
        self._check_spend(model)  # issue 27: max_spend_per_day and max_cost, before anything is billed
        return self._submit(context, store, model, params, fingerprint, filled_seed)

    @staticmethod
    def _announce(context: Context, request_id: str) -> None:
        """XCom the request id, for a sensor or a transfer downstream."""
        context["ti"].xcom_push(key=XCOM_REQUEST_ID, value=request_id)

    def _check_spend(self, model: str) -> None:
        """The spend cap and ``max_cost`` (``operators/_spend.py``): fail without billing when they say no."""
        from airflow_provider_segmind.operators._spend import check_spend

        settings = self.hook.get_settings()
        self._spend_checked = settings.max_spend_per_day is not None or self.max_cost is not None
        self._spend_estimate = check_spend(self.hook, model, self.max_cost, self.log)

    def _noted_submit(self, request_id: str) -> None:
        """Remember a submit the spend cap must count until Segmind's ledger lists it."""
        if self._spend_checked:
            from airflow_provider_segmind.operators._spend import note_submitted

            note_submitted(self.hook, request_id, self._spend_estimate)

    def _credit_guard(self) -> None:
        if self.min_credits is None:
            return
        try:
            balance = self.hook.get_credit_balance()
        except SegmindError as err:
            self._raise(err)
        # Paid and free credits are both spendable (docs.segmind.com/api-reference, ``GET /v1/get-user-credits``).
        if balance.total < self.min_credits:
            raise AirflowFailException(
                sentences(
                    f"Segmind credit guard: the account has {balance.describe()}, below the floor "
                    f"min_credits={self.min_credits:g}; nothing was submitted",
                    "Top up the account or lower min_credits",
                )
            )
        self.log.info("Segmind credit guard: %s >= floor %g.", balance.describe(), self.min_credits)

    def _wait(
        self,
        context: Context,
        model: str,
        request_id: str,
        submitted_at: float | None,
        filled_seed: int | None = None,
        status: SegmindJobStatus | None = None,
    ) -> Any:
        """Wait for the request (deferred or on the worker) and finish; or, submit-only, return at once.

        The wait ends at the earlier of ``job_timeout`` from now and the task's ``execution_timeout``
        from the try's start (:func:`~airflow_provider_segmind.utils.timeouts.wait_deadline`). ``status``:
        what Segmind last said of the request, for a submit-only summary.
        """
        if not self.wait_for_completion:
            return self._submitted(context, model, request_id, submitted_at, filled_seed, status)
        schedule = self._schedule(model)
        now = time.time()
        deadline = wait_deadline(
            now + self.job_timeout, JOB_TIMEOUT, self.execution_timeout, context, blocking=not self.deferrable, now=now
        )
        if self.deferrable and deadline.at > now:
            end = self._ends_from_trigger(context)
            self.defer(
                trigger=SegmindJobTrigger(
                    request_id=request_id,
                    conn_id=self.segmind_conn_id,
                    model=model,
                    deadline=deadline.at,
                    submitted_at=submitted_at,
                    poll_schedule=schedule.to_dict(),
                    max_consecutive_errors=self.max_consecutive_errors,
                    end_from_trigger=end,
                    summary_params=summarize_params(self._summary_params()) if end else None,
                    filled_seed=filled_seed,  # for its summary, and in its event (see execute_complete)
                    push_return_value=bool(self.do_xcom_push),
                    deadline_cause=deadline.cause,
                    **task_trigger_kwargs(self, context),
                ),
                method_name="execute_complete",
                # The filled seed travels with the resume (the resumed task is a fresh operator instance).
                kwargs={"filled_seed": filled_seed} if filled_seed is not None else None,
                # The deadline lives in the trigger; Airflow's own timeout is only a backstop for the
                # execution_timeout, which Airflow 3 does not apply while a task is deferred.
                timeout=deadline.defer_timeout(now),
            )
        if self.deferrable:
            self.log.info(
                "Segmind request %s: the task's execution_timeout leaves no time to defer; one last look on the "
                "worker.",
                request_id,
            )
        event = wait_for_job(
            request_id,
            conn_id=self.segmind_conn_id,
            model=model,
            schedule=schedule,
            deadline=deadline.at,
            submitted_at=submitted_at,
            max_consecutive_errors=self.max_consecutive_errors,
            log=self.log,
        )
        return self.execute_complete(context, tag_timeout(event, deadline.cause), filled_seed=filled_seed)

    def _submitted(
        self,
        context: Context,
        model: str,
        request_id: str,
        submitted_at: float | None,
        filled_seed: int | None,
        status: SegmindJobStatus | None,
    ) -> dict[str, Any]:
        """Submit-only (``wait_for_completion=False``): the request's summary, no wait, no output.

        The record is handled as after any success (:meth:`_forget`: kept on 3.3+, a Variable
        deleted): a retry of a try that ends before Airflow records its success re-attaches to the
        same request (on 3.3+) and returns it again; a clear submits anew.
        """
        self._forget(context, succeeded=True)
        params = summarize_params(self._summary_params())
        summary = submitted_summary(
            request_id, model=model, status=status, submitted_at=submitted_at, params=params, filled_seed=filled_seed
        )
        self.result_summary = summary
        self.log.info(
            "Segmind request %s submitted (%s); not waiting for it (wait_for_completion=False): a "
            "SegmindJobSensor on its request id (XCom %r) waits for it, within 1 hour of the submit.",
            request_id,
            summary["status"],
            XCOM_REQUEST_ID,
        )
        return summary

    def _ends_from_trigger(self, context: Context) -> bool:
        """Whether this deferral asks the trigger to end the task on success (see ``end_from_trigger``)."""
        try:
            store = self._store(context)
        except AirflowFailException:
            store = None
        return ends_from_trigger(
            self.end_from_trigger,
            outlets=self.outlets,
            record_in_variable=store is not None and isinstance(store.store, VariableRequestStore),
            log=self.log,
            on_success_callback=self.on_success_callback,
            task=self,
            context=context,
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any] | str | None = None, filled_seed: int | None = None
    ) -> dict[str, Any]:
        """Turn the trigger's (or the sync loop's) event into the task's result or error.

        Anything outside the allow-list (``None``, empty, unknown status) fails loudly, except the
        bare ``"success"`` of a trigger that ended the task itself, which an Airflow that does not
        honour ``TaskSuccessEvent`` (``dag.test()``) resumes the task with: see
        :meth:`_finish_ended_by_trigger`.
        ``filled_seed``: the seed :meth:`execute` filled in (see ``fill_seed``), for the summary; a
        resume that drops the defer's kwargs (``dag.test()``) finds it in the trigger's event.
        An ``expired`` request (its v2 record gone) is looked up in the request history first.
        """
        if event == "success":
            return self._finish_ended_by_trigger(context)
        try:
            checked = validate_event(event)
        except ValueError as err:
            raise AirflowException(f"Task {self.task_id} resumed with an invalid event: {err}") from None
        status, request_id = checked["status"], checked["request_id"]
        if filled_seed is None:  # a resume without the defer's kwargs (dag.test()): the trigger's event has it
            filled_seed = event_filled_seed(checked)
        self.request_id = request_id
        message = str(checked.get("message") or "")
        if status not in ("success", "expired") and (
            status == "failed" or checked.get("retryable") is False or _no_try_follows(context["ti"])
        ):
            self._forget(context)  # no try can follow, or none could reuse this request
        if status == "success":
            params = summarize_params(self._summary_params())
            return self._finish(context, completed_summary(checked["result"], params, filled_seed))
        if status == "failed":
            self._raise(job_failed_error(request_id, checked.get("error")))
        if status == "expired":
            model = checked.get("model") if isinstance(checked.get("model"), str) else self.model
            params = self._summary_params()
            if filled_seed is not None:
                params["seed"] = filled_seed
            finished = self._finish_from_history(context, request_id, str(model), params, filled_seed)
            if finished is not None:
                return finished  # the record stays, as after any success (see _forget)
            self._forget(context)  # expired: no try can reuse this request
            raise SegmindRequestNotFoundError(
                sentences(message, "A retry of this task submits a new (billed) job"),
                request_id=request_id,
                status_code=404,
            )
        if status == "timeout":
            if checked.get("deadline_cause") == EXECUTION_TIMEOUT:
                why = execution_timeout_phrase(self.execution_timeout, "job_timeout", self.job_timeout)
                raise AirflowTaskTimeout(f"{message}: {why}. {_NOT_CANCELLED}")
            raise AirflowException(f"{message} (job_timeout={self.job_timeout:g} s). {_NOT_CANCELLED}")
        text = sentences(message, f"Request id: {request_id}")
        if checked.get("retryable") is False:
            raise AirflowFailException(text)
        raise AirflowException(text)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Name the ``execution_timeout`` when Airflow itself ended the deferral (its backstop, see ``_wait``)."""
        if self.execution_timeout and is_deferral_timeout(next_method, next_kwargs):
            ti = context["ti"]
            map_index = getattr(ti, "map_index", -1)
            request_id = ti.xcom_pull(task_ids=self.task_id, key=XCOM_REQUEST_ID, map_indexes=map_index)
            if _no_try_follows(ti):
                self._forget(context)
            why = execution_timeout_phrase(self.execution_timeout, "job_timeout", self.job_timeout)
            raise AirflowTaskTimeout(
                f"Airflow ended the wait for Segmind request {request_id or '(id not in XCom)'}: {why}, and no "
                f"trigger had reported by then (is a triggerer running?). {_NOT_CANCELLED}"
            )
        return super().resume_execution(next_method, next_kwargs, context)

    def _finish_ended_by_trigger(self, context: Context) -> dict[str, Any]:
        """Finish a task whose trigger ended it (``TaskSuccessEvent``) but which was resumed anyway.

        ``dag.test()`` (Airflow 3.1 to 3.3, ``_run_task``) does not apply a ``TaskSuccessEvent``: it
        resumes the task with the event's payload, which is only the state, ``"success"``, and
        without the XComs. So the job is read again by its request id (pushed to XCom before
        deferring) and the task finishes as after any success event; Segmind's answer, not the
        payload, decides (a job that is not COMPLETED ends as its event says). The filled seed and
        the submit time come from the request record when it names the same request.
        """
        ti = context["ti"]
        pushed = ti.xcom_pull(task_ids=self.task_id, key=XCOM_REQUEST_ID, map_indexes=getattr(ti, "map_index", -1))
        request_id = pushed or self.request_id
        if not isinstance(request_id, str) or not request_id:
            raise AirflowException(
                f"Task {self.task_id} resumed with an invalid event: a bare 'success' (a trigger ending the task) "
                f"but no Segmind request id in XCom {XCOM_REQUEST_ID!r}, so there is nothing to finish."
            )
        try:
            store = self._store(context)
        except AirflowFailException:
            store = None
        record = read_record(store, self.log) if store is not None else None
        if record is None or record.get("request_id") != request_id:
            record = {}
        model = record.get("model") if isinstance(record.get("model"), str) else self.model
        submitted_at = record.get("submitted_at")
        seed = record.get("filled_seed")
        self.log.info(
            "Segmind request %s: its trigger ended the task, but this Airflow resumed it on the worker "
            "(dag.test() does not apply TaskSuccessEvent); reading the result again.",
            request_id,
        )
        event = wait_for_job(
            request_id,
            conn_id=self.segmind_conn_id,
            model=str(model),
            schedule=self._schedule(str(model)),
            deadline=time.time() + self.job_timeout,
            submitted_at=float(submitted_at) if isinstance(submitted_at, (int, float)) else None,
            max_consecutive_errors=self.max_consecutive_errors,
            log=self.log,
        )
        return self.execute_complete(context, event, filled_seed=seed if isinstance(seed, int) else None)

    def _finish(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]:
        self._forget(context, succeeded=True)
        self.result_summary = summary
        url = summary.get("output_url")
        if url:
            self.output_url = url
            context["ti"].xcom_push(key=XCOM_OUTPUT_URL, value=url)
        self.log.info(
            "Segmind job %s done: %s",
            summary.get("request_id"),
            url or ("inline output (re-fetch it by request id)" if summary.get("output_inline") else "no output URL"),
        )
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the ``image`` input, the outputs, the request (run facet) and the model (job facet).

        Called by the OpenLineage provider's listener only (see docs/lineage.md); the import stays
        here so nothing of OpenLineage loads without it. On a failed task: the input and model only.
        """
        from airflow_provider_segmind.utils.openlineage import generation_lineage, image_input

        return generation_lineage(model=self.model, image=image_input(self), summary=self.result_summary)

    def on_kill(self) -> None:
        """Segmind cannot cancel a job: log the orphaned request so nobody wonders about the bill."""
        if self.request_id:
            self.log.warning(
                "Task killed while Segmind request %s may still be running: Segmind has no cancel endpoint, so "
                "it will finish and be billed; its result stays retrievable for 1 hour after submission.",
                self.request_id,
            )


class SegmindRunOperator(_SegmindJobOperator):
    """Run any Segmind model through the v2 queue: ``SegmindRunOperator(model=..., inputs={...})``.

    ``inputs`` is the model's request body, passed through as given (after templating): Segmind
    hosts hundreds of models whose parameters the provider cannot know. Stable Diffusion 3 Large
    inputs are validated in full before submitting; for other slugs only JSON-serializability is
    checked. (The argument is not called ``params``: that name is Airflow's own DAG/task params,
    which Airflow merges with the DAG's params before the operator sees them.)

    Returns a JSON-safe summary (see
    :func:`~airflow_provider_segmind.triggers.segmind.result_summary`): request id, model, status,
    output URL(s), images, seed, metrics and the non-secret inputs. Inline (``base64``) outputs are
    never pushed to XCom; the summary marks them ``output_inline`` and the result can be fetched
    again by request id for 1 hour.

    See the module docstring for exactly-once submission per Airflow version.

    :param model: the model slug, e.g. ``"stable-diffusion-3-large-txt2img"``. Templated.
    :param inputs: the model's parameters. Templated (nested strings are rendered).
    """

    template_fields: Sequence[str] = ("model", "inputs", "segmind_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"inputs": "json"}

    def __init__(self, *, model: str, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.inputs = inputs if inputs is not None else {}

    def build_params(self) -> dict[str, Any]:
        if not isinstance(self.inputs, Mapping):
            raise SegmindInvalidParametersError(
                f"Invalid parameter 'inputs': got {type(self.inputs).__name__}. Allowed: a mapping of the "
                "model's parameter names to values.",
                field="inputs",
                allowed="a mapping",
            )
        return dict(self.inputs)


class SegmindTextToImageOperator(_SegmindJobOperator):
    """Generate an image with Stable Diffusion 3 Large (or a compatible slug via ``model``).

    Every field is validated after templating and before any request, with an error naming the
    field and the allowed values, so a bad DAG costs no credit. Works with dynamic task mapping
    (``.partial(...).expand(prompt=[...])`` or ``expand_kwargs``).

    Image-to-image is :class:`SegmindImageToImageOperator`: SD3 Large's image-to-image is its own
    slug, ``stable-diffusion-3-large-img2img``, and the text-to-image slug's page documents no input
    image (Segmind may ignore one and bill a text-to-image). A DAG that still passes
    ``mode="image-to-image"`` here (with the default model) keeps working: the request is sent to the
    image-to-image slug (without ``aspect_ratio``, which that slug does not take), with an
    ``AirflowProviderDeprecationWarning``; move it to :class:`SegmindImageToImageOperator`.

    :param prompt: what to draw (required, at most 10,000 characters). Templated.
    :param negative_prompt: what to avoid. Templated.
    :param aspect_ratio: one of 16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21 (default 1:1). Templated.
    :param mode: ``text-to-image`` (default). ``image-to-image`` is deprecated here (see above). Templated.
    :param image: deprecated here, with ``mode="image-to-image"``: see :class:`SegmindImageToImageOperator`.
        Templated.
    :param strength: deprecated here, with ``mode="image-to-image"``. Templated.
    :param output_format: ``jpeg`` (default) or ``png``. Templated.
    :param seed: 0..4294967294 for a reproducible image. Templated.
    :param base64: return the image inline instead of as a URL. The bytes never go to XCom: the
        summary says ``output_inline`` and a transfer operator re-fetches the result by request id.
    :param model: default ``stable-diffusion-3-large-txt2img``. Templated.

    See :class:`SegmindRunOperator` for the return value and the module docstring for
    exactly-once submission per Airflow version.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "negative_prompt",
        "aspect_ratio",
        "mode",
        "image",
        "strength",
        "output_format",
        "seed",
        "model",
        "segmind_conn_id",
    )

    def __init__(
        self,
        *,
        prompt: str,
        negative_prompt: str | None = None,
        aspect_ratio: str = "1:1",
        mode: str = "text-to-image",
        image: str | None = None,
        strength: float | str | None = None,
        output_format: str = "jpeg",
        seed: int | str | None = None,
        base64: bool = False,
        model: str = SD3_LARGE_MODEL,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, **kwargs)
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.aspect_ratio = aspect_ratio
        self.mode = mode
        self.image = image
        self.strength = strength
        self.output_format = output_format
        self.seed = seed
        self.base64 = base64
        if self._routes_to_img2img():
            warnings.warn(_IMG2IMG_DEPRECATION, AirflowProviderDeprecationWarning, stacklevel=2)

    def _routes_to_img2img(self) -> bool:
        """Whether this (rendered) task is the deprecated image-to-image on the default text-to-image slug."""
        return self.mode == "image-to-image" and isinstance(self.model, str) and self.model.strip() == SD3_LARGE_MODEL

    def _route(self) -> None:
        """Send a deprecated ``mode="image-to-image"`` task to the image-to-image slug (idempotent)."""
        if self._routes_to_img2img():
            self.model = SD3_LARGE_IMG2IMG_MODEL

    def _validated(self) -> tuple[str, dict[str, Any]]:
        if self._routes_to_img2img():
            self.log.warning("%s", _IMG2IMG_DEPRECATION)
        self._route()
        return super()._validated()

    def _summary_params(self) -> dict[str, Any]:
        self._route()  # a resumed task is a fresh instance: the same slug as its submit
        return super()._summary_params()

    def build_params(self) -> dict[str, Any]:
        img2img = self.mode == "image-to-image" and self.model == SD3_LARGE_IMG2IMG_MODEL
        params: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            # The image-to-image slug takes no aspect_ratio; the default one is not sent there.
            "aspect_ratio": None if img2img and self.aspect_ratio == "1:1" else self.aspect_ratio,
            "mode": self.mode,
            "image": self.image or None,
            "strength": _optional_number(self.strength, float),
            "output_format": self.output_format,
            "seed": _optional_number(self.seed, int),
            "base64": self.base64,
        }
        return {name: value for name, value in params.items() if value is not None}


_IMG2IMG_DEPRECATION: Final = (
    "SegmindTextToImageOperator(mode='image-to-image') is deprecated: SD3 Large image-to-image has its own slug, "
    f"{SD3_LARGE_IMG2IMG_MODEL!r} (https://segmind.com/models/stable-diffusion-3-large-img2img/api), and the request "
    "is sent there. Use SegmindImageToImageOperator(prompt=..., image=..., strength=...) instead; image-to-image "
    "on SegmindTextToImageOperator will be removed in 2.0.0."
)


class SegmindImageToImageOperator(_SegmindJobOperator):
    """Make an image from an input image and a prompt with Stable Diffusion 3 Large image-to-image.

    Sends to ``stable-diffusion-3-large-img2img``, SD3 Large's image-to-image slug
    (https://segmind.com/models/stable-diffusion-3-large-img2img/api), with ``mode="image-to-image"``.
    Every field is validated after templating and before any request (an error names each bad
    field and its allowed values, so a bad DAG costs no credit), and an ``s3://`` image is checked
    (exists, size, type) before anything is billed. Map it over many photos with
    ``.partial(...).expand(image=<XComArg of s3:// URIs>)``.

    :param prompt: what to make of the image (required, at most 10,000 characters). Templated.
    :param image: the input image (required): a URL, base64 image data, or ``s3://bucket/key`` of a
        JPEG, PNG or WebP object of at most 10 MiB (read with ``aws_conn_id``, sent as
        ``image_transport`` says). Templated.
    :param strength: 0..1, how far the output may depart from ``image`` (lower keeps more of it). When
        omitted Segmind's default applies, 1 on the SD3 image-to-image pages, which lets the prompt
        redraw the image almost entirely: set it. Templated.
    :param negative_prompt: what to avoid. Templated.
    :param output_format: ``jpeg`` (default) or ``png``. Templated.
    :param seed: 0..4294967294 for a reproducible image (a random one is filled and recorded when
        omitted, see ``fill_seed``). Templated.
    :param base64: return the image inline instead of as a URL (never pushed to XCom).
    :param model: default ``stable-diffusion-3-large-img2img``. Templated.

    See :class:`SegmindRunOperator` for the return value and the module docstring for
    exactly-once submission per Airflow version.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "image",
        "strength",
        "negative_prompt",
        "output_format",
        "seed",
        "model",
        "segmind_conn_id",
    )

    def __init__(
        self,
        *,
        prompt: str,
        image: str,
        strength: float | str | None = None,
        negative_prompt: str | None = None,
        output_format: str = "jpeg",
        seed: int | str | None = None,
        base64: bool = False,
        model: str = SD3_LARGE_IMG2IMG_MODEL,
        **kwargs: Any,
    ) -> None:
        super().__init__(model=model, **kwargs)
        self.prompt = prompt
        self.image = image
        self.strength = strength
        self.negative_prompt = negative_prompt
        self.output_format = output_format
        self.seed = seed
        self.base64 = base64

    def build_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "mode": "image-to-image",
            "image": self.image if self.image != "" else None,
            "strength": _optional_number(self.strength, float),
            "output_format": self.output_format,
            "seed": _optional_number(self.seed, int),
            "base64": self.base64,
        }
        return {name: value for name, value in params.items() if value is not None}
