"""Benchmark 1(b) warm-up: trivial tasks, so the LocalExecutor's workers have imported the task runner
before the measured DAGs run (the first task a fresh worker runs pays those imports once), and N
Segmind jobs through the triggerer, so its poll schedule has learned the model's runtime
(``protocol/learning.py``) before either measured mode runs: otherwise the first measured DAG polls
unlearned and the second learned, and their wall times compare the schedules, not the modes.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator

IMAGES = int(os.environ.get("SEGMIND_BENCH_IMAGES", "8"))


@task
def noop(i: int) -> int:
    return i


with DAG(
    dag_id="segmind_bench_warmup",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=64,
    tags=["benchmark"],
):
    noop.expand(i=list(range(8)))
    SegmindTextToImageOperator.partial(task_id="generate", deferrable=True).expand(
        prompt=[f"warm-up image {i}: a lighthouse at dawn, watercolour" for i in range(IMAGES)]
    )
