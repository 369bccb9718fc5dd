"""Issue 22: who owns a request, the history search's time bound, and the safe rule.

Against the emulator over loopback; the claims are the test's shared dict (``tests/conftest.py``
``SharedClaims``), as Variables are shared by every worker (the ``dag.test()`` tests in
``tests/unit/operators/test_segmind_dag_test.py`` use real Variables).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.emulator.config import HISTORY_PROFILES
from airflow_provider_segmind.operators._claims import CLAIM_PREFIX, RequestClaims
from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from tests.support.jobs import DictTaskStateStore, RecordingTI, make_context, use_emulator

FAST_EXTRA: dict[str, Any] = {"read_timeout": 0.5, "retry_backoff": 0.01, "max_retries": 4}


def t2i(**kwargs: Any) -> SegmindTextToImageOperator:
    kwargs.setdefault("prompt", "a twin lighthouse")
    kwargs.setdefault("seed", 42)
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("poll_schedule", {"initial": 0.05})
    return SegmindTextToImageOperator(task_id="t2i", **kwargs)


# ------------------------------------------------------------------ defect 4: history_wait is a bound


@pytest.mark.parametrize("history_fault", ["500", "slow"])
def test_history_wait_bounds_the_search_whatever_the_history_answers(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, history_fault: str
) -> None:
    """A history that answers 500, or answers after 5 s, is looked past until ``history_wait`` and no
    longer: one lookup is one request with a read timeout no longer than the time left, never the
    hook's own retry policy (5 attempts with backoff: minutes per lookup before). A 500 is
    transient, so it is asked again every ``history_wait / 6`` s until the wait is over."""
    emu = emulator_factory(faults={history_fault: 1.0}, fault_endpoints=frozenset({"history"}), slow_seconds=5.0)
    use_emulator(monkeypatch, emu, extra={**FAST_EXTRA, "read_timeout": 30.0})
    emu.script([{"endpoint": "submit", "fault": "504"}])
    with pytest.raises(AirflowFailException, match="outcome of this Segmind submit is unknown"):
        t2i(history_wait=1.2).execute(make_context(DictTaskStateStore()))
    calls = emu.stats()["history_calls"]
    if history_fault == "500":
        assert 3 <= calls <= 9, calls  # every 0.2 s for 1.2 s, not 5 attempts per lookup
    else:
        assert calls == 1, calls  # one read, cut at the wait
    assert emu.stats()["submissions"] == 1  # the 504's job; nothing resent


def test_a_history_that_is_not_there_is_asked_once(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 404 for the whole history (a wrong history_url) is not transient: one call, then the try
    goes on with the rule without the history (a 504's unknown outcome fails, never resent)."""
    emu = emulator_factory()
    url = f"{emu.base_url}/no-such/request-history"
    use_emulator(monkeypatch, emu, extra={**FAST_EXTRA, "history_url": url})
    emu.script([{"endpoint": "submit", "fault": "504"}])
    with pytest.raises(AirflowFailException, match="outcome of this Segmind submit is unknown"):
        t2i(history_wait=5.0).execute(make_context(DictTaskStateStore()))
    assert len(emu.requests_log("/no-such")) == 1
    assert emu.stats()["submissions"] == 1


# ------------------------------------------------------------------ team accounts


def test_teammates_identical_requests_without_the_user_filter_take_the_safe_rule(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """g: a team account's history lists teammates' requests. Without ``history_user_email`` the
    teammates' identical bodies are unclaimed candidates too: nothing proves which is ours, so the
    task fails naming them (never a guess, never a resend). With the filter, it re-attaches."""
    emu = emulator_factory(**HISTORY_PROFILES["team"])
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.script([{"endpoint": "submit", "fault": "504"}])
    with pytest.raises(AirflowFailException, match="nothing is billed twice") as info:
        t2i(history_wait=2.0).execute(make_context(DictTaskStateStore()))
    (own,) = [job["request_id"] for job in emu.jobs()]
    assert own in str(info.value)
    assert emu.stats()["submissions"] == 1

    use_emulator(monkeypatch, emu, extra={**FAST_EXTRA, "history_user_email": "owner@example.com"})
    emu.script([{"endpoint": "submit", "fault": "504"}])
    summary = t2i(history_wait=2.0, seed=43).execute(make_context(DictTaskStateStore()))
    assert summary["request_id"] == emu.jobs()[-1]["request_id"]
    assert emu.stats()["submissions"] == 2


# ------------------------------------------------------------------ twins at the same time


def test_twins_that_both_lose_their_answers_while_the_history_lags_never_share_a_request(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 2, third case: two mapped tasks with the same prompt and seed both lose their submit
    answers while history rows land 2 s late, at the same time (two worker threads). Each ends with
    a request of its own or the safe rule; no request goes to both; nothing is resent."""
    emu = emulator_factory(history_lag_seconds=2.0, history_lag_mode="null")
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.script([{"endpoint": "submit", "fault": "reset_after", "times": 2}])
    outcomes: dict[int, Any] = {}

    def worker(index: int) -> None:
        try:
            outcomes[index] = t2i(history_wait=8.0).execute(make_context(DictTaskStateStore(), map_index=index))
        except AirflowFailException as err:
            outcomes[index] = err

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(outcomes) == {0, 1}
    delivered = [o["request_id"] for o in outcomes.values() if isinstance(o, dict)]
    failed = [o for o in outcomes.values() if not isinstance(o, dict)]
    assert all("nothing is billed twice" in str(err) for err in failed), failed
    assert len(delivered) == len(set(delivered)), f"one request went to both twins: {outcomes}"
    assert emu.stats()["submissions"] == 2
    # Both rows land together, both unclaimed: each twin sees two requests that may be its own, and
    # nothing proves which (identical bodies). The safe rule names both, rather than a guess.
    for err in failed:
        assert all(job["request_id"] in str(err) for job in emu.jobs()), err


# ------------------------------------------------------------------ the claim protocol


def test_a_claim_round_slower_than_the_settle_gives_the_request_up(claims: Any) -> None:
    """Fischer's bound, checked on the claimant's own clock: a read-to-write longer than ``settle``
    may have landed after a rival's check, so the request is not taken (and never again this try)."""
    now = [1000.0]

    def slow_clock() -> float:
        now[0] += 1.0  # every clock read is a second later: the write lands 2 s after the read
        return now[0]

    mine = RequestClaims(RecordingTI(), _Log(), settle=0.5, clock=slow_clock, sleep=lambda _: None)
    assert mine.take("req-1", 1000.0) is False
    assert mine.take("req-1", 1000.0) is False
    rival = RecordingTI()
    rival.map_index = 1
    theirs = RequestClaims(rival, _Log(), settle=0.0, sleep=lambda _: None)
    assert theirs.foreign("req-1", 1000.0)  # the slow claim stays: its owner is on record


def test_a_claim_this_task_wrote_before_the_attempt_began_is_an_earlier_tries(claims: Any) -> None:
    """Only the attempt that claimed a request, or a re-search of that attempt's own send window
    (after its worker died), may take it from the history; a later try may not."""
    mine = RequestClaims(RecordingTI(), _Log(), clock=lambda: 1000.0)
    mine.mark("req-earlier-try", 999.0)
    assert mine.not_this_attempts("req-earlier-try", 999.0, since=1010.0)  # a later try's lost resubmit
    assert not mine.not_this_attempts("req-earlier-try", 999.0, since=998.0)  # the claiming attempt's window
    assert not mine.not_this_attempts("req-nobody-claimed", 999.0, since=1010.0)
    other = RecordingTI()
    other.map_index = 2
    assert RequestClaims(other, _Log()).not_this_attempts("req-earlier-try", 999.0, since=0.0)


@pytest.mark.parametrize("profile", sorted(HISTORY_PROFILES))
def test_a_retry_after_a_failed_job_never_takes_that_job_for_its_lost_resubmit(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, claims: Any, caplog: pytest.LogCaptureFixture, profile: str
) -> None:
    """Seen in the soak in CI (2026-12-06, prompt 1): try 1's job FAILED; try 2's resubmit was reset
    before it reached Segmind; the history, whose SD3 Large rows keep only the page's declared fields
    (no seed), showed try 1's FAILED request with the same prompt inside the send window's
    clock-skew margin. Try 2 took it for its own lost submit and failed on it again, so the FAILED
    job was never resubmitted. This task claimed that request before try 2 began: it is an earlier
    try's, nothing is this attempt's, and the unknown outcome takes the safe rule. Under every history
    profile; ``declared-only`` is the one where the old check fails (``all`` keeps no seed either, but
    its rows lag past this 1 s wait)."""
    emu = emulator_factory(**HISTORY_PROFILES[profile])
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    store = DictTaskStateStore()
    with pytest.raises(Exception, match="FAILED") as first:
        t2i(prompt="a lighthouse __fail__", seed=None).execute(make_context(store))
    (failed,) = emu.jobs()
    assert failed["request_id"] in str(first.value)
    emu.script([{"endpoint": "submit", "fault": "reset_before"}])
    with pytest.raises(AirflowFailException, match="outcome of this Segmind submit is unknown") as second:
        t2i(prompt="a lighthouse __fail__", seed=None, history_wait=1.0).execute(make_context(store, try_number=2))
    assert failed["request_id"] not in str(second.value)
    assert "Found the lost submit" not in caplog.text
    assert emu.stats()["submissions"] == 1  # the reset one never reached Segmind


def test_a_claim_from_before_a_clear_is_foreign_to_the_cleared_task(claims: Any) -> None:
    before = RecordingTI()
    before.max_tries = 1
    RequestClaims(before, _Log()).mark("abc-123", time.time())
    after = RecordingTI()
    after.max_tries = 2  # Airflow raised max_tries: a clear
    assert RequestClaims(after, _Log()).foreign("abc-123", time.time())
    assert not RequestClaims(before, _Log()).foreign("abc-123", time.time())
    (name,) = claims.values
    assert name.startswith(CLAIM_PREFIX)
    assert json.loads(claims.values[name])["generation"] == 1


def test_ids_in_another_spelling_share_one_claim(claims: Any) -> None:
    """e: the history may list a v2 UUID as 32 hex digits; both spellings name one claim."""
    dashed = "4f7c2a9e-1b3d-4e5f-8a6b-7c8d9e0f1a2b"
    owner = RecordingTI()
    RequestClaims(owner, _Log()).mark(dashed, time.time())
    other = RecordingTI()
    other.map_index = 3
    assert RequestClaims(other, _Log()).foreign(dashed.replace("-", "").upper(), time.time())


def test_old_claims_are_swept_where_airflow_lists_variable_keys(claims: Any) -> None:
    owner = RecordingTI()
    RequestClaims(owner, _Log()).mark("old", time.time() - 5 * 86400)
    RequestClaims(owner, _Log()).mark("new", time.time())
    assert RequestClaims(owner, _Log()).sweep() == 1
    assert len(claims.values) == 1


class _Log:
    def info(self, *args: Any) -> None:
        pass

    def warning(self, *args: Any) -> None:
        pass


def test_history_wait_zero_still_looks_once(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``history_wait=0``: no waiting for lagging rows, but the history is still read once, and a
    request already there is re-attached to (one paid job)."""
    emu = emulator_factory()
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.script([{"endpoint": "submit", "fault": "reset_after"}])
    summary = t2i(history_wait=0).execute(make_context(DictTaskStateStore()))
    assert summary["request_id"] == emu.jobs()[0]["request_id"]
    assert emu.stats()["submissions"] == 1
    assert emu.stats()["history_calls"] == 1


def test_an_expired_request_whose_history_record_lags_is_waited_for(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the soak: the v2 record expired while the request's history record had not landed;
    one by-id lookup said "unknown" and the retry paid again. The lookup now waits (up to
    ``history_wait``) for the record to land: one paid job, the output from the history."""
    emu = emulator_factory(history_lag_seconds=1.5, history_lag_mode="absent")
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    store = DictTaskStateStore()
    first = t2i(history_wait=4.0, deferrable=False).execute(make_context(store, try_number=1, max_tries=1))
    emu.expire(first["request_id"])
    store.set("segmind_request", {**store.get("segmind_request"), "submitted_at": 0.0})  # past the retention
    again = t2i(history_wait=4.0).execute(make_context(store, try_number=2, max_tries=1))
    assert again["request_id"] == first["request_id"]
    assert again["source"] == "request history"
    assert emu.stats()["submissions"] == 1
