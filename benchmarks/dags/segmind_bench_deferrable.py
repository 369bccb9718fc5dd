"""Benchmark 1(b): N images with the deferrable operator, ended by its trigger (one worker process per image).

Parsed by the benchmark's own ``airflow standalone`` only (its DAGS_FOLDER is this directory). The
number of images comes from ``SEGMIND_BENCH_IMAGES``; the emulator from ``AIRFLOW_CONN_SEGMIND_DEFAULT``.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator

IMAGES = int(os.environ.get("SEGMIND_BENCH_IMAGES", "8"))
PROMPTS = [f"benchmark image {i}: a lighthouse at dawn, watercolour" for i in range(IMAGES)]

with DAG(
    dag_id="segmind_bench_deferrable",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=64,
    tags=["benchmark"],
):
    SegmindTextToImageOperator.partial(task_id="generate", deferrable=True, end_from_trigger=True).expand(
        prompt=PROMPTS
    )
