"""Issue 24 items 8 and 11: the seed the operator filled is in the result in every mode, under ``dag.test()``.

docs/exactly-once.md and docs/operators.md promise it: ``seed`` (the seed the image was made with)
and ``seed_filled: true`` when the operator chose it, with the seed in ``params`` too. Each mode
runs through Airflow's real task runner (``dag.test()``):

- blocking: the worker waits and finishes (``execute_complete`` with the seed it filled);
- deferred, resumed on the worker: ``dag.test()`` resumes with the trigger's event only, dropping
  the defer's ``kwargs`` (``next_kwargs = {"event": ...}``, Airflow 3.1 to 3.3), where the filled
  seed used to travel: the trigger now puts it in its event too;
- deferred with ``end_from_trigger``: a triggerer gives the trigger its task instance and the
  trigger ends the task, pushing the summary itself (checked below with the operator's own trigger
  and the XCom push recorded at ``common.compat``; a real triggerer: ``tests/integration``); under
  ``dag.test()`` the trigger has no task instance, so the task resumes on the worker with the event
  (and were it resumed with the bare ``"success"``, ``test_end_from_trigger.py`` shows the seed
  comes from the request record), and must come out the same;
- finished from the request history: the v2 record is gone (404) when the job is looked at, and
  the history's record finishes the task, blocking and deferred.

A seed the user gave is reported as it is, without ``seed_filled``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.jobs import (
    FAST_SCHEDULE,
    DictTaskStateStore,
    ManualClock,
    make_context,
    run_trigger,
    use_emulator,
)
from tests.unit.operators.test_segmind_dag_test import _BROKEN, _summary, run_dag, write_dag

pytestmark = pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")

MODES = {
    "blocking": "deferrable=False",
    "deferred-resumed-on-worker": "deferrable=True, end_from_trigger=False",
    "deferred-end-from-trigger": "deferrable=True, end_from_trigger=True",
}


def _run(dags_folder: Path, dag_id: str, arguments: str) -> Any:
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i", prompt="a lighthouse at dawn", poll_schedule=FAST, retries=0, {arguments}
            )
        """,
    )
    dr = run_dag(path, dag_id)
    (ti,) = dr.get_task_instances()
    assert ti.state == "success"
    return dr


def _assert_filled(summary: dict[str, Any], sent: dict[str, Any]) -> None:
    assert isinstance(sent["seed"], int)
    assert summary["seed"] == sent["seed"]
    assert summary["seed_filled"] is True
    assert summary["params"]["seed"] == sent["seed"]


@pytest.mark.parametrize("mode", list(MODES))
def test_the_filled_seed_is_in_the_result(dags_folder: Path, airflow_db: Path, emu: Any, mode: str) -> None:
    dr = _run(dags_folder, f"segmind_seed_{mode.replace('-', '_')}", MODES[mode])
    summary = _summary(dr)
    _assert_filled(summary, emu.job(summary["request_id"])["params"])
    assert emu.stats()["submissions"] == 1


@pytest.mark.parametrize("mode", list(MODES))
def test_a_seed_the_user_gave_is_reported_as_given(dags_folder: Path, airflow_db: Path, emu: Any, mode: str) -> None:
    dr = _run(dags_folder, f"segmind_user_seed_{mode.replace('-', '_')}", MODES[mode] + ", seed=42")
    summary = _summary(dr)
    assert emu.job(summary["request_id"])["params"]["seed"] == 42
    assert summary["seed"] == summary["params"]["seed"] == 42
    assert "seed_filled" not in summary


def _expire_once_submitted(emu: Any, clock: ManualClock) -> threading.Thread:
    """Once the job exists, move the emulator's clock past its 1 hour retention in one step: its v2
    status answers 404 (expired) from then on, and the request history has it COMPLETED."""

    def expire() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if emu.jobs():
                clock.advance(2 * 3600)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=expire, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("mode", ["blocking", "deferred-resumed-on-worker"])
def test_the_filled_seed_is_in_a_result_from_the_request_history(
    dags_folder: Path, airflow_db: Path, emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    clock = ManualClock()
    emu = emulator_factory(clock=clock)
    use_emulator(monkeypatch, emu)
    expiring = _expire_once_submitted(emu, clock)
    dr = _run(dags_folder, f"segmind_seed_history_{mode.replace('-', '_')}", MODES[mode])
    expiring.join(timeout=5)
    summary = _summary(dr)
    assert summary["source"] == "request history"
    _assert_filled(summary, emu.job(summary["request_id"])["params"])
    stats = emu.stats()
    assert stats["submissions"] == 1
    assert stats["history_calls"] >= 1


def test_the_filled_seed_is_in_what_the_trigger_pushes_when_it_ends_the_task(
    emu: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``end_from_trigger`` mode as a triggerer runs it: the operator's own trigger (rebuilt from its
    stored kwargs) with a task instance, ending the task with the summary it pushes."""
    import airflow.providers.common.compat.sdk as compat
    from airflow.providers.common.compat.sdk import TaskDeferred
    from airflow.triggers.base import TaskSuccessEvent

    from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
    from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger

    pushed: dict[str, Any] = {}

    class Recorder:
        @staticmethod
        def set(key: str, value: Any, **_: Any) -> None:
            pushed[key] = json.loads(json.dumps(value))

        # The extra link's XCom goes straight to the database, as the task runner writes it.
        _set_xcom_in_db = set

    monkeypatch.setattr(compat, "XCom", Recorder, raising=False)
    op = SegmindTextToImageOperator(
        task_id="t2i",
        prompt="a lighthouse at dawn",
        deferrable=True,
        poll_schedule=FAST_SCHEDULE,
        end_from_trigger=True,
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(DictTaskStateStore()))
    _classpath, stored = deferred.value.trigger.serialize()
    trigger = SegmindJobTrigger(**json.loads(json.dumps(stored)))
    trigger.task_instance = SimpleNamespace(dag_id="d", task_id="t2i", run_id="r", map_index=-1)
    (event,) = run_trigger(trigger)
    assert isinstance(event, TaskSuccessEvent)
    summary = pushed["return_value"]
    _assert_filled(summary, emu.job(summary["request_id"])["params"])
