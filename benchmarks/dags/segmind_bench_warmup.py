"""Benchmark 1(b) warm-up: trivial tasks, so the LocalExecutor's workers have imported the task runner
before the measured DAGs run (the first task a fresh worker runs pays those imports once).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task


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
