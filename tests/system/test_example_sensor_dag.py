"""The sensor example DAG itself through ``dag.test()``: submit-only, then the sensor, then S3.

Issue 24 item 3: the generation task only submits (``wait_for_completion=False``) and returns the
request; the deferrable sensor waits for it by the ``segmind_request_id`` XCom; the transfer stores
what the sensor returns. One paid job, its image and manifest in S3. Real emulator, real S3
endpoint (moto), real task runner.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_segmind.emulator.server import SegmindEmulator
from tests.support.s3 import S3Env
from tests.system.test_example_marketing_dag import _load, _task_states
from tests.unit.transfers.test_segmind_to_s3_dag import _BROKEN, _serialize_if_needed

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_segmind_sensor.py"
DAG_ID = "example_segmind_sensor"


def _xcoms(dag_id: str, run_id: str) -> dict[tuple[str, str], Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel.task_id, XComModel.key, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id
    )
    with create_session() as session:
        rows = session.execute(query).all()
    return {(task, key): _decoded(value) for task, key, value in rows}


def _decoded(raw: Any) -> Any:
    if isinstance(raw, (bytes, str)):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.usefixtures("airflow_db")
def test_submit_only_then_the_sensor_then_s3(
    emu: SegmindEmulator, s3: S3Env, dags_folder: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("SEGMIND_EXAMPLE_BUCKET", s3.bucket)
    monkeypatch.setenv("SEGMIND_ALLOW_INSECURE_LOOPBACK", "1")
    path = dags_folder / EXAMPLE.name
    shutil.copy(EXAMPLE, path)
    request.addfinalizer(lambda: path.unlink(missing_ok=True))  # other tests parse the shared DAGs folder
    dag = _load(path)
    _serialize_if_needed(dag, dags_folder)

    run = dag.test()

    assert run.state == "success"
    assert set(_task_states(DAG_ID, run.run_id).values()) == {"success"}
    values = _xcoms(DAG_ID, run.run_id)
    submitted = values[("submit", "return_value")]
    request_id = values[("submit", "segmind_request_id")]
    assert submitted["request_id"] == request_id
    assert submitted["wait_for_completion"] is False
    assert submitted["output_url"] is None  # it did not wait
    summary = values[("wait", "return_value")]
    assert summary["request_id"] == request_id
    assert summary["status"] == "COMPLETED"
    (stored,) = values[("persist", "return_value")]
    assert stored.startswith(f"s3://{s3.bucket}/segmind/sensor-example/")
    assert request_id in stored
    key = stored.removeprefix(f"s3://{s3.bucket}/")
    keys = s3.keys()
    assert key in keys
    assert key + ".manifest.json" in keys
    assert json.loads(s3.get(key + ".manifest.json")[0])["request_id"] == request_id
    assert emu.stats()["submissions"] == 1  # one paid job: only the submit task submits
