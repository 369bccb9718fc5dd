"""The marketing DAG on a real Airflow: scheduler, triggerer, dag-processor and api-server.

This is the proof ``dag.test()`` cannot give: the generation tasks really defer, their triggers
run in the triggerer process (their logs land in the triggerer's ``.log.trigger.*`` files), the
images and manifests reach a real S3 endpoint, the asset consumer DAG runs on the emitted asset
events, Segmind is billed exactly once per prompt, and every process started is stopped.
"""

from __future__ import annotations

import json
import os
import shutil
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
from tests.integration.statsd_listener import StatsdLine, StatsdListener

# The module fixture runs the whole scenario (Airflow start-up included) inside the first test's
# time limit; its own waits allow 420 s + 180 s for the two DAG runs.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "segmind-e2e"
DAG_ID = "example_segmind_marketing_assets"
CONSUMER = "example_segmind_asset_consumer"
#: A generate task that ends from its trigger (end_from_trigger's default on 3.3), with a success
#: callback and a downstream task that reads its XComs (issue 15).
ENDED = "segmind_e2e_end_from_trigger"
ENDED_DAG = """
    import json
    import os
    from pathlib import Path

    import pendulum
    from airflow.providers.common.compat.sdk import get_listener_manager, hookimpl
    from airflow.sdk import DAG, task

    from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator


    def record_success(context):
        ti = context["ti"]
        folder = Path(os.environ["SEGMIND_E2E_CALLBACKS"])
        (folder / f"{ti.task_id}.{ti.run_id}.json").write_text(json.dumps({"task_id": ti.task_id, "pid": os.getpid()}))


    class SuccessListener:
        @hookimpl
        def on_task_instance_success(self, previous_state, task_instance):
            folder = Path(os.environ["SEGMIND_E2E_CALLBACKS"])
            name = f"listener.{task_instance.task_id}.{task_instance.run_id}.json"
            (folder / name).write_text(json.dumps({"task_id": task_instance.task_id, "pid": os.getpid()}))


    def register_listener(context):
        get_listener_manager().add_listener(SuccessListener())


    with DAG(
        "segmind_e2e_end_from_trigger", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")
    ) as dag:
        generated = SegmindTextToImageOperator(
            task_id="generate",
            prompt="A lighthouse on a cliff, storm clouds",
            deferrable=True,
            segmind_conn_id="segmind_ended",
        )
        # With an on_success_callback (which Airflow 3.1-3.3 drop for a trigger-ended task) the
        # default resumes on the worker, where the callback runs: two worker processes.
        SegmindTextToImageOperator(
            task_id="generate_resumed",
            prompt="A lighthouse on a cliff, clear sky",
            deferrable=True,
            segmind_conn_id="segmind_ended",
            on_success_callback=record_success,
        )

        @task
        def downstream(summary, ti=None):
            return {
                "summary": summary,
                "request_id": ti.xcom_pull(task_ids="generate", key="segmind_request_id"),
                "output_url": ti.xcom_pull(task_ids="generate", key="segmind_output_url"),
            }

        downstream(generated.output)

        # Issue 24 item 2: what a worker pushes that the trigger must push too (or resume on a worker).
        # multiple_outputs: downstream reads the summary's keys as XComs of their own.
        split = SegmindTextToImageOperator(
            task_id="generate_split",
            prompt="A lighthouse on a cliff, fog",
            deferrable=True,
            segmind_conn_id="segmind_ended",
            multiple_outputs=True,
        )

        @task
        def split_downstream(url, request_id):
            return {"url": url, "request_id": request_id}

        split_downstream(split.output["output_url"], split.output["request_id"])

        # _mapped_length: an unmapped task whose output a mapped task expands (zipped with two labels,
        # so two mapped instances instead of one per summary key; the scheduler needs the summary's
        # length, its TaskMap row, to expand it at all).
        fanned = SegmindTextToImageOperator(
            task_id="generate_fanned",
            prompt="A lighthouse on a cliff, snow",
            deferrable=True,
            segmind_conn_id="segmind_ended",
        )

        @task
        def labels():
            return ["first", "second"]

        @task
        def each(pair):
            return list(pair)

        each.expand(pair=fanned.output.zip(labels()))

        # returns_dag_result: the run's result, marked on the XComs the trigger pushes.
        result = SegmindTextToImageOperator(
            task_id="generate_result",
            prompt="A lighthouse on a cliff, rain",
            deferrable=True,
            segmind_conn_id="segmind_ended",
        )
        dag.add_result(result.output)

        # A task listener (registered in this task's worker process by on_execute_callback, before
        # execute decides): Airflow calls no listener for a task its trigger ends, so it resumes.
        SegmindTextToImageOperator(
            task_id="generate_heard",
            prompt="A lighthouse on a cliff, hail",
            deferrable=True,
            segmind_conn_id="segmind_ended",
            on_execute_callback=register_listener,
        )

        # Issue 27: a blocking task, whose watch (and its metrics) runs on the worker.
        SegmindTextToImageOperator(
            task_id="generate_blocking",
            prompt="A lighthouse on a cliff, drizzle",
            deferrable=False,
            segmind_conn_id="segmind_ended",
        )

        # A custom XCom backend (segmind_e2e_xcom, wrapping this task's values): the link's XCom goes
        # straight to the database, as a worker writes it, everything else through the backend.
        backend = SegmindTextToImageOperator(
            task_id="generate_backend",
            prompt="A lighthouse on a cliff, dawn",
            deferrable=True,
            segmind_conn_id="segmind_ended",
        )

        @task
        def backend_downstream(summary):
            return summary

        backend_downstream(backend.output)
"""
#: A deferred task whose job outlasts its execution_timeout (issue 24 item 1): Airflow 3 does not
#: apply execution_timeout in the triggerer, the provider's trigger deadline ends the wait.
TIMED = "segmind_e2e_execution_timeout"
TIMED_DAG = """
    from datetime import timedelta

    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator

    with DAG("segmind_e2e_execution_timeout", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
        SegmindTextToImageOperator(
            task_id="generate",
            prompt="A lighthouse on a cliff, a job slower than its execution_timeout",
            deferrable=True,
            segmind_conn_id="segmind_slow",
            execution_timeout=timedelta(seconds=30),
            retries=0,
        )
"""
#: The cluster's custom XCom backend ([core] xcom_backend), on the PYTHONPATH of every process: it
#: wraps the values of the ``generate_backend`` task only, so every other task stores as before.
XCOM_BACKEND = """
    from airflow.sdk.bases.xcom import BaseXCom

    MARK = "__segmind_e2e_backend__"


    class WrappingXCom(BaseXCom):
        @staticmethod
        def serialize_value(value, *, key=None, task_id=None, dag_id=None, run_id=None, map_index=None):
            serialized = BaseXCom.serialize_value(
                value, key=key, task_id=task_id, dag_id=dag_id, run_id=run_id, map_index=map_index
            )
            return {MARK: serialized} if task_id == "generate_backend" else serialized

        @staticmethod
        def deserialize_value(result):
            value = BaseXCom.deserialize_value(result)
            if isinstance(value, dict) and set(value) == {MARK}:
                return value[MARK]
            return value
"""
#: The worker tasks whose XComs and processes the item-2 tests read.
ITEM_2_TASKS = ("generate_split", "generate_fanned", "generate_result", "generate_heard", "generate_backend")
PROMPTS = [
    {"prompt": "A copper kettle on a gas stove, morning light", "aspect_ratio": "1:1"},
    {"prompt": "A sailboat on a calm lake at sunset", "aspect_ratio": "16:9"},
    {"prompt": "A stack of hardback books with a reading lamp", "aspect_ratio": "4:5", "negative_prompt": "blurry"},
]


def _stored(value: Any) -> Any:
    """An XCom value as SQLite returns its JSON column: text, or a number it stored as one."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="e2e", aws_secret_access_key="e2e"
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def segmind() -> Iterator[SegmindEmulator]:
    # Realistic shape (queue, then a multi-second render) so the tasks defer for real.
    config = EmulatorConfig.for_profile("realistic", queue_time=(0.2, 1.0), inference_time=(4.0, 6.0))
    with SegmindEmulator(config) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def segmind_ended() -> Iterator[SegmindEmulator]:
    """The end_from_trigger DAG's own emulator, so the marketing DAG's billing count stays its own."""
    config = EmulatorConfig.for_profile("realistic", queue_time=(0.2, 1.0), inference_time=(4.0, 6.0))
    with SegmindEmulator(config) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def segmind_slow() -> Iterator[SegmindEmulator]:
    """The execution_timeout DAG's emulator: its jobs take 10 minutes."""
    with SegmindEmulator(EmulatorConfig.for_profile("fast", inference_time=600.0)) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def statsd() -> Iterator[StatsdListener]:
    """Issue 27: a real StatsD listener on loopback that the whole cluster sends its metrics to."""
    with StatsdListener() as listener:
        yield listener


@pytest.fixture(scope="module")
def finished_run(
    tmp_path_factory: pytest.TempPathFactory,
    segmind: SegmindEmulator,
    segmind_ended: SegmindEmulator,
    segmind_slow: SegmindEmulator,
    s3_endpoint: str,
    statsd: StatsdListener,
) -> Iterator[dict[str, Any]]:
    """Start Airflow, run the marketing DAG once, collect what the tests inspect, stop Airflow."""
    home = tmp_path_factory.mktemp("airflow-e2e")
    # The example DAGs plus the end_from_trigger DAG, in a DAGs folder of this run's own.
    dags = home / "dags"
    shutil.copytree(REPO / "example_dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    (dags / f"{ENDED}.py").write_text(textwrap.dedent(ENDED_DAG))
    (dags / f"{TIMED}.py").write_text(textwrap.dedent(TIMED_DAG))
    callbacks = home / "callbacks"
    callbacks.mkdir()
    pylib = home / "pylib"
    pylib.mkdir()
    (pylib / "segmind_e2e_xcom.py").write_text(textwrap.dedent(XCOM_BACKEND))
    aws = {
        "conn_type": "aws",
        "login": "e2e",
        "password": "e2e",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    env = {
        "AIRFLOW_CONN_SEGMIND_DEFAULT": json.dumps(
            {"conn_type": "segmind", "password": segmind.api_key, "host": segmind.base_url}
        ),
        "AIRFLOW_CONN_SEGMIND_ENDED": json.dumps(
            {"conn_type": "segmind", "password": segmind_ended.api_key, "host": segmind_ended.base_url}
        ),
        "AIRFLOW_CONN_SEGMIND_SLOW": json.dumps(
            {"conn_type": "segmind", "password": segmind_slow.api_key, "host": segmind_slow.base_url}
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "SEGMIND_EXAMPLE_BUCKET": BUCKET,
        "SEGMIND_EXAMPLE_POOL": "segmind",
        "SEGMIND_ALLOW_INSECURE_LOOPBACK": "1",
        # Only the run the test triggers: unpausing the @daily DAG must not add a scheduled run.
        "SEGMIND_EXAMPLE_SCHEDULE": "none",
        "SEGMIND_E2E_CALLBACKS": str(callbacks),
        "AIRFLOW__CORE__XCOM_BACKEND": "segmind_e2e_xcom.WrappingXCom",
        # Issue 27: Airflow's own stats client, to the loopback listener, with influxdb-style tags.
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(pylib), os.environ.get("PYTHONPATH")])),
    }
    cluster = AirflowCluster(home=home, dags_folder=dags, env=env)
    run_id = f"e2e_{int(time.time())}"
    try:
        cluster.start()
        cluster.airflow("pools", "set", "segmind", "4", "Segmind jobs")
        cluster.wait_for_dag(DAG_ID)
        cluster.wait_for_dag(CONSUMER)
        cluster.airflow("dags", "unpause", CONSUMER)
        cluster.wait_for_dag(ENDED)
        cluster.airflow("dags", "unpause", ENDED)
        cluster.wait_for_dag(TIMED)
        cluster.airflow("dags", "unpause", TIMED)
        cluster.trigger(DAG_ID, run_id, {"prompts": PROMPTS})
        cluster.trigger(ENDED, run_id)
        cluster.trigger(TIMED, run_id)
        state = cluster.wait_for_run(DAG_ID, run_id, timeout=420)
        ended_state = cluster.wait_for_run(ENDED, run_id, timeout=300)
        timed_state = cluster.wait_for_run(TIMED, run_id, timeout=180)
        callback_files: list[Path] = []
        deadline = time.monotonic() + 60  # the dag processor runs the callback on its next loop
        while ended_state == "success" and not callback_files and time.monotonic() < deadline:
            callback_files = list(callbacks.glob(f"generate_resumed.{run_id}.json"))
            time.sleep(1)
        listener_files = list(callbacks.glob(f"listener.*.{run_id}.json"))
        consumer_state = "missing"
        consumed: list[Any] = []
        deadline = time.monotonic() + 120
        # Wait until the consumer ran on every image: the scheduler may fold the three persist
        # events into one consumer run or start one per event.
        while state == "success" and time.monotonic() < deadline:
            rows = cluster.query("SELECT state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (CONSUMER,))
            consumer_state = rows[0][0] if rows else "missing"
            values = cluster.query(
                "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'list_new_images' AND key = 'return_value'",
                (CONSUMER,),
            )
            consumed = [json.loads(row[0]) for row in values]
            if consumer_state == "failed" or (
                consumer_state == "success" and sum(len(run) for run in consumed) >= len(PROMPTS)
            ):
                break
            time.sleep(2)
        result = {
            "cluster": cluster,
            "run_id": run_id,
            "state": state,
            "consumer_state": consumer_state,
            "consumed": consumed,
            "assets": {row[0] for row in cluster.query("SELECT uri FROM asset")},
            "task_instances": cluster.task_instances(DAG_ID, run_id),
            "log_tail": cluster.log_tail(80),
            "stats": segmind.stats(),
            "ended_state": ended_state,
            "ended_task_instances": cluster.task_instances(ENDED, run_id),
            "ended_xcoms": {
                (task, key): _stored(value)
                for task, key, value in cluster.query(
                    "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = ? AND map_index = -1",
                    (ENDED, run_id),
                )
            },
            "ended_mapped_xcoms": {
                (task, map_index, key): _stored(value)
                for task, map_index, key, value in cluster.query(
                    "SELECT task_id, map_index, key, value FROM xcom "
                    "WHERE dag_id = ? AND run_id = ? AND map_index >= 0",
                    (ENDED, run_id),
                )
            },
            "ended_dag_results": {
                (task, key): bool(flag)
                for task, key, flag in cluster.query(
                    "SELECT task_id, key, dag_result FROM xcom WHERE dag_id = ? AND run_id = ?", (ENDED, run_id)
                )
            },
            "ended_task_maps": {
                task: length
                for task, length in cluster.query(
                    "SELECT task_id, length FROM task_map WHERE dag_id = ? AND run_id = ?", (ENDED, run_id)
                )
            },
            "callback_files": callback_files,
            "timed_state": timed_state,
            "timed_task_instances": cluster.task_instances(TIMED, run_id),
            "timed_stats": segmind_slow.stats(),
            "listener_files": listener_files,
        }
        # Then the product-photos example (issue 23): S3 photos -> the img2img slug -> S3, on the
        # same scheduler and triggerer, after the marketing figures above were taken.
        jobs_before = {job["request_id"] for job in segmind.jobs()}
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name="us-east-1",
            aws_access_key_id="e2e",
            aws_secret_access_key="e2e",
        )
        for name in PHOTOS:
            s3.put_object(Bucket=BUCKET, Key=f"product-photos/{name}", Body=_photo(name), ContentType="image/png")
        cluster.wait_for_dag(PHOTOS_DAG)
        cluster.airflow("dags", "unpause", PHOTOS_DAG)
        photos_run = f"photos_{int(time.time())}"
        cluster.trigger(PHOTOS_DAG, photos_run)
        result["photos_state"] = cluster.wait_for_run(PHOTOS_DAG, photos_run, timeout=300)
        result["photos_task_instances"] = cluster.task_instances(PHOTOS_DAG, photos_run)
        result["photos_jobs"] = [job for job in segmind.jobs() if job["request_id"] not in jobs_before]
        result["photos_run_id"] = photos_run
        result["segmind_key"], result["ended_key"] = segmind.api_key, segmind_ended.api_key
        yield result
    finally:
        cluster.stop()


PHOTOS_DAG = "example_segmind_product_photos"
PHOTOS = ("mug.png", "shoe.png")


def _photo(name: str) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 120, 200) if name == "mug.png" else (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_product_photos_example_runs_on_the_img2img_slug(finished_run: dict[str, Any], s3_endpoint: str) -> None:
    """Issue 23: the example on a real scheduler and triggerer: one variant per photo and variant
    number, each an image-to-image job on SD3 Large's img2img slug with the photo as its input,
    stored back in S3 with its manifest."""
    assert finished_run["photos_state"] == "success", finished_run["photos_task_instances"]
    variants = [ti for ti in finished_run["photos_task_instances"] if ti[0] == "variants"]
    assert sorted(ti[1] for ti in variants) == [0, 1, 2, 3]  # 2 photos x 2 variants
    jobs = finished_run["photos_jobs"]
    assert len(jobs) == 4
    assert {job["model"] for job in jobs} == {"stable-diffusion-3-large-img2img"}
    assert all(str(job["params"].get("image", "")).strip() for job in jobs)  # the photo was sent
    assert len({job["params"]["seed"] for job in jobs}) == 4  # a fresh seed per variant
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="e2e", aws_secret_access_key="e2e"
    )
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    stored = [key for key in keys if finished_run["photos_run_id"] in key and key.endswith(".png")]
    assert len(stored) == 4
    assert all(f"{key}.manifest.json" in keys for key in stored)


def test_the_run_succeeds(finished_run: dict[str, Any]) -> None:
    assert finished_run["state"] == "success", (finished_run["task_instances"], finished_run["log_tail"])
    generate = [ti for ti in finished_run["task_instances"] if ti[0] == "render.generate"]
    assert [(ti[1], ti[2]) for ti in generate] == [(0, "success"), (1, "success"), (2, "success")]


def test_generation_deferred_and_its_trigger_ran_in_the_triggerer(finished_run: dict[str, Any]) -> None:
    cluster: AirflowCluster = finished_run["cluster"]
    task_logs = (
        cluster.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={finished_run['run_id']}" / "task_id=render.generate"
    )
    for map_index in range(len(PROMPTS)):
        folder = task_logs / f"map_index={map_index}"
        worker_log = "".join(p.read_text() for p in folder.glob("attempt=*.log"))
        trigger_logs = list(folder.glob("attempt=*.log.trigger.*.log"))
        assert "Pausing task as DEFERRED" in worker_log, map_index
        assert trigger_logs, f"no triggerer log for map index {map_index}"
        trigger_text = "".join(p.read_text() for p in trigger_logs)
        assert "SegmindJobTrigger" in trigger_text or "-> COMPLETED" in trigger_text
        assert "COMPLETED" in trigger_text


def test_images_and_manifests_are_in_s3(finished_run: dict[str, Any], s3_endpoint: str) -> None:
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="e2e", aws_secret_access_key="e2e"
    )
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    run_keys = [key for key in keys if finished_run["run_id"] in key]
    images = [key for key in run_keys if key.endswith(".jpeg")]
    manifests = [key for key in run_keys if key.endswith(".jpeg.manifest.json")]
    assert len(images) == len(PROMPTS)
    assert len(manifests) == len(PROMPTS)
    prompts = {json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["prompt"] for key in manifests}
    assert prompts == {spec["prompt"] for spec in PROMPTS}
    assert any(key.endswith("contact-sheet.html") for key in run_keys)
    assert any(key.endswith("batch-manifest.json") for key in run_keys)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")


def test_segmind_billed_once_per_prompt(finished_run: dict[str, Any]) -> None:
    assert finished_run["stats"]["submissions"] == len(PROMPTS)


def test_asset_consumer_ran_on_the_new_images(finished_run: dict[str, Any]) -> None:
    assert finished_run["consumer_state"] == "success"
    # It read every image's key and hash from the batch's asset event (the contact sheet's).
    images = [image for run in finished_run["consumed"] for image in run]
    assert len(images) == len(PROMPTS)
    assert all(finished_run["run_id"] in image["key"] and len(image["sha256"]) == 64 for image in images)


def test_one_asset_for_all_images(finished_run: dict[str, Any]) -> None:
    # The marketing DAG's one asset (and the sensor example's, declared by its own transfer): no
    # asset row per stored image.
    assert f"s3://{BUCKET}/segmind/{DAG_ID}" in finished_run["assets"]
    assert not [uri for uri in finished_run["assets"] if finished_run["run_id"] in uri or uri.endswith(".jpeg")]


def test_no_asset_created_on_the_fly(finished_run: dict[str, Any]) -> None:
    """Every asset is declared when the DAGs are parsed: none is created per image at run time."""
    cluster: AirflowCluster = finished_run["cluster"]
    log = cluster.log_path.read_text(errors="replace")
    assert "Dynamically creating" not in log
    assert "inactive AssetModel" not in log


def test_no_key_in_any_log(finished_run: dict[str, Any], segmind: SegmindEmulator) -> None:
    cluster: AirflowCluster = finished_run["cluster"]
    texts = [cluster.log_path.read_text(errors="replace")]
    texts += [path.read_text(errors="replace") for path in (cluster.home / "logs").rglob("*.log")]
    assert all(segmind.api_key not in text for text in texts)


def test_every_process_was_stopped(finished_run: dict[str, Any]) -> None:
    cluster: AirflowCluster = finished_run["cluster"]
    cluster.stop()  # idempotent; the fixture already stopped it
    assert cluster.leftover_processes() == []


def _worker_processes(cluster: AirflowCluster, dag_id: str, run_id: str, task_id: str) -> list[str]:
    """The worker task processes that ran ``task_id`` (try 1): one log section each, opened by the task runner."""
    folder = cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    text = "".join(path.read_text(errors="replace") for path in folder.glob("attempt=1.log"))
    return [line for line in text.splitlines() if WORKER_START in line]


#: What the task runner logs once at the start of every worker task process (benchmark 1b splits a
#: try's log into processes by it; checked below on a task that certainly ran two: one resumed).
WORKER_START = "::group::Pre Execute"


def test_a_generate_task_ended_from_its_trigger_ran_one_worker_process(finished_run: dict[str, Any]) -> None:
    """Issue 15: submit and defer in one worker process; the trigger ends the task (no resume)."""
    assert finished_run["ended_state"] == "success", finished_run["log_tail"]
    assert [(t, m, s, n) for t, m, s, n in finished_run["ended_task_instances"]] == [
        ("backend_downstream", -1, "success", 1),
        ("downstream", -1, "success", 1),
        ("each", 0, "success", 1),
        ("each", 1, "success", 1),
        ("generate", -1, "success", 1),
        ("generate_backend", -1, "success", 1),
        ("generate_blocking", -1, "success", 1),
        ("generate_fanned", -1, "success", 1),
        ("generate_heard", -1, "success", 1),
        ("generate_result", -1, "success", 1),
        ("generate_resumed", -1, "success", 1),
        ("generate_split", -1, "success", 1),
        ("labels", -1, "success", 1),
        ("split_downstream", -1, "success", 1),
    ]
    cluster: AirflowCluster = finished_run["cluster"]
    generate = _worker_processes(cluster, ENDED, finished_run["run_id"], "generate")
    assert len(generate) == 1, generate
    worker_log = "".join(
        p.read_text(errors="replace")
        for p in (cluster.home / "logs" / f"dag_id={ENDED}" / f"run_id={finished_run['run_id']}").rglob(
            "task_id=generate/attempt=1.log"
        )
    )
    assert "Pausing task as DEFERRED" in worker_log
    assert "Segmind job" not in worker_log.split("Pausing task as DEFERRED", 1)[1]  # nothing ran after it
    assert len(_worker_processes(cluster, ENDED, finished_run["run_id"], "downstream")) == 1


def test_downstream_sees_the_xcoms_of_a_task_ended_from_its_trigger(
    finished_run: dict[str, Any], segmind_ended: SegmindEmulator
) -> None:
    xcoms = finished_run["ended_xcoms"]
    summary = xcoms[("generate", "return_value")]
    assert summary["status"] == "COMPLETED"
    assert summary["params"]["prompt"] == "A lighthouse on a cliff, storm clouds"
    assert summary["seed_filled"] is True
    assert xcoms[("generate", "segmind_request_id")] == summary["request_id"]
    assert xcoms[("generate", "segmind_output_url")] == summary["output_url"]
    assert xcoms[("generate", "_link_SegmindOutputLink")] == summary["output_url"]  # the extra link
    seen = xcoms[("downstream", "return_value")]
    assert seen == {"summary": summary, "request_id": summary["request_id"], "output_url": summary["output_url"]}
    assert segmind_ended.api_key not in json.dumps(list(xcoms.values()))


def test_on_success_callback_runs_when_a_task_has_one(finished_run: dict[str, Any]) -> None:
    """A task with ``on_success_callback`` resumes on the worker by default, and its callback runs.

    (Ended from the trigger, Airflow 3.3 sends the callback to the dag processor, which logs "Task
    callback requested but is not a failure callback" and drops it: seen in this test's first runs.)
    """
    (written,) = finished_run["callback_files"]
    assert json.loads(written.read_text())["task_id"] == "generate_resumed"


def test_a_task_resumed_on_the_worker_ran_two_worker_processes(finished_run: dict[str, Any]) -> None:
    """The control of the count above: resumed on the worker (here: its success callback), it runs twice."""
    cluster: AirflowCluster = finished_run["cluster"]
    assert len(_worker_processes(cluster, ENDED, finished_run["run_id"], "generate_resumed")) == 2
    assert finished_run["ended_xcoms"][("generate_resumed", "return_value")]["status"] == "COMPLETED"


def test_execution_timeout_ends_a_deferred_task_on_a_real_triggerer(finished_run: dict[str, Any]) -> None:
    """Issue 24 item 1 on a real scheduler and triggerer: a job slower than the task's 30 s
    execution_timeout fails the task then, from the trigger's own deadline, not after job_timeout's hour."""
    assert finished_run["timed_state"] == "failed", finished_run["log_tail"]
    assert [(t, s, n) for t, _, s, n in finished_run["timed_task_instances"]] == [("generate", "failed", 1)]
    cluster: AirflowCluster = finished_run["cluster"]
    folder = cluster.home / "logs" / f"dag_id={TIMED}" / f"run_id={finished_run['run_id']}" / "task_id=generate"
    worker_log = "".join(p.read_text(errors="replace") for p in folder.glob("attempt=1.log"))
    assert "Pausing task as DEFERRED" in worker_log
    assert list(folder.glob("attempt=1.log.trigger.*.log")), "the trigger did not run in the triggerer"
    assert "was still not finished at its deadline" in worker_log  # the trigger's timeout event, resumed
    assert "execution_timeout=30 s, counted from the try's start, ran out before job_timeout=3600 s" in worker_log
    assert finished_run["timed_stats"]["submissions"] == 1


# ---------------------------------------------------------------- issue 24 item 2: what a worker would push


def _ended_by_its_trigger(finished_run: dict[str, Any], task_id: str) -> None:
    """One worker process (submit and defer); nothing of the operator ran after the deferral."""
    cluster: AirflowCluster = finished_run["cluster"]
    processes = _worker_processes(cluster, ENDED, finished_run["run_id"], task_id)
    assert len(processes) == 1, (task_id, processes)
    summary = finished_run["ended_xcoms"].get((task_id, "return_value"))
    assert summary is not None, task_id


def test_multiple_outputs_ended_from_the_trigger_pushes_each_key(finished_run: dict[str, Any]) -> None:
    """``op.output["output_url"]`` downstream: the split keys a worker pushes with ``multiple_outputs``."""
    assert finished_run["ended_state"] == "success", finished_run["log_tail"]
    _ended_by_its_trigger(finished_run, "generate_split")
    xcoms = finished_run["ended_xcoms"]
    summary = xcoms[("generate_split", "return_value")]
    for key, value in summary.items():
        assert xcoms[("generate_split", key)] == value, key
    assert xcoms[("split_downstream", "return_value")] == {
        "url": summary["output_url"],
        "request_id": summary["request_id"],
    }


def test_an_output_expanded_downstream_gets_its_mapped_length(finished_run: dict[str, Any]) -> None:
    """The scheduler expands a mapped task by the length the upstream pushed (``_mapped_length``)."""
    _ended_by_its_trigger(finished_run, "generate_fanned")
    summary = finished_run["ended_xcoms"][("generate_fanned", "return_value")]
    assert finished_run["ended_task_maps"]["generate_fanned"] == len(summary)
    mapped = finished_run["ended_mapped_xcoms"]
    # Both mapped instances ran (the overall list above: success). What they receive of a dict zipped
    # by index is Airflow's business (it resolves to NOTSET); the labels show the zip took place.
    pairs = [mapped[("each", index, "return_value")] for index in (0, 1)]
    assert [label for _, label in pairs] == ["first", "second"]


def test_a_dag_result_is_marked_when_the_trigger_ends_the_task(finished_run: dict[str, Any]) -> None:
    """``dag.add_result(op.output)``: every XCom the task pushes is marked, as a worker marks them."""
    _ended_by_its_trigger(finished_run, "generate_result")
    marks = finished_run["ended_dag_results"]
    assert marks[("generate_result", "return_value")] is True
    assert marks[("generate_result", "segmind_request_id")] is True
    assert marks[("generate_result", "segmind_output_url")] is True
    assert marks[("generate_result", "_link_SegmindOutputLink")] is False  # the worker writes links unmarked
    assert marks[("generate", "return_value")] is False


def test_a_task_listener_hears_the_success_because_the_task_resumes(finished_run: dict[str, Any]) -> None:
    """Airflow calls no listener for a task its trigger ends: with one registered the task resumes on a worker."""
    cluster: AirflowCluster = finished_run["cluster"]
    assert len(_worker_processes(cluster, ENDED, finished_run["run_id"], "generate_heard")) == 2
    heard = [json.loads(path.read_text())["task_id"] for path in finished_run["listener_files"]]
    assert heard == ["generate_heard"]
    folder = cluster.home / "logs" / f"dag_id={ENDED}" / f"run_id={finished_run['run_id']}" / "task_id=generate_heard"
    log = "".join(path.read_text(errors="replace") for path in folder.glob("attempt=1.log"))
    assert "task listeners are registered" in log


def test_the_link_bypasses_a_custom_xcom_backend_as_a_worker_writes_it(finished_run: dict[str, Any]) -> None:
    """The backend wraps ``generate_backend``'s values; the link's XCom is the plain URL, as the UI reads it."""
    _ended_by_its_trigger(finished_run, "generate_backend")
    xcoms = finished_run["ended_xcoms"]
    wrapped = xcoms[("generate_backend", "return_value")]
    assert set(wrapped) == {"__segmind_e2e_backend__"}  # stored by the backend
    summary = wrapped["__segmind_e2e_backend__"]
    assert summary["status"] == "COMPLETED"
    assert xcoms[("generate_backend", "segmind_request_id")] == {"__segmind_e2e_backend__": summary["request_id"]}
    assert xcoms[("generate_backend", "_link_SegmindOutputLink")] == summary["output_url"]
    assert xcoms[("backend_downstream", "return_value")] == summary  # read back through the backend


def _segmind_metrics(statsd: StatsdListener, name: str, **tags: str) -> list[StatsdLine]:
    return [
        line
        for line in statsd.lines(f"airflow.segmind.{name}")
        if line.name == f"airflow.segmind.{name}" and all(line.tags.get(k) == v for k, v in tags.items())
    ]


def test_metrics_reach_a_statsd_listener_from_workers_and_the_triggerer(
    finished_run: dict[str, Any], statsd: StatsdListener
) -> None:
    """Issue 27 item 1: the provider's metrics go through Airflow's stats client, from the worker and
    from the triggerer, tagged by model, DAG and task (StatsD with influxdb tags on)."""
    assert finished_run["state"] == "success"
    model = "stable-diffusion-3-large-txt2img"
    # Submits happen on workers: one per prompt of the marketing DAG, tagged with the mapped task.
    submitted = _segmind_metrics(statsd, "job.submitted", dag_id=DAG_ID, task_id="render.generate", model=model)
    assert sum(line.value for line in submitted) == len(PROMPTS)
    # A task its trigger ended ran one worker process (the submit): its watch ended in the triggerer,
    # and that is where its completion, times and cost were sent from.
    ended = {"dag_id": ENDED, "task_id": "generate", "model": model}
    assert sum(line.value for line in _segmind_metrics(statsd, "job.completed", **ended)) == 1
    for timer in ("job.queue_time", "job.inference_time", "job.detection_delay"):
        (line,) = _segmind_metrics(statsd, timer, **ended)
        assert line.kind == "ms"
        assert line.value >= 0
    (inference,) = _segmind_metrics(statsd, "job.inference_time", **ended)
    assert 4000 <= inference.value <= 6000  # the emulator's inference_time=(4.0, 6.0) s
    (cost,) = _segmind_metrics(statsd, "job.cost_usd", **ended)
    assert cost.value == pytest.approx(0.04)  # the emulator's price per image
    # A blocking task's watch runs on the worker: its completion comes from there.
    blocking = {"dag_id": ENDED, "task_id": "generate_blocking", "model": model}
    assert sum(line.value for line in _segmind_metrics(statsd, "job.completed", **blocking)) == 1
    assert _segmind_metrics(statsd, "api.status_polls", **blocking)
    assert _segmind_metrics(statsd, "api.status_polls", **ended)
    # The job slower than its execution_timeout: a failure by cause, from the triggerer's deadline.
    timed = _segmind_metrics(statsd, "job.failed.timeout", dag_id=TIMED, task_id="generate")
    assert sum(line.value for line in timed) == 1
    assert timed[0].tags["cause"] == "timeout"
    # No metric carries the key.
    keys = {finished_run["segmind_key"], finished_run["ended_key"]}
    assert not [line for line in statsd.lines("airflow.segmind") if any(k in repr(line) for k in keys)]
