"""Benchmark 1(b) baseline: N images with the official SDK's blocking ``client.run`` inside a @task.

This is what users write without the provider: the task holds its worker slot for the whole job.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import DAG, task

IMAGES = int(os.environ.get("SEGMIND_BENCH_IMAGES", "8"))
PROMPTS = [f"benchmark image {i}: a lighthouse at dawn, watercolour" for i in range(IMAGES)]


@task
def generate(prompt: str) -> str | None:
    import segmind

    conn = json.loads(os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"])
    client = segmind.SegmindClient(api_key=conn["password"], base_url=f"{conn['host']}/v1")
    result = client.run("stable-diffusion-3-large-txt2img", prompt=prompt)
    output = result.get("output")
    return output if isinstance(output, str) else None


with DAG(
    dag_id="segmind_bench_sdk",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=64,
    tags=["benchmark"],
):
    generate.expand(prompt=PROMPTS)
