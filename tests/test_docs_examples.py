"""The documentation's code samples, run: the pages include them from here, so they cannot drift.

docs/*.md pull each sample in with ``pymdownx.snippets`` between the ``# --8<-- [start:NAME]`` and
``# --8<-- [end:NAME]`` markers below (``make docs`` fails if a marker disappears). Each test runs its
sample against the emulator on loopback, or builds its DAGs, and checks what the page says about it.
Samples are laid out for reading (a page shows them without the test around them).
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus


@pytest.fixture
def segmind_default(emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch) -> SegmindEmulator:
    """``segmind_default`` pointed at a running emulator, the way the connection page shows."""
    conn = {"conn_type": "segmind", "password": emulator.api_key, "host": emulator.base_url}
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    return emulator


def test_hook_sample(segmind_default: SegmindEmulator) -> None:
    # --8<-- [start:hook]
    import time

    from airflow_provider_segmind.hooks.segmind import SegmindHook

    hook = SegmindHook(segmind_conn_id="segmind_default")
    model = "stable-diffusion-3-large-txt2img"
    params = {"prompt": "a red fox, watercolour", "aspect_ratio": "16:9", "seed": 7}
    attempt_started_at = time.time()

    job = hook.submit(model, params)  # SubmitResponse(request_id=..., status=QUEUED, status_url=..., ...)
    status = hook.get_status(job.request_id)  # JobStatusResponse(status=QUEUED|PROCESSING|COMPLETED|FAILED, ...)
    while not status.status.is_terminal:  # (the trigger does this, on a poll schedule)
        time.sleep(0.1)
        status = hook.get_status(job.request_id)
    result = hook.get_result(job.request_id)  # JobResult(output_urls=(...), images=(...), seed=..., metrics=...)

    image = hook.run_sync(model, params)  # v1: SyncRunResponse(content=b"...jpeg", content_type=..., headers=...)
    balance = hook.get_credit_balance()  # CreditBalance(credits=paid, free_credits=free), .total (a free call)
    credits = hook.get_credits()  # paid + free credits, both spendable
    record = hook.get_history_record(job.request_id)  # HistoryRecord(status=..., output_urls=(...), ...) or None
    found = hook.find_submitted(model, params, since=attempt_started_at)  # the request a lost submit made, or None
    # --8<-- [end:hook]

    assert status.status == SegmindJobStatus.COMPLETED
    assert result.output_urls
    assert result.seed == 7
    assert image.content.startswith(b"\xff\xd8")  # a JPEG
    assert credits == pytest.approx(balance.total)
    assert record is not None
    assert record.request_id == job.request_id
    assert found is not None
    assert found.request_id == job.request_id
    assert segmind_default.stats()["submissions"] == 1  # run_sync is v1, billed separately
    assert segmind_default.stats()["v1_runs"] == 1


async def test_hook_async_sample(segmind_default: SegmindEmulator) -> None:
    import asyncio

    from airflow_provider_segmind.hooks.segmind import SegmindHook

    hook = SegmindHook()
    model, params = "stable-diffusion-3-large-txt2img", {"prompt": "a lighthouse at dawn", "seed": 3}
    attempt_started_at = time.time()
    request_id = (await asyncio.to_thread(hook.submit, model, params)).request_id
    await asyncio.sleep(0.5)  # the fast profile renders in 0.25 s

    # --8<-- [start:hook-async]
    # In the triggerer: one aiohttp session per event loop, shared by every Segmind trigger.
    async with hook.shared_session() as session:
        status = await hook.aget_status(request_id, session=session)
        result = await hook.aget_result(request_id, session=session)
        record = await hook.aget_history_record(request_id, session=session)
        found = await hook.afind_submitted(model, params, since=attempt_started_at, session=session)
    # --8<-- [end:hook-async]

    assert status.status == SegmindJobStatus.COMPLETED
    assert result.output_urls
    assert record is not None
    assert found is not None
    assert record.request_id == found.request_id == request_id


def test_operators_sample_dag() -> None:
    # --8<-- [start:operators]
    from datetime import datetime

    from airflow.sdk import dag

    from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator

    @dag(schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False)
    def product_shots():
        # Stable Diffusion 3 Large, one task per prompt (dynamic task mapping)
        SegmindTextToImageOperator.partial(
            task_id="render",
            aspect_ratio="16:9",
            negative_prompt="blurry, watermark",
            deferrable=True,
            min_credits=5,  # fail fast, before a billed submit, below 5 credits
            # Keeps concurrency under the plan's rate limit. Create it first, or the tasks never start:
            # airflow pools set segmind 4 "Segmind jobs" --include-deferred
            pool="segmind",
        ).expand(prompt=["a red bicycle at dawn", "a blue kettle on a stove"])

        # Any Segmind model: inputs are passed through as the request body (templated)
        SegmindRunOperator(task_id="flux", model="flux-schnell", inputs={"prompt": "{{ ds }} skyline", "steps": 4})

    product_shots()
    # --8<-- [end:operators]

    built = product_shots()
    assert {task.task_id for task in built.tasks} == {"render", "flux"}
    render = built.get_task("render")
    assert render.partial_kwargs["deferrable"] is True
    assert render.partial_kwargs["pool"] == "segmind"
    assert built.get_task("flux").inputs == {"prompt": "{{ ds }} skyline", "steps": 4}


def test_sensor_sample() -> None:
    from airflow.sdk import DAG

    with DAG(dag_id="docs_sensor_sample", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        # --8<-- [start:sensor]
        from airflow_provider_segmind.sensors.segmind import SegmindJobSensor

        wait = SegmindJobSensor(
            task_id="wait_for_render",
            request_id="{{ ti.xcom_pull(task_ids='render', key='segmind_request_id') }}",
            deferrable=True,  # or mode="poke" / mode="reschedule"
            timeout=3600,
        )
        # --8<-- [end:sensor]

    assert dag.get_task("wait_for_render") is wait
    assert "request_id" in wait.template_fields
    assert wait.deferrable is True


def test_s3_transfer_sample_dags(monkeypatch: pytest.MonkeyPatch) -> None:
    # --8<-- [start:s3-transfer]
    from datetime import datetime

    from airflow.sdk import DAG, Asset, task

    from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
    from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

    with DAG("segmind_generate_then_persist", schedule=None, start_date=datetime(2026, 1, 1)) as producer:
        images = SegmindTextToImageOperator.partial(
            task_id="generate", aspect_ratio="16:9", output_format="png", deferrable=True,
        ).expand(prompt=["a red fox in fresh snow", "a lighthouse at dawn, watercolour"])  # fmt: skip

        # One task per image. Keys: segmind/<dag>/<run>/persist/<map_index>/<request_id>-0.png
        # plus <key>.manifest.json; returns the S3 URIs; each task emits one event on the asset
        # s3://my-image-bucket/segmind/segmind_generate_then_persist (declared as its outlet).
        SegmindToS3Operator.partial(
            task_id="persist",
            s3_bucket="my-image-bucket",  # or s3_key="s3://my-image-bucket/renders/"
            aws_conn_id="aws_default",
            # checksum_mode="when_required",  # for stores that reject boto3's default checksums
        ).expand(results=images.output)

    # Runs whenever new images land there.
    IMAGES = Asset("s3://my-image-bucket/segmind/segmind_generate_then_persist")

    with DAG("segmind_on_new_images", schedule=[IMAGES], start_date=datetime(2026, 1, 1)) as consumer:

        @task
        def announce(*, triggering_asset_events=None):
            for event in triggering_asset_events[IMAGES]:  # several if Airflow folded events into one run
                for image in event.extra["objects"]:
                    print(f"s3://{event.extra['bucket']}/{image['key']}", image["sha256"], image["manifest"])

        announce()
    # --8<-- [end:s3-transfer]

    # What the comments promise: each persist task declares the destination asset the consumer waits for.
    assert producer.get_task("persist").outlets == [IMAGES]
    assert {task.task_id for task in consumer.tasks} == {"announce"}
    assert list(consumer.timetable.asset_condition.objects) == [IMAGES]


def test_emulator_python_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", "")  # restored at teardown; the sample sets it
    # --8<-- [start:emulator]
    import json
    import os

    from airflow_provider_segmind.emulator.config import EmulatorConfig
    from airflow_provider_segmind.emulator.server import SegmindEmulator
    from airflow_provider_segmind.hooks.segmind import SegmindHook

    with SegmindEmulator(EmulatorConfig.for_profile("fast")) as emu:
        emu.script([{"endpoint": "status", "fault": "500", "times": 2}])
        # Point the connection at emu.base_url with emu.api_key, e.g. by environment variable:
        os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"] = json.dumps(
            {"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url}
        )
        job = SegmindHook().submit("stable-diffusion-3-large-txt2img", {"prompt": "a teapot"})
        SegmindHook().get_status(job.request_id)  # answered after the two scripted 500s, retried by the hook
        stats = emu.stats()  # {"submissions": 1, "status_polls": 3, "faults": {"500": 2}, ...}
    # --8<-- [end:emulator]

    assert stats["submissions"] == 1
    assert stats["status_polls"] == 3
    assert stats["faults"]["500"] == 2
