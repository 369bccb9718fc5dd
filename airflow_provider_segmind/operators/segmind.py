"""Operators that run a Segmind v2 job: submit on the worker, wait (deferred or not), return a summary.

The orchestration follows the official dbt Cloud provider: the hook owns all I/O, the trigger
(:class:`~airflow_provider_segmind.triggers.segmind.SegmindJobTrigger`) is only a polling loop,
and the operator submits, defers with ``timeout=None`` (the absolute deadline travels inside the
trigger, so a triggerer restart cannot reset it), and turns the trigger's event into a return
value or an error in :meth:`execute_complete`. Without deferral the operator polls on the worker
with the same schedule and the same decision logic, and ends in the same ``execute_complete``.

Exactly-once submission
-----------------------
Segmind bills every submit and has neither an idempotency key nor a cancel endpoint, so a task
retry must not submit again while the first request can still be used. One rule on every Airflow
version: **a retry after a failed or interrupted try re-attaches to the job it already paid for;
a cleared task whose last try succeeded generates anew.**

- **Airflow 3.3+** (``context["task_state_store"]`` exists): the request id, model, a fingerprint
  of the parameters, the submit time, and the try number and ``max_tries`` of the submitting try
  are written to the task state store right after the submit, before deferring or polling. A new
  try reads it first and asks Segmind about that request: QUEUED/PROCESSING -> wait for it again
  (no submit); COMPLETED -> fetch its result and return (no submit); FAILED, or 404 because its
  1 hour retention passed -> log it and submit anew (unless the FAILED reason is refused input or a
  content block: the same body would fail again, so the task fails). Changed parameters (an edited
  DAG) also submit anew. If the status cannot be read because of a transient error, the operator re-attaches
  rather than risk a second bill.
  A clear is told apart from a retry by ``max_tries``, which Airflow raises on every clear and on
  nothing else: a record written before the latest clear is reused only while its job is still
  QUEUED/PROCESSING (so no try can have succeeded with it); a COMPLETED one, or one whose status
  cannot be read, is left and a new job is submitted. So the rule needs no cleanup at success: the
  3.3 record outlives a success (it expires after 2 hours; ``[state_store] clear_on_success`` is
  off by default), which also lets the retry of a try whose worker died after finishing, before
  Airflow recorded the success, reuse the COMPLETED job. It is deleted when no try can follow or
  reuse it (FAILED, expired, an error no retry fixes, the last try ending in a timeout or error).
  With Segmind's request history on (the connection's ``history_lookup``, default true), an
  "attempt" record is written before the submit is sent, and a submit whose outcome is unknown
  (read timeout or connection lost after sending, a 504, and a 500/502/503, which may come after
  the job was queued) is never resent blindly: the history is searched for the same body for up to
  ``history_wait`` seconds (found -> re-attach; not found -> submit, logged as a possible
  duplicate), and so is an attempt record a dead worker left for the next try. A request whose v2
  record expired is looked up in the history by id (COMPLETED -> its output, no submit). A random
  ``seed`` is filled where the model takes one (``fill_seed``) so bodies are unique.
  Without the history (off, or unreachable): a submit whose outcome is unknown is never sent again,
  neither by the hook nor by a task retry: the task fails without retries and says so (see
  :func:`~airflow_provider_segmind.protocol.submit_outcome_unknown`); a worker dying between
  Segmind accepting the submit and the store write leaves a next try that cannot know the id (the
  window Airflow's own ``ResumableJobMixin`` documents).
- **Airflow 3.1 / 3.2** (no task state store; Airflow 3 clears XComs before each try): the same
  record goes in an Airflow Variable instead (``request_store="auto"``), the only task-writable
  state that survives a retry there, and the same rules and cleanup apply, plus a delete at
  success (a Variable never expires; the cost is that a worker dying between the end of
  ``execute`` and Airflow recording the success leaves a retry that submits anew). One Variable
  per task instance, named ``segmind_request_<hash of dag id, run id, task id, map index>``, read
  and written through the Task SDK like any Variable. Only a last try killed outright (no code
  runs) leaves one behind; it is safe to delete at any time.
  ``request_store="none"`` turns the record off (a retry then submits a new, billed job); errors a
  retry cannot fix raise ``AirflowFailException`` either way.
- Both stores are best effort (:class:`_GuardedStore`): a record that cannot be read, written or
  deleted is logged and never fails the try nor abandons a billed job.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    BaseOperator,
    BaseOperatorLink,
    conf,
)

from airflow_provider_segmind.exceptions import (
    SegmindError,
    SegmindInvalidParametersError,
    SegmindJobFailedError,
    SegmindRequestNotFoundError,
    SegmindResultNotReadyError,
)
from airflow_provider_segmind.history import HistoryRecord
from airflow_provider_segmind.protocol import (
    RESULT_RETENTION_SECONDS,
    SD3_LARGE_MODEL,
    SD3_SEED_MAX,
    SEED_RANDOM,
    JobResult,
    JobStatusResponse,
    PollSchedule,
    SegmindJobStatus,
    SubmitResponse,
    job_failed_error,
    model_takes_seed,
    parse_int,
    sentences,
    submit_certainly_refused,
    submit_outcome_unknown,
    validate_params,
)
from airflow_provider_segmind.triggers.segmind import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    SegmindJobTrigger,
    fit_summary,
    result_summary,
    summarize_params,
    validate_event,
    wait_for_job,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_segmind.hooks.segmind import SegmindHook

__all__ = ["SegmindOutputLink", "SegmindRunOperator", "SegmindTextToImageOperator"]

#: Record key in the task state store (and in the Variable's name). Renaming it would break in-flight retries.
STATE_STORE_KEY: Final = "segmind_request"
#: Where a try records its request for the next try (see the module docstring).
REQUEST_STORES: Final = ("auto", "task_state_store", "variable", "none")
#: Name prefix of the Variables that stand in for the task state store on Airflow 3.1/3.2.
REQUEST_VARIABLE_PREFIX: Final = "segmind_request_"
#: XCom keys pushed besides the return value.
XCOM_REQUEST_ID: Final = "segmind_request_id"
XCOM_OUTPUT_URL: Final = "segmind_output_url"
DEFAULT_JOB_TIMEOUT: Final = RESULT_RETENTION_SECONDS
#: Seconds a lost submit is looked for in the request history (whose records lag) before submitting again.
DEFAULT_HISTORY_WAIT: Final = 120.0
#: Longest pause between two history lookups (or two status re-reads of a 404 within the hour).
HISTORY_POLL_INTERVAL: Final = 10.0
#: Status re-reads of a request younger than the retention that answers 404, before it is called expired.
EXPIRY_RECHECKS: Final = 3
#: Submits one try may send when each outcome is unknown and the history shows none of them.
MAX_SUBMIT_ROUNDS: Final = 3
#: :meth:`_SegmindJobOperator._search_history`'s answers besides a record.
_FOUND_NOTHING: Final = "the history answered, without it"
_HISTORY_DOWN: Final = "the history could not be searched"


def _with_seed(summary: dict[str, Any], filled_seed: int | None) -> dict[str, Any]:
    """Put the seed the operator filled into a result summary (issue 13: every image has a known seed).

    The result's own ``seed`` wins where Segmind reports one; ``seed_filled`` says the provider chose it.
    """
    if filled_seed is None:
        return summary
    out = dict(summary)
    if out.get("seed") is None:
        out["seed"] = filled_seed
    out["seed_filled"] = True
    params = out.get("params")
    if isinstance(params, Mapping) and params.get("seed") is None:
        out["params"] = {**params, "seed": filled_seed}
    return out


def history_summary(
    record: HistoryRecord, *, model: str, params: Mapping[str, Any], filled_seed: int | None
) -> dict[str, Any]:
    """A task summary built from a request-history record (a request whose v2 record expired).

    The same shape as :func:`~airflow_provider_segmind.triggers.segmind.result_summary` (one
    implementation: it builds the summary): output URLs from the rows' ``generation_url``, the
    seed from the recorded ``request_body`` (else the filled one), the cost from
    ``credits_deduction`` [sdk ``Generations.history``]. ``source`` says where it came from.
    """
    body = record.request_body or {}
    urls = tuple(record.output_urls)
    result = JobResult(
        request_id=record.request_id,
        status=SegmindJobStatus.COMPLETED,
        output=list(urls),
        output_urls=urls,
        images=(),
        seed=parse_int(body.get("seed")) if parse_int(body.get("seed")) != SEED_RANDOM else None,
        metrics={"cost": record.credits} if record.credits is not None else {},
        base64_image=None,
        raw={},
    )
    summary = result_summary(result, model=model, params=params)
    summary["source"] = "request history"
    return _with_seed(summary, filled_seed)


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
        url = getattr(operator, "output_url", None)
        return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


def _quiet(message: str) -> None:
    """A ``warn`` callback for re-validations whose warning was already logged once."""


def _seconds(value: float | timedelta | None, default: float) -> float:
    if value is None:
        return default
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"job_timeout must be positive, got {value!r}")
    return seconds


def _schedule_dict(schedule: PollSchedule | Mapping[str, float] | None) -> dict[str, float] | None:
    if schedule is None:
        return None
    if isinstance(schedule, PollSchedule):
        return schedule.to_dict()
    return PollSchedule.from_dict(schedule).to_dict()  # validates early, at DAG parse time


def _cleared_since(record: Mapping[str, Any], ti: Any) -> bool:
    """Whether this task instance was cleared after the try that wrote ``record``.

    Airflow raises a task instance's ``max_tries`` (to its last try number plus ``retries``) each
    time it is cleared, and a retry leaves it alone (``airflow.models.taskinstance.
    clear_task_instances``, the same arithmetic as the Task SDK's ``first_try_number = max_tries -
    retries + 1``). So a record written under another ``max_tries`` predates a clear; one written
    by an older provider version (no ``max_tries``) counts as written by this clear generation.
    """
    recorded, current = record.get("max_tries"), getattr(ti, "max_tries", None)
    return isinstance(recorded, int) and isinstance(current, int) and recorded != current


def _no_try_follows(ti: Any) -> bool:
    """Whether this is the task instance's last try (Airflow retries while ``try_number <= max_tries``)."""
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    return isinstance(try_number, int) and isinstance(max_tries, int) and try_number > max_tries


def _fingerprint(model: str, params: Mapping[str, Any]) -> str:
    raw = json.dumps({"model": model, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


class VariableRequestStore:
    """``task_state_store``'s ``get``/``set`` on one Airflow Variable per task instance (Airflow 3.1/3.2).

    Why a Variable: on 3.1/3.2 it is the only state a task can write through the Task SDK that
    survives a retry (XComs are cleared before each try). The name hashes dag id, run id, task id
    and map index (and the record key) so it fits the 250-character Variable key and mapped task
    instances never share one. The value is a request id and a parameter fingerprint: nothing
    secret. Errors propagate: :class:`_GuardedStore` makes every store (this one and Airflow's)
    best effort in one place.
    """

    def __init__(self, ti: Any, log: Any) -> None:
        self._identity = [ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1)]
        self._log = log

    def name(self, key: str) -> str:
        raw = json.dumps([*self._identity, key], default=str)
        return REQUEST_VARIABLE_PREFIX + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]

    def get(self, key: str, default: Any = None) -> Any:
        from airflow.sdk import Variable

        raw = Variable.get(self.name(key), default=None)
        return default if raw is None else json.loads(raw)

    def set(self, key: str, value: Any, *, retention: timedelta | None = None) -> None:
        """``retention`` is accepted for the store's signature; a Variable is deleted by :meth:`delete`."""
        from airflow.sdk import Variable

        dag_id, run_id, task_id, map_index = self._identity
        description = (
            f"airflow-provider-segmind: the Segmind request of {dag_id}.{task_id}[{map_index}] in run {run_id}, "
            "so a retry reuses the job instead of paying for a new one. Deleted when the task ends; safe to delete."
        )
        # JSON text made here, not by serialize_json: its handling differs between Task SDK versions.
        Variable.set(self.name(key), json.dumps(value, sort_keys=True), description=description)

    def delete(self, key: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(self.name(key))

    def describe(self, key: str) -> str:
        return f"Variable {self.name(key)}"


class _GuardedStore:
    """Best-effort access to a request store (Airflow's task state store or a Variable), one rule for both.

    A record only saves money; it must never cost a try. A read that fails (e.g. the 3.3 store's
    ``AirflowRuntimeError`` when the API server cannot answer) is logged and read as "no record";
    a failed write or delete is logged and the try goes on, so a job that is already billed is
    still waited for. The worst case is the resubmit the record exists to avoid, and the log says so.
    """

    def __init__(self, store: Any, log: Any) -> None:
        self.store = store
        self._log = log

    def _what(self) -> str:
        describe = getattr(self.store, "describe", None)
        return str(describe(STATE_STORE_KEY)) if describe is not None else "the task state store"

    def get(self) -> Any:
        try:
            return self.store.get(STATE_STORE_KEY)
        except Exception as err:
            self._log.warning(
                "Could not read the Segmind request record from %s (%s); going on as if there were none "
                "(if an earlier try submitted a job, this try submits a new, billed one).",
                self._what(),
                err,
            )
            return None

    def set(self, record: Mapping[str, Any]) -> None:
        try:
            self.store.set(STATE_STORE_KEY, dict(record), retention=timedelta(seconds=2 * RESULT_RETENTION_SECONDS))
        except Exception as err:
            # The job is live and billed: keep waiting for it rather than fail and waste it.
            self._log.warning(
                "Could not record Segmind request %s in %s (%s); waiting for it anyway, but a retry of this "
                "try would submit a new, billed job.",
                record.get("request_id") or "(the submit about to be sent)",
                self._what(),
                err,
            )

    def delete(self) -> None:
        delete = getattr(self.store, "delete", None)
        if delete is None:  # a store without delete: its retention removes the record
            return
        try:
            delete(STATE_STORE_KEY)
        except Exception as err:
            self._log.warning(
                "Could not delete the Segmind request record from %s (%s); it is safe to delete by hand, and "
                "a later clear of this task does not reuse a completed job either way.",
                self._what(),
                err,
            )


class _SegmindJobOperator(BaseOperator):
    """Submit one Segmind v2 job and wait for it (shared by the two public operators).

    :param segmind_conn_id: the ``segmind`` connection (password = API key).
    :param deferrable: free the worker slot while the job runs (needs a triggerer). Defaults to
        ``[operators] default_deferrable``.
    :param job_timeout: seconds (or a timedelta) to wait for the job, per try; default 1 hour, the
        time Segmind keeps a result. Turned into an absolute deadline inside the trigger.
    :param poll_schedule: a :class:`~airflow_provider_segmind.protocol.PollSchedule` or its dict
        form (prefer the dict in ``partial()``); default ``PollSchedule.for_model(model)``.
    :param max_consecutive_errors: transient errors in a row (429, 5xx, resets) tolerated while
        waiting before the task fails; none of them fails it on its own.
    :param min_credits: if set, check the balance (a free call) before a billed submit and fail
        without retries when it is below this floor. Paid and free credits both count (both are
        spendable).
    :param strict_params: refuse parameters the model is not known to take (only Stable Diffusion
        3 Large's are known). Default ``False``: they are sent, with a warning in the task log.
    :param request_store: where a try records its request so a retry reuses it instead of paying
        again: ``auto`` (``task_state_store`` on Airflow 3.3+, else a Variable), ``task_state_store``,
        ``variable`` or ``none`` (a retry submits a new job).
    :param history_wait: seconds a submit whose outcome is unknown (or an earlier try's submit whose
        request id was never recorded) is looked for in Segmind's request history, polled every
        ``min(10, history_wait / 6)`` s, before submitting again; default 120. Only with the
        connection's ``history_lookup`` on (the default).
    :param fill_seed: fill a random ``seed`` (0..4294967294) when none is given, so every body is
        unique (a lost submit can be told apart in the history) and every image has a known seed,
        recorded in the summary. ``None`` (default): for models known to take ``seed`` (Stable
        Diffusion 3); ``True``/``False`` for any model.
    """

    operator_extra_links = (SegmindOutputLink(),)
    ui_color = "#e8dcff"

    def __init__(
        self,
        *,
        model: str = SD3_LARGE_MODEL,
        segmind_conn_id: str = "segmind_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        job_timeout: float | timedelta | None = DEFAULT_JOB_TIMEOUT,
        poll_schedule: PollSchedule | Mapping[str, float] | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        min_credits: float | None = None,
        request_store: str = "auto",
        strict_params: bool = False,
        history_wait: float = DEFAULT_HISTORY_WAIT,
        fill_seed: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
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
        self._history_warned = False
        self.request_id: str | None = None
        #: The first output URL once this try succeeded (what :class:`SegmindOutputLink` shows).
        self.output_url: str | None = None

    # ------------------------------------------------------------------ parameters

    def build_params(self) -> dict[str, Any]:
        """The request body before validation (after templating)."""
        raise NotImplementedError

    def _validated(self) -> tuple[str, dict[str, Any]]:
        """Model and body, validated after templating and before any request.

        A bad parameter cannot be fixed by a retry: raise ``AirflowFailException`` (from the typed
        error, message kept) so Airflow does not spend the task's retries on it.
        """
        try:
            model = self.model
            if not isinstance(model, str) or not model.strip():
                raise SegmindInvalidParametersError(
                    f"Invalid parameter 'model': got {model!r}. Allowed: a Segmind model slug such as "
                    f"{SD3_LARGE_MODEL!r}.",
                    field="model",
                    allowed="a model slug",
                )
            return model.strip(), validate_params(
                model.strip(), self.build_params(), strict=self.strict_params, warn=self.log.warning
            )
        except SegmindInvalidParametersError as err:
            raise AirflowFailException(str(err)) from err

    def _summary_params(self) -> dict[str, Any]:
        try:
            return validate_params(self.model.strip(), self.build_params(), strict=self.strict_params, warn=_quiet)
        except (SegmindInvalidParametersError, AttributeError):
            return {}

    # ------------------------------------------------------------------ helpers

    @cached_property
    def hook(self) -> SegmindHook:
        from airflow_provider_segmind.hooks.segmind import SegmindHook

        return SegmindHook(self.segmind_conn_id)

    def _raise(self, err: SegmindError) -> NoReturn:
        """Re-raise a typed error; as ``AirflowFailException`` when a task retry cannot help."""
        if not err.task_retry_helps:
            raise AirflowFailException(str(err)) from err
        raise err

    def _schedule(self, model: str) -> PollSchedule:
        if self.poll_schedule is not None:
            return PollSchedule.from_dict(self.poll_schedule)
        return PollSchedule.for_model(model)

    def _store(self, context: Context) -> _GuardedStore | None:
        """Where this try's request is recorded for the next try, per ``request_store``; ``None`` = nowhere."""
        if self.request_store == "none":
            return None
        getter = getattr(context, "get", None)
        native = getter("task_state_store") if getter is not None else None
        if self.request_store == "task_state_store" and native is None:
            raise AirflowFailException(
                "request_store='task_state_store' needs Airflow 3.3+ (this Airflow has no task state store). "
                "Allowed here: auto, variable, none."
            )
        if native is not None and self.request_store != "variable":
            return _GuardedStore(native, self.log)
        return _GuardedStore(VariableRequestStore(context["ti"], self.log), self.log)

    def _forget(self, context: Context, *, succeeded: bool = False) -> None:
        """Delete this task's record once no try can follow or reuse its request.

        On FAILED/expired/an error no retry fixes, and when the try that ends was the last one (a
        timeout or a transient error with the retries used up), in either store. On success only
        a Variable (3.1/3.2), which would otherwise stay forever: the 3.3 record is kept until it
        expires (or Airflow's ``[state_store] clear_on_success`` removes it once the success is
        recorded), because this code runs *before* Airflow records the success: a worker that dies
        in between leaves a try whose retry must still find the COMPLETED job, not pay again.
        Which record a later try may reuse never depends on this cleanup: see :meth:`_resume`.
        """
        try:
            store = self._store(context)
        except AirflowFailException:
            return
        if store is not None and (not succeeded or isinstance(store.store, VariableRequestStore)):
            store.delete()

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> Any:
        model, params = self._validated()
        store = self._store(context)
        record = self._read_record(store) if store is not None else None
        filled_seed = self._seed_to_fill(model, params, record)
        if filled_seed is not None:
            # Filled before the fingerprint: the body sent (and recorded) is the one a lost submit is found by.
            params = {**params, "seed": filled_seed}
            self.log.info("No seed given: using random seed %d (recorded in the result).", filled_seed)
        fingerprint = _fingerprint(model, params)
        if store is None:
            self.log.debug("request_store='none': a task retry will submit a new job.")
        elif record is not None:
            resumed = self._resume(context, store, record, model, params, fingerprint, filled_seed)
            if resumed is not None:
                return resumed
        self._credit_guard()
        return self._submit(context, store, model, params, fingerprint, filled_seed)

    def _read_record(self, store: _GuardedStore) -> Mapping[str, Any] | None:
        """The earlier try's record, if readable (a request record or an "attempt" record)."""
        record = store.get()
        if not record:
            return None
        if not isinstance(record, Mapping) or not (
            isinstance(record.get("request_id"), str) or record.get("phase") == "submitting"
        ):
            self.log.warning("Ignoring an unreadable Segmind record in the task state store: %r", record)
            return None
        return record

    def _seed_to_fill(self, model: str, params: Mapping[str, Any], record: Mapping[str, Any] | None) -> int | None:
        """The random seed to add to the body, or ``None`` (a seed given, or the model takes none).

        ``-1`` is Segmind's "random" (segmind-api.md), so it is filled too: the same meaning, made
        known. A retry reuses the seed its earlier try recorded when the rest of the body is the
        same (the fingerprint with that seed matches), so it can re-attach to that try's request.
        """
        if params.get("seed") is not None and params.get("seed") != SEED_RANDOM:
            return None
        if not (self.fill_seed if self.fill_seed is not None else model_takes_seed(model)):
            return None
        recorded = record.get("filled_seed") if record is not None else None
        if (
            isinstance(recorded, int)
            and not isinstance(recorded, bool)
            and 0 <= recorded <= SD3_SEED_MAX
            and record is not None
            and record.get("fingerprint") == _fingerprint(model, {**params, "seed": recorded})
        ):
            return recorded
        return secrets.randbelow(SD3_SEED_MAX + 1)

    # ------------------------------------------------------------------ submit and reconcile

    def _history_on(self) -> bool:
        """Whether the request history may be searched (the connection's ``history_lookup``, default on)."""
        try:
            return bool(self.hook.history_enabled)
        except Exception as err:  # a connection that cannot be read fails the submit itself, clearly
            self._history_unavailable(err)
            return False

    def _history_unavailable(self, err: BaseException) -> None:
        """Log, once per try, that the history cannot help: the try goes on with today's rules."""
        if not getattr(self, "_history_warned", False):
            self._history_warned = True
            self.log.warning(
                "Segmind's request history cannot be read (%s); going on without it (it is a secondary API: "
                "an unknown submit outcome or an expired request is then handled as without history_lookup).",
                err,
            )

    def _record_attempt(
        self,
        context: Context,
        store: _GuardedStore | None,
        model: str,
        fingerprint: str,
        filled_seed: int | None,
        since: float | None = None,
    ) -> float:
        """Write the "attempt" record before a submit is sent; return the attempt's start (epoch seconds).

        A worker that dies between sending and recording the request id leaves this record, and the
        next try searches the history for the body instead of submitting blindly. The body itself is
        not stored (an image-to-image body may hold a large base64 image): the fingerprint proves the
        next try rebuilt the same parameters, and the filled seed is stored to rebuild the same body.
        """
        # A resend within the same try keeps the first attempt's start: the search covers both.
        started = time.time() if since is None else since
        if store is not None:
            ti = context["ti"]
            store.set(
                {
                    "phase": "submitting",
                    "model": model,
                    "fingerprint": fingerprint,
                    "filled_seed": filled_seed,
                    "attempt_started_at": started,
                    "try_number": getattr(ti, "try_number", None),
                    "max_tries": getattr(ti, "max_tries", None),
                }
            )
        return started

    def _submit(
        self,
        context: Context,
        store: _GuardedStore | None,
        model: str,
        params: dict[str, Any],
        fingerprint: str,
        filled_seed: int | None,
    ) -> Any:
        """Submit (billed), reconciling a submit whose outcome is unknown through the request history.

        With the history on, a submit whose answer was lost (read timeout, reset after sending, a
        504, and also a 500/502/503, which may come *after* the job was queued) is never resent
        blindly: the history is searched for the same body for up to ``history_wait`` seconds;
        found -> re-attach to it; not found -> submit again (logged as a possible duplicate). With
        the history off (or unreadable), today's rule: 500/502/503 are resent by the hook, any other
        unknown outcome fails the task without retries.
        """
        history = self._history_on()
        since: float | None = None
        submitted: SubmitResponse | None = None
        round_number = 0
        while submitted is None:
            round_number += 1
            trust_5xx = not history
            started = (
                self._record_attempt(context, store, model, fingerprint, filled_seed, since) if history else time.time()
            )
            since = started if since is None else since
            try:
                submitted = self.hook.submit(model, params, validate=False, trust_5xx=trust_5xx)
            except SegmindError as err:
                if not submit_outcome_unknown(err, trust_5xx=trust_5xx):
                    if history and store is not None:
                        store.delete()  # certainly no job: a next try must not wait for one in the history
                    self._raise(err)
                if not history:
                    self._fail_unknown(err)
                self.log.warning(
                    "The outcome of Segmind submit %d is unknown (%s): searching the request history for it "
                    "(up to %g s) instead of submitting again.",
                    round_number,
                    err,
                    self.history_wait,
                )
                found = self._search_history(model, params, since=since, until=time.time() + self.history_wait)
                if isinstance(found, HistoryRecord):
                    return self._reattach_found(context, store, found, model, fingerprint, filled_seed, since)
                if found == _FOUND_NOTHING and round_number < MAX_SUBMIT_ROUNDS:
                    self.log.warning(
                        "Segmind's request history shows no request with this body since the submit (waited "
                        "%g s): submitting again. If the lost submit was queued after all but its history "
                        "record lags beyond history_wait, this one is a duplicate (billed twice).",
                        self.history_wait,
                    )
                    continue
                if found == _HISTORY_DOWN and submit_certainly_refused(err):
                    # The rule without the history: a 500/502/503 is Segmind refusing the submit.
                    self.log.warning("Resending the submit after %s (the rule without request history).", err)
                    history = False
                    continue
                self._fail_unknown(err)
        submitted_at = time.time()
        self.request_id = submitted.request_id
        self.log.info("Submitted Segmind job %s (model %s).", submitted.request_id, model)
        self._record_request(context, store, submitted.request_id, model, fingerprint, filled_seed, submitted_at)
        self._announce(context, submitted.request_id)
        return self._wait(context, model, submitted.request_id, submitted_at, filled_seed)

    def _fail_unknown(self, err: SegmindError) -> NoReturn:
        history = "" if self._history_on() else " (history_lookup is off)"
        raise AirflowFailException(
            f"The outcome of this Segmind submit is unknown: {str(err).rstrip('.')}. Segmind may have "
            "queued and billed the job, but its request id never arrived, and the request history could not "
            f"tell{history}, so the task fails without retries instead of submitting again (Segmind has no "
            "idempotency key). Look for the request in the Segmind console's request history; clearing this "
            "task submits a new, billed job."
        ) from err

    def _record_request(
        self,
        context: Context,
        store: _GuardedStore | None,
        request_id: str,
        model: str,
        fingerprint: str,
        filled_seed: int | None,
        submitted_at: float,
        *,
        generation_of: Mapping[str, Any] | None = None,
    ) -> None:
        """Write the request record; ``generation_of``: keep that record's ``max_tries`` (clear generation)."""
        if store is None:
            return
        ti = context["ti"]
        max_tries = getattr(ti, "max_tries", None) if generation_of is None else generation_of.get("max_tries")
        store.set(
            {
                "request_id": request_id,
                "model": model,
                "fingerprint": fingerprint,
                "filled_seed": filled_seed,
                "submitted_at": submitted_at,
                # Which try and which clear generation wrote it (see _cleared_since).
                "try_number": getattr(ti, "try_number", None),
                "max_tries": max_tries,
            }
        )

    def _reattach_found(
        self,
        context: Context,
        store: _GuardedStore | None,
        found: HistoryRecord,
        model: str,
        fingerprint: str,
        filled_seed: int | None,
        since: float,
    ) -> Any:
        """Re-attach to the request the history found for a lost submit: the same wait as after a submit."""
        submitted_at = found.created_at if found.created_at is not None else since
        self.request_id = found.request_id
        self.log.info(
            "Found the lost submit in Segmind's request history: request %s (%s). Re-attaching to it, no new submit.",
            found.request_id,
            found.status.value if found.status is not None else "status not landed yet",
        )
        self._record_request(context, store, found.request_id, model, fingerprint, filled_seed, submitted_at)
        self._announce(context, found.request_id)
        return self._wait(context, model, found.request_id, submitted_at, filled_seed)

    def _search_history(
        self, model: str, body: Mapping[str, Any], *, since: float, until: float
    ) -> HistoryRecord | str:
        """Look for the request of ``model`` sent with ``body`` since ``since``, until the bound ``until``.

        Records lag ([sdk]: fields are ``None`` until a record lands), so the search is repeated
        every ``min(10 s, history_wait / 6)`` until found or ``until``; at least once. Returns the
        record, :data:`_FOUND_NOTHING` (the history answered, without it) or :data:`_HISTORY_DOWN`
        (no lookup got an answer: off, unreachable, or an error no retry fixes).
        """
        if not self._history_on():
            return _HISTORY_DOWN
        interval = max(0.05, min(HISTORY_POLL_INTERVAL, self.history_wait / 6))
        answered = False
        while True:
            try:
                found = self.hook.find_submitted(model, body, since=since)
            except SegmindError as err:
                self._history_unavailable(err)
                if not err.transient:
                    break
            else:
                answered = True
                if found is not None:
                    return found
            remaining = until - time.time()
            if remaining <= 0:
                break
            time.sleep(min(interval, remaining))
        return _FOUND_NOTHING if answered else _HISTORY_DOWN

    def _history_record(self, request_id: str) -> HistoryRecord | None:
        """The history's record of ``request_id``; ``None`` when unknown, off, or the history is down."""
        if not self._history_on():
            return None
        try:
            return self.hook.get_history_record(request_id)
        except SegmindError as err:
            self._history_unavailable(err)
            return None

    def _recheck_missing(self, request_id: str, submitted_at: float | None) -> JobStatusResponse | None:
        """Re-read the status of a request that answered 404 while younger than the retention.

        Segmind's records can lag (issue 13): a 404 within the hour is re-checked a few times, a
        history poll interval apart, before the request is called expired. The status, or ``None``.
        """
        if submitted_at is not None and time.time() - submitted_at >= RESULT_RETENTION_SECONDS:
            return None
        interval = max(0.05, min(HISTORY_POLL_INTERVAL, self.history_wait / 6))
        for _ in range(EXPIRY_RECHECKS):
            time.sleep(interval)
            try:
                return self.hook.get_status(request_id)
            except SegmindRequestNotFoundError:
                continue
            except SegmindError as err:
                if not err.transient:
                    self._raise(err)
        return None

    def _finish_from_history(
        self, context: Context, request_id: str, model: str, params: Mapping[str, Any], filled_seed: int | None
    ) -> dict[str, Any] | None:
        """A request whose v2 record expired, looked up in the history (which outlives it [sdk ``Generations.get``]).

        COMPLETED with an output -> the task's summary from the history record (no submit); FAILED
        -> the rules of a FAILED job (refused input or a content block fails the task; otherwise
        ``None``: submit anew); anything else -> ``None`` (submit anew, as without the history).
        """
        record = self._history_record(request_id)
        if record is None:
            return None
        if record.status is SegmindJobStatus.COMPLETED and record.output_urls:
            self.log.info(
                "Segmind request %s: its v2 record expired, but the request history has it COMPLETED with %d "
                "output(s): finishing with them, no new submit.",
                request_id,
                len(record.output_urls),
            )
            self.request_id = request_id
            self._announce(context, request_id)
            return self._finish(context, history_summary(record, model=model, params=params, filled_seed=filled_seed))
        if record.status is SegmindJobStatus.FAILED:
            failure = job_failed_error(request_id, record.error)
            if not failure.task_retry_helps:
                self._forget(context)
                self._raise(failure)
            self.log.warning(
                "Segmind request %s FAILED according to the request history (%s).", request_id, record.error
            )
        return None

    def _resume(
        self,
        context: Context,
        store: _GuardedStore,
        record: Mapping[str, Any],
        model: str,
        params: dict[str, Any],
        fingerprint: str,
        filled_seed: int | None,
    ) -> Any | None:
        """Reuse the request an earlier try submitted, if it can still serve; ``None`` = submit anew.

        The rule, the same on every Airflow version: a retry after a failed or interrupted try
        re-attaches to the job it already paid for; a cleared task whose last try succeeded
        generates anew. That needs no cleanup at success (the 3.3 record outlives a success, a
        Variable's delete may fail, a future trigger may end the task with no worker resume): a
        record written before the latest clear (:func:`_cleared_since`) is reused only while its
        job is QUEUED or PROCESSING, which proves no try succeeded with it. A COMPLETED job from
        before a clear, or one whose status cannot be read, is left alone and a new job submitted.

        An "attempt" record (an earlier try sent a submit but never recorded its request id: its
        worker died, or the outcome was unknown) is first looked up in the request history; found,
        it becomes a request record under the same rules. A request whose v2 record expired is
        looked up in the history too (:meth:`_finish_from_history`).
        """
        if record.get("model") != model or record.get("fingerprint") != fingerprint:
            self.log.warning(
                "An earlier try submitted Segmind request %s with other parameters; submitting anew.",
                record.get("request_id", "(id never recorded)"),
            )
            return None
        if record.get("phase") == "submitting":
            started = record.get("attempt_started_at")
            if not isinstance(started, (int, float)) or isinstance(started, bool):
                self.log.warning("Ignoring an unreadable Segmind attempt record: %r", record)
                return None
            # The bound runs from now, not from the attempt's start: when that submit's connection
            # ended (and so when its record began to lag) is unknown, and a transient history error
            # on this try's first lookup must still leave room for another one.
            found = self._search_history(model, params, since=float(started), until=time.time() + self.history_wait)
            if not isinstance(found, HistoryRecord):
                self.log.warning(
                    "An earlier try sent a Segmind submit but did not record its request id, and the request "
                    "history %s: submitting anew (if that submit was queued after all, this is a duplicate).",
                    "shows no such request" if found == _FOUND_NOTHING else "cannot be searched",
                )
                return None
            self.log.info(
                "An earlier try's lost Segmind submit is request %s in the request history.", found.request_id
            )
            submitted = found.created_at if found.created_at is not None else float(started)
            self._record_request(
                context,
                store,
                found.request_id,
                model,
                fingerprint,
                filled_seed,
                submitted,
                generation_of=record,
            )
            record = {**record, "request_id": found.request_id, "submitted_at": submitted}
        if not isinstance(record.get("request_id"), str):
            self.log.warning("Ignoring an unreadable Segmind record in the task state store: %r", record)
            return None
        request_id: str = record["request_id"]
        submitted_at = record.get("submitted_at")
        submitted_at = float(submitted_at) if isinstance(submitted_at, (int, float)) else None
        status: JobStatusResponse | None
        try:
            status = self.hook.get_status(request_id)
        except SegmindRequestNotFoundError:
            status = self._recheck_missing(request_id, submitted_at)
            if status is None:
                if _cleared_since(record, context["ti"]):
                    self.log.info(
                        "Segmind request %s predates a clear of this task and its v2 record is gone; a cleared "
                        "task generates anew.",
                        request_id,
                    )
                    store.delete()
                    return None
                finished = self._finish_from_history(context, request_id, model, params, filled_seed)
                if finished is not None:
                    return finished
                self.log.warning(
                    "An earlier try's Segmind request %s is gone (404: retention passed); submitting anew (billed).",
                    request_id,
                )
                return None
        except SegmindError as err:
            if not err.transient:
                self._raise(err)
            self.log.warning(
                "Cannot read the status of earlier Segmind request %s (%s); re-attaching to it rather than "
                "submitting again.",
                request_id,
                err,
            )
            status = None
        if status is not None and status.status is SegmindJobStatus.FAILED:
            failure = job_failed_error(request_id, status.error, status.metrics)
            if not failure.task_retry_helps:
                # Refused input or a content block: the same body would be billed and fail again.
                self._forget(context)
                self._raise(failure)
            self.log.warning(
                "An earlier try's Segmind request %s FAILED (%s); submitting anew (billed).", request_id, status.error
            )
            return None
        if _cleared_since(record, context["ti"]) and (status is None or status.status is SegmindJobStatus.COMPLETED):
            self.log.info(
                "This task was cleared after Segmind request %s (%s) was submitted: a cleared task generates "
                "anew, so a new (billed) job is submitted instead of returning that job's output again.",
                request_id,
                status.status.value if status is not None else "status unreadable",
            )
            store.delete()
            return None
        self.request_id = request_id
        self._announce(context, request_id)
        if status is not None and status.status is SegmindJobStatus.COMPLETED:
            self.log.info("An earlier try's Segmind request %s is COMPLETED: reusing it, no new submit.", request_id)
            try:
                result = self.hook.get_result(request_id)
            except SegmindResultNotReadyError as err:
                # The status said COMPLETED, the result still does not (a lagging replica): wait for it
                # like any running job instead of failing the try or paying for a new one.
                self.log.warning("%s Waiting for it again.", err)
                return self._wait(context, model, request_id, submitted_at, filled_seed)
            except SegmindJobFailedError as err:
                if not err.task_retry_helps:
                    self._forget(context)
                    self._raise(err)
                self.log.warning("Earlier Segmind request %s cannot be reused (%s); submitting anew.", request_id, err)
                return None
            except SegmindRequestNotFoundError as err:
                finished = self._finish_from_history(context, request_id, model, params, filled_seed)
                if finished is not None:
                    return finished
                self.log.warning("Earlier Segmind request %s cannot be reused (%s); submitting anew.", request_id, err)
                return None
            except SegmindError as err:
                self._raise(err)
            summary = result_summary(
                result, model=model, status_metrics=status.metrics, submitted_at=submitted_at, params=params
            )
            return self._finish(context, _with_seed(summary, filled_seed))
        self.log.info(
            "An earlier try's Segmind request %s is still %s: waiting for it again, no new submit.",
            request_id,
            status.status.value if status is not None else "running",
        )
        return self._wait(context, model, request_id, submitted_at, filled_seed)

    @staticmethod
    def _announce(context: Context, request_id: str) -> None:
        """XCom the request id, for a sensor or a transfer downstream."""
        context["ti"].xcom_push(key=XCOM_REQUEST_ID, value=request_id)

    def _credit_guard(self) -> None:
        if self.min_credits is None:
            return
        try:
            balance = self.hook.get_credit_balance()
        except SegmindError as err:
            self._raise(err)
        # Paid and free credits are both spendable (segmind-api.md, "Added 2026-11-30").
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
        self, context: Context, model: str, request_id: str, submitted_at: float | None, filled_seed: int | None = None
    ) -> Any:
        deadline = time.time() + self.job_timeout
        schedule = self._schedule(model)
        if self.deferrable:
            self.defer(
                trigger=SegmindJobTrigger(
                    request_id=request_id,
                    conn_id=self.segmind_conn_id,
                    model=model,
                    deadline=deadline,
                    submitted_at=submitted_at,
                    poll_schedule=schedule.to_dict(),
                    max_consecutive_errors=self.max_consecutive_errors,
                ),
                method_name="execute_complete",
                # The filled seed travels with the resume (the resumed task is a fresh operator instance).
                kwargs={"filled_seed": filled_seed} if filled_seed is not None else None,
                timeout=None,
            )
        event = wait_for_job(
            request_id,
            conn_id=self.segmind_conn_id,
            model=model,
            schedule=schedule,
            deadline=deadline,
            submitted_at=submitted_at,
            max_consecutive_errors=self.max_consecutive_errors,
            log=self.log,
        )
        return self.execute_complete(context, event, filled_seed=filled_seed)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, filled_seed: int | None = None
    ) -> dict[str, Any]:
        """Turn the trigger's (or the sync loop's) event into the task's result or error.

        Anything outside the allow-list (``None``, empty, unknown status) fails loudly.
        ``filled_seed``: the seed :meth:`execute` filled in (see ``fill_seed``), for the summary.
        An ``expired`` request (its v2 record gone) is looked up in the request history first.
        """
        try:
            checked = validate_event(event)
        except ValueError as err:
            raise AirflowException(f"Task {self.task_id} resumed with an invalid event: {err}") from None
        status, request_id = checked["status"], checked["request_id"]
        self.request_id = request_id
        message = str(checked.get("message") or "")
        if status not in ("success", "expired") and (
            status == "failed" or checked.get("retryable") is False or _no_try_follows(context["ti"])
        ):
            self._forget(context)  # no try can follow, or none could reuse this request
        if status == "success":
            summary = dict(checked["result"])
            summary["params"] = summarize_params(self._summary_params())
            return self._finish(context, fit_summary(_with_seed(summary, filled_seed)))
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
            raise AirflowException(
                f"{message} (job_timeout={self.job_timeout:g} s). The job was not cancelled (Segmind cannot "
                "cancel) and its result stays retrievable for 1 hour after submission; a retry of this task "
                "waits for the same request instead of submitting again (unless request_store='none')."
            )
        text = sentences(message, f"Request id: {request_id}")
        if checked.get("retryable") is False:
            raise AirflowFailException(text)
        raise AirflowException(text)

    def _finish(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]:
        self._forget(context, succeeded=True)
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


def _optional_number(value: Any, kind: type[int] | type[float]) -> Any:
    """Templated numbers arrive as strings ("42"); convert them, leave anything else to validation."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text in ("", "None", "none", "null"):
        return None
    try:
        return kind(text)
    except ValueError:
        return value


class SegmindTextToImageOperator(_SegmindJobOperator):
    """Generate an image with Stable Diffusion 3 Large (or a compatible slug via ``model``).

    Every field is validated after templating and before any request, with an error naming the
    field and the allowed values, so a bad DAG costs no credit. Works with dynamic task mapping
    (``.partial(...).expand(prompt=[...])`` or ``expand_kwargs``).

    :param prompt: what to draw (required, at most 10,000 characters). Templated.
    :param negative_prompt: what to avoid. Templated.
    :param aspect_ratio: one of 16:9 1:1 21:9 2:3 3:2 4:5 5:4 9:16 9:21 (default 1:1). Templated.
    :param mode: ``text-to-image`` (default) or ``image-to-image``. Templated.
    :param image: input image (URL or base64) for image-to-image. Templated.
    :param strength: 0..1, how far image-to-image may depart from ``image``. Templated.
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

    def build_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "aspect_ratio": self.aspect_ratio,
            "mode": self.mode,
            "image": self.image or None,
            "strength": _optional_number(self.strength, float),
            "output_format": self.output_format,
            "seed": _optional_number(self.seed, int),
            "base64": self.base64,
        }
        return {name: value for name, value in params.items() if value is not None}
