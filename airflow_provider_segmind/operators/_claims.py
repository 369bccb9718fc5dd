"""Who owns a Segmind request: one claim per request, kept where every worker sees it.

A task re-attaches to a request it finds in Segmind's request history by its body (its submit
answer was lost). Two task instances can send the same body (mapped twins with one prompt and one
seed, a model without a seed, two DAG runs close together), so a body match alone may be another
task's request. Every task therefore *claims* each request it uses, and a request claimed by
another task instance, or by an earlier clear of this one, is never re-attached to
(docs/exactly-once.md, "Who owns a request").

Where: an Airflow Variable per request (``segmind_claim_<UTC day>_<hash of the request id>``), read
and written through the Task SDK like the 3.1/3.2 request record, because it is the only state a
task can write that every worker, DAG run and DAG sees on Airflow 3.1 to 3.3 (the 3.3 task state
store belongs to one task instance). The value names the owner: dag id, run id, task id, map index
and the clear generation (``max_tries``, see ``_records._cleared_since``). Nothing secret.

Why not a library or a lock: the Task SDK offers get/set/delete on Variables, no compare-and-set
(``PUT /execution/variables/{key}`` is an upsert). Taking a request found in the history therefore
follows Fischer's timed mutual exclusion (Lamport, "A fast mutual exclusion algorithm", 1987, §1):
read (free), write our claim, wait ``settle`` seconds, read again; ours -> taken. It holds while
every claimant's write lands within ``settle`` of its read, which :meth:`RequestClaims.take`
checks on its own clock (a slower round gives up that request for the try). A task that received
the submit answer itself *knows* the request is its own and writes its claim at once
(:meth:`RequestClaims.mark`); a searcher only takes a request old enough that such a claim would
be visible (``claim_margin``).

Lifetime: a claim must outlive every search that could see its request: searches look at requests
created within a try's own send window, and a retry searches for an attempt at most
:data:`CLAIM_DAYS` days old, so a claim older than that is never read. On Airflow 3.3+
(``Variable.keys``) a worker deletes claims older than that, at most once an hour per process; on
3.1/3.2 (no key listing in the Task SDK) they stay until deleted by hand (docs/exactly-once.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

from airflow_provider_segmind.protocol.history import request_id_key

#: Name prefix of the claim Variables.
CLAIM_PREFIX: Final = "segmind_claim_"
#: Days a claim is kept; an attempt older than this is never searched for (see the module docstring).
CLAIM_DAYS: Final = 2
#: Seconds between writing a claim and reading it back (Fischer's delay; see the module docstring).
DEFAULT_SETTLE: Final = 2.0
#: How long after its creation a request found in the history may be taken: by then a task that got
#: the submit answer itself has written its claim (it does so right after the answer, before waiting).
DEFAULT_CLAIM_MARGIN: Final = 5.0
#: Seconds between two sweeps of old claims in one process (Airflow 3.3+ only).
SWEEP_INTERVAL: Final = 3600.0

_last_sweep: float = 0.0


class ClaimBackend(Protocol):
    """Where claims are kept: ``get``/``set``/``delete`` by name (Airflow Variables in production)."""

    #: Seconds between writing a claim and reading it back: longer than any write of this store takes.
    settle: float

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str, description: str) -> None: ...

    def delete(self, name: str) -> None: ...

    def keys(self, prefix: str) -> list[str] | None: ...


class VariableClaims:
    """Claims as Airflow Variables through the Task SDK (every worker, DAG run and DAG sees them)."""

    #: A Variable write is one Execution API call (milliseconds; seconds on an API server under load).
    settle: float = DEFAULT_SETTLE

    def get(self, name: str) -> str | None:
        from airflow.sdk import Variable

        value = Variable.get(name, default=None)
        return None if value is None else str(value)

    def set(self, name: str, value: str, description: str) -> None:
        from airflow.sdk import Variable

        Variable.set(name, value, description=description)

    def delete(self, name: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(name)

    def keys(self, prefix: str) -> list[str] | None:
        """Variable keys with ``prefix`` (Airflow 3.3+ ``Variable.keys``); ``None`` where it does not exist."""
        from airflow.sdk import Variable

        listing: Callable[..., Any] | None = getattr(Variable, "keys", None)
        return None if listing is None else list(listing(prefix=prefix))


#: The backend every operator uses; a test swaps it for a dict shared by its "workers".
BACKEND: Callable[[], ClaimBackend] = VariableClaims


def claim_name(request_id: str, created_at: float) -> str:
    """The claim's Variable name: the UTC day of the request's creation (for the sweep) and a hash of its id."""
    day = datetime.fromtimestamp(created_at, UTC).strftime("%Y%m%d")
    digest = hashlib.sha256(request_id_key(request_id).encode("utf-8")).hexdigest()[:40]
    return f"{CLAIM_PREFIX}{day}_{digest}"


def _days_around(created_at: float) -> tuple[float, ...]:
    """Instants whose UTC days a claim of a request created at ``created_at`` may carry: our clock and
    Segmind's may put one request on two sides of midnight."""
    return (created_at, created_at - 600.0, created_at + 600.0)


class RequestClaims:
    """This task instance's view of the claims (see the module docstring).

    ``owner`` is the task instance (dag id, run id, task id, map index); ``generation`` its
    ``max_tries``, which Airflow raises on every clear and on nothing else, so a request claimed
    before a clear of this very task is foreign to the cleared task.
    """

    def __init__(
        self,
        ti: Any,
        log: Any,
        *,
        backend: ClaimBackend | None = None,
        settle: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.owner = [
            str(getattr(ti, "dag_id", "")),
            str(getattr(ti, "run_id", "")),
            str(getattr(ti, "task_id", "")),
            getattr(ti, "map_index", -1),
        ]
        max_tries = getattr(ti, "max_tries", None)
        self.generation = max_tries if isinstance(max_tries, int) else None
        self._log = log
        self._backend = backend if backend is not None else BACKEND()
        self._settle = self._backend.settle if settle is None else settle
        self._clock = clock
        self._sleep = sleep
        #: Requests this try gave up on (a claim round slower than ``settle``): never taken again by it.
        self._given_up: set[str] = set()

    # ------------------------------------------------------------------ reading

    def _value(self) -> dict[str, Any]:
        return {"owner": self.owner, "generation": self.generation, "at": self._clock()}

    def _read(self, request_id: str, created_at: float) -> tuple[str, Mapping[str, Any] | None]:
        """The claim of ``request_id`` (its name and value), looking at each day it may be filed under."""
        names = dict.fromkeys(claim_name(request_id, t) for t in _days_around(created_at))
        first = next(iter(names))
        for name in names:
            raw = self._backend.get(name)
            if raw is None:
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                value = {"owner": "unreadable"}
            return name, value if isinstance(value, Mapping) else {"owner": "unreadable"}
        return first, None

    def _is_ours(self, claim: Mapping[str, Any] | None) -> bool:
        return claim is not None and claim.get("owner") == self.owner and claim.get("generation") == self.generation

    def owner_of(self, request_id: str, created_at: float) -> Mapping[str, Any] | None:
        """The claim on ``request_id``, or ``None`` if unclaimed. Errors propagate (the caller decides)."""
        return self._read(request_id, created_at)[1]

    def foreign(self, request_id: str, created_at: float) -> bool:
        """Whether another task instance (or an earlier clear of this one) owns ``request_id``."""
        return self.not_this_attempts(request_id, created_at, since=-math.inf)

    def not_this_attempts(self, request_id: str, created_at: float, since: float) -> bool:
        """Whether ``request_id`` cannot be the lost submit of an attempt that began at ``since``:
        another task instance (or an earlier clear of this one) owns it, or this task instance
        claimed it before ``since``, so an earlier try's request (a try claims only after its
        request exists; that try's FAILED job must not pass for this try's lost resubmit).

        Both instants come from this deployment's clocks (the claim's ``at`` and the attempt's
        start); a worker that re-attaches after a death searches from the dead try's own
        ``since`` (its attempt record), so the claim that try wrote still counts as its own.
        """
        claim = self.owner_of(request_id, created_at)
        if claim is None:
            return False
        if not self._is_ours(claim):
            return True
        at = claim.get("at")
        return isinstance(at, (int, float)) and at < since

    @staticmethod
    def describe(claim: Mapping[str, Any] | None) -> str:
        """Who holds a claim, for log lines and errors."""
        if claim is None:
            return "nobody"
        owner = claim.get("owner")
        if isinstance(owner, list) and len(owner) == 4:
            dag_id, run_id, task_id, map_index = owner
            index = "" if map_index in (-1, None) else f"[{map_index}]"
            return f"task {dag_id}.{task_id}{index} in run {run_id} (clear generation {claim.get('generation')})"
        return str(owner)

    # ------------------------------------------------------------------ writing

    def _description(self) -> str:
        dag_id, run_id, task_id, map_index = self.owner
        return (
            f"airflow-provider-segmind: the Segmind request this names is owned by {dag_id}.{task_id}[{map_index}] "
            f"in run {run_id}, so no other task re-attaches to it. Safe to delete after {CLAIM_DAYS} days."
        )

    def mark(self, request_id: str, created_at: float) -> None:
        """Claim a request this try submitted itself (its answer arrived): ours by proof, written at once.

        A foreign claim already there (another task took it from the history too early, which
        the claim margin makes rare) is overwritten and logged; that task keeps the request too
        (docs/exactly-once.md lists this as a residual case).
        """
        name, claim = self._read(request_id, created_at)
        if claim is not None and not self._is_ours(claim):
            self._log.warning(
                "Segmind request %s was claimed by %s, but this task submitted it: claiming it back.",
                request_id,
                self.describe(claim),
            )
        self._backend.set(name, json.dumps(self._value(), sort_keys=True), self._description())

    def take(self, request_id: str, created_at: float) -> bool:
        """Claim a request found in the history (Fischer's protocol); ``True`` if it is now ours.

        ``False`` when another task instance owns it, when it was claimed from under us during the
        settle, or when this try's own claim round took longer than ``settle`` (then the request is
        given up for the rest of the try: a late write may have landed after a rival's check).
        """
        key = request_id_key(request_id)
        if key in self._given_up:
            return False
        started = self._clock()
        name, claim = self._read(request_id, created_at)
        if claim is not None:
            return self._is_ours(claim)
        self._backend.set(name, json.dumps(self._value(), sort_keys=True), self._description())
        if self._clock() - started > self._settle:
            self._given_up.add(key)
            self._log.warning(
                "Claiming Segmind request %s took longer than %g s; not taking it (another task may have).",
                request_id,
                self._settle,
            )
            return False
        self._sleep(self._settle)
        return self._is_ours(self._read(request_id, created_at)[1])

    # ------------------------------------------------------------------ lifetime

    def sweep(self) -> int:
        """Delete claims older than :data:`CLAIM_DAYS` (Airflow 3.3+; at most once an hour per process).

        Best effort: any error is logged and the sweep skipped. Returns how many were deleted.
        """
        global _last_sweep
        now = self._clock()
        if now - _last_sweep < SWEEP_INTERVAL:
            return 0
        _last_sweep = now
        try:
            names = self._backend.keys(CLAIM_PREFIX)
            if names is None:
                return 0
            oldest = (datetime.fromtimestamp(now, UTC) - timedelta(days=CLAIM_DAYS + 1)).strftime("%Y%m%d")
            stale = [n for n in names if n[len(CLAIM_PREFIX) : len(CLAIM_PREFIX) + 8] < oldest]
            for name in stale:
                self._backend.delete(name)
        except Exception as err:
            self._log.info("Could not sweep old Segmind request claims (%s); trying again later.", err)
            return 0
        if stale:
            self._log.info("Deleted %d Segmind request claims older than %d days.", len(stale), CLAIM_DAYS)
        return len(stale)
