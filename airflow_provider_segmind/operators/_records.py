"""The request record: where a try writes its Segmind request for the next try, and what it says.

A record (in Airflow 3.3's task state store, or one Variable per task instance on 3.1/3.2) holds
the request id (or, before a submit is sent, an "attempt"), the model, a fingerprint of the body,
the filled seed, and the try number and ``max_tries`` of the try that wrote it; the rules that read
it are in :mod:`airflow_provider_segmind.operators._reconcile` and the operators' module docstring.
Every store is best effort (:class:`_GuardedStore`): a record only saves money, it never costs a try.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Final

import tenacity
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.protocol.schedule import RESULT_RETENTION_SECONDS

#: Record key in the task state store (and in the Variable's name). Renaming it would break in-flight retries.
STATE_STORE_KEY: Final = "segmind_request"
#: Where a try records its request for the next try (see the operators' module docstring).
REQUEST_STORES: Final = ("auto", "task_state_store", "variable", "none")
#: Name prefix of the Variables that stand in for the task state store on Airflow 3.1/3.2.
REQUEST_VARIABLE_PREFIX: Final = "segmind_request_"


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


#: Tries per record-store access (read, write, delete) before :class:`_GuardedStore` gives up.
STORE_ATTEMPTS: Final = 3


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


def _worth_another_try(error: BaseException) -> bool:
    """A store failure another try may not meet: not a value that is not JSON (it will not change),
    and never a ``BaseException`` such as ``SystemExit`` (the worker is going away: let it)."""
    return isinstance(error, Exception) and not isinstance(error, (ValueError, TypeError))


class _GuardedStore:
    """Best-effort access to a request store (Airflow's task state store or a Variable), one rule for both.

    A record only saves money; it must never cost a try. Each access is tried
    :data:`STORE_ATTEMPTS` times (tenacity, a short exponential wait): the stores go through the
    Execution API to the metadata database, where a blip (an API server restart, a locked SQLite
    database under load) is common and a failed *read* is exactly the resubmit the record exists to
    avoid. A read that still fails (e.g. the 3.3 store's ``AirflowRuntimeError``) is logged and read
    as "no record"; a failed write or delete is logged and the try goes on, so a job that is already
    billed is still waited for. The worst case is the resubmit the record exists to avoid, and the log
    says so. A value that is not JSON (``ValueError``/``TypeError``) is not retried: it will not change.
    """

    def __init__(self, store: Any, log: Any, *, wait: tenacity.wait.wait_base | None = None) -> None:
        self.store = store
        self._log = log
        self._retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(STORE_ATTEMPTS),
            wait=wait if wait is not None else tenacity.wait_exponential(multiplier=0.25, max=1.0),
            retry=tenacity.retry_if_exception(_worth_another_try),
            before_sleep=self._retrying_note,
            reraise=True,
        )

    def _retrying_note(self, state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        self._log.info(
            "The Segmind request record store failed (%s); trying again (attempt %d of %d).",
            error,
            state.attempt_number + 1,
            STORE_ATTEMPTS,
        )

    def _what(self) -> str:
        describe = getattr(self.store, "describe", None)
        return str(describe(STATE_STORE_KEY)) if describe is not None else "the task state store"

    def get(self) -> Any:
        try:
            return self._retrying(self.store.get, STATE_STORE_KEY)
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
            self._retrying(
                self.store.set, STATE_STORE_KEY, dict(record), retention=timedelta(seconds=2 * RESULT_RETENTION_SECONDS)
            )
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
            self._retrying(delete, STATE_STORE_KEY)
        except Exception as err:
            self._log.warning(
                "Could not delete the Segmind request record from %s (%s); it is safe to delete by hand, and "
                "a later clear of this task does not reuse a completed job either way.",
                self._what(),
                err,
            )


def open_store(request_store: str, context: Any, log: Any) -> _GuardedStore | None:
    """Where this try's request is recorded for the next try, per ``request_store``; ``None`` = nowhere."""
    if request_store == "none":
        return None
    getter = getattr(context, "get", None)
    native = getter("task_state_store") if getter is not None else None
    if request_store == "task_state_store" and native is None:
        raise AirflowFailException(
            "request_store='task_state_store' needs Airflow 3.3+ (this Airflow has no task state store). "
            "Allowed here: auto, variable, none."
        )
    if native is not None and request_store != "variable":
        return _GuardedStore(native, log)
    return _GuardedStore(VariableRequestStore(context["ti"], log), log)


def read_record(store: _GuardedStore, log: Any) -> Mapping[str, Any] | None:
    """The earlier try's record, if readable (a request record or an "attempt" record)."""
    record = store.get()
    if not record:
        return None
    if not isinstance(record, Mapping) or not (
        isinstance(record.get("request_id"), str) or record.get("phase") == "submitting"
    ):
        log.warning("Ignoring an unreadable Segmind record in the task state store: %r", record)
        return None
    return record


def attempt_record(ti: Any, model: str, fingerprint: str, filled_seed: int | None, started: float) -> dict[str, Any]:
    """The "attempt" record written before a submit is sent (the body itself is not stored, see ``_record_attempt``)."""
    return {
        "phase": "submitting",
        "model": model,
        "fingerprint": fingerprint,
        "filled_seed": filled_seed,
        "attempt_started_at": started,
        "try_number": getattr(ti, "try_number", None),
        "max_tries": getattr(ti, "max_tries", None),
    }


def request_record(
    ti: Any,
    request_id: str,
    model: str,
    fingerprint: str,
    filled_seed: int | None,
    submitted_at: float,
    max_tries: Any,
) -> dict[str, Any]:
    """The record of a submitted request; ``max_tries`` names its clear generation (see :func:`_cleared_since`)."""
    return {
        "request_id": request_id,
        "model": model,
        "fingerprint": fingerprint,
        "filled_seed": filled_seed,
        "submitted_at": submitted_at,
        # Which try and which clear generation wrote it (see _cleared_since).
        "try_number": getattr(ti, "try_number", None),
        "max_tries": max_tries,
    }
