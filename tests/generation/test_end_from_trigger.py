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
from airflow_provider_segmind.protocol import SD3_LARGE_MODEL
from airflow_provider_segmind.results import completed_summary, summarize_params
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger, ends_from_trigger
from tests.generation.helpers import FAST_SCHEDULE, PROMPT, run_trigger

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


def test_success_ends_the_task_with_the_operators_xcoms(emu: Any) -> None:
    request_id, submitted_at = _submit()
    params = summarize_params({"prompt": PROMPT, "aspect_ratio": "1:1", "seed": 7, "api_key": emu.api_key})
    (event,) = run_trigger(
        _trigger(request_id, submitted_at, end_from_trigger=True, summary_params=params, filled_seed=7)
    )

    assert isinstance(event, TaskSuccessEvent)
    xcoms = event.xcoms
    assert xcoms is not None
    summary = xcoms["return_value"]
    # The value execute_complete returns for the same job (the result fetched again, same summary rule).
    (resumed,) = run_trigger(_trigger(request_id, submitted_at))
    assert isinstance(resumed, TriggerEvent)
    assert not isinstance(resumed, TaskSuccessEvent)
    assert summary == completed_summary(resumed.payload["result"], params, 7)
    assert summary["request_id"] == request_id
    assert summary["params"]["aspect_ratio"] == "1:1"
    assert summary["seed_filled"] is True
    assert xcoms["segmind_request_id"] == request_id
    assert xcoms["segmind_output_url"] == summary["output_url"]
    assert xcoms["_link_SegmindOutputLink"] == summary["output_url"]
    assert set(xcoms) == {"return_value", "segmind_request_id", "segmind_output_url", "_link_SegmindOutputLink"}
    text = json.dumps(xcoms)  # JSON-safe, as Airflow stores XComs
    assert emu.api_key not in text


def test_do_xcom_push_false_and_the_sensors_xcoms(emu: Any) -> None:
    request_id, submitted_at = _submit()
    (quiet,) = run_trigger(
        _trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}, push_return_value=False)
    )
    assert isinstance(quiet, TaskSuccessEvent)
    assert quiet.xcoms is not None
    assert "return_value" not in quiet.xcoms
    assert quiet.xcoms["segmind_request_id"] == request_id
    # The sensor (no summary_params): its return value is the event's summary as it is, alone.
    (sensor,) = run_trigger(_trigger(request_id, submitted_at, end_from_trigger=True))
    assert isinstance(sensor, TaskSuccessEvent)
    assert sensor.xcoms is not None
    assert set(sensor.xcoms) == {"return_value"}
    assert sensor.xcoms["return_value"]["request_id"] == request_id
    assert sensor.xcoms["return_value"]["params"] == {}


def test_an_inline_output_ends_with_no_url_and_an_empty_link(emu: Any) -> None:
    request_id, submitted_at = _submit(base64=True)
    (event,) = run_trigger(_trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}))
    assert isinstance(event, TaskSuccessEvent)
    assert event.xcoms is not None
    assert event.xcoms["return_value"]["output_inline"] is True
    assert "segmind_output_url" not in event.xcoms  # a resumed task pushes none either
    assert event.xcoms["_link_SegmindOutputLink"] == ""
    assert len(json.dumps(event.xcoms)) < 4_000  # no image bytes


def test_every_other_outcome_resumes_the_task_on_the_worker(emu: Any) -> None:
    request_id, submitted_at = _submit(prompt="__unsafe__ a forbidden thing")
    (failed,) = run_trigger(_trigger(request_id, submitted_at, end_from_trigger=True, summary_params={}))
    assert not isinstance(failed, TaskSuccessEvent)
    assert failed.payload["status"] == "failed"
    (expired,) = run_trigger(_trigger("no-such-request", time.time(), end_from_trigger=True, summary_params={}))
    assert not isinstance(expired, TaskSuccessEvent)
    assert expired.payload["status"] in ("expired", "error")


@pytest.mark.parametrize(
    ("requested", "outlets", "record_in_variable", "expected"),
    [
        (None, [], False, True),  # 3.3 (task state store) or request_store="none": on
        (None, [], True, False),  # 3.1/3.2's Variable record: only a worker can delete it
        (True, [], True, True),  # asked for: on, the Variable stays (a clear still generates anew)
        (None, ["an asset"], False, False),  # outlets: asset events need a worker to finish the task
        (True, ["an asset"], False, False),
        (False, [], False, False),
    ],
)
def test_when_a_task_asks_its_trigger_to_end_it(
    requested: bool | None, outlets: list[str], record_in_variable: bool, expected: bool
) -> None:
    assert ends_from_trigger(requested, outlets=outlets, record_in_variable=record_in_variable, log=LOG) is expected


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
    from tests.generation.helpers import DictTaskStateStore, make_context, wait_for

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
