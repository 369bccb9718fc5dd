"""Issue 13: the operators reconcile lost submits and expired requests through the request history.

Everything runs against the emulator over loopback: its request-history endpoints, its "late"
submit faults (the job IS created, then a 5xx or a cut connection), its lagging history records
and its v2 records that expire while the history keeps them. ``submissions`` is the emulator's
count of paid jobs: the number the feature exists to keep at one.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_segmind.exceptions import SegmindError
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.operators._records import STATE_STORE_KEY
from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator
from airflow_provider_segmind.protocol.params import SD3_SEED_MAX
from airflow_provider_segmind.utils.results import XCOM_REQUEST_ID
from tests.support.jobs import (
    FAST_SCHEDULE,
    PROMPT,
    DictTaskStateStore,
    DyingStore,
    ManualClock,
    captured_logs,
    finish_deferred,
    job_status,
    make_context,
    use_emulator,
    wait_for,
)

#: Fast history and retries for tests (the default history_wait is 120 s, polled every 10 s).
FAST_EXTRA: dict[str, Any] = {"read_timeout": 0.5, "retry_backoff": 0.01}


def t2i(**kwargs: Any) -> SegmindTextToImageOperator:
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("poll_schedule", FAST_SCHEDULE)
    kwargs.setdefault("history_wait", 2.0)
    return SegmindTextToImageOperator(task_id="t2i", **kwargs)


def defer(op: Any, context: dict[str, Any]) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return info.value


def resume(op: Any, context: dict[str, Any], deferred: TaskDeferred) -> Any:
    return finish_deferred(op, context, deferred)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): a history host that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------ lost submit answers


@pytest.mark.parametrize("fault", ["reset_after", "504", "bad_json", "slow", "late500", "late502", "late503"])
def test_a_lost_submit_answer_is_found_in_the_history_and_reattached(emu: Any, monkeypatch: Any, fault: str) -> None:
    """The job was created but its answer lost (cut, 504, cut body, timeout, a late 500/502/503):
    the operator finds it in the history and waits for it; one paid job, and the task succeeds."""
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.configure(slow_seconds=2.0)
    emu.script([{"endpoint": "submit", "fault": fault}])
    store = DictTaskStateStore()
    context = make_context(store)
    deferred = defer(t2i(deferrable=True), context)
    request_id = deferred.trigger.request_id
    assert emu.job(request_id) is not None
    record = store.get(STATE_STORE_KEY)
    assert record["request_id"] == request_id  # the attempt record became the request record
    assert "phase" not in record
    assert context["ti"].xcom[XCOM_REQUEST_ID] == request_id
    summary = resume(t2i(deferrable=True), make_context(store), deferred)
    assert summary["status"] == "COMPLETED"
    stats = emu.stats()
    assert stats["submit_attempts"] == 1
    assert stats["submissions"] == 1


@pytest.mark.parametrize("fault", ["late500", "late502", "late503"])
def test_without_the_history_a_late_5xx_is_resent_and_billed_twice(emu: Any, monkeypatch: Any, fault: str) -> None:
    """``history_lookup`` false keeps issue 12's rule (500/502/503 = refused, resent by the hook):
    the duplicate the history prevents, shown."""
    use_emulator(monkeypatch, emu, extra={**FAST_EXTRA, "history_lookup": False})
    emu.script([{"endpoint": "submit", "fault": fault}])
    store = DictTaskStateStore()
    deferred = defer(t2i(deferrable=True), make_context(store))
    assert store.get(STATE_STORE_KEY)["request_id"] == deferred.trigger.request_id
    assert emu.stats()["submissions"] == 2
    assert emu.stats()["history_calls"] == 0


def test_a_5xx_that_created_no_job_is_submitted_again_after_the_history_wait(
    emu: Any, monkeypatch: Any, caplog: Any, capsys: Any
) -> None:
    """An early 500 (nothing created): the history shows nothing within history_wait, so the
    submit is sent again (logged as a possible duplicate); one paid job."""
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.script([{"endpoint": "submit", "fault": "500"}])
    store = DictTaskStateStore()
    deferred = defer(t2i(deferrable=True, history_wait=0.3), make_context(store))
    stats = emu.stats()
    assert stats["submit_attempts"] == 2
    assert stats["submissions"] == 1
    assert stats["history_calls"] >= 1
    assert store.get(STATE_STORE_KEY)["request_id"] == deferred.trigger.request_id
    assert "shows no request with this body" in captured_logs(caplog, capsys)


def test_a_history_lagging_beyond_history_wait_leaves_a_duplicate(
    emulator_factory: Any, monkeypatch: Any, caplog: Any, capsys: Any
) -> None:
    """The documented limit: a record that lands after ``history_wait`` is not found; the second
    submit is billed and the log says it may be a duplicate."""
    emu = emulator_factory(history_lag_seconds=60.0, history_lag_mode="absent")
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.script([{"endpoint": "submit", "fault": "late502"}])
    defer(t2i(deferrable=True, history_wait=0.3), make_context(DictTaskStateStore()))
    assert emu.stats()["submissions"] == 2
    assert "this one is a duplicate" in captured_logs(caplog, capsys)


def test_a_lagging_record_is_waited_for_within_history_wait(emulator_factory: Any, monkeypatch: Any) -> None:
    """A record that lands (with a body) within ``history_wait`` is found: one paid job."""
    emu = emulator_factory(history_lag_seconds=1.0, history_lag_mode="null")
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.script([{"endpoint": "submit", "fault": "reset_after"}])
    deferred = defer(t2i(deferrable=True, history_wait=6.0), make_context(DictTaskStateStore()))
    assert emu.job(deferred.trigger.request_id) is not None
    assert emu.stats()["submissions"] == 1
    assert emu.stats()["history_calls"] >= 2  # the first lookup saw the record not landed yet


@pytest.mark.parametrize("fault", ["504", "late502"])
def test_an_unclaimed_twin_in_the_window_keeps_the_ambiguity_to_the_deadline(
    emu: Any, monkeypatch: Any, caplog: Any, capsys: Any, fault: str
) -> None:
    """Issue 22: a twin sent the same body just before us and its answer was lost too, so two
    unclaimed identical requests are in our window until the deadline. Nothing proves which is
    ours: the task fails with the ambiguity (the safe rule), and a late 502, which the operator
    submits again when the history shows nothing, is not submitted again either.

    Found on a real Airflow (tests/integration/test_mapped_twins.py): the search's last lookup
    came at the deadline, read no page, and its empty answer replaced the ambiguity, so the task
    said "showed no request of it", and after a late 502 submitted again (a job billed twice).
    """
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    op = t2i(deferrable=True, seed=42, history_wait=1.0)
    model, params = op._validated()
    emu.script([{"endpoint": "submit", "fault": "504"}, {"endpoint": "submit", "fault": fault}])
    with pytest.raises(SegmindError):  # the twin's submit: created and billed, its answer lost, nobody claims it
        SegmindHook().submit(model, params, validate=False, trust_5xx=False)
    with pytest.raises(AirflowFailException) as info:
        op.execute(make_context(DictTaskStateStore()))
    assert "the request history shows 2 requests that may be it" in str(info.value)
    assert "nothing is billed twice" in str(info.value)
    assert emu.stats()["submissions"] == 2  # the twin's and ours: nothing submitted again
    assert "shows no request with this body" not in captured_logs(caplog, capsys)


@pytest.mark.parametrize(("history", "submissions"), [(True, 1), (False, 2)])
def test_a_worker_dying_before_the_record_write_is_reconciled_by_the_next_try(
    emu: Any, monkeypatch: Any, history: bool, submissions: int
) -> None:
    """Try 1 is accepted and dies before recording the id; try 2 finds its "attempt" record and
    the request in the history (same filled seed, same body): no second paid job. Off: two."""
    use_emulator(monkeypatch, emu, extra={**FAST_EXTRA, "history_lookup": history})
    store = DyingStore()
    with pytest.raises(SystemExit):
        t2i(deferrable=True).execute(make_context(store, try_number=1, max_tries=1))
    if history:
        assert store.get(STATE_STORE_KEY)["phase"] == "submitting"
    first_id = next(iter(_job_ids(emu)))
    try:  # the re-attached job may be COMPLETED by then (the claim margin): then no deferral
        request_id = t2i(deferrable=True).execute(make_context(store, try_number=2, max_tries=1))["request_id"]
    except TaskDeferred as deferred:
        request_id = deferred.trigger.request_id
    assert emu.stats()["submissions"] == submissions
    assert (request_id == first_id) is history


def _job_ids(emu: Any) -> list[str]:
    return [entry["request_id"] for entry in emu.jobs()]


def test_a_history_host_that_is_down_keeps_todays_rule(emu: Any, monkeypatch: Any, caplog: Any, capsys: Any) -> None:
    """The history is secondary: unreachable, a 504's unknown outcome fails the task as before
    (never resent), logged once; a late 500 with the history down is resent as before."""
    history_url = f"http://127.0.0.1:{_closed_port()}/inference-request/request-history"
    use_emulator(monkeypatch, emu, extra={**FAST_EXTRA, "max_retries": 1, "history_url": history_url})
    emu.script([{"endpoint": "submit", "fault": "504"}])
    with pytest.raises(AirflowFailException, match="outcome of this Segmind submit is unknown"):
        t2i(deferrable=True, history_wait=0.3).execute(make_context(DictTaskStateStore()))
    assert emu.stats()["submissions"] == 1
    logs = captured_logs(caplog, capsys)
    assert logs.count("request history cannot be read") == 1

    emu.script([{"endpoint": "submit", "fault": "late500"}])
    defer(t2i(deferrable=True, history_wait=0.3), make_context(DictTaskStateStore()))
    assert emu.stats()["submissions"] == 3  # the 504's job, then the late 500's and its resend


# ------------------------------------------------------------------ expired requests


def test_an_expired_request_finishes_with_the_history_output(emu: Any, monkeypatch: Any) -> None:
    """Try 1's job completed; its v2 record expired before try 2; the history still has it:
    try 2 returns that output (no submit), with the seed the operator filled."""
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True, history_wait=0.3), make_context(store))
    request_id = first.trigger.request_id
    wait_for(lambda: job_status(emu, request_id) == "COMPLETED", what="job completion")
    seed = emu.job(request_id)["params"]["seed"]
    emu.expire(request_id)
    summary = t2i(deferrable=True, history_wait=0.3).execute(make_context(store))
    assert summary["request_id"] == request_id
    assert summary["source"] == "request history"
    assert summary["output_url"]
    assert summary["seed"] == seed
    assert summary["seed_filled"] is True
    assert emu.stats()["submissions"] == 1


def test_an_expired_event_is_finished_from_the_history(emu: Any, monkeypatch: Any) -> None:
    """The trigger saw the v2 record gone (a wait longer than the retention): the history's output."""
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store))
    request_id = first.trigger.request_id
    wait_for(lambda: job_status(emu, request_id) == "COMPLETED", what="job completion")
    emu.expire(request_id)
    event = {"status": "expired", "request_id": request_id, "message": "gone"}
    summary = t2i(deferrable=True).execute_complete(make_context(store), event, **(first.kwargs or {}))
    assert summary["output_url"]
    assert store.get(STATE_STORE_KEY)["request_id"] == request_id  # kept, as after any 3.3 success
    assert summary["seed"] == emu.job(request_id)["params"]["seed"]
    assert emu.stats()["submissions"] == 1


def test_an_expired_request_blocked_in_the_history_fails_without_a_submit(emu: Any, monkeypatch: Any) -> None:
    """FAILED in the history by a content block: the FAILED-job rule (the same body would fail again)."""
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    emu.script([{"endpoint": "submit", "fault": "content_safety"}])
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store))
    request_id = first.trigger.request_id
    wait_for(lambda: job_status(emu, request_id) == "FAILED", what="job failure")
    emu.expire(request_id)
    with pytest.raises(AirflowFailException):
        t2i(deferrable=True, history_wait=0.3).execute(make_context(store))
    assert emu.stats()["submissions"] == 1
    assert store.values == {}


# ------------------------------------------------------------------ seeds


def test_a_random_seed_is_filled_sent_and_reported(emu: Any, monkeypatch: Any) -> None:
    use_emulator(monkeypatch, emu)
    summary = t2i(deferrable=False).execute(make_context(DictTaskStateStore()))
    sent = emu.job(summary["request_id"])["params"]["seed"]
    assert isinstance(sent, int)
    assert 0 <= sent <= SD3_SEED_MAX
    assert summary["seed"] == sent
    assert summary["params"]["seed"] == sent
    assert summary["seed_filled"] is True


def test_a_given_seed_is_kept_and_a_model_without_a_known_seed_gets_none(emu: Any, monkeypatch: Any) -> None:
    use_emulator(monkeypatch, emu)
    given = t2i(deferrable=False, seed=42).execute(make_context())
    assert emu.job(given["request_id"])["params"]["seed"] == 42
    assert "seed_filled" not in given
    random_asked = t2i(deferrable=False, seed=-1).execute(make_context())  # Segmind's "random": made known
    assert 0 <= emu.job(random_asked["request_id"])["params"]["seed"] == random_asked["seed"] <= SD3_SEED_MAX
    other = SegmindRunOperator(
        task_id="run", model="flux-schnell", inputs={"prompt": PROMPT}, poll_schedule=FAST_SCHEDULE
    ).execute(make_context())
    assert "seed" not in emu.job(other["request_id"])["params"]
    filled = SegmindRunOperator(
        task_id="run", model="flux-schnell", inputs={"prompt": PROMPT}, poll_schedule=FAST_SCHEDULE, fill_seed=True
    ).execute(make_context())
    assert isinstance(emu.job(filled["request_id"])["params"]["seed"], int)


def test_a_retry_reuses_the_filled_seed_and_the_job(emulator_factory: Any, monkeypatch: Any) -> None:
    """The retry rebuilds the same body (the recorded seed), so it re-attaches instead of submitting."""
    # The job stays QUEUED on a hand-moved clock, so the retry finds it running and defers again
    # (on a fast emulator a loaded machine could see it COMPLETED and finish without deferring).
    emu = emulator_factory(clock=ManualClock())
    use_emulator(monkeypatch, emu)
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store))
    second = defer(t2i(deferrable=True), make_context(store))
    assert second.trigger.request_id == first.trigger.request_id
    assert second.kwargs == first.kwargs
    assert emu.stats()["submissions"] == 1
