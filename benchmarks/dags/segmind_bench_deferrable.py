"""Benchmark 1(b): N images with the deferrable operator, in both ``end_from_trigger`` modes.

``segmind_bench_deferrable`` lets the trigger end each task (one worker process per image);
``segmind_bench_resumed`` resumes each task on the worker after its trigger (two processes per image).
The two DAGs differ only in that flag, so they live in one file.

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

for dag_id, end_from_trigger in (("segmind_bench_deferrable", True), ("segmind_bench_resumed", False)):
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,
        max_active_tasks=64,
        tags=["benchmark"],
    ):
        SegmindTextToImageOperator.partial(
            task_id="generate", deferrable=True, end_from_trigger=end_from_trigger
        ).expand(prompt=PROMPTS)
