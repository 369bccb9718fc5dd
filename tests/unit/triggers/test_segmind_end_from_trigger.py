"""end_from_trigger: the trigger ends a successful task itself, with the XComs a resumed task pushes.

Against the emulator: which event the trigger yields per outcome, the XComs it carries (the same
values ``execute_complete`` returns and pushes), and the rule of when a task asks for it. The
``dag.test()`` runs of both modes are in ``test_dag_test.py``; the real scheduler and triggerer
(one worker process, XComs downstream, ``on_success_callback``) in ``tests/integration``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from airflow.triggers.base import TaskSuccessEvent, TriggerEvent

from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger, ends_from_trigger
from airflow_provider_segmind.utils.results import completed_summary, summarize_params
from tests.support.jobs import FAST_SCHEDULE, PROMPT, run_trigger

LOG = logging.getLogger("test_end_from_trigger")


def _trigger(request_id: str, submitted_at: float, **kwargs: Any) -> SegmindJobTrigger:
    trigger = SegmindJobTrigger(
        request_id=request_id,
        model=SD3_LARGE_MODEL,
        deadline=time.time() + 60,
        submitted_at=submitted_at,
        poll_schedule=FAST_SCHEDULE,
        **kwargs,
    )
    # What the triggerer does: rebuild it from its stored (JSON) kwargs.
    _classpath, stored = trigger.serialize()
    return SegmindJobTrigger(**json.loads(json.dumps(stored)))


def _submit(**params: Any) -> tuple[str, float]:
    return SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": PROMPT, **params}).request_id, time.time()


def _success(request_id: str, submitted_at: float) -> dict[str, Any]:
    (event,) = run_trigger(_trigger(request_id, submitted_at))
    assert event.payload["status"] == "success"
    return dict(event.payload)


def test_the_xcoms_are_the_operators(emu: Any) -> None:
    request_id, submitted_at = _submit()
    params = summarize_params({"prompt": PROMPT, "aspect_ratio": "1:1", "seed": 7, "api_key": emu.api_key})
    event = _success(request_id, submitted_at)
    trigger = _trigger(request_id, submitted_at, end_from_trigger=True, summary_params=params, filled_seed=7)
    xcoms = trigger.end_xcoms(event)
    summary = xcoms["return_value"]
    # The value execute_complete returns for the same event (one summary rule for both).
    assert summary == completed_summary(event["result"], params, 7)
    assert summary["request_id"] == request_id
    assert summary["params"]["aspect_ratio"] == "1:1"
    assert summary["seed_filled"] is True
    assert xcoms["segmind_request_id"] == request_id
    assert xcoms["segmind_output_url"] == summary["output_url"]
    assert xcoms["_link_SegmindOutputLink"] == summary["output_url"]
    assert set(xcoms) == {"return_value", "segmind_request_id", "segmind_output_url", "_link_SegmindOutputLink"}
    assert emu.api_key not in json.dumps(xcoms)  # JSON-safe, as Airflow stores XComs, and no key


def test_do_xcom_push_false_and_the_sensors_xcoms(emu: Any) -> None:
    request_id, submitted_at = _submit()
    event = _success(request_id, submitted_at)
    quiet = _trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}, push_return_value=False)
    assert "return_value" not in quiet.end_xcoms(event)
    assert quiet.end_xcoms(event)["segmind_request_id"] == request_id
    # The sensor (no summary_params): its return value is the event's summary as it is, alone.
    sensor = _trigger(request_id, submitted_at, end_from_trigger=True)
    assert sensor.end_xcoms(event) == {"return_value": event["result"]}


def test_an_inline_output_ends_with_no_url_and_an_empty_link(emu: Any) -> None:
    request_id, submitted_at = _submit(base64=True)
    xcoms = _trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}).end_xcoms(
        _success(request_id, submitted_at)
    )
    assert xcoms["return_value"]["output_inline"] is True
    assert "segmind_output_url" not in xcoms  # a resumed task pushes none either
    assert xcoms["_link_SegmindOutputLink"] == ""
    assert len(json.dumps(xcoms)) < 4_000  # no image bytes


def test_without_a_task_instance_to_push_to_the_task_resumes(emu: Any) -> None:
    """The XComs go through the Task SDK; where they cannot (here: no triggerer), the task resumes on
    the worker with the usual event, which is always correct. The real triggerer: ``tests/integration``."""
    request_id, submitted_at = _submit()
    (event,) = run_trigger(_trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}))
    assert not isinstance(event, TaskSuccessEvent)
    assert isinstance(event, TriggerEvent)
    assert event.payload["status"] == "success"


def test_the_trigger_pushes_through_common_compat_xcom(emu: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 9: the XComs go through ``airflow.providers.common.compat.sdk.XCom`` (exported
    from compat 1.23.0, the declared floor), not the Task SDK's private ``execution_time.xcom``.
    The compat name is replaced by a recorder here: the real triggerer's push is ``tests/integration``."""
    from types import SimpleNamespace

    import airflow.providers.common.compat.sdk as compat

    pushed: list[tuple[str, Any, dict[str, Any]]] = []

    class Recorder:
        @staticmethod
        def set(key: str, value: Any, **where: Any) -> None:
            pushed.append((key, value, where))

        # The extra link's XCom goes straight to the database, as the task runner writes it.
        _set_xcom_in_db = set

    # Were the trigger to import the private module instead, its real ``XCom.set`` would fail here
    # (no triggerer to send it to) and the task would resume on the worker: no TaskSuccessEvent.
    monkeypatch.setattr(compat, "XCom", Recorder, raising=False)
    request_id, submitted_at = _submit()
    trigger = _trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}, filled_seed=3)
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=None)
    (event,) = run_trigger(trigger)
    assert isinstance(event, TaskSuccessEvent)
    assert {key for key, _, _ in pushed} == {
        "return_value",
        "segmind_request_id",
        "segmind_output_url",
        "_link_SegmindOutputLink",
    }
    assert all(where == {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1} for _, _, where in pushed)
    assert dict((key, value) for key, value, _ in pushed)["return_value"]["seed_filled"] is True


def test_every_other_outcome_resumes_the_task_on_the_worker(emu: Any) -> None:
    request_id, submitted_at = _submit(prompt="__unsafe__ a forbidden thing")
    (failed,) = run_trigger(_trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}))
    assert not isinstance(failed, TaskSuccessEvent)
    assert failed.payload["status"] == "failed"
    (expired,) = run_trigger(_trigger("no-such-request", time.time(), end_from_trigger=True, summary_params={}))
    assert not isinstance(expired, TaskSuccessEvent)
    assert expired.payload["status"] in ("expired", "error")


@pytest.mark.parametrize(
    ("requested", "outlets", "record_in_variable", "callback", "expected"),
    [
        (None, [], False, None, True),  # 3.3 (task state store) or request_store="none": on
        (None, [], True, None, False),  # 3.1/3.2's Variable record: only a worker can delete it
        (True, [], True, None, True),  # asked for: on, the Variable stays (a clear still generates anew)
        (None, ["an asset"], False, None, False),  # outlets: asset events need a worker to finish the task
        (True, ["an asset"], False, None, False),
        (None, [], False, [print], False),  # on_success_callback: dropped by Airflow for a trigger-ended task
        (True, [], False, print, False),
        (False, [], False, None, False),
    ],
)
def test_when_a_task_asks_its_trigger_to_end_it(
    requested: bool | None, outlets: list[str], record_in_variable: bool, callback: Any, expected: bool
) -> None:
    decided = ends_from_trigger(
        requested, outlets=outlets, record_in_variable=record_in_variable, log=LOG, on_success_callback=callback
    )
    assert decided is expected


def test_the_operator_passes_its_mode_to_the_trigger(emu: Any) -> None:
    """The deferral carries the choice and, when on, what the trigger needs to build the return value."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    class Ti:
        dag_id, run_id, task_id, map_index, try_number, max_tries = "d", "r", "t2i", -1, 1, 0
        pushed: dict[str, Any] = {}

        def xcom_push(self, key: str, value: Any) -> None:
            self.pushed[key] = value

    for requested, expected in ((None, True), (False, False)):
        operator = SegmindTextToImageOperator(
            task_id="t2i",
            prompt=PROMPT,
            deferrable=True,
            poll_schedule=FAST_SCHEDULE,
            request_store="none",
            end_from_trigger=requested,
        )
        with pytest.raises(TaskDeferred) as deferred:
            operator.execute({"ti": Ti()})  # type: ignore[arg-type]
        trigger = deferred.value.trigger
        assert isinstance(trigger, SegmindJobTrigger)
        assert trigger.end_from_trigger is expected
        assert (trigger.summary_params is not None) is expected
        if expected:
            assert trigger.summary_params is not None
            assert trigger.summary_params["prompt"] == PROMPT
            assert trigger.filled_seed is not None  # SD3 takes a seed: the operator filled one


def test_a_bare_success_resume_reads_the_job_again(emu: Any) -> None:
    """``dag.test()`` resumes a trigger-ended task with the payload ``"success"`` only: Segmind decides."""
    from tests.support.jobs import DictTaskStateStore, make_context, wait_for

    context = make_context(DictTaskStateStore())  # Airflow 3.3's record: the re-read takes the filled seed from it
    operator = SegmindTextToImageOperator(task_id="t2i", prompt=PROMPT, deferrable=True, poll_schedule=FAST_SCHEDULE)
    from airflow.providers.common.compat.sdk import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    request_id = deferred.value.trigger.request_id
    assert context["ti"].xcom["segmind_request_id"] == request_id  # pushed before deferring
    wait_for(lambda: emu.job(request_id)["status"] == "COMPLETED", what="the job")

    resumed = SegmindTextToImageOperator(task_id="t2i", prompt=PROMPT, deferrable=True, poll_schedule=FAST_SCHEDULE)
    summary = resumed.execute_complete(context, "success")
    assert summary["request_id"] == request_id
    assert summary["status"] == "COMPLETED"
    assert summary["params"]["prompt"] == PROMPT
    assert summary["seed_filled"] is True
    assert summary["seed"] == emu.job(request_id)["params"]["seed"]
    assert context["ti"].xcom["segmind_output_url"] == summary["output_url"]

    # A job that did not complete ends as its own event says, whatever the payload claimed.
    failed_id = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": "__unsafe__ a forbidden thing"}).request_id
    wait_for(lambda: emu.job(failed_id)["status"] == "FAILED", what="the failed job")
    failed_context = make_context()
    failed_context["ti"].xcom_push(key="segmind_request_id", value=failed_id)
    from airflow.providers.common.compat.sdk import AirflowFailException

    fresh = SegmindTextToImageOperator(task_id="t2i", prompt=PROMPT, deferrable=True, poll_schedule=FAST_SCHEDULE)
    with pytest.raises(AirflowFailException, match="FAILED"):
        fresh.execute_complete(failed_context, "success")


def test_a_bare_success_resume_of_the_sensor_looks_again(emu: Any) -> None:
    from airflow_provider_segmind.sensors.segmind import SegmindJobSensor
    from tests.support.jobs import make_context, wait_for

    request_id, _ = _submit()
    wait_for(lambda: emu.job(request_id)["status"] == "COMPLETED", what="the job")
    sensor = SegmindJobSensor(task_id="wait", request_id=request_id, model=SD3_LARGE_MODEL, deferrable=True)
    summary = sensor.execute_complete(make_context(), "success")
    assert summary["request_id"] == request_id
    assert summary["status"] == "COMPLETED"


# ---------------------------------------------------------------- what a worker would push (issue 24, item 2)


class RecordingXCom:
    """The Task SDK's XCom as the trigger calls it: which keys go through ``set`` (the backend) and with what."""

    sets: list[tuple[str, Any, dict[str, Any]]]
    to_db: list[tuple[str, Any, dict[str, Any]]]

    @classmethod
    def reset(cls) -> None:
        cls.sets, cls.to_db = [], []

    @classmethod
    def set(cls, key: str, value: Any, **kwargs: Any) -> None:
        cls.sets.append((key, value, kwargs))

    @classmethod
    def _set_xcom_in_db(cls, key: str, value: Any, **kwargs: Any) -> None:
        cls.to_db.append((key, value, kwargs))


class FakeTaskInstance:
    dag_id, task_id, run_id, map_index = "d", "generate", "r", -1


def _pushed(trigger: SegmindJobTrigger, event: dict[str, Any], monkeypatch: Any) -> bool:
    import asyncio

    import airflow.providers.common.compat.sdk as compat

    RecordingXCom.reset()
    # The name the trigger imports (item 9): compat's, whatever it resolves to on this Airflow.
    monkeypatch.setattr(compat, "XCom", RecordingXCom, raising=False)
    trigger.task_instance = FakeTaskInstance()  # type: ignore[assignment]
    return asyncio.run(trigger._push_xcoms(trigger.end_xcoms(event)))


def test_multiple_outputs_pushes_each_key_of_the_summary_too(emu: Any, monkeypatch: Any) -> None:
    """``op.output["output_url"]`` downstream reads the split key a worker pushes with ``multiple_outputs``."""
    request_id, submitted_at = _submit()
    event = _success(request_id, submitted_at)
    trigger = _trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}, multiple_outputs=True)
    xcoms = trigger.end_xcoms(event)
    summary = xcoms["return_value"]
    for key, value in summary.items():
        assert xcoms[key] == value
    assert xcoms["output_url"] == xcoms["segmind_output_url"] == summary["output_url"]
    # In the worker's order: the provider's keys (execute_complete), the split keys, the return value, the link.
    assert list(xcoms) == [
        "segmind_request_id",
        "segmind_output_url",
        *summary,
        "return_value",
        "_link_SegmindOutputLink",
    ]
    assert _pushed(trigger, event, monkeypatch) is True
    assert [key for key, _, _ in RecordingXCom.sets] == list(xcoms)[:-1]
    # do_xcom_push=False: a worker pushes neither the return value nor its keys.
    quiet = _trigger(
        request_id,
        submitted_at,
        end_from_trigger=True,
        summary_params={},
        multiple_outputs=True,
        push_return_value=False,
    )
    assert set(quiet.end_xcoms(event)) == {"segmind_request_id", "segmind_output_url", "_link_SegmindOutputLink"}
    # The sensor's trigger (no summary_params) splits its summary the same way.
    sensor = _trigger(request_id, submitted_at, end_from_trigger=True, multiple_outputs=True)
    assert sensor.end_xcoms(event) == {**event["result"], "return_value": event["result"]}


def test_the_trigger_pushes_each_key_the_way_the_task_runner_does(emu: Any, monkeypatch: Any) -> None:
    """``_mapped_length`` on the return value, the dag result mark on every pushed key, and the link
    straight to the database (bypassing a custom XCom backend), as ``task_runner`` sends them."""
    request_id, submitted_at = _submit()
    event = _success(request_id, submitted_at)
    trigger = _trigger(
        request_id, submitted_at, end_from_trigger=True, summary_params={}, push_mapped_length=True, dag_result=True
    )
    assert _pushed(trigger, event, monkeypatch) is True
    where = {"dag_id": "d", "task_id": "generate", "run_id": "r", "map_index": -1}
    sets = {key: (value, kwargs) for key, value, kwargs in RecordingXCom.sets}
    summary = sets["return_value"][0]
    assert sets["return_value"][1] == {**where, "dag_result": True, "_mapped_length": len(summary)}
    assert sets["segmind_request_id"][1] == {**where, "dag_result": True}
    assert sets["segmind_output_url"][1] == {**where, "dag_result": True}
    assert RecordingXCom.to_db == [("_link_SegmindOutputLink", summary["output_url"], where)]
    assert "_link_SegmindOutputLink" not in sets

    # Without those: plain XCom.set calls, as for any task.
    plain = _trigger(request_id, submitted_at, end_from_trigger=True, summary_params={})
    assert _pushed(plain, event, monkeypatch) is True
    assert all(kwargs == where for _, _, kwargs in RecordingXCom.sets)


def test_a_push_the_api_refuses_resumes_the_task_on_the_worker(emu: Any, monkeypatch: Any) -> None:
    """E.g. a return value longer than ``[core] max_map_length``: the worker then fails it as Airflow does."""
    request_id, submitted_at = _submit()
    event = _success(request_id, submitted_at)

    class Refusing(RecordingXCom):
        @classmethod
        def set(cls, key: str, value: Any, **kwargs: Any) -> None:
            if "_mapped_length" in kwargs:
                raise RuntimeError("pushed value is too large to map as a downstream's dependency")
            super().set(key, value, **kwargs)

    import airflow.sdk.execution_time.xcom as sdk_xcom

    trigger = _trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}, push_mapped_length=True)
    monkeypatch.setattr(sdk_xcom, "XCom", Refusing)
    trigger.task_instance = FakeTaskInstance()  # type: ignore[assignment]
    import asyncio

    assert asyncio.run(trigger._push_xcoms(trigger.end_xcoms(event))) is False


def _dag_with(**operator_kwargs: Any) -> tuple[Any, Any]:
    """A DAG whose generate task's output a mapped task expands (what ``_mapped_length`` is for)."""
    import pendulum
    from airflow.sdk import DAG, task

    with DAG("segmind_unit_gate", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")) as dag:
        generate = SegmindTextToImageOperator(task_id="generate", prompt=PROMPT, deferrable=True, **operator_kwargs)

        @task
        def each(item: Any) -> Any:
            return item

        each.expand(item=generate.output)
    return dag, generate


def test_the_task_says_how_a_worker_would_push_its_return_value() -> None:
    from airflow_provider_segmind.triggers.segmind import task_trigger_kwargs
    from tests.support.jobs import make_context

    _, generate = _dag_with(multiple_outputs=True)
    assert task_trigger_kwargs(generate, make_context(try_number=3)) == {
        "try_number": 3,
        "multiple_outputs": True,
        "push_mapped_length": True,  # not mapped, and a mapped task expands its output
        "dag_result": False,
    }
    assert task_trigger_kwargs(generate, make_context(map_index=2))["push_mapped_length"] is False  # itself mapped
    alone = SegmindTextToImageOperator(task_id="alone", prompt=PROMPT)
    assert task_trigger_kwargs(alone, make_context())["push_mapped_length"] is False
    assert task_trigger_kwargs(alone, make_context())["multiple_outputs"] is False


def test_no_return_value_for_a_mapped_task_downstream_resumes_on_the_worker(caplog: Any) -> None:
    from tests.support.jobs import make_context

    _, generate = _dag_with(do_xcom_push=False)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        assert not ends_from_trigger(
            None, outlets=[], record_in_variable=False, log=LOG, task=generate, context=make_context()
        )
    assert "XComForMappingNotPushed" in caplog.text
    _, pushing = _dag_with()
    assert ends_from_trigger(None, outlets=[], record_in_variable=False, log=LOG, task=pushing, context=make_context())


def test_a_task_listener_keeps_the_worker_resume(caplog: Any) -> None:
    """Airflow calls no listener for a task its trigger ends: with one registered, the task resumes on a worker."""
    from airflow.providers.common.compat.sdk import get_listener_manager, hookimpl

    class SuccessListener:
        @hookimpl
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            pass

    class StartListener:  # hears of no task's end: changes nothing
        @hookimpl
        def on_starting(self, component: Any) -> None:
            pass

    manager = get_listener_manager()
    started, succeeded = StartListener(), SuccessListener()
    try:
        manager.add_listener(started)
        assert ends_from_trigger(None, outlets=[], record_in_variable=False, log=LOG)
        manager.add_listener(succeeded)
        with caplog.at_level(logging.INFO, logger=LOG.name):
            assert not ends_from_trigger(None, outlets=[], record_in_variable=False, log=LOG)
            assert not ends_from_trigger(True, outlets=[], record_in_variable=False, log=LOG)
        assert "task listeners are registered" in caplog.text
        assert "SuccessListener" in caplog.text
        assert "end_from_trigger=True ignored" in caplog.text
    finally:
        for listener in (started, succeeded):
            if manager.pm.is_registered(listener):
                manager.pm.unregister(listener)
    assert ends_from_trigger(None, outlets=[], record_in_variable=False, log=LOG)


def test_a_dag_result_is_marked_or_the_task_resumes(monkeypatch: Any) -> None:
    import airflow_provider_segmind.triggers.segmind as triggers
    from tests.support.jobs import make_context

    generate = SegmindTextToImageOperator(task_id="generate", prompt=PROMPT)
    generate.returns_dag_result = True  # what dag.add_result(generate.output) sets (Airflow 3.2+)
    assert triggers.task_trigger_kwargs(generate, make_context())["dag_result"] is True
    decide = {"outlets": [], "record_in_variable": False, "log": LOG, "task": generate, "context": make_context()}
    monkeypatch.setattr(triggers, "_xcom_set_takes", lambda name: True)
    assert ends_from_trigger(None, **decide)
    monkeypatch.setattr(triggers, "_xcom_set_takes", lambda name: False)  # Airflow 3.1's XCom.set
    assert not ends_from_trigger(None, **decide)
