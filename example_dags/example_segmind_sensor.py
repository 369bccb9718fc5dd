"""Submit in one task, wait with the deferrable sensor in another, persist to S3.

For jobs submitted elsewhere (another system, a notebook): the sensor only needs a request id. It
waits in the triggerer (no worker slot held), fails at once if the job FAILED or expired, and
returns the same result summary as the operators, which the transfer then stores.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_segmind.sensors.segmind import SegmindJobSensor
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

BUCKET = os.environ.get("SEGMIND_EXAMPLE_BUCKET", "segmind-marketing-assets")
ALLOW_LOOPBACK_MEDIA = os.environ.get("SEGMIND_ALLOW_INSECURE_LOOPBACK", "").lower() in ("1", "true", "yes")

with DAG(
    dag_id="example_segmind_sensor",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["segmind", "example"],
) as dag:

    @task
    def submit() -> str:
        """Submit a v2 job and hand on only its request id (as an external system would)."""
        from airflow_provider_segmind.hooks.segmind import SegmindHook
        from airflow_provider_segmind.protocol import SD3_LARGE_MODEL

        job = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": "A hand-drawn map of a coastal town, ink and wash"})
        return job.request_id

    request_id = submit()
    wait = SegmindJobSensor(
        task_id="wait",
        request_id=request_id,
        deferrable=True,
        timeout=3600,
    )
    SegmindToS3Operator(
        task_id="persist",
        results=wait.output,
        s3_bucket=BUCKET,
        s3_key="segmind/sensor-example/{run_id}/{request_id}-{index}.{ext}",
        allow_insecure_loopback=ALLOW_LOOPBACK_MEDIA,
    )
