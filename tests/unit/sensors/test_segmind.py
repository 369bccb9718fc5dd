"""SegmindJobSensor against the emulator in its three modes: poke, reschedule and deferrable."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.sensors.segmind import SegmindJobSensor
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger
from tests.support.jobs import (
    FAST_SCHEDULE,
    PROMPT,
    finish_deferred,
    job_status,
    make_context,
    use_emulator,
    wait_for,
)

MODES = ["poke", "reschedule", "deferrable"]


def submit(prompt: str = PROMPT) -> str:
    return SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": prompt}).request_id


def sensor(request_id: str, mode: str, **kwargs: Any) -> SegmindJobSensor:
    kwargs.setdefault("timeout", 60)
    return SegmindJobSensor(
        task_id="wait",
        request_id=request_id,
        model=SD3_LARGE_MODEL,
        mode="reschedule" if mode == "reschedule" else "poke",
        deferrable=mode == "deferrable",
        poke_interval=0.05,
        poll_schedule=FAST_SCHEDULE,
        **kwargs,
    )


def run_sensor(op: SegmindJobSensor, *, reschedule_wait: float = 0.05) -> Any:
    """Drive the sensor the way Airflow would in its mode: re-run on reschedule, resume on deferral."""
    from airflow.exceptions import AirflowRescheduleException

    context = make_context()
    for _ in range(400):
        try:
            return op.execute(context)
        except AirflowRescheduleException:
            time.sleep(reschedule_wait)  # the scheduler would run the task again at reschedule_date
        except TaskDeferred as deferred:
            return finish_deferred(op, context, deferred)
    raise AssertionError("sensor never finished")


@pytest.mark.parametrize("mode", MODES)
def test_completed_request_returns_the_summary(emulator_factory: Any, monkeypatch: Any, mode: str) -> None:
    emu = emulator_factory(inference_time=0.6)
    use_emulator(monkeypatch, emu)
    request_id = submit()
    summary = run_sensor(sensor(request_id, mode))
    assert summary["request_id"] == request_id
    assert summary["status"] == "COMPLETED"
    assert summary["output_url"].startswith(emu.base_url)
    assert summary["model"] == SD3_LARGE_MODEL
    assert emu.stats()["submissions"] == 1  # a sensor never submits


def test_reschedule_mode_gives_the_slot_back_while_waiting(emulator_factory: Any, monkeypatch: Any) -> None:
    from airflow.exceptions import AirflowRescheduleException

    emu = emulator_factory(inference_time=5.0)
    use_emulator(monkeypatch, emu)
    with pytest.raises(AirflowRescheduleException):
        sensor(submit(), "reschedule").execute(make_context())
    assert emu.stats()["status_polls"] == 1  # one look, then the worker slot is released


def test_deferrable_mode_defers_with_an_absolute_deadline(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(inference_time=1.0)
    use_emulator(monkeypatch, emu)
    request_id = submit()
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        sensor(request_id, "deferrable", timeout=900).execute(make_context())
    deferred = info.value
    assert isinstance(deferred.trigger, SegmindJobTrigger)
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout is None
    kwargs = deferred.trigger.serialize()[1]
    assert kwargs["request_id"] == request_id
    assert kwargs["submitted_at"] is None
    assert before + 900 <= kwargs["deadline"] <= time.time() + 900
    assert emu.api_key not in repr(deferred.trigger)


def test_deferrable_mode_does_not_defer_for_a_finished_job(emu: Any) -> None:
    request_id = submit()
    wait_for(lambda: job_status(emu, request_id) == "COMPLETED")
    summary = sensor(request_id, "deferrable").execute(make_context())  # no TaskDeferred
    assert summary["request_id"] == request_id


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft_fail"])
def test_failed_job_fails_at_once_with_the_reason(
    emulator_factory: Any, monkeypatch: Any, mode: str, soft_fail: bool
) -> None:
    emu = emulator_factory(inference_time=0.3)
    use_emulator(monkeypatch, emu)
    request_id = submit("__unsafe__ x")
    expected = AirflowSkipException if soft_fail else AirflowFailException
    started = time.monotonic()
    with pytest.raises(expected, match="Content blocked"):
        run_sensor(sensor(request_id, mode, timeout=3600, soft_fail=soft_fail))
    assert time.monotonic() - started < 60  # long before the hour-long sensor timeout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("soft_fail", [False, True], ids=["fail", "soft_fail"])
def test_expired_request_fails_at_once(emu: Any, mode: str, soft_fail: bool) -> None:
    request_id = submit()
    emu.expire(request_id)
    expected = AirflowSkipException if soft_fail else AirflowFailException
    with pytest.raises(expected, match="404"):
        run_sensor(sensor(request_id, mode, timeout=3600, soft_fail=soft_fail))


@pytest.mark.parametrize("mode", MODES)
def test_timeout_applies_to_a_job_that_never_finishes(emulator_factory: Any, monkeypatch: Any, mode: str) -> None:
    emu = emulator_factory(inference_time=60.0)
    use_emulator(monkeypatch, emu)
    with pytest.raises(AirflowSensorTimeout):
        run_sensor(sensor(submit(), mode, timeout=0.5))
    with pytest.raises(AirflowSkipException):
        run_sensor(sensor(submit(), mode, timeout=0.5, soft_fail=True))


def test_transient_errors_are_not_done_yet_not_failures(emu: Any) -> None:
    request_id = submit()
    emu.script([{"endpoint": "status", "fault": "500"}, {"endpoint": "status", "fault": "reset_before"}])
    summary = run_sensor(sensor(request_id, "poke"))
    assert summary["request_id"] == request_id


def test_wrong_key_fails_at_once_without_the_key(emu: Any, monkeypatch: Any) -> None:
    request_id = submit()
    use_emulator(monkeypatch, emu, key="SG_0000000000000bad")
    with pytest.raises(AirflowFailException, match="401") as info:
        run_sensor(sensor(request_id, "poke", timeout=3600))
    assert "SG_0000000000000bad" not in str(info.value)


def test_request_id_is_templated(emu: Any) -> None:
    request_id = submit()
    op = sensor("{{ ti_request_id }}", "poke")
    op.render_template_fields({"ti_request_id": request_id})
    assert run_sensor(op)["request_id"] == request_id
