"""Exactly-once submission on the worker: the recorded submit, the lost submit, the resumed request.

The rules are described in the operators' module docstring (``operators/segmind.py``, "Exactly-once
submission"); this module is their implementation: :meth:`_Reconciler._submit` writes an attempt
record, sends the billed submit and reconciles an unknown outcome through the request history;
:meth:`_Reconciler._resume` decides whether an earlier try's request (or attempt) still serves.
:meth:`_Reconciler._store`/:meth:`_Reconciler._forget` open and delete the record, whose stores
and contents are :mod:`~airflow_provider_segmind.operators._records`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.exceptions import (
    SegmindError,
    SegmindJobFailedError,
    SegmindRequestNotFoundError,
    SegmindResultNotReadyError,
)
from airflow_provider_segmind.operators._claims import CLAIM_DAYS
from airflow_provider_segmind.operators._history import _HISTORY_DOWN, Ambiguous, _HistoryLookups
from airflow_provider_segmind.operators._params import _with_seed
from airflow_provider_segmind.operators._records import (
    VariableRequestStore,
    _cleared_since,
    _GuardedStore,
    attempt_record,
    open_store,
    request_record,
)
from airflow_provider_segmind.protocol.errors import job_failed_error
from airflow_provider_segmind.protocol.history import HistoryRecord
from airflow_provider_segmind.protocol.responses import JobStatusResponse, SubmitResponse
from airflow_provider_segmind.protocol.retry import submit_certainly_refused, submit_outcome_unknown
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus
from airflow_provider_segmind.utils import metrics
from airflow_provider_segmind.utils.results import result_summary

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Submits one try may send when each outcome is unknown and the history shows none of them.
MAX_SUBMIT_ROUNDS: Final = 3


class _Reconciler(_HistoryLookups):
    """The operators' record lifecycle, submit and resume (a base of ``_SegmindJobOperator``, not an operator)."""

    if TYPE_CHECKING:  # defined by the operator in operators/segmind.py
        request_store: str
        _resubmitting: bool

        def _noted_submit(self, request_id: str) -> None: ...

        def _wait(
            self,
            context: Context,
            model: str,
            request_id: str,
            submitted_at: float | None,
            filled_seed: int | None = None,
            status: SegmindJobStatus | None = None,
        ) -> Any: ...

    def _store(self, context: Context) -> _GuardedStore | None:
        """Where this try's request is recorded for the next try, per ``request_store``; ``None`` = nowhere."""
        return open_store(self.request_store, context, self.log)

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
            store.set(attempt_record(context["ti"], model, fingerprint, filled_seed, started))
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
        blindly: the history is searched, within the try's send window and for up to
        ``history_wait`` seconds, for the one unclaimed request with the same body; found -> claim
        it and re-attach; none or several -> the safe rule (:meth:`_fail_safe`), except that an
        *answered* 500/502/503 the history does not show is submitted again (Segmind's word: a
        refusal; logged as a possible duplicate; at most :data:`MAX_SUBMIT_ROUNDS` submits). With
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
                submitted = self.hook.submit(model, self._wire_body(params), validate=False, trust_5xx=trust_5xx)
            except SegmindError as err:
                if not submit_outcome_unknown(err, trust_5xx=trust_5xx):
                    if history and store is not None:
                        store.delete()  # certainly no job: a next try must not wait for one in the history
                    metrics.failed("submit_refused")
                    self._raise(err)
                if not history:
                    self._fail_unknown(err)
                sent_until = time.time()
                self.log.warning(
                    "The outcome of Segmind submit %d is unknown (%s): searching the request history for it "
                    "(up to %g s) instead of submitting again.",
                    round_number,
                    err,
                    self.history_wait,
                )
                found = self._search_history(
                    context, model, params, since=since, until=sent_until, deadline=sent_until + self.history_wait
                )
                if isinstance(found, HistoryRecord):
                    return self._reattach_found(context, store, found, model, fingerprint, filled_seed, since)
                if found == _HISTORY_DOWN:
                    if submit_certainly_refused(err):
                        # The rule without the history: a 500/502/503 is Segmind refusing the submit.
                        self.log.warning("Resending the submit after %s (the rule without request history).", err)
                        history = False
                        continue
                    self._fail_unknown(err)
                if (
                    not isinstance(found, Ambiguous)
                    and submit_certainly_refused(err)
                    and round_number < MAX_SUBMIT_ROUNDS
                ):
                    # Segmind answered 500/502/503, which its docs call a refusal, and the history agrees.
                    self.log.warning(
                        "Segmind's request history shows no request with this body since the submit (waited "
                        "%g s): submitting again. If the lost submit was queued after all but its history "
                        "record lags beyond history_wait, this one is a duplicate (billed twice).",
                        self.history_wait,
                    )
                    continue
                self._fail_safe(context, found, f"The outcome of this Segmind submit is unknown ({err})")
        submitted_at = time.time()
        self.request_id = submitted.request_id
        self.log.info("Submitted Segmind job %s (model %s).", submitted.request_id, model)
        metrics.emit(metrics.SUBMITTED)
        self._noted_submit(submitted.request_id)
        if round_number > 1 or self._resubmitting:
            metrics.emit(metrics.RESUBMITTED)
        self._mark_own(context, submitted.request_id, submitted_at)
        self._record_request(context, store, submitted.request_id, model, fingerprint, filled_seed, submitted_at)
        self._announce(context, submitted.request_id)
        return self._wait(context, model, submitted.request_id, submitted_at, filled_seed, status=submitted.status)

    def _fail_unknown(self, err: SegmindError) -> NoReturn:
        metrics.failed("outcome_unknown")
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
        store.set(request_record(ti, request_id, model, fingerprint, filled_seed, submitted_at, max_tries))

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
        metrics.emit(metrics.REATTACHED)
        self.log.info(
            "Found the lost submit in Segmind's request history: request %s (%s). Re-attaching to it, no new submit.",
            found.request_id,
            found.status.value if found.status is not None else "status not landed yet",
        )
        self._record_request(context, store, found.request_id, model, fingerprint, filled_seed, submitted_at)
        self._announce(context, found.request_id)
        return self._wait(context, model, found.request_id, submitted_at, filled_seed, status=found.status)

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
            if _cleared_since(record, context["ti"]):
                # A clear generates anew: the lost submit from before it is not this generation's.
                self.log.info(
                    "An earlier try before the latest clear sent a Segmind submit whose request id was never "
                    "recorded; a cleared task generates anew (a new seed where the provider fills one)."
                )
                store.delete()
                return None
            if time.time() - float(started) > CLAIM_DAYS * 86400:
                self.log.warning("Ignoring a Segmind attempt record older than %d days: submitting anew.", CLAIM_DAYS)
                return None
            # The window is the dead attempt's own: from its start to the latest moment its submit
            # could have reached Segmind. The search runs for up to history_wait from now.
            found = self._search_history(
                context,
                model,
                params,
                since=float(started),
                until=float(started) + self._send_bound(),
                deadline=time.time() + self.history_wait,
            )
            if found == _HISTORY_DOWN:
                self.log.warning(
                    "An earlier try sent a Segmind submit but did not record its request id, and the request "
                    "history cannot be searched: submitting anew (if that submit was queued after all, this is "
                    "a duplicate)."
                )
                return None
            if not isinstance(found, HistoryRecord):
                self._fail_safe(
                    context, found, "An earlier try sent a Segmind submit whose request id was never recorded"
                )
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
            self._fail_if_final(context, failure)
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
        metrics.emit(metrics.REATTACHED)
        if _cleared_since(record, context["ti"]):
            # A job from before the clear, still running: this generation adopts it (no image was delivered).
            self._mark_own(context, request_id, submitted_at if submitted_at is not None else time.time())
        self._announce(context, request_id)
        if status is not None and status.status is SegmindJobStatus.COMPLETED:
            self.log.info("An earlier try's Segmind request %s is COMPLETED: reusing it, no new submit.", request_id)
            try:
                result = self.hook.get_result(request_id)
            except SegmindResultNotReadyError as err:
                # The status said COMPLETED, the result still does not (a lagging replica): wait for it
                # like any running job instead of failing the try or paying for a new one.
                self.log.warning("%s Waiting for it again.", err)
                return self._wait(context, model, request_id, submitted_at, filled_seed, status=status.status)
            except SegmindJobFailedError as err:
                self._fail_if_final(context, err)
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
        return self._wait(
            context, model, request_id, submitted_at, filled_seed, status=status.status if status is not None else None
        )
