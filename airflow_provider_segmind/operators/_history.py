"""Segmind's request history for a task: a lost submit found by its body, an expired request by its id.

The history (SDK ``segmind/generations.py``: ``Generations.history``/``get``) outlives a v2 record's
1 hour retention and lists a request even when its submit answer was lost, so it is how a try
re-attaches instead of paying twice (see the operators' module docstring). It is a secondary API:
each lookup here is best effort, and when it cannot answer the try goes on with the rules without
it (the connection's ``history_lookup`` turns it off). :class:`_HistoryLookups` is the part of the
operators that asks it; :mod:`~airflow_provider_segmind.operators._reconcile` decides what to do
with the answers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, NoReturn

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator

from airflow_provider_segmind.exceptions import SegmindError, SegmindRequestNotFoundError
from airflow_provider_segmind.operators._claims import DEFAULT_CLAIM_MARGIN, RequestClaims
from airflow_provider_segmind.operators._params import _with_seed
from airflow_provider_segmind.protocol.errors import job_failed_error
from airflow_provider_segmind.protocol.history import HistoryRecord, request_id_key, v2_request_id
from airflow_provider_segmind.protocol.history_search import created_instants
from airflow_provider_segmind.protocol.params import SEED_RANDOM
from airflow_provider_segmind.protocol.responses import JobResult, JobStatusResponse, parse_int
from airflow_provider_segmind.protocol.retry import RATE_LIMIT_MAX_WAIT
from airflow_provider_segmind.protocol.schedule import RESULT_RETENTION_SECONDS
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus
from airflow_provider_segmind.utils import metrics
from airflow_provider_segmind.utils.results import result_summary

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_segmind.hooks.segmind import SegmindHook

#: Seconds a lost submit is looked for in the request history (whose records lag) before submitting again.
DEFAULT_HISTORY_WAIT: Final = 120.0
#: Longest pause between two history lookups (or two status re-reads of a 404 within the hour).
HISTORY_POLL_INTERVAL: Final = 10.0
#: Status re-reads of a request younger than the retention that answers 404, before it is called expired.
EXPIRY_RECHECKS: Final = 3
#: Time left for the last history lookup of a search (at most one poll interval).
LAST_LOOKUP_SECONDS: Final = 1.0
#: :meth:`_SegmindJobOperator._search_history`'s answers besides a record.
_FOUND_NOTHING: Final = "the history answered, without it"
_HISTORY_DOWN: Final = "the history could not be searched"


@dataclass(frozen=True)
class Ambiguous:
    """The history shows more than one unclaimed request that may be ours: nothing proves which."""

    request_ids: tuple[str, ...]

    def __str__(self) -> str:
        return ", ".join(self.request_ids)


def _created(record: HistoryRecord) -> float:
    """When a (dated) candidate was created: its reading in the search window (``created_at`` of a
    candidate, see ``HistorySearch.candidates``), else its latest reading."""
    return record.created_at if record.created_at is not None else max(created_instants(record))


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


class _HistoryLookups(BaseOperator):
    """The operators' lookups in the request history (a base of ``_SegmindJobOperator``, not an operator itself)."""

    if TYPE_CHECKING:  # defined by _Reconciler (_forget) and the operator in operators/segmind.py
        history_wait: float
        request_id: str | None

        @property
        def hook(self) -> SegmindHook: ...

        def _raise(self, err: SegmindError) -> NoReturn: ...

        @staticmethod
        def _announce(context: Context, request_id: str) -> None: ...

        def _forget(self, context: Context, *, succeeded: bool = False) -> None: ...

        def _finish(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]: ...

    def _wire_body(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The body as sent to Segmind (the operator turns an ``s3://`` image into its presigned URL or base64)."""
        return dict(params)

    def _fail_if_final(self, context: Context, failure: SegmindError) -> None:
        """Fail the task (and forget its record) when an earlier request FAILED in a way no retry fixes.

        Refused input or a content block: the same body would be billed and fail again. Otherwise
        return, and the caller submits anew.
        """
        if not failure.task_retry_helps:
            self._forget(context)
            self._raise(failure)

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

    def _send_bound(self) -> float:
        """Seconds after an attempt started within which its submit can have reached Segmind: every
        attempt the hook may send (each bounded by the connect and read timeouts) and the waits
        between them (at most :data:`~airflow_provider_segmind.protocol.retry.RATE_LIMIT_MAX_WAIT`)."""
        settings = self.hook.get_settings()
        attempts = settings.retry_policy.max_attempts
        per_attempt = settings.connect_timeout + settings.read_timeout
        return attempts * per_attempt + (attempts - 1) * RATE_LIMIT_MAX_WAIT

    def _claims(self, context: Context) -> RequestClaims:
        """This try's view of the request claims (``operators/_claims.py``), made once per try."""
        claims: RequestClaims | None = getattr(self, "_request_claims", None)
        if claims is None:
            claims = RequestClaims(context["ti"], self.log)
            self._request_claims = claims
        return claims

    def _mark_own(self, context: Context, request_id: str, created_at: float) -> None:
        """Claim a request this task knows is its own (it got the submit answer, or its record names it).

        Best effort: a claim that cannot be written is logged; the job is live and billed, so the
        try goes on. Another task could then take the request from the history (the log says so).
        """
        try:
            claims = self._claims(context)
            claims.mark(request_id, created_at)
            claims.sweep()
        except Exception as err:
            self.log.warning(
                "Could not claim Segmind request %s (%s): another task whose identical submit lost its answer "
                "could take it for its own.",
                request_id,
                err,
            )

    def _unclaimed(
        self, context: Context, candidates: Sequence[HistoryRecord], ignore: frozenset[str], since: float
    ) -> list[HistoryRecord] | None:
        """The candidates no other task instance (or earlier clear of this one) has claimed, nor this
        one before the attempt began at ``since`` (an earlier try's); ``None`` when the claims
        cannot be read (then nothing proves whose a request is)."""
        claims = self._claims(context)
        free: list[HistoryRecord] = []
        for record in candidates:
            if request_id_key(record.request_id) in ignore:
                continue
            try:
                if claims.not_this_attempts(record.request_id, _created(record), since):
                    continue
            except Exception as err:
                self.log.warning("Cannot read the Segmind request claims (%s).", err)
                return None
            free.append(record)
        return free

    def _search_history(
        self,
        context: Context,
        model: str,
        body: Mapping[str, Any],
        *,
        since: float,
        until: float,
        deadline: float,
        ignore: frozenset[str] = frozenset(),
    ) -> HistoryRecord | Ambiguous | str:
        """Find *our* request of ``model`` sent with ``body`` between ``since`` and ``until`` (the
        attempt's send window); search until ``deadline`` at the latest.

        Records lag ([sdk]: fields are ``None`` until a record lands), so the search is repeated
        every ``min(10 s, history_wait / 6)`` until found or ``deadline``; at least once. Each lookup
        fits in the time left (one page read, no retry of its own, a read timeout no longer than
        what is left), so ``history_wait`` is a bound. An error that is transient (a 5xx, a reset)
        is looked past until the deadline; one that is not (a 404 for the whole history, a 401)
        ends the search at once.

        A request is ours only if it is the **one** unclaimed candidate (claims:
        ``operators/_claims.py``; ``ignore``: request ids known not to be this attempt's), it is at
        least ``claim_margin`` seconds old (a task that got that submit's answer has claimed it by
        then), and this task's claim on it holds. Two or more unclaimed candidates at the deadline
        are :class:`Ambiguous`: the caller takes the safe rule, never a guess.

        Returns the record, :class:`Ambiguous`, :data:`_FOUND_NOTHING` (the history answered,
        without it) or :data:`_HISTORY_DOWN` (no lookup got an answer, or the claims cannot be read).
        """
        if not self._history_on():
            return _HISTORY_DOWN
        interval = max(0.05, min(HISTORY_POLL_INTERVAL, self.history_wait / 6))
        answered = False
        ambiguous: Ambiguous | None = None
        while True:
            pause = interval
            try:
                found = self.hook.search_submitted(
                    model, self._wire_body(body), since=since, until=until, deadline=deadline
                )
            except SegmindError as err:
                self._history_unavailable(err)
                if not err.transient:
                    break
            else:
                answered = True
                free = self._unclaimed(context, found, ignore, since)
                if free is None:
                    return _HISTORY_DOWN
                ambiguous = Ambiguous(tuple(r.request_id for r in free)) if len(free) > 1 else None
                if len(free) == 1:
                    (record,) = free
                    margin = min(DEFAULT_CLAIM_MARGIN, self.history_wait / 2)
                    young = _created(record) + margin - time.time()
                    if young > 0:
                        pause = min(young, max(0.05, deadline - time.time()))  # then look again
                    elif self._take(context, record):
                        return replace(record, request_id=v2_request_id(record.request_id))
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            # The last lookup comes with a second left to read its answer, not at the deadline.
            last = min(LAST_LOOKUP_SECONDS, interval)
            time.sleep(min(pause, remaining - last) if remaining > last else remaining)
            if time.time() >= deadline:
                # No lookup fits any more: the hook would answer at once without reading a page (no
                # candidates), and that non-answer must not replace the last real one. (It did: an
                # ambiguity seen until the deadline became "nothing found", after which a late
                # 500/502/503 was submitted again, billing a twin's job twice. Issue 22.)
                break
        if ambiguous is not None:
            return ambiguous
        return _FOUND_NOTHING if answered else _HISTORY_DOWN

    def _take(self, context: Context, record: HistoryRecord) -> bool:
        """Claim a request found in the history; ``False`` if another task has it (or the claim failed)."""
        try:
            taken = self._claims(context).take(record.request_id, _created(record))
        except Exception as err:
            self.log.warning("Could not claim Segmind request %s (%s); not taking it.", record.request_id, err)
            return False
        if not taken:
            self.log.info("Segmind request %s matches, but another task claimed it first.", record.request_id)
        return taken

    def _fail_safe(self, context: Context, found: Ambiguous | str, what: str) -> NoReturn:
        """The safe rule: never resend blindly, never guess; fail without retries and say what to do."""
        metrics.failed("outcome_unknown")
        self._forget(context)
        if isinstance(found, Ambiguous):
            shown = (
                f"the request history shows {len(found.request_ids)} requests that may be it ({found}), and "
                "nothing proves which is this task's (another task sent the same body, or the history did not "
                "keep every parameter)"
            )
        else:
            shown = f"the request history showed no request of it within history_wait ({self.history_wait:g} s)"
        raise AirflowFailException(
            f"{what}, and {shown}. Nothing was submitted again, so nothing is billed twice, and the task fails "
            "without retries (Segmind has no idempotency key). Look the request up in the Segmind console's "
            "request history; clearing this task submits a new, billed job (with a new seed where the provider "
            "fills one). Raise history_wait if your account's history lags."
        )

    def _history_record(self, request_id: str) -> HistoryRecord | None:
        """The history's record of ``request_id``; ``None`` when unknown, off, or the history is down.

        A record lands late ([sdk ``Generations.get``]: a request the history does not know yet is
        "a not-found error"; fields are ``None`` until it lands), so a request not found, or found
        without a final status, is asked about again every poll interval for up to
        ``history_wait``: an expired request whose record is still lagging would otherwise be paid
        for again (found by the soak).
        """
        if not self._history_on():
            return None
        interval = max(0.05, min(HISTORY_POLL_INTERVAL, self.history_wait / 6))
        deadline = time.time() + self.history_wait
        record: HistoryRecord | None = None
        while True:
            try:
                record = self.hook.get_history_record(request_id)
            except SegmindError as err:
                self._history_unavailable(err)
                if not err.transient:
                    return None
            else:
                if record is not None and record.status in (SegmindJobStatus.COMPLETED, SegmindJobStatus.FAILED):
                    return record
            remaining = deadline - time.time()
            if remaining <= 0:
                return record
            time.sleep(min(interval, remaining))

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
            self._fail_if_final(context, failure)
            self.log.warning(
                "Segmind request %s FAILED according to the request history (%s).", request_id, record.error
            )
        return None
