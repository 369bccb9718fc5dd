"""The request-record store is retried before it is given up on (a read that fails is a billed resubmit).

The stores go through the Execution API to the metadata database; these tests put a store that fails
the way that path fails (an exception on some calls) behind the real guard, with no wait between tries.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import tenacity

from airflow_provider_segmind.operators._records import STATE_STORE_KEY, STORE_ATTEMPTS, _GuardedStore


class _FlakyStore:
    """A dict-backed store whose first ``failures`` calls raise ``error``."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.data: dict[str, Any] = {}
        self.calls = 0
        self.failures = failures
        self.error = error

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error

    def get(self, key: str, default: Any = None) -> Any:
        self._maybe_fail()
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self._maybe_fail()
        self.data[key] = value

    def delete(self, key: str) -> None:
        self._maybe_fail()
        self.data.pop(key, None)


def _guard(store: _FlakyStore) -> _GuardedStore:
    return _GuardedStore(store, logging.getLogger("test.records"), wait=tenacity.wait_none())


def test_a_read_that_fails_transiently_still_finds_the_record(caplog: pytest.LogCaptureFixture) -> None:
    store = _FlakyStore(failures=STORE_ATTEMPTS - 1, error=RuntimeError("database is locked"))
    store.data[STATE_STORE_KEY] = {"request_id": "req-1"}

    with caplog.at_level(logging.INFO, logger="test.records"):
        record = _guard(store).get()

    assert record == {"request_id": "req-1"}
    assert store.calls == STORE_ATTEMPTS
    assert "database is locked" in caplog.text
    assert "going on as if there were none" not in caplog.text


def test_a_read_that_keeps_failing_reads_as_no_record_and_says_what_it_costs(caplog: pytest.LogCaptureFixture) -> None:
    store = _FlakyStore(failures=99, error=RuntimeError("API server unavailable"))
    store.data[STATE_STORE_KEY] = {"request_id": "req-1"}

    with caplog.at_level(logging.INFO, logger="test.records"):
        record = _guard(store).get()

    assert record is None
    assert store.calls == STORE_ATTEMPTS
    assert "this try submits a new, billed one" in caplog.text


def test_a_value_that_is_not_json_is_not_retried() -> None:
    store = _FlakyStore(failures=99, error=ValueError("Expecting value: line 1 column 1"))

    assert _guard(store).get() is None
    assert store.calls == 1


def test_writes_and_deletes_are_retried_too() -> None:
    store = _FlakyStore(failures=STORE_ATTEMPTS - 1, error=RuntimeError("database is locked"))
    guard = _guard(store)

    guard.set({"request_id": "req-2"})
    assert store.data[STATE_STORE_KEY] == {"request_id": "req-2"}

    store.calls, store.failures = 0, STORE_ATTEMPTS - 1
    guard.delete()
    assert STATE_STORE_KEY not in store.data
    assert store.calls == STORE_ATTEMPTS


def test_a_dying_worker_is_not_kept_alive_by_the_retries() -> None:
    store = _FlakyStore(failures=1, error=SystemExit("worker killed"))  # type: ignore[arg-type]

    with pytest.raises(SystemExit):
        _guard(store).set({"request_id": "req-3"})
    assert store.calls == 1
