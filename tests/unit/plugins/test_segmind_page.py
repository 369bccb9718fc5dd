"""The Segmind page inside Airflow's own api-server app, over what real runs stored and recorded.

Two DAGs run through ``dag.test()`` with the real operators, the emulator and moto's S3 server:
``segmind_page_a`` generates 2 images and stores them; ``segmind_page_b`` stores 1 and has a job
the emulator FAILs (``__fail__``), whose cause the plugin's listener records. Then Airflow's whole
api-server app (``airflow.api_fastapi.app.create_app``: the plugin mounted as Airflow mounts it)
answers as an admin and as a user the auth manager lets read ``segmind_page_a`` only
(``tests/unit/plugins/auth.py``). The browser test on a real api-server is in
tests/integration/test_review_publish.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_segmind.emulator import SegmindEmulator
from airflow_provider_segmind.plugins._failures import XCOM_FAILURE, failure_cause
from airflow_provider_segmind.plugins._gallery import generation, parse_locations
from tests.support.s3 import S3Env
from tests.unit.transfers.test_segmind_to_s3_dag import _BROKEN, _serialize_if_needed

DAG_SOURCE = """
import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

BUCKET = os.environ["SEGMIND_S3_TEST_BUCKET"]
FAST = {"initial_delay": 0.02, "queued_interval": 0.05, "interval": 0.05, "max_interval": 0.2}

for dag_id, prompts in (("segmind_page_a", ["a red fox", "a blue whale"]), ("segmind_page_b", ["a green parrot"])):
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        images = SegmindTextToImageOperator.partial(task_id="generate", deferrable=False, poll_schedule=FAST).expand(
            prompt=prompts
        )
        SegmindToS3Operator(task_id="store", results=images.output, s3_bucket=BUCKET, allow_insecure_loopback=True)
        if dag_id == "segmind_page_b":
            SegmindTextToImageOperator(
                task_id="broken", prompt="__fail__ a cat", deferrable=False, poll_schedule=FAST, retries=0
            )
    globals()[dag_id] = dag
"""


def _load(path: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in ("segmind_page_a", "segmind_page_b")}


@pytest.fixture
def airflow_app(monkeypatch: pytest.MonkeyPatch, s3: S3Env) -> Iterator[Any]:
    """Airflow's api-server app (plugins mounted), with the one-DAG auth manager and the page on ``s3``."""
    from airflow import plugins_manager
    from airflow.api_fastapi import app as api_app

    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", "tests.unit.plugins.auth.OneDagAuthManager")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__SEGMIND__UI_S3_LOCATIONS", f"s3://{s3.bucket}/segmind/")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_ISSUER", "segmind-page-test")
    for cached in (getattr(plugins_manager, "get_fastapi_plugins", None), getattr(api_app, "cached_app", None)):
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()
    yield api_app.create_app("core")
    if hasattr(api_app, "purge_cached_app"):
        api_app.purge_cached_app()


def _summary(client: Any, headers: dict[str, str], **params: str) -> dict[str, Any]:
    """The page's JSON once its index has read every manifest (it reads them in the background)."""
    deadline = time.monotonic() + 120
    while True:
        answer: dict[str, Any] = client.get("/segmind/api/summary", params=params or None, headers=headers).json()
        if not answer["index"]["running"] or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def _token(username: str, role: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=role)))


def _failure_records(dag_id: str, run_id: str) -> dict[str, Any]:
    """task id -> the failure record (XCom) of each task of the run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel.task_id, XComModel.value).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == XCOM_FAILURE
    )
    with create_session() as session:
        rows = session.execute(query).all()
    return {task: json.loads(value) if isinstance(value, str) else value for task, value in rows}


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.usefixtures("airflow_db")
def test_the_page_shows_each_user_only_the_dags_they_may_read(
    emu: SegmindEmulator,
    s3: S3Env,
    dags_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    airflow_app: Any,
) -> None:
    from starlette.testclient import TestClient

    monkeypatch.setenv("SEGMIND_S3_TEST_BUCKET", s3.bucket)
    # The listener is opt-in ([segmind] ui_record_failures): registered for this test only, so later
    # end_from_trigger DAGs in this process still load (Airflow 3.2+ refuses them beside a listener).
    # The task runner's manager (airflow.sdk.listener on 3.3) and the core one (3.1/3.2), each once.
    from airflow_provider_segmind.plugins._failures import failure_listener

    managers: list[Any] = []
    for name in ("airflow.sdk.listener", "airflow.listeners.listener"):
        try:
            manager = importlib.import_module(name).get_listener_manager()
        except ImportError:
            continue
        if all(manager is not seen for seen in managers):
            managers.append(manager)
    for manager in managers:
        if not manager.pm.is_registered(failure_listener):
            manager.add_listener(failure_listener)
            request.addfinalizer(lambda manager=manager: manager.pm.unregister(failure_listener))
    path = dags_folder / "segmind_page_dags.py"
    path.write_text(DAG_SOURCE)
    request.addfinalizer(lambda: path.unlink(missing_ok=True))
    dags = _load(path)
    _serialize_if_needed(dags["segmind_page_a"], path)
    assert dags["segmind_page_a"].test().state == "success"
    run_b = dags["segmind_page_b"].test()
    assert run_b.state == "failed"  # the __fail__ job

    # The listener, in the task's own process (dag.test runs Airflow's task runner), recorded its cause.
    records = _failure_records("segmind_page_b", run_b.run_id)
    assert list(records) == ["broken"]
    assert records["broken"]["cause"] == "job_failed"
    assert records["broken"]["operator"] == "SegmindTextToImageOperator"
    assert emu.api_key not in json.dumps(records)

    client = TestClient(airflow_app)
    admin = {"Authorization": f"Bearer {_token('admin', 'admin')}"}
    only_a = {"Cookie": f"_token={_token('only__segmind_page_a', 'viewer')}"}  # the UI's cookie, as in its frame

    # Not logged in: nothing.
    assert client.get("/segmind/").status_code == 401
    assert client.get("/segmind/api/summary").status_code == 401

    # The admin sees both DAGs: 3 images, their cost, and the FAILED job by its cause.
    everything = _summary(client, admin)
    assert everything["index"] == {**everything["index"], "listed": 3, "to_fetch": 3, "fetched": 3, "running": False}
    assert everything["dags"] == ["segmind_page_a", "segmind_page_b"]
    assert everything["count"] == 3
    assert everything["cost"] > 0
    assert {row["label"]: row["count"] for row in everything["cost_per_dag"]} == {
        "segmind_page_a": 2,
        "segmind_page_b": 1,
    }
    assert sum(row["count"] for row in everything["cost_per_day"]) == 3
    assert everything["failures_by_cause"] == {"job_failed": 1}

    # The one-DAG user: segmind_page_a's images only, no failure of segmind_page_b.
    mine = client.get("/segmind/api/summary", headers=only_a).json()
    assert mine["dags"] == ["segmind_page_a"]
    assert mine["count"] == 2
    assert mine["failures_by_cause"] == {}

    # The HTML page: the same, with one thumbnail per image; the other DAG is not even named.
    html = client.get("/segmind/", headers=only_a).text
    assert "a red fox" in html
    assert "a blue whale" in html
    assert "segmind_page_b" not in html
    assert "a green parrot" not in html
    thumbs = re.findall(r'src="(/segmind/thumbnail\?[^"]+)"', html)
    assert len(thumbs) == 2
    for src in thumbs:
        answer = client.get(src.replace("&amp;", "&"), headers=only_a)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "image/jpeg"
        assert answer.content[:2] == b"\xff\xd8"

    # Filters: by DAG and by day.
    filtered = client.get("/segmind/api/summary", params={"dag_id": "segmind_page_b"}, headers=admin).json()
    assert filtered["count"] == 1
    assert filtered["failures_by_cause"] == {"job_failed": 1}
    day = everything["cost_per_day"][0]["label"]
    assert client.get("/segmind/api/summary", params={"day": day}, headers=admin).json()["count"] == 3
    assert client.get("/segmind/api/summary", params={"day": "2000-01-01"}, headers=admin).json()["count"] == 0

    # segmind_page_b's image: the admin gets its thumbnail, the one-DAG user a 404 (as for no object at all).
    stored = s3.keys()
    b_keys = [key for key in stored if "/segmind_page_b/" in key and not key.endswith(".manifest.json")]
    assert len(b_keys) == 1
    query = {"bucket": s3.bucket, "key": b_keys[0]}
    assert client.get("/segmind/thumbnail", params=query, headers=admin).status_code == 200
    assert client.get("/segmind/thumbnail", params=query, headers=only_a).status_code == 404
    # Only objects the index knows: a manifest itself is not an image the page serves.
    manifest = {"bucket": s3.bucket, "key": b_keys[0] + ".manifest.json"}
    assert client.get("/segmind/thumbnail", params=manifest, headers=admin).status_code == 404


def test_causes_come_from_the_error_chain() -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_segmind.exceptions import (
        SegmindContentBlockedError,
        SegmindInsufficientCreditsError,
        SegmindJobFailedError,
    )

    def wrapped(error: BaseException) -> BaseException:
        try:
            try:
                raise error
            except BaseException as inner:
                raise AirflowFailException(str(inner)) from inner
        except AirflowFailException as outer:
            return outer

    assert failure_cause(wrapped(SegmindContentBlockedError("blocked"))) == "content_blocked"
    assert failure_cause(wrapped(SegmindJobFailedError("failed"))) == "job_failed"
    assert failure_cause(SegmindInsufficientCreditsError("no credits")) == "insufficient_credits"
    assert failure_cause(AirflowFailException("Segmind credit guard: the account has ...")) == "credit_guard"
    assert failure_cause(RuntimeError("boom")) == "RuntimeError"
    assert failure_cause(None) == "unknown"


def test_publish_copies_and_foreign_documents_are_not_generations() -> None:
    manifest = {
        "key": "segmind/d/r/t/0/x-0.jpeg",
        "request_id": "x",
        "model": "sd3",
        "prompt": "p",
        "cost": 0.01,
        "airflow": {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": 0},
        "timestamps": {"stored_at": "2026-12-01T10:00:00.000+00:00"},
    }
    gen = generation("b", manifest)
    assert gen is not None
    assert gen.day == "2026-12-01"
    assert gen.cost == 0.01
    assert generation("b", {**manifest, "source": {"candidate_uri": "s3://b/c"}}) is None
    assert generation("b", {"key": "k"}) is None
    assert generation("b", ["not", "a", "manifest"]) is None
    assert parse_locations("s3://a/x/, s3://b") == [("a", "x/"), ("b", "")]
    with pytest.raises(ValueError, match="s3://"):
        parse_locations("a/x")
