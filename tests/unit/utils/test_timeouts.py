"""Issue 24 item 1: a task's ``execution_timeout`` ends the wait for its job in every mode.

Airflow 3 applies ``execution_timeout`` only while a worker runs the task, so the provider folds it
into the wait's own deadline (``airflow_provider_segmind/utils/timeouts.py``): blocking waits, the trigger
of a deferred operator (which ends the task itself on success with ``end_from_trigger``, and resumes
it on a timeout) and the deferrable sensor all end at the earlier of their own bound and the try's
start plus ``execution_timeout``; the error names which one it was. Real emulator, real trigger loop.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
    TaskDeferred,
)

from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.operators._records import STATE_STORE_KEY
from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.sensors.segmind import SegmindJobSensor
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from airflow_provider_segmind.utils.results import XCOM_REQUEST_ID
from airflow_provider_segmind.utils.timeouts import (
    DEFERRAL_GRACE,
    EXECUTION_TIMEOUT,
    JOB_TIMEOUT,
    SENSOR_TIMEOUT,
    is_deferral_timeout,
    wait_deadline,
)
from tests.support.jobs import (
    FAST_SCHEDULE,
    PROMPT,
    DictTaskStateStore,
    finish_deferred,
    job_status,
    make_context,
    run_trigger,
    use_emulator,
)


def t2i(**kwargs: Any) -> SegmindTextToImageOperator:
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("poll_schedule", FAST_SCHEDULE)
    return SegmindTextToImageOperator(task_id="t2i", **kwargs)


def started(seconds_ago: float) -> datetime:
    """A try's ``start_date``, ``seconds_ago`` in the past (what the try already spent)."""
    return datetime.now(tz=UTC) - timedelta(seconds=seconds_ago)


@pytest.fixture
def slow(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An emulator whose jobs take 60 s: every wait below ends by a timeout, mid-job."""
    emulator = emulator_factory(inference_time=60.0)
    use_emulator(monkeypatch, emulator)
    return emulator


def assert_names_the_execution_timeout(err: BaseException, request_id: str, seconds: float) -> None:
    """The error of a wait that ``execution_timeout`` ended: it says so, the request, and that nothing was cancelled."""
    text = str(err)
    assert f"execution_timeout={seconds:g} s" in text
    assert "counted from the try's start" in text
    assert request_id in text
    assert "Segmind cannot cancel" in text


# ------------------------------------------------------------------ the rule


def test_the_earlier_deadline_wins_and_the_try_already_spent_counts() -> None:
    now = 1_700_000_000.0
    context = {"ti": type("TI", (), {"start_date": datetime.fromtimestamp(now - 100, tz=UTC)})()}
    ten_minutes = timedelta(minutes=10)
    deferred = wait_deadline(now + 3600, JOB_TIMEOUT, ten_minutes, context, blocking=False, now=now)
    assert (deferred.at, deferred.cause) == (now + 500, EXECUTION_TIMEOUT)  # 600 s from the start, 100 s spent
    assert deferred.defer_timeout(now) == timedelta(seconds=500 + DEFERRAL_GRACE)  # Airflow's backstop
    blocking = wait_deadline(now + 3600, JOB_TIMEOUT, ten_minutes, context, blocking=True, now=now)
    assert (blocking.at, blocking.cause) == (now + 495, EXECUTION_TIMEOUT)  # before Airflow's SIGALRM
    own = wait_deadline(now + 60, JOB_TIMEOUT, ten_minutes, context, blocking=False, now=now)
    assert (own.at, own.cause) == (now + 60, JOB_TIMEOUT)  # job_timeout comes first
    assert own.defer_timeout(now) == timedelta(seconds=500 + DEFERRAL_GRACE)  # the backstop stays
    alone = wait_deadline(now + 60, SENSOR_TIMEOUT, None, context, blocking=False, now=now)
    assert (alone.at, alone.cause, alone.defer_timeout(now)) == (now + 60, SENSOR_TIMEOUT, None)
    no_start = wait_deadline(now + 3600, JOB_TIMEOUT, ten_minutes, {"ti": object()}, blocking=False, now=now)
    assert no_start.at == now + 600  # no start date: counted from now
    assert is_deferral_timeout("__fail__", {"error": "Trigger timeout"})
    assert not is_deferral_timeout("__fail__", {"error": "Trigger failure"})
    assert not is_deferral_timeout("execute_complete", {"error": "Trigger timeout"})


# ------------------------------------------------------------------ blocking


def test_blocking_wait_ends_at_the_execution_timeout(slow: Any) -> None:
    context = make_context(DictTaskStateStore(), start_date=started(1.0))
    began = time.monotonic()
    with pytest.raises(AirflowTaskTimeout) as info:
        t2i(deferrable=False, execution_timeout=timedelta(seconds=4)).execute(context)
    waited = time.monotonic() - began
    request_id = context["ti"].xcom[XCOM_REQUEST_ID]
    assert_names_the_execution_timeout(info.value, request_id, 4)
    assert "job_timeout=3600 s" in str(info.value)
    assert "a retry of this task waits for the same request" in str(info.value)
    # 4 s from the start, 1 s of which was spent before execute, less the 0.4 s worker margin.
    assert 2.0 < waited < 5.0
    assert job_status(slow, request_id) == "PROCESSING"  # not cancelled: Segmind cannot
    assert slow.stats()["submissions"] == 1


def test_blocking_wait_still_names_job_timeout_when_it_comes_first(slow: Any) -> None:
    with pytest.raises(AirflowException, match=r"job_timeout=0\.5 s") as info:
        t2i(deferrable=False, job_timeout=0.5, execution_timeout=timedelta(minutes=5)).execute(
            make_context(DictTaskStateStore())
        )
    assert not isinstance(info.value, AirflowTaskTimeout)
    assert "execution_timeout" not in str(info.value)


# ------------------------------------------------------------------ deferred


def test_deferral_folds_the_execution_timeout_into_the_trigger(slow: Any) -> None:
    context = make_context(DictTaskStateStore(), start_date=started(120.0))
    now = time.time()
    with pytest.raises(TaskDeferred) as info:
        t2i(deferrable=True, execution_timeout=timedelta(minutes=10)).execute(context)
    trigger = info.value.trigger
    assert isinstance(trigger, SegmindJobTrigger)
    _, kwargs = trigger.serialize()
    assert kwargs["deadline_cause"] == EXECUTION_TIMEOUT
    assert now + 470 < kwargs["deadline"] <= now + 481  # 600 s from the try's start, 120 s already spent
    # Airflow's own deferral timeout (which Airflow 3 does honour) is the backstop, after the deadline.
    assert info.value.timeout is not None
    assert 470 + DEFERRAL_GRACE < info.value.timeout.total_seconds() <= 481 + DEFERRAL_GRACE


def test_deferral_keeps_job_timeout_when_it_comes_first(slow: Any) -> None:
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        t2i(deferrable=True, job_timeout=60, execution_timeout=timedelta(minutes=10)).execute(
            make_context(DictTaskStateStore())
        )
    _, kwargs = info.value.trigger.serialize()
    assert kwargs["deadline_cause"] == JOB_TIMEOUT
    assert before + 60 <= kwargs["deadline"] <= time.time() + 60  # job_timeout from the start of the wait
    assert info.value.timeout is not None  # the execution_timeout backstop is still passed


@pytest.mark.parametrize("end_from_trigger", [True, False], ids=["end-from-trigger", "resume-on-worker"])
def test_deferred_task_fails_at_the_execution_timeout(slow: Any, end_from_trigger: bool) -> None:
    """The trigger's timeout event resumes the task in both modes (only a success ends in the trigger)."""
    op = t2i(deferrable=True, execution_timeout=timedelta(seconds=4), end_from_trigger=end_from_trigger)
    context = make_context(DictTaskStateStore(), start_date=started(0.5))
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    began = time.monotonic()
    with pytest.raises(AirflowTaskTimeout) as failure:
        finish_deferred(op, context, info.value)
    assert time.monotonic() - began < 10  # the trigger ended at the deadline, not after job_timeout's hour
    request_id = context["ti"].xcom[XCOM_REQUEST_ID]
    assert_names_the_execution_timeout(failure.value, request_id, 4)
    assert job_status(slow, request_id) == "PROCESSING"


def test_no_time_left_to_defer_looks_once_on_the_worker(slow: Any) -> None:
    """The submit used up the execution_timeout: no deferral, one status call, the same error."""
    context = make_context(DictTaskStateStore(), start_date=started(700.0))
    with pytest.raises(AirflowTaskTimeout) as info:
        t2i(deferrable=True, execution_timeout=timedelta(minutes=10)).execute(context)
    assert_names_the_execution_timeout(info.value, context["ti"].xcom[XCOM_REQUEST_ID], 600)
    assert slow.stats()["status_polls"] == 1


@pytest.mark.parametrize("last_try", [False, True], ids=["retry-follows", "last-try"])
def test_airflow_ending_the_deferral_names_the_execution_timeout(slow: Any, last_try: bool) -> None:
    """The scheduler's backstop ("Trigger timeout", no trigger reported): the same named error, the record
    kept for a retry (which re-attaches) and deleted on the last try."""
    store = DictTaskStateStore()
    context = make_context(store, try_number=1, max_tries=0 if last_try else 1)
    op = t2i(deferrable=True, execution_timeout=timedelta(minutes=10))
    with pytest.raises(TaskDeferred):
        op.execute(context)
    request_id = context["ti"].xcom[XCOM_REQUEST_ID]
    resumed = t2i(deferrable=True, execution_timeout=timedelta(minutes=10))  # a fresh instance, as on resume
    with pytest.raises(AirflowTaskTimeout) as info:
        resumed.resume_execution("__fail__", {"error": "Trigger timeout"}, context)
    assert_names_the_execution_timeout(info.value, request_id, 600)
    assert "no trigger had reported" in str(info.value)
    assert (STATE_STORE_KEY in store.values) is not last_try
    # Without execution_timeout the backstop is never set, and such a resume stays Airflow's own.
    with pytest.raises(AirflowException, match="Trigger timeout") as plain:
        t2i(deferrable=True).resume_execution("__fail__", {"error": "Trigger timeout"}, context)
    assert "execution_timeout" not in str(plain.value)


def test_a_trigger_from_an_older_version_names_job_timeout(slow: Any) -> None:
    """A trigger serialized before ``deadline_cause`` existed: its timeout is job_timeout's, as before."""
    op = t2i(deferrable=True, job_timeout=0.3)
    context = make_context(DictTaskStateStore())
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    _, kwargs = info.value.trigger.serialize()
    old = SegmindJobTrigger(**{k: v for k, v in kwargs.items() if k != "deadline_cause"})
    (event,) = run_trigger(old)
    assert "deadline_cause" not in event.payload
    with pytest.raises(AirflowException, match=r"job_timeout=0\.3 s"):
        op.execute_complete(context, event.payload)


# ------------------------------------------------------------------ the deferrable sensor


def deferred_sensor(request_id: str, context: dict[str, Any], **kwargs: Any) -> tuple[SegmindJobSensor, TaskDeferred]:
    op = SegmindJobSensor(
        task_id="wait",
        request_id=request_id,
        model=SD3_LARGE_MODEL,
        deferrable=True,
        poll_schedule=FAST_SCHEDULE,
        **kwargs,
    )
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return op, info.value


@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft_fail"])
def test_deferrable_sensor_ends_at_its_execution_timeout(slow: Any, soft_fail: bool) -> None:
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    context = make_context(start_date=started(0.5))
    op, deferred = deferred_sensor(
        request_id, context, timeout=3600, execution_timeout=timedelta(seconds=2), soft_fail=soft_fail
    )
    _, kwargs = deferred.trigger.serialize()
    assert kwargs["deadline_cause"] == EXECUTION_TIMEOUT
    assert kwargs["deadline"] < time.time() + 2
    assert deferred.timeout is not None
    with pytest.raises(AirflowSkipException if soft_fail else AirflowTaskTimeout) as info:
        finish_deferred(op, context, deferred)
    assert_names_the_execution_timeout(info.value, request_id, 2)
    assert "timeout=3600 s" in str(info.value)
    assert "a retry of this sensor waits for the same request" in str(info.value)
    # Airflow's own backstop ends the deferral with the same named error.
    with pytest.raises(AirflowSkipException if soft_fail else AirflowTaskTimeout, match="execution_timeout=2 s"):
        op.resume_execution("__fail__", {"error": "Trigger timeout"}, context)


def test_deferrable_sensor_keeps_its_own_timeout_when_it_comes_first(slow: Any) -> None:
    request_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT}).request_id
    context = make_context()
    op, deferred = deferred_sensor(request_id, context, timeout=1, execution_timeout=timedelta(minutes=10))
    assert deferred.trigger.serialize()[1]["deadline_cause"] == SENSOR_TIMEOUT
    with pytest.raises(AirflowSensorTimeout, match=r"sensor timeout 1 s"):
        finish_deferred(op, context, deferred)
