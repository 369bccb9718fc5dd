"""The operators against the emulator: deferral, the blocking path, validation, retries, credits, secrets."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_segmind.exceptions import (
    SegmindContentBlockedError,
    SegmindInvalidParametersError,
    SegmindJobFailedError,
    SegmindRequestNotFoundError,
)
from airflow_provider_segmind.operators._records import REQUEST_VARIABLE_PREFIX, STATE_STORE_KEY, VariableRequestStore
from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from airflow_provider_segmind.utils.results import XCOM_OUTPUT_URL, XCOM_REQUEST_ID
from tests.support.jobs import (
    FAST_SCHEDULE,
    PROMPT,
    DictTaskStateStore,
    FailingTaskStateStore,
    ManualClock,
    RecordingTI,
    captured_logs,
    finish_deferred,
    job_status,
    make_context,
    run_trigger,
    use_emulator,
    wait_for,
)


def t2i(task_id: str = "t2i", **kwargs: Any) -> SegmindTextToImageOperator:
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("poll_schedule", FAST_SCHEDULE)
    return SegmindTextToImageOperator(task_id=task_id, **kwargs)


def defer(op: Any, context: dict[str, Any]) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return info.value


def resume(op: Any, context: dict[str, Any], deferred: TaskDeferred) -> Any:
    """What the triggerer and the next worker do: run the trigger, then end the task or call the named method."""
    return finish_deferred(op, context, deferred)


def run_to_end(op: Any, context: dict[str, Any]) -> Any:
    """Execute; if the operator defers, run its trigger and resume it, as Airflow would."""
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        return resume(op, context, deferred)


# ------------------------------------------------------------------ deferral


def test_deferral_hands_the_job_to_the_trigger(emu: Any) -> None:
    op = t2i(deferrable=True, seed=5, job_timeout=timedelta(minutes=20), max_consecutive_errors=7)
    context = make_context()
    before = time.time()
    deferred = defer(op, context)
    after = time.time()

    assert emu.stats()["submissions"] == 1  # submitted on the worker, before deferring
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is None  # the deadline lives in the trigger, not in Airflow's timeout
    trigger = deferred.trigger
    assert isinstance(trigger, SegmindJobTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_segmind.triggers.segmind.SegmindJobTrigger"
    request_id = context["ti"].xcom[XCOM_REQUEST_ID]
    assert kwargs["request_id"] == request_id
    assert kwargs["conn_id"] == "segmind_default"
    assert kwargs["model"] == SD3_LARGE_MODEL
    assert kwargs["max_consecutive_errors"] == 7
    assert before <= kwargs["submitted_at"] <= after
    assert before + 1200 <= kwargs["deadline"] <= after + 1200  # absolute: submit time + job_timeout
    assert kwargs["poll_schedule"]["interval"] == FAST_SCHEDULE["interval"]
    assert emu.api_key not in json.dumps(kwargs) + repr(trigger)

    summary = resume(op, context, deferred)
    assert summary["request_id"] == request_id
    assert summary["status"] == "COMPLETED"
    assert summary["seed"] == 5
    assert summary["params"]["prompt"] == PROMPT
    assert summary["params"]["aspect_ratio"] == "1:1"
    assert context["ti"].xcom[XCOM_OUTPUT_URL] == summary["output_url"]
    assert emu.stats()["submissions"] == 1


def test_default_deferrable_follows_the_airflow_setting(monkeypatch: Any) -> None:
    import importlib

    from airflow_provider_segmind.operators import segmind as module

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    try:
        reloaded = importlib.reload(module)
        assert reloaded.SegmindTextToImageOperator(task_id="x", prompt="p").deferrable is True
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(module)
    assert module.SegmindTextToImageOperator(task_id="x", prompt="p").deferrable is False


# ------------------------------------------------------------------ the blocking path


def test_blocking_path_returns_the_same_summary(emu: Any) -> None:
    op = SegmindRunOperator(
        task_id="run",
        model=SD3_LARGE_MODEL,
        inputs={"prompt": PROMPT, "aspect_ratio": "16:9", "seed": 9},
        deferrable=False,
        poll_schedule=FAST_SCHEDULE,
    )
    context = make_context()
    summary = op.execute(context)
    assert summary["status"] == "COMPLETED"
    assert summary["seed"] == 9
    assert summary["images"][0]["file_size"] > 0
    assert summary["params"]["aspect_ratio"] == "16:9"
    assert context["ti"].xcom[XCOM_OUTPUT_URL] == summary["output_url"]
    assert len(json.dumps(summary)) < 48_000
    stats = emu.stats()
    assert stats["submissions"] == 1
    assert stats["result_fetches"] == 1


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "blocking"])
def test_content_safety_block_fails_with_the_servers_text_either_way(emu: Any, deferrable: bool) -> None:
    op = t2i(prompt="__unsafe__ something", deferrable=deferrable)
    context = make_context()
    # The same prompt would be billed and blocked again: no task retry is spent on it.
    with pytest.raises(AirflowFailException) as info:
        run_to_end(op, context)
    request_id = context["ti"].xcom[XCOM_REQUEST_ID]
    assert "Content blocked" in str(info.value)
    assert request_id in str(info.value)
    assert isinstance(info.value.__cause__, SegmindContentBlockedError)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "blocking"])
def test_other_failed_jobs_stay_retryable(emu: Any, deferrable: bool) -> None:
    op = t2i(prompt="__fail__ something", deferrable=deferrable)
    context = make_context()
    with pytest.raises(SegmindJobFailedError) as info:
        run_to_end(op, context)
    assert "Internal inference error" in str(info.value)
    assert info.value.task_retry_helps  # an internal failure may pass: the task's retries apply


def test_blocking_path_rides_out_transient_faults(emu: Any) -> None:
    emu.configure(fault_retry_after=0.05)
    emu.script(
        [
            {"endpoint": "status", "fault": "429"},
            {"endpoint": "status", "fault": "500"},
            {"endpoint": "status", "fault": "reset_before"},
            {"endpoint": "result", "fault": "502"},
        ]
    )
    summary = t2i(deferrable=False, max_consecutive_errors=4).execute(make_context())
    assert summary["status"] == "COMPLETED"
    assert emu.stats()["submissions"] == 1
    assert emu.stats()["scripted_pending"] == {}


def test_blocking_path_times_out_at_the_deadline(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(inference_time=30.0)
    use_emulator(monkeypatch, emu)
    context = make_context()
    with pytest.raises(AirflowException, match="deadline") as info:
        t2i(deferrable=False, job_timeout=0.5).execute(context)
    assert "job_timeout=0.5" in str(info.value)
    assert job_status(emu, context["ti"].xcom[XCOM_REQUEST_ID]) == "PROCESSING"


# ------------------------------------------------------------------ validation before any request


BAD_INPUTS = [
    pytest.param({"prompt": "   "}, "prompt", id="blank-prompt"),
    pytest.param({"aspect_ratio": "7:3"}, "aspect_ratio", id="bad-aspect-ratio"),
    pytest.param({"output_format": "gif"}, "output_format", id="bad-format"),
    pytest.param({"mode": "sketch"}, "mode", id="bad-mode"),
    pytest.param({"mode": "image-to-image", "strength": 0.5}, "image", id="img2img-without-image"),
    pytest.param({"mode": "image-to-image", "image": "https://x/y.png", "strength": 1.5}, "strength", id="strength"),
    pytest.param({"seed": -2}, "seed", id="negative-seed"),  # -1 is Segmind's "random"
    pytest.param({"model": "  "}, "model", id="blank-model"),
]


@pytest.mark.parametrize(("changes", "field"), BAD_INPUTS)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "blocking"])
def test_bad_inputs_fail_without_retries_and_without_a_request(
    emu: Any, changes: dict[str, Any], field: str, deferrable: bool
) -> None:
    with pytest.raises(AirflowFailException) as info:
        t2i(deferrable=deferrable, **changes).execute(make_context())
    assert f"'{field}'" in str(info.value)
    assert "Allowed" in str(info.value)
    assert isinstance(info.value.__cause__, SegmindInvalidParametersError)
    assert info.value.__cause__.field == field
    stats = emu.stats()
    assert stats["submit_attempts"] == 0
    assert stats["credit_checks"] == 0


def test_generic_operator_validates_sd3_and_passes_other_models_through(emu: Any) -> None:
    with pytest.raises(AirflowFailException, match="aspect-ratio"):
        SegmindRunOperator(
            task_id="r", model=SD3_LARGE_MODEL, inputs={"prompt": "x", "aspect-ratio": "1:1"}, strict_params=True
        ).execute(make_context())
    with pytest.raises(AirflowFailException, match="'params'"):
        SegmindRunOperator(task_id="r", model="flux-schnell", inputs={"prompt": {1, 2}}).execute(make_context())
    assert emu.stats()["submit_attempts"] == 0


def test_validation_happens_after_templating(emu: Any) -> None:
    op = t2i(prompt="a {{ subject }}", aspect_ratio="{{ ratio }}", seed="{{ seed }}", deferrable=True)
    op.render_template_fields({"subject": "fox", "ratio": "4:5", "seed": "77"})
    assert op.prompt == "a fox"
    deferred = defer(op, make_context())
    assert emu.job(deferred.trigger.request_id)["params"]["aspect_ratio"] == "4:5"
    assert emu.job(deferred.trigger.request_id)["params"]["seed"] == 77  # templated text -> int

    bad = t2i(aspect_ratio="{{ ratio }}", deferrable=True)
    bad.render_template_fields({"ratio": "7:3"})
    with pytest.raises(AirflowFailException, match="aspect_ratio"):
        bad.execute(make_context())
    assert emu.stats()["submit_attempts"] == 1


# ------------------------------------------------------------------ errors only the server knows


def test_unknown_model_at_the_server_fails_without_retries(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(missing_models=["no-such-model"])
    use_emulator(monkeypatch, emu)
    with pytest.raises(AirflowFailException, match="404") as info:
        SegmindRunOperator(task_id="r", model="no-such-model", inputs={"prompt": "x"}).execute(make_context())
    assert "model slug" in str(info.value)
    assert emu.stats()["submissions"] == 0


def test_wrong_key_fails_without_retries_and_without_the_key(emu: Any, monkeypatch: Any) -> None:
    wrong = "SG_00000000deadbeef"
    use_emulator(monkeypatch, emu, key=wrong)
    with pytest.raises(AirflowFailException, match="401") as info:
        t2i(deferrable=True).execute(make_context())
    assert wrong not in str(info.value)
    assert wrong not in repr(info.value.__cause__)
    assert emu.stats()["submissions"] == 0


def test_no_credits_fails_without_retries(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(credits=0.0)
    use_emulator(monkeypatch, emu)
    with pytest.raises(AirflowFailException, match="insufficient credits"):
        t2i(deferrable=True).execute(make_context())
    assert emu.stats()["submissions"] == 0


def test_credit_guard_refuses_a_paid_submit_below_the_floor(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(credits=0.5)
    use_emulator(monkeypatch, emu)
    with pytest.raises(AirflowFailException) as info:
        t2i(deferrable=True, min_credits=2.0).execute(make_context())
    assert "min_credits=2" in str(info.value)
    assert "0.5 credits" in str(info.value)
    assert emu.stats()["credit_checks"] == 1
    assert emu.stats()["submit_attempts"] == 0
    defer(t2i(deferrable=True, min_credits=0.25), make_context())  # above the floor: submits
    assert emu.stats()["submissions"] == 1


# ------------------------------------------------------------------ exactly-once across task retries


def test_retry_while_the_job_runs_defers_to_it_again(emulator_factory: Any, monkeypatch: Any) -> None:
    """Try 1 submits and defers; try 2 (a retry, same store) re-attaches instead of submitting."""
    clock = ManualClock()
    emu = emulator_factory(clock=clock, queue_time=1.0, inference_time=10.0)
    use_emulator(monkeypatch, emu)
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store))
    record = store.get(STATE_STORE_KEY)
    assert record["request_id"] == first.trigger.request_id  # written before deferring
    assert store.retention[STATE_STORE_KEY] >= timedelta(hours=1)

    clock.advance(2.0)  # still running when the retry starts
    second = defer(t2i(deferrable=True), make_context(store))
    assert second.trigger.request_id == first.trigger.request_id
    assert second.trigger.submitted_at == record["submitted_at"]
    assert emu.stats()["submissions"] == 1
    clock.advance(10.0)
    summary = resume(t2i(deferrable=True), make_context(store), second)
    assert summary["request_id"] == first.trigger.request_id
    assert emu.stats()["submissions"] == 1


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "blocking"])
def test_retry_after_completion_reuses_the_result(emu: Any, deferrable: bool) -> None:
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store))
    request_id = first.trigger.request_id
    wait_for(lambda: job_status(emu, request_id) == "COMPLETED", what="job completion")

    context = make_context(store)
    summary = t2i(deferrable=deferrable).execute(context)  # the retry: no deferral, no submit
    assert summary["request_id"] == request_id
    assert summary["status"] == "COMPLETED"
    assert summary["params"]["prompt"] == PROMPT
    assert context["ti"].xcom[XCOM_OUTPUT_URL] == summary["output_url"]
    assert emu.stats()["submissions"] == 1


def test_retry_after_a_failed_job_submits_anew(emu: Any) -> None:
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True, prompt="__fail__ once"), make_context(store))
    wait_for(lambda: job_status(emu, first.trigger.request_id) == "FAILED", what="job failure")
    second = defer(t2i(deferrable=True, prompt="__fail__ once"), make_context(store))
    assert second.trigger.request_id != first.trigger.request_id
    assert store.get(STATE_STORE_KEY)["request_id"] == second.trigger.request_id
    assert emu.stats()["submissions"] == 2


def test_a_retry_resumed_with_an_earlier_trys_event_submits_anew(emu: Any, caplog: Any, capsys: Any) -> None:
    """Airflow 3.1.0 hands a retry the ``next_method``/``next_kwargs`` of the try before it (issue 24, item 7).

    The trigger stamps its event with the deferring try's number; a resume in another try drops the
    event and runs ``execute``: here the FAILED job's retry submits a new job instead of failing with
    try 1's error.
    """
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True, prompt="__fail__ once"), make_context(store, try_number=1))
    assert first.trigger.try_number == 1
    (event,) = run_trigger(first.trigger)
    assert event.payload["status"] == "failed"
    assert event.payload["try_number"] == 1
    with pytest.raises(SegmindJobFailedError, match="FAILED"):  # try 1 ends with its job's error
        t2i(deferrable=True, prompt="__fail__ once").resume_execution(
            first.method_name, {**(first.kwargs or {}), "event": event.payload}, make_context(store, try_number=1)
        )

    # Try 2, resumed as Airflow 3.1.0 does: try 1's method, kwargs and event.
    with pytest.raises(TaskDeferred) as again:
        t2i(deferrable=True, prompt="__fail__ once").resume_execution(
            first.method_name, {**(first.kwargs or {}), "event": event.payload}, make_context(store, try_number=2)
        )
    assert again.value.trigger.request_id != first.trigger.request_id  # a new job
    assert again.value.trigger.try_number == 2
    assert emu.stats()["submissions"] == 2
    logs = captured_logs(caplog, capsys)
    assert "the trigger event of try 1" in logs
    assert "apache/airflow#56704" in logs

    # The same try's event (every resume on a fixed Airflow) and an event without a try number (a
    # trigger serialized by an older provider version) still finish with their event.
    (second,) = run_trigger(again.value.trigger)
    unstamped = {k: v for k, v in second.payload.items() if k != "try_number"}
    for payload in (second.payload, unstamped):
        with pytest.raises(SegmindJobFailedError, match=again.value.trigger.request_id):
            t2i(deferrable=True, prompt="__fail__ once").resume_execution(
                "execute_complete", {**(again.value.kwargs or {}), "event": payload}, make_context(store, try_number=2)
            )
    assert emu.stats()["submissions"] == 2


def test_a_sensor_resumed_with_an_earlier_trys_event_looks_again(emu: Any) -> None:
    """The sensor's trigger stamps its events too: a stale ``timeout`` event does not fail its retry."""
    from airflow_provider_segmind.hooks.segmind import SegmindHook
    from airflow_provider_segmind.sensors.segmind import SegmindJobSensor

    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    wait_for(lambda: job_status(emu, request_id) == "COMPLETED", what="job completion")
    sensor = SegmindJobSensor(task_id="wait", request_id=request_id, model=SD3_LARGE_MODEL, deferrable=True)
    stale = {"status": "timeout", "request_id": request_id, "message": "Gave up waiting", "try_number": 1}
    summary = sensor.resume_execution("execute_complete", {"event": stale}, make_context(try_number=2))
    assert summary["request_id"] == request_id  # looked again (execute), found it COMPLETED
    with pytest.raises(AirflowException, match="Gave up waiting"):  # its own try's event: as before
        sensor.resume_execution("execute_complete", {"event": stale}, make_context(try_number=1))


def test_retry_after_expiry_submits_anew(emu: Any, monkeypatch: Any) -> None:
    """Without the request history (``history_lookup`` false), an expired request is submitted anew.

    With it, the history's output is used instead: see ``test_reconcile.py``.
    """
    use_emulator(monkeypatch, emu, extra={"history_lookup": False})
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store))
    emu.expire(first.trigger.request_id)
    second = defer(t2i(deferrable=True), make_context(store))
    assert second.trigger.request_id != first.trigger.request_id
    assert emu.stats()["submissions"] == 2


def test_retry_with_changed_parameters_submits_anew(emu: Any) -> None:
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True, prompt="a red boat"), make_context(store))
    second = defer(t2i(deferrable=True, prompt="a blue boat"), make_context(store))
    assert second.trigger.request_id != first.trigger.request_id
    assert emu.stats()["submissions"] == 2


def test_retry_reattaches_when_the_status_cannot_be_read(emulator_factory: Any, monkeypatch: Any) -> None:
    """Not knowing the status is no reason to bill twice: wait for the known request."""
    emu = emulator_factory(inference_time=1.0)
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_DEFAULT",
        json.dumps(
            {"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url, "extra": {"max_retries": 0}}
        ),
    )
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store))
    emu.script([{"endpoint": "status", "fault": "502"}])
    second = defer(t2i(deferrable=True), make_context(store))
    assert second.trigger.request_id == first.trigger.request_id
    assert emu.stats()["submissions"] == 1


def test_with_request_store_none_a_retry_submits_again(emu: Any) -> None:
    """``request_store="none"``: a new try cannot know the id (documented), even with a store present."""
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True, request_store="none"), make_context(store))
    second = defer(t2i(deferrable=True, request_store="none"), make_context(store))
    assert second.trigger.request_id != first.trigger.request_id
    assert emu.stats()["submissions"] == 2
    assert store.values == {}


def test_a_cleared_task_generates_anew_without_any_cleanup_at_success(emu: Any) -> None:
    """Issue 12 item 3: the record of the successful try stays (3.3 keeps it; a cleanup may fail).

    A retry in the same clear generation (same ``max_tries``: the worker died after ``execute``
    returned, before Airflow recorded the success) still reuses the COMPLETED job; after a clear
    (Airflow raised ``max_tries``) that job is not handed back: a new one is submitted.
    """
    store = DictTaskStateStore()
    first = run_to_end(t2i(deferrable=True), make_context(store, try_number=1, max_tries=1))
    assert store.get(STATE_STORE_KEY)["request_id"] == first["request_id"]  # outlives the success

    again = t2i(deferrable=False).execute(make_context(store, try_number=2, max_tries=1))
    assert again["request_id"] == first["request_id"]  # same generation: reused, not billed
    assert emu.stats()["submissions"] == 1

    cleared = run_to_end(t2i(deferrable=True), make_context(store, try_number=2, max_tries=2))
    assert cleared["request_id"] != first["request_id"]
    assert emu.stats()["submissions"] == 2
    assert store.get(STATE_STORE_KEY)["max_tries"] == 2  # the new job is recorded for this generation


def test_a_cleared_task_reattaches_to_a_job_still_running(emulator_factory: Any, monkeypatch: Any) -> None:
    """A job from before the clear that is still running proves no try succeeded with it: reuse it."""
    clock = ManualClock()
    emu = emulator_factory(clock=clock, queue_time=1.0, inference_time=10.0)
    use_emulator(monkeypatch, emu)
    store = DictTaskStateStore()
    first = defer(t2i(deferrable=True), make_context(store, try_number=1, max_tries=0))
    clock.advance(2.0)  # the try was killed; the user clears the task while the job runs
    second = defer(t2i(deferrable=True), make_context(store, try_number=2, max_tries=1))
    assert second.trigger.request_id == first.trigger.request_id
    assert emu.stats()["submissions"] == 1


def test_a_store_that_cannot_be_read_or_written_never_fails_the_try(
    emu: Any, monkeypatch: Any, caplog: Any, capsys: Any
) -> None:
    """Issue 12 item 12: the 3.3 store's errors are tolerated like the Variable's (logged, try goes on).

    History lookups off: the expired event must end in its own error, not in the history's output.
    """
    use_emulator(monkeypatch, emu, extra={"history_lookup": False})
    store = FailingTaskStateStore("get", "set", "delete")
    deferred = defer(t2i(deferrable=True), make_context(store))  # the billed job is still waited for
    summary = resume(t2i(deferrable=True), make_context(store), deferred)
    assert summary["request_id"] == deferred.trigger.request_id
    assert summary["status"] == "COMPLETED"
    assert emu.stats()["submissions"] == 1
    expired = {"status": "expired", "request_id": summary["request_id"], "message": "gone"}
    with pytest.raises(SegmindRequestNotFoundError):  # the event's own error, not the store's
        t2i(deferrable=True).execute_complete(make_context(store), expired)
    logs = captured_logs(caplog, capsys)
    assert "Could not read the Segmind request record" in logs
    assert "Could not record Segmind request" in logs
    assert "Could not delete the Segmind request record" in logs


def test_the_last_try_forgets_its_record_after_a_timeout(emulator_factory: Any, monkeypatch: Any) -> None:
    """No try can follow the last one, so its record goes; an earlier try's timeout keeps it for the retry."""
    clock = ManualClock()
    emu = emulator_factory(clock=clock, queue_time=1.0, inference_time=10.0)
    use_emulator(monkeypatch, emu)
    store = DictTaskStateStore()
    deferred = defer(t2i(deferrable=True), make_context(store, try_number=1, max_tries=1))
    event = {"status": "timeout", "request_id": deferred.trigger.request_id, "message": "not finished"}
    with pytest.raises(AirflowException, match="not finished"):
        t2i(deferrable=True).execute_complete(make_context(store, try_number=1, max_tries=1), event)
    assert STATE_STORE_KEY in store.values  # try 2 follows and reuses it
    with pytest.raises(AirflowException, match="not finished"):
        t2i(deferrable=True).execute_complete(make_context(store, try_number=2, max_tries=1), event)
    assert store.values == {}


@pytest.mark.parametrize("fault", ["reset_after", "504", "bad_json", "slow"])
def test_a_submit_whose_outcome_is_unknown_is_never_sent_again(emu: Any, monkeypatch: Any, fault: str) -> None:
    """Issue 12 item 6: the emulator queued (and billed) the job, but its answer was lost.

    ``reset_after``: the connection dropped after the job was queued; ``504``: a gateway gave up
    after the upstream queued it; ``bad_json``: a 200 (billed) whose body was cut; ``slow``: the
    answer came after the client's read timeout. Neither the hook nor a task retry may send the
    submit again: the task fails for good, saying the outcome is unknown and what a clear does.
    """
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_DEFAULT",
        json.dumps(
            {
                "conn_type": "segmind",
                "password": emu.api_key,
                "host": emu.base_url,
                # Without the request history: today's rule (with it, see test_reconcile.py).
                "extra": {"read_timeout": 0.5, "retry_backoff": 0.01, "history_lookup": False},
            }
        ),
    )
    emu.configure(slow_seconds=2.0)
    emu.script([{"endpoint": "submit", "fault": fault}])
    store = DictTaskStateStore()
    context = make_context(store)
    with pytest.raises(AirflowFailException, match="outcome of this Segmind submit is unknown") as info:
        t2i(deferrable=True).execute(context)
    message = str(info.value)
    assert "fails without retries" in message
    assert "clearing this task submits a new, billed job" in message
    assert ".." not in message
    assert "retried with backoff" not in message  # nothing in it promises a resend
    stats = emu.stats()
    assert stats["submit_attempts"] == 1  # one POST reached the emulator...
    assert stats["submissions"] == 1  # ...and it queued the job: a second POST would have billed twice
    assert store.values == {}  # no request id to record
    assert XCOM_REQUEST_ID not in context["ti"].xcom


def test_request_store_is_validated_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"'request_store'.*'disk'.*auto, task_state_store, variable, none"):
        t2i(request_store="disk")


def test_request_store_task_state_store_needs_airflow_3_3(emu: Any) -> None:
    """Asked for explicitly where it does not exist: a clear error, no retry spent, nothing submitted."""
    with pytest.raises(AirflowFailException, match=r"needs Airflow 3\.3\+.*Allowed here: auto, variable, none"):
        t2i(deferrable=True, request_store="task_state_store").execute(make_context())
    assert emu.stats()["submissions"] == 0


def test_request_store_selection() -> None:
    """auto prefers Airflow's task state store; variable forces the Variable; none records nothing."""
    import airflow_provider_segmind.operators.segmind as module  # the live class (another test reloads it)

    store = DictTaskStateStore()
    assert getattr(t2i()._store(make_context(store)), "store", None) is store
    assert isinstance(getattr(t2i()._store(make_context()), "store", None), module.VariableRequestStore)  # 3.1/3.2
    forced = t2i(request_store="variable")._store(make_context(store))
    assert isinstance(getattr(forced, "store", None), module.VariableRequestStore)
    assert t2i(request_store="none")._store(make_context(store)) is None


def test_request_variable_names_are_per_task_instance_and_fit_a_variable_key() -> None:
    """One Variable per (dag, run, task, map index), whatever the lengths of those ids."""
    names = set()
    for map_index in (-1, 0, 1):
        ti = RecordingTI()
        ti.map_index = map_index
        names.add(VariableRequestStore(ti, None).name(STATE_STORE_KEY))
    long_ti = RecordingTI()
    long_ti.dag_id, long_ti.run_id, long_ti.task_id = "d" * 250, "r" * 250, "t" * 250
    names.add(VariableRequestStore(long_ti, None).name(STATE_STORE_KEY))
    assert len(names) == 4
    assert all(name.startswith(REQUEST_VARIABLE_PREFIX) and len(name) <= 250 for name in names)


# ------------------------------------------------------------------ execute_complete's allow-list


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        "success",
        ["success"],
        {"status": "running", "request_id": "r"},
        {"status": "success", "request_id": "r"},
    ],
    ids=["none", "empty", "string", "list", "unknown-status", "success-without-result"],
)
def test_invalid_events_fail_loudly(event: Any) -> None:
    with pytest.raises(AirflowException, match="invalid event"):
        t2i().execute_complete(make_context(), event)


def test_event_outcomes_become_the_right_errors() -> None:
    op, context = t2i(job_timeout=600), make_context()
    base = {"request_id": "req-9", "model": SD3_LARGE_MODEL, "deadline": 1.0, "polls": 3}
    with pytest.raises(SegmindRequestNotFoundError, match="submits a new"):
        op.execute_complete(context, {**base, "status": "expired", "message": "gone"})
    with pytest.raises(AirflowException, match="job_timeout=600") as timeout:
        op.execute_complete(context, {**base, "status": "timeout", "message": "still running at its deadline"})
    assert not isinstance(timeout.value, AirflowFailException)  # a retry re-attaches (3.3+)
    with pytest.raises(AirflowFailException, match="req-9"):
        op.execute_complete(context, {**base, "status": "error", "message": "401", "retryable": False})
    with pytest.raises(AirflowException) as transient:
        op.execute_complete(context, {**base, "status": "error", "message": "10 consecutive", "retryable": True})
    assert not isinstance(transient.value, AirflowFailException)
    with pytest.raises(SegmindJobFailedError, match="req-9 FAILED: nope"):
        op.execute_complete(context, {**base, "status": "failed", "message": "x", "error": "nope"})


# ------------------------------------------------------------------ outputs and secrets


def test_base64_output_stays_out_of_xcom_and_is_refetchable(emu: Any) -> None:
    from airflow_provider_segmind.hooks.segmind import SegmindHook

    context = make_context()
    summary = t2i(deferrable=False, base64=True).execute(context)
    assert summary["output_inline"] is True
    assert summary["output_url"] is None
    assert len(json.dumps(summary)) < 4_000
    assert XCOM_OUTPUT_URL not in context["ti"].xcom or context["ti"].xcom[XCOM_OUTPUT_URL] == ""
    assert summary["retrievable_until"]
    assert len(SegmindHook().get_result(summary["request_id"]).base64_image or "") > 1000


def test_inline_input_images_and_secret_looking_inputs_are_kept_out_of_the_summary(emu: Any) -> None:
    big_image = "iVBORw0KGgo" + "A" * 20_000
    op = SegmindRunOperator(
        task_id="r",
        model="some-img2img-model",
        inputs={"prompt": "x", "image": big_image, "webhook_token": "tok-123"},
        deferrable=False,
        poll_schedule=FAST_SCHEDULE,
    )
    summary = op.execute(make_context())
    assert summary["params"]["image"].startswith("<omitted: 20,011 characters")
    assert summary["params"]["webhook_token"] == "***"
    assert len(json.dumps(summary)) < 48_000


def test_the_key_never_reaches_logs_xcom_or_errors(emu: Any, caplog: Any, capsys: Any) -> None:
    import logging

    context = make_context()
    emu.script([{"endpoint": "status", "fault": "500"}])
    with caplog.at_level(logging.DEBUG):
        summary = t2i(deferrable=False).execute(context)
        deferred = defer(t2i(deferrable=True), make_context())
        with pytest.raises(SegmindJobFailedError) as failed:
            t2i(deferrable=False, prompt="__fail__").execute(make_context())
    haystack = (
        captured_logs(caplog, capsys)
        + json.dumps(summary)
        + json.dumps(context["ti"].xcom)
        + json.dumps(deferred.trigger.serialize())
        + repr(deferred.trigger)
        + str(failed.value)
    )
    assert emu.api_key not in haystack
    assert "Submitted Segmind job" in haystack


# ------------------------------------------------------------------ packaging


def test_airflow_discovers_the_operators_trigger_sensor_and_link() -> None:
    import importlib

    from airflow.providers_manager import ProvidersManager

    from airflow_provider_segmind.get_provider_info import get_provider_info

    info = get_provider_info()
    for kind in ("operators", "sensors", "triggers"):
        (entry,) = info[kind]
        for module in entry["python-modules"]:
            importlib.import_module(module)
    manager = ProvidersManager()
    assert "airflow_provider_segmind.operators.segmind.SegmindOutputLink" in manager.extra_links_class_names
    assert any(t.trigger_class_name == "airflow_provider_segmind.triggers.segmind" for t in manager.trigger)


def test_the_registered_extra_link_path_is_the_link_the_operators_carry() -> None:
    """get_provider_info names the link by its defining path (``operators/segmind.py``, as dbt does): one class."""
    import importlib

    from airflow_provider_segmind.get_provider_info import get_provider_info
    from airflow_provider_segmind.operators import segmind as module  # the live module (another test reloads it)

    (path,) = get_provider_info()["extra-links"]
    module_name, _, class_name = path.rpartition(".")
    registered = getattr(importlib.import_module(module_name), class_name)
    assert registered is module.SegmindOutputLink
    for operator in (module.SegmindRunOperator, module.SegmindTextToImageOperator):
        assert [type(link) for link in operator.operator_extra_links] == [registered]


def test_importing_operators_and_sensors_loads_no_http_or_image_clients() -> None:
    """DAG files import these modules on every parse: aiohttp/boto3/Pillow are loaded lazily, when used."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import airflow.triggers.base, airflow.providers.common.compat.sdk as c\n"
        "c.BaseOperator, c.conf\n"
        "before = {m for m in ('aiohttp', 'boto3', 'PIL') if m in sys.modules}\n"
        "import airflow_provider_segmind.operators.segmind, airflow_provider_segmind.sensors.segmind\n"
        "after = {m for m in ('aiohttp', 'boto3', 'PIL') if m in sys.modules}\n"
        "print(sorted(after - before))\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
