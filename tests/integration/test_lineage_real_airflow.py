"""OpenLineage on a real Airflow (scheduler, triggerer, dag-processor, api-server): the deferred path.

``dag.test()`` runs triggers inline and always resumes the task, so it cannot show what happens
when a trigger would end the task itself (``end_from_trigger``): Airflow then calls no task
listener, and the OpenLineage listener would send no COMPLETE event. Here a deferrable generate task
(which on Airflow 3.3 would end from its trigger by default) runs in the real triggerer with the
OpenLineage provider on (file transport): it must resume on the worker, and its COMPLETE event must
carry the request's facets; the transfer's must name the S3 objects written.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.server import SegmindEmulator
from tests.integration.cluster import AirflowCluster
from tests.integration.test_real_airflow import _worker_processes

# The module fixture runs the whole scenario (Airflow start-up included) inside the first test's time limit.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BUCKET = "segmind-lineage-e2e"
DAG_ID = "segmind_lineage_e2e"
DAG = """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
    from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

    with DAG("DAG_ID_HERE", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
        generated = SegmindTextToImageOperator(
            task_id="generate", prompt="A lighthouse on a cliff, storm clouds", deferrable=True
        )
        SegmindToS3Operator(
            task_id="persist", results=generated.output, s3_bucket="BUCKET_HERE", allow_insecure_loopback=True
        )
""".replace("DAG_ID_HERE", DAG_ID).replace("BUCKET_HERE", BUCKET)


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("airflow-lineage-e2e")
    dags = home / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG))
    events = home / "openlineage.jsonl"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # Realistic shape (queue, then a few seconds' render) so the task really defers.
    config = EmulatorConfig.for_profile("realistic", queue_time=(0.2, 1.0), inference_time=(3.0, 4.0))
    cluster: AirflowCluster | None = None
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="e2e", aws_secret_access_key="e2e"
        )
        s3.create_bucket(Bucket=BUCKET)
        with SegmindEmulator(config) as segmind:
            aws = {"endpoint_url": endpoint, "region_name": "us-east-1"}
            env = {
                "AIRFLOW_CONN_SEGMIND_DEFAULT": json.dumps(
                    {"conn_type": "segmind", "password": segmind.api_key, "host": segmind.base_url}
                ),
                "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                    {"conn_type": "aws", "login": "e2e", "password": "e2e", "extra": aws}
                ),
                "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                    {"type": "file", "log_file_path": str(events), "append": True}
                ),
                "AIRFLOW__OPENLINEAGE__NAMESPACE": "segmind-e2e",
            }
            cluster = AirflowCluster(home=home, dags_folder=dags, env=env)
            run_id = f"lineage_{int(time.time())}"
            cluster.start()
            cluster.wait_for_dag(DAG_ID)
            cluster.airflow("dags", "unpause", DAG_ID)
            cluster.trigger(DAG_ID, run_id)
            state = cluster.wait_for_run(DAG_ID, run_id, timeout=240)
            deadline = time.monotonic() + 60  # the listener writes a task's COMPLETE as its process ends
            while f'"{DAG_ID}.persist"' not in _text(events) and time.monotonic() < deadline:
                time.sleep(1)
            xcoms = {
                (task, key): json.loads(value)
                for task, key, value in cluster.query(
                    "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = ?", (DAG_ID, run_id)
                )
            }
            yield {
                "state": state,
                "log_tail": cluster.log_tail(80),
                "generate_processes": _worker_processes(cluster, DAG_ID, run_id, "generate"),
                "events": [json.loads(line) for line in _text(events).splitlines() if line.strip()],
                "xcoms": xcoms,
                "keys": sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])),
                "api_key": segmind.api_key,
                "events_text": _text(events),
            }
    finally:
        if cluster is not None:
            cluster.stop()
        server.stop()


def _complete(events: list[dict[str, Any]], task_id: str) -> dict[str, Any]:
    (event,) = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.{task_id}"]
    return event


def test_a_deferred_generate_task_resumes_and_reports_its_request(finished: dict[str, Any]) -> None:
    assert finished["state"] == "success", finished["log_tail"]
    # OpenLineage on: the task resumed on the worker instead of ending from its trigger.
    assert len(finished["generate_processes"]) == 2, finished["generate_processes"]
    summary = finished["xcoms"][("generate", "return_value")]
    event = _complete(finished["events"], "generate")
    facet = event["run"]["facets"]["segmind"]
    assert facet["requestId"] == summary["request_id"]
    assert facet["seed"] == summary["seed"]
    assert facet["seedFilled"] is True
    assert facet["cost"] == summary["metrics"]["cost"]
    assert event["job"]["facets"]["segmind"]["model"] == summary["model"]
    assert len(event["outputs"]) == 1


def test_the_transfer_reports_exactly_the_objects_written(finished: dict[str, Any]) -> None:
    images = [key for key in finished["keys"] if not key.endswith(".manifest.json")]
    event = _complete(finished["events"], "persist")
    assert [(o["namespace"], o["name"]) for o in event["outputs"]] == [(f"s3://{BUCKET}", key) for key in images]
    generated = _complete(finished["events"], "generate")["outputs"]
    assert [(i["namespace"], i["name"]) for i in event["inputs"]] == [(o["namespace"], o["name"]) for o in generated]
    assert finished["api_key"] not in finished["events_text"]
