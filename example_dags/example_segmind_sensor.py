"""Submit in one task, wait with the deferrable sensor in another, persist to S3.

The generation task only submits (``wait_for_completion=False``): it records the request as any
Segmind task does (a retry of it re-attaches instead of paying again) and returns at once with the
request id. The sensor waits for that request in the triggerer (no worker slot held), fails at once
if the job FAILED or expired, and returns the same result summary as the operators, which the
transfer then stores. The sensor only needs a request id, so the job may as well come from another
system or a notebook.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
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
    submitted = SegmindTextToImageOperator(
        task_id="submit",
        prompt="A hand-drawn map of a coastal town, ink and wash",
        wait_for_completion=False,  # submit, record, return {"request_id": ..., "status": "QUEUED", ...}
    )
    wait = SegmindJobSensor(
        task_id="wait",
        request_id=submitted.output["segmind_request_id"],  # the XCom the operator pushes after submitting
        deferrable=True,
        timeout=3600,  # Segmind keeps a result for 1 hour after the submit
    )
    SegmindToS3Operator(
        task_id="persist",
        results=wait.output,
        s3_bucket=BUCKET,
        s3_key="segmind/sensor-example/{run_id}/{request_id}-{index}.{ext}",
        allow_insecure_loopback=ALLOW_LOOPBACK_MEDIA,
    )
