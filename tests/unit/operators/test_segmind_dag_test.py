"""Whole DAGs through ``dag.test()``: mapped deferrable tasks, a real task retry, a rescheduling sensor.

``dag.test()`` runs each task in-process through Airflow's real task runner and Execution API
(so XCom, extra links and, on Airflow 3.3+, the real ``task_state_store`` are the genuine ones) and
runs a deferred task's trigger inline before resuming it. The DAG files are written into the
session's DAGS_FOLDER, because ``dag.test()`` needs the DAG serialized from its bundle.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import textwrap
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import pytest

from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from tests.support.jobs import FAST_SCHEDULE, ManualClock, captured_logs, use_emulator


def _execution_api_rejects_the_task_runner() -> str | None:
    """Why ``dag.test()`` cannot run any task in this environment, if it cannot.

    Airflow 3.1's task SDK client sends Execution API bodies without a Content-Type header, and
    FastAPI 0.132+ refuses such bodies by default (``strict_content_type``): every task fails to
    start with HTTP 422, whatever the DAG. The fix is a constraint (``fastapi<0.132``), not code.
    """
    from airflow.sdk.api.client import Client

    if "content-type" in inspect.getsource(Client.request):
        return None
    fastapi = tuple(int(part) for part in version("fastapi").split(".")[:2])
    if fastapi >= (0, 132):
        return (
            f"Airflow {version('apache-airflow')} cannot start any task with FastAPI {version('fastapi')}: its task "
            "SDK client omits Content-Type and FastAPI >= 0.132 rejects that (HTTP 422). Pin fastapi<0.132."
        )
    return None


_BROKEN = _execution_api_rejects_the_task_runner()
pytestmark = pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")


def _has_task_state_store() -> bool:
    import airflow.sdk.execution_time.context as context

    return hasattr(context, "TaskStateStoreAccessor")


def write_dag(dags_folder: Path, name: str, body: str) -> Path:
    path = dags_folder / f"{name}.py"
    header = f"""
        import pendulum
        from datetime import timedelta
        from airflow.sdk import DAG, task
        from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator
        from airflow_provider_segmind.sensors.segmind import SegmindJobSensor

        FAST = {FAST_SCHEDULE!r}
        START = pendulum.datetime(2024, 1, 1, tz="UTC")
    """
    path.write_text(textwrap.dedent(header) + textwrap.dedent(body))
    return path


def run_dag(path: Path, dag_id: str, **test_kwargs: Any) -> Any:
    """Load the DAG from its file in the DAGS_FOLDER and run ``dag.test()`` (serializing it first on 3.1)."""
    from airflow.sdk import DAG

    spec = importlib.util.spec_from_file_location(f"segmind_test_dag_{dag_id}", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    dag = module.dag
    if "sync_bag_to_db" not in inspect.getsource(DAG.test):  # Airflow 3.1: dag.test() needs it serialized
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.models.dagbag import DagBag, sync_bag_to_db

        DagBundlesManager().sync_bundles_to_db()
        sync_bag_to_db(DagBag(dag_folder=str(path.parent), include_examples=False), "dags-folder", None)
    return dag.test(**test_kwargs)


def xcoms(run_id: str, dag_id: str | None = None) -> list[tuple[str, int, str, Any]]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
        XComModel.run_id == run_id
    )
    if dag_id is not None:  # run ids repeat across DAGs run for the same logical date
        query = query.where(XComModel.dag_id == dag_id)
    with create_session() as session:
        rows = session.execute(query).all()
    return [(task_id, map_index, key, _value(value)) for task_id, map_index, key, value in rows]


def _value(raw: Any) -> Any:
    if isinstance(raw, (bytes, str)):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


@pytest.fixture
def dag_env(airflow_db: Path, dags_folder: Path, emu: Any) -> tuple[Path, Any]:
    return dags_folder, emu


@pytest.mark.parametrize("end_from_trigger", [True, False], ids=["end-from-trigger", "resume-on-worker"])
def test_mapped_deferrable_dag_runs_one_job_per_prompt(
    dag_env: tuple[Path, Any], caplog: Any, capsys: Any, end_from_trigger: bool
) -> None:
    """Both modes end with the same XComs under ``dag.test()``. It runs the trigger inline without a
    task instance, so a trigger asked to end the task cannot push its XComs and resumes it with the
    usual event (and were a ``TaskSuccessEvent`` yielded, ``dag.test()`` would resume the task with
    the bare state ``"success"``, which the operator also finishes: ``test_end_from_trigger.py``)."""
    dags_folder, emu = dag_env
    dag_id = f"segmind_mapped_{'end' if end_from_trigger else 'resume'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            images = SegmindTextToImageOperator.partial(
                task_id="t2i", deferrable=True, poll_schedule=FAST, aspect_ratio="16:9",
                end_from_trigger={end_from_trigger!r},
            ).expand(prompt=["a fox in snow", "an owl at night", "a heron at dawn"])
            runs = SegmindRunOperator.partial(
                task_id="run", deferrable=True, poll_schedule=FAST, model="stable-diffusion-3-large-txt2img",
                end_from_trigger={end_from_trigger!r},
            ).expand_kwargs(
                [{{"inputs": {{"prompt": "a red boat", "seed": 1}}}}, {{"inputs": {{"prompt": "a blue car"}}}}]
            )

            @task
            def collect(summaries):
                return sorted(s["request_id"] for s in summaries)

            collect(images.output)
        """,
    )
    dr = run_dag(path, dag_id)
    logs = captured_logs(caplog, capsys)

    assert dr.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in dr.get_task_instances()}
    assert set(states.values()) == {"success"}
    assert len([k for k in states if k[0] in ("t2i", "run")]) == 5
    stats = emu.stats()
    assert stats["submissions"] == 5  # one billed job per prompt, none repeated
    assert stats["result_fetches"] == 5

    rows = xcoms(dr.run_id, dag_id)
    returns = {(t, m): v for t, m, k, v in rows if k == "return_value"}
    links = {(t, m): v for t, m, k, v in rows if k == "_link_SegmindOutputLink"}
    for index in range(3):
        summary = returns[("t2i", index)]
        assert summary["status"] == "COMPLETED"
        assert summary["model"] == SD3_LARGE_MODEL
        assert summary["params"]["aspect_ratio"] == "16:9"
        assert links[("t2i", index)] == summary["output_url"]  # the extra link shows the image
    assert returns[("run", 0)]["seed"] == 1
    prompts = {emu.job(returns[("t2i", i)]["request_id"])["params"]["prompt"] for i in range(3)}
    assert prompts == {"a fox in snow", "an owl at night", "a heron at dawn"}
    assert returns[("collect", -1)] == sorted(returns[("t2i", i)]["request_id"] for i in range(3))
    # The trigger logs what it observed: on a loaded machine its first poll may already see COMPLETED.
    assert "-> COMPLETED" in logs or "first seen COMPLETED" in logs
    for index in range(3):
        output_urls = {(t, m): v for t, m, k, v in rows if k == "segmind_output_url"}
        request_ids = {(t, m): v for t, m, k, v in rows if k == "segmind_request_id"}
        assert output_urls[("t2i", index)] == returns[("t2i", index)]["output_url"]
        assert request_ids[("t2i", index)] == returns[("t2i", index)]["request_id"]
    assert emu.api_key not in logs + json.dumps([r[3] for r in rows], default=str)


def _request_variables() -> list[str]:
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_segmind.operators._records import REQUEST_VARIABLE_PREFIX

    with create_session() as session:
        keys = session.execute(select(VariableModel.key)).scalars().all()
    return [key for key in keys if key.startswith(REQUEST_VARIABLE_PREFIX)]


@pytest.mark.parametrize(
    ("deferrable", "request_store", "submissions"),
    [(True, "auto", 1), (True, "variable", 1), (False, "auto", 1), (False, "variable", 1), (False, "none", 2)],
    ids=["deferred-auto", "deferred-variable", "blocking-auto", "blocking-variable", "blocking-none"],
)
def test_a_task_retry_reuses_the_job_through_its_request_store(
    dag_env: tuple[Path, Any], deferrable: bool, request_store: str, submissions: int
) -> None:
    """Try 1 gives up on a run of 5xx while waiting; try 2 must reuse the job, not re-bill.

    ``auto`` is the task state store on Airflow 3.3+ and a Variable on 3.1/3.2; ``variable`` forces
    the Variable everywhere; ``none`` shows what the record saves (a second billed submit). No
    Variable is left once the task has succeeded.
    """
    # (Airflow 3.1.0 resumes a retried deferred task with the try before's trigger event: the deferred
    # cases run there too since the operator drops such an event, deferral.py.)
    dags_folder, emu = dag_env
    dag_id = f"segmind_retry_{'deferred' if deferrable else 'blocking'}_{request_store}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="a lighthouse",
                deferrable={deferrable!r},
                poll_schedule=FAST,
                max_consecutive_errors=2,
                request_store={request_store!r},
                retries=1,
                retry_delay=timedelta(0),
            )
        """,
    )
    emu.script([{"endpoint": "status", "fault": "500", "times": 2}])
    dr = run_dag(path, dag_id)
    (ti,) = dr.get_task_instances()
    assert ti.try_number == 2  # the first try really failed...
    assert dr.state == "success"  # ...and the retry succeeded
    assert emu.stats()["submissions"] == submissions  # 1: with the job the first try submitted
    summary = next(v for _, _, k, v in xcoms(dr.run_id) if k == "return_value")
    assert emu.job(summary["request_id"]) is not None
    assert _request_variables() == []  # nothing left behind in the Variables list


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "blocking"])
def test_each_retry_after_a_failed_job_submits_anew(
    dag_env: tuple[Path, Any], deferrable: bool, caplog: Any, capsys: Any
) -> None:
    """Issue 24 item 7: every try of a ``__fail__`` prompt submits its own job, on every Airflow.

    Airflow 3.1.0 resumed try 2 of a deferred task with try 1's ``execute_complete`` and its FAILED
    event (apache/airflow#56704), so the retry failed with the first job's error and never submitted
    (the floors job runs this on 3.1.0). The operator drops an earlier try's event and submits anew.
    """
    dags_folder, emu = dag_env
    dag_id = f"segmind_failed_retries_{'deferred' if deferrable else 'blocking'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="__fail__ a lighthouse",
                deferrable={deferrable!r},
                poll_schedule=FAST,
                retries=2,
                retry_delay=timedelta(0),
            )
        """,
    )
    dr = run_dag(path, dag_id)
    (ti,) = dr.get_task_instances()
    assert ti.state == "failed"
    assert ti.try_number == 3
    jobs = emu.jobs()
    assert [job["status"] for job in jobs] == ["FAILED"] * 3  # one new job per try
    assert emu.stats()["submissions"] == 3
    logs = captured_logs(caplog, capsys)
    for job in jobs:  # each try failed with its own job's error
        assert f"Segmind job {job['request_id']} FAILED" in logs
    assert _request_variables() == []
    assert _task_state_records(dag_id) == []


def _summary(dr: Any) -> dict[str, Any]:
    return dict(next(v for _, _, k, v in xcoms(dr.run_id, dr.dag_id) if k == "return_value"))


def _task_state_records(dag_id: str) -> list[Any]:
    """The task state store rows of ``dag_id`` (Airflow 3.3+; none elsewhere)."""
    try:
        from airflow.models.task_state_store import TaskStateStoreModel
    except ImportError:
        return []
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return list(session.execute(select(TaskStateStoreModel.key).where(TaskStateStoreModel.dag_id == dag_id)).all())


def clear_and_rerun(path: Path, dag_id: str, dr: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Clear the run's task instances the way a user does, then run that same run again.

    ``dag.test()`` first clears the task instances of its logical date with Airflow's own clear
    (``clear_task_instances``, what the UI's and the REST API's Clear call: the try number is kept
    and ``max_tries`` raised), then deletes and recreates the run. A user's clear keeps the run, so
    here the second ``dag.test()`` gets the existing run back, running again, instead of a new one.
    """
    import airflow.models.dagrun as dagrun_module
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    def keep_run(*, dag: Any, run_id: str, session: Any, **_: Any) -> Any:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == run_id))
        assert run is not None, "the cleared run is gone"
        run.state = "running"
        run.dag = dag
        session.flush()
        return run

    with monkeypatch.context() as patched:
        patched.setattr(dagrun_module, "get_or_create_dagrun", keep_run)
        return run_dag(path, dag_id, logical_date=dr.logical_date, run_after=dr.run_after)


@pytest.mark.parametrize("faults", [False, True], ids=["clean", "5xx-then-retry"])
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "blocking"])
def test_clearing_a_successful_task_generates_anew_and_its_retries_reattach(
    dag_env: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, deferrable: bool, faults: bool
) -> None:
    """Issue 12 item 3: the same rule on 3.1 and 3.3.

    Run 1 succeeds (job A). The user clears the task: the new try must not hand back job A's image
    (3.3 used to, from its task state store) but submit job B. With ``faults``, that try cannot
    read A's status, then fails on a run of 5xx while waiting for B, and its retry re-attaches to
    B: a retry after a failed try never re-bills.
    """
    if deferrable and not _has_task_state_store():
        pytest.skip(
            "dag.test() on Airflow 3.1 resumes a retried deferred task with its stale trigger event instead of "
            "calling execute(); the blocking case covers 3.1."
        )
    dags_folder, emu = dag_env
    dag_id = f"segmind_clear_{'deferred' if deferrable else 'blocking'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="a lighthouse",
                deferrable={deferrable!r},
                poll_schedule=FAST,
                max_consecutive_errors=2,
                retries=1,
                retry_delay=timedelta(0),
            )
        """,
    )
    import pendulum

    when = pendulum.datetime(2025, 1, 1, tz="UTC")
    dr = run_dag(path, dag_id, logical_date=when, run_after=when)
    assert dr.state == "success"
    first = _summary(dr)["request_id"]
    assert emu.stats()["submissions"] == 1

    if faults:
        # No hook retries: the cleared try cannot read job A's status (one 5xx), which must not make
        # it hand back A either; it submits B and gives up on the next two 5xx while waiting for it.
        monkeypatch.setenv(
            "AIRFLOW_CONN_SEGMIND_DEFAULT",
            json.dumps(
                {"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url, "extra": {"max_retries": 0}}
            ),
        )
        emu.script([{"endpoint": "status", "fault": "500", "times": 3}])
    dr = clear_and_rerun(path, dag_id, dr, monkeypatch)
    (ti,) = dr.get_task_instances()
    assert dr.state == "success"
    # 1 (run 1), 2 (after the clear: A is COMPLETED, B submitted), and with faults 3 (2's retry)
    assert ti.try_number == (3 if faults else 2)
    second = _summary(dr)["request_id"]
    assert second != first  # a new image, not run 1's
    # Issue 22 defect 1: the seed the provider filled belongs to run 1's generation; the clear draws
    # a new one, so the new job is a different image, not the same one paid for again.
    assert emu.job(second)["params"]["seed"] != emu.job(first)["params"]["seed"]
    assert _summary(dr)["seed"] == emu.job(second)["params"]["seed"]
    assert emu.stats()["submissions"] == 2  # one for the clear; none for a retry after it
    assert emu.job(second)["status"] == "COMPLETED"
    assert _request_variables() == []  # 3.1: deleted at success
    # 3.3: the record outlives the success (the operator does not delete it then, nor does Airflow
    # by default), and still no clear is served the old job: the rule does not rest on a cleanup.
    assert len(_task_state_records(dag_id)) == (1 if _has_task_state_store() else 0)


@pytest.mark.parametrize("seed", [None, 42], ids=["filled-seed", "user-seed"])
def test_a_clear_whose_submit_answer_is_lost_reattaches_to_its_own_new_request(
    dag_env: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, seed: int | None
) -> None:
    """Issue 22 defect 3, on 3.1 (Variable record) and 3.3 (task state store).

    Run 1 succeeds (job A). The user clears the task; the cleared try's submit is created by
    Segmind but its answer is lost (a 504). The history then lists A (same body when the user
    gave the seed, created seconds earlier) and B: the cleared try must re-attach to B, its own, and
    never hand back the image from before the clear. A is this task's, but of an earlier clear
    generation, so its claim makes it foreign; with a filled seed its body differs anyway.
    """
    dags_folder, emu = dag_env
    dag_id = f"segmind_clear_lost_{'filled' if seed is None else 'user'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="a lighthouse at dusk",
                seed={seed!r},
                deferrable=False,
                poll_schedule=FAST,
                history_wait=5,
                request_store="auto",
            )
        """,
    )
    import pendulum

    when = pendulum.datetime(2025, 2, 1, tz="UTC")
    dr = run_dag(path, dag_id, logical_date=when, run_after=when)
    assert dr.state == "success"
    first = _summary(dr)["request_id"]
    # B's history row lands 1.5 s late (its body None until then), as the issue reproduced it: the
    # pre-clear request is then the only landed row with that body.
    emu.configure(history_lag_seconds=1.5, history_lag_mode="null")
    emu.script([{"endpoint": "submit", "fault": "504"}])
    dr = clear_and_rerun(path, dag_id, dr, monkeypatch)
    assert dr.state == "success"
    second = _summary(dr)["request_id"]
    assert second != first, "the cleared try was handed the image from before the clear"
    assert emu.stats()["submissions"] == 2  # A, and B whose answer was lost: no resend
    assert emu.job(second)["status"] == "COMPLETED"


def test_mapped_twins_with_one_body_never_share_a_request(dag_env: tuple[Path, Any]) -> None:
    """Issue 22 defect 2, on 3.1 (Variable record) and 3.3 (task state store), claims in real Variables.

    Two mapped tasks send the identical body (same prompt, ``seed=42``). [0] submits normally and
    claims its request; [1]'s submit is created but its answer lost (a 504), and its history row
    lands 1.5 s late. The history then shows [0]'s request with the very body [1] sent: [1] must
    not take it (it is claimed), but wait for its own. Two jobs paid, two different requests.
    """
    dags_folder, emu = dag_env
    dag_id = "segmind_mapped_twins"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator.partial(
                task_id="t2i", seed=42, deferrable=False, poll_schedule=FAST, history_wait=6
            ).expand(prompt=["a twin lighthouse", "a twin lighthouse"])
        """,
    )
    emu.configure(history_lag_seconds=1.5, history_lag_mode="null")
    emu.script([{"endpoint": "submit", "fault": "none"}, {"endpoint": "submit", "fault": "504"}])
    dr = run_dag(path, dag_id)
    assert dr.state == "success"
    summaries = {m: v for _, m, k, v in xcoms(dr.run_id, dag_id) if k == "return_value"}
    assert sorted(summaries) == [0, 1]
    ids = [summaries[m]["request_id"] for m in (0, 1)]
    assert ids[0] != ids[1], f"both twins were handed request {ids[0]}"
    assert emu.stats()["submissions"] == 2
    raw = _claim_variables()
    # A value that is not JSON (seen once in CI as "": a claim row read back empty) is shown, not decoded.
    claims = [json.loads(value) for value in raw.values() if value]
    owners = sorted(claim["owner"][3] for claim in claims if claim["owner"][0] == dag_id)
    assert owners == [0, 1], f"each request claimed by one twin; claim variables: {raw}"


def _claim_variables() -> dict[str, str]:
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_segmind.operators._claims import CLAIM_PREFIX

    with create_session() as session:
        rows = session.execute(select(VariableModel)).scalars().all()
        return {row.key: row.val for row in rows if row.key.startswith(CLAIM_PREFIX)}


@pytest.mark.parametrize("outcome", ["timeout", "error"])
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "blocking"])
def test_no_request_record_is_left_when_the_last_try_times_out_or_errs(
    dag_env: tuple[Path, Any], emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, deferrable: bool, outcome: str
) -> None:
    """Issue 12 item 12: no try can follow the last one, so its record (a Variable on 3.1) goes."""
    dags_folder, _ = dag_env
    slow = emulator_factory(inference_time=30.0)  # still running when the try ends
    use_emulator(monkeypatch, slow)
    dag_id = f"segmind_last_{outcome}_{'deferred' if deferrable else 'blocking'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="a lighthouse",
                deferrable={deferrable!r},
                poll_schedule=FAST,
                job_timeout={0.5 if outcome == "timeout" else 60},
                max_consecutive_errors=2,
                request_store="variable" if {deferrable!r} else "auto",
                retries=0,
            )
        """,
    )
    if outcome == "error":
        slow.script([{"endpoint": "status", "fault": "500", "times": 5}])
    dr = run_dag(path, dag_id)
    (ti,) = dr.get_task_instances()
    assert ti.state == "failed"
    assert slow.stats()["submissions"] == 1
    assert slow.job(_request_id(dr))["status"] in ("QUEUED", "PROCESSING")  # it ended mid-job
    assert _request_variables() == []
    assert _task_state_records(dag_id) == []


@pytest.mark.parametrize(
    ("deferrable", "end_from_trigger"),
    [(False, None), (True, True), (True, False)],
    ids=["blocking", "deferred-end-from-trigger", "deferred-resume-on-worker"],
)
def test_execution_timeout_ends_the_wait_for_a_slow_job(
    dag_env: tuple[Path, Any],
    emulator_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
    capsys: Any,
    deferrable: bool,
    end_from_trigger: bool | None,
) -> None:
    """Issue 24 item 1: a job slower than ``execution_timeout`` fails the task at ``execution_timeout``
    (not at ``job_timeout``'s hour), with an error naming it, deferred or not. ``dag.test()`` runs the
    trigger inline and, like Airflow 3's triggerer, applies no ``execution_timeout`` to it: the
    provider's own deadline ends the wait."""
    dags_folder, _ = dag_env
    slow = emulator_factory(inference_time=120.0)
    use_emulator(monkeypatch, slow)
    dag_id = f"segmind_execution_timeout_{'deferred' if deferrable else 'blocking'}_{end_from_trigger}".lower()
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="a lighthouse",
                deferrable={deferrable!r},
                end_from_trigger={end_from_trigger!r},
                poll_schedule=FAST,
                execution_timeout=timedelta(seconds=10),  # the submit's run may take seconds on a loaded machine
                retries=0,
            )
        """,
    )
    dr = run_dag(path, dag_id)
    logs = captured_logs(caplog, capsys)
    (ti,) = dr.get_task_instances()
    assert ti.state == "failed"
    request_id = _request_id(dr)
    assert f"Segmind request {request_id} was still not finished at its deadline" in logs
    assert "execution_timeout=10 s, counted from the try's start, ran out before job_timeout=3600 s" in logs
    assert "Segmind cannot cancel" in logs
    assert slow.stats()["submissions"] == 1
    assert slow.job(request_id)["status"] in ("QUEUED", "PROCESSING")  # still running: nothing cancels it
    if deferrable:
        assert "running trigger in line" in logs or "Pausing task as DEFERRED" in logs  # it did defer


@pytest.mark.parametrize("history", [True, False], ids=["history", "no-history"])
def test_a_submit_whose_outcome_is_unknown_is_not_resent_by_a_task_retry(
    dag_env: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, history: bool
) -> None:
    """A 504 on the submit (the job was queued) through the task runner; one paid job either way.

    Issue 13: with the request history the operator finds the queued job and the task succeeds at
    its first try. Issue 12 item 6 (``history_lookup`` false): the task fails at its first try
    although it has retries left, so no second POST bills a second job.
    """
    dags_folder, emu = dag_env
    use_emulator(monkeypatch, emu, extra={"history_lookup": history})
    path = write_dag(
        dags_folder,
        "segmind_unknown_submit",
        """
        with DAG("segmind_unknown_submit", schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="a lighthouse",
                poll_schedule=FAST,
                history_wait=5,
                retries=2,
                retry_delay=timedelta(0),
            )
        """,
    )
    emu.script([{"endpoint": "submit", "fault": "504"}])
    dr = run_dag(path, "segmind_unknown_submit")
    (ti,) = dr.get_task_instances()
    assert ti.state == ("success" if history else "failed")
    assert ti.try_number == 1  # no retry resent it
    stats = emu.stats()
    assert stats["submit_attempts"] == 1
    assert stats["submissions"] == 1
    if history:
        summary = _summary(dr)
        assert emu.job(summary["request_id"]) is not None
        assert summary["seed"] == emu.job(summary["request_id"])["params"]["seed"]
    assert _request_variables() == []


def test_an_expired_request_is_finished_from_the_request_history(
    dag_env: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, the expired-record path through the task runner: try 1 submits and fails while
    the job completes; before try 2 its v2 record expires (the emulator's control endpoint, in
    the retry callback) while the history keeps it; try 2 finishes with the history's output."""
    dags_folder, emu = dag_env
    monkeypatch.setenv("SEGMIND_TEST_EMULATOR_URL", emu.base_url)
    path = write_dag(
        dags_folder,
        "segmind_expired_record",
        """
        import json, os, time, urllib.request

        def expire_every_job(context):
            base = os.environ["SEGMIND_TEST_EMULATOR_URL"]
            for _ in range(200):  # let the job complete first (bounded)
                with urllib.request.urlopen(base + "/_emulator/jobs") as answer:
                    jobs = json.load(answer)
                jobs = jobs.get("jobs", jobs) if isinstance(jobs, dict) else jobs
                if jobs and all(job["status"] == "COMPLETED" for job in jobs):
                    break
                time.sleep(0.05)
            for job in jobs:
                request = urllib.request.Request(base + "/_emulator/expire/" + job["request_id"], method="POST")
                urllib.request.urlopen(request).close()

        with DAG("segmind_expired_record", schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator(
                task_id="t2i",
                prompt="a lighthouse",
                deferrable=False,
                poll_schedule=FAST,
                max_consecutive_errors=2,
                history_wait=0.3,
                retries=1,
                retry_delay=timedelta(0),
                on_retry_callback=expire_every_job,
            )
        """,
    )
    emu.script([{"endpoint": "status", "fault": "500", "times": 2}])
    dr = run_dag(path, "segmind_expired_record")
    (ti,) = dr.get_task_instances()
    assert ti.try_number == 2
    assert dr.state == "success"
    summary = _summary(dr)
    assert summary["source"] == "request history"
    assert summary["output_url"]
    assert summary["seed"] == emu.job(summary["request_id"])["params"]["seed"]
    stats = emu.stats()
    assert stats["submissions"] == 1
    assert stats["history_calls"] >= 1
    assert _request_variables() == []


class FlakyStateBackend:
    """A worker-side task state store backend (Airflow 3.3's ``[workers] state_store_backend``).

    It keeps values in memory and fails the operations named in ``failing`` the way a backend in
    an outage does, so the operator meets a real failure of Airflow's own store accessor (not a
    stand-in for it): ``task_state_store.get``/``set``/``delete`` raise through Airflow's code.
    """

    values: ClassVar[dict[str, Any]] = {}
    failing: ClassVar[set[str]] = set()

    def _check(self, operation: str) -> None:
        if operation in self.failing:
            raise ConnectionError(f"state store backend unreachable during {operation} (emulated outage)")

    def serialize_task_state_store_to_ref(self, *, value: Any, key: str, scope: Any) -> str:
        self._check("set")
        ref = f"{scope}/{key}"
        self.values[ref] = value
        return ref

    def deserialize_task_state_store_from_ref(self, ref: str) -> Any:
        self._check("get")
        return self.values[ref]

    def delete(self, scope: Any, key: str) -> None:
        self._check("delete")
        self.values.pop(f"{scope}/{key}", None)

    def clear(self, scope: Any) -> None:
        self._check("delete")


@pytest.mark.parametrize(("failing", "submissions"), [("get", 2), ("set", 2), ("delete", 1)])
def test_a_failing_task_state_store_never_fails_a_try(
    dag_env: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch, failing: str, submissions: int
) -> None:
    """Issue 12 item 12 on Airflow 3.3: the store's errors are logged, never fatal.

    Try 1 records its job and gives up on a run of 5xx; try 2 reads the record and succeeds. With a
    store that cannot be read (or was not written) try 2 cannot know the job and pays for a new
    one, the cost the record exists to avoid; it must not fail the task (before the fix, a read
    error failed the try). A store that cannot delete changes nothing.
    """
    if not _has_task_state_store():
        pytest.skip("Airflow 3.3+ only: the task state store and its worker-side backends")
    from airflow.sdk.execution_time import context as sdk_context

    dags_folder, emu = dag_env
    monkeypatch.setenv("AIRFLOW__WORKERS__STATE_STORE_BACKEND", f"{__name__}.FlakyStateBackend")
    monkeypatch.setattr(FlakyStateBackend, "failing", {failing})
    monkeypatch.setattr(FlakyStateBackend, "values", {})
    sdk_context._get_worker_state_store_backend.cache_clear()
    try:
        dag_id = f"segmind_store_{failing}"
        path = write_dag(
            dags_folder,
            dag_id,
            f"""
            with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
                SegmindTextToImageOperator(
                    task_id="t2i",
                    prompt="a lighthouse",
                    poll_schedule=FAST,
                    max_consecutive_errors=2,
                    retries=1,
                    retry_delay=timedelta(0),
                )
            """,
        )
        emu.script([{"endpoint": "status", "fault": "500", "times": 2}])
        dr = run_dag(path, dag_id)
    finally:
        sdk_context._get_worker_state_store_backend.cache_clear()
    (ti,) = dr.get_task_instances()
    assert ti.try_number == 2
    assert dr.state == "success"
    assert emu.stats()["submissions"] == submissions


def _request_id(dr: Any) -> str:
    return str(next(v for _, _, k, v in xcoms(dr.run_id, dr.dag_id) if k == "segmind_request_id"))


def test_sensor_in_reschedule_mode_waits_for_a_job_submitted_upstream(
    dag_env: tuple[Path, Any], emulator_factory: Any, monkeypatch: Any
) -> None:
    """A task submits (pushing the request id), a rescheduling sensor waits for it: the split pattern."""
    dags_folder, _ = dag_env
    # The job stays running until the sensor's first poke has been answered, however loaded the
    # machine is (a fixed inference time made the first poke race the job on a busy CI box).
    clock = ManualClock()
    slow = emulator_factory(clock=clock)
    use_emulator(monkeypatch, slow)
    poked = threading.Event()

    def finish_after_the_first_poke() -> None:
        while not poked.is_set():
            if slow.stats()["status_polls"] >= 1:
                poked.wait(0.5)  # let that poke's answer (still running) go out first
                clock.advance(60)  # done, well within the 1 hour retention
                return
            poked.wait(0.05)

    mover = threading.Thread(target=finish_after_the_first_poke, daemon=True)
    mover.start()
    path = write_dag(
        dags_folder,
        "segmind_sensor",
        """
        with DAG("segmind_sensor", schedule=None, start_date=START, catchup=False) as dag:

            @task
            def submit():
                from airflow_provider_segmind.hooks.segmind import SegmindHook

                return SegmindHook().submit("stable-diffusion-3-large-txt2img", {"prompt": "a slow river"}).request_id

            request_id = submit()
            wait = SegmindJobSensor(
                task_id="wait",
                request_id="{{ ti.xcom_pull(task_ids='submit') }}",
                mode="reschedule",
                poke_interval=0.2,
                timeout=120,
            )
            request_id >> wait
        """,
    )
    try:
        dr = run_dag(path, "segmind_sensor")
    finally:
        poked.set()
        mover.join(timeout=10)
    assert dr.state == "success"
    values = {(t, k): v for t, _, k, v in xcoms(dr.run_id)}
    summary = values[("wait", "return_value")]
    assert summary["request_id"] == values[("submit", "return_value")]
    assert summary["status"] == "COMPLETED"
    assert slow.stats()["status_polls"] >= 2  # it gave its slot back at least once before completion
    assert slow.stats()["submissions"] == 1


@pytest.mark.parametrize("end_from_trigger", [True, False], ids=["end-from-trigger", "resume-on-worker"])
def test_deferrable_sensor_in_both_modes(
    dag_env: tuple[Path, Any], emulator_factory: Any, monkeypatch: Any, caplog: Any, capsys: Any, end_from_trigger: bool
) -> None:
    """The deferred sensor returns the same summary with and without ``end_from_trigger`` under ``dag.test()``."""
    dags_folder, _ = dag_env
    clock = ManualClock()
    slow = emulator_factory(clock=clock)
    use_emulator(monkeypatch, slow)
    poked = threading.Event()

    def finish_after_the_first_poke() -> None:  # still running at the sensor's first look: it defers
        while not poked.is_set():
            if slow.stats()["status_polls"] >= 1:
                poked.wait(0.5)
                clock.advance(60)
                return
            poked.wait(0.05)

    mover = threading.Thread(target=finish_after_the_first_poke, daemon=True)
    mover.start()
    dag_id = f"segmind_sensor_deferred_{'end' if end_from_trigger else 'resume'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:

            @task
            def submit():
                from airflow_provider_segmind.hooks.segmind import SegmindHook

                return SegmindHook().submit("stable-diffusion-3-large-txt2img", {{"prompt": "a slow river"}}).request_id

            request_id = submit()
            wait = SegmindJobSensor(
                task_id="wait",
                request_id="{{{{ ti.xcom_pull(task_ids='submit') }}}}",
                model="stable-diffusion-3-large-txt2img",
                deferrable=True,
                poll_schedule=FAST,
                timeout=120,
                end_from_trigger={end_from_trigger!r},
            )
            request_id >> wait
        """,
    )
    try:
        dr = run_dag(path, dag_id)
    finally:
        poked.set()
        mover.join(timeout=10)
    logs = captured_logs(caplog, capsys)
    assert dr.state == "success"
    values = {(t, k): v for t, _, k, v in xcoms(dr.run_id, dag_id)}
    summary = values[("wait", "return_value")]
    assert summary["request_id"] == values[("submit", "return_value")]
    assert summary["status"] == "COMPLETED"
    assert summary["output_url"]
    assert "Pausing task as DEFERRED" in logs or "running trigger in line" in logs  # it did defer
