"""Benchmark 1c: many SD3-like images through one key's rate limit, three ways, at two limits.

For each limit (``a``: 50 requests a minute, ``b``: 5; one emulator each, every request counted,
per key) three DAGs, each on its own key (its own account, so its own budget) and its own pool of
the same size: ``ours`` (the deferrable operator with the ``requests_per_minute`` extra), ``today``
(the same operator, connection without it: 429s are waited out) and ``sdk`` (the official SDK's
blocking ``client.run`` in a task). No retries: a task that fails counts as failed.

Parsed only by the benchmark's own ``airflow standalone``; the job counts come from
``SEGMIND_BENCH_RL_JOBS_A`` / ``_B``, the connections from ``AIRFLOW_CONN_SEGMIND_RL_<LIMIT>_<VARIANT>``.
"""

from __future__ import annotations

import json
import os

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator


@task(retries=0)
def generate_sdk(prompt: str, conn_env: str) -> str | None:
    import segmind

    conn = json.loads(os.environ[conn_env])
    client = segmind.SegmindClient(api_key=conn["password"], base_url=f"{conn['host']}/v1")
    result = client.run("stable-diffusion-3-large-txt2img", prompt=prompt)
    output = result.get("output")
    return output if isinstance(output, str) else None


for limit in ("a", "b"):
    jobs = int(os.environ.get(f"SEGMIND_BENCH_RL_JOBS_{limit.upper()}", "0"))
    prompts = [f"rate-limit benchmark {limit} image {i}: a lighthouse at dawn, watercolour" for i in range(jobs)]
    for variant in ("ours", "today", "sdk"):
        conn_id = f"segmind_rl_{limit}_{variant}"
        with DAG(
            dag_id=f"segmind_bench_rl_{limit}_{variant}",
            schedule=None,
            start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
            catchup=False,
            max_active_tasks=256,
            tags=["benchmark"],
        ):
            if variant == "sdk":
                generate_sdk.override(pool=conn_id).partial(conn_env=f"AIRFLOW_CONN_{conn_id.upper()}").expand(
                    prompt=prompts
                )
            else:
                SegmindTextToImageOperator.partial(
                    task_id="generate", segmind_conn_id=conn_id, deferrable=True, pool=conn_id, retries=0
                ).expand(prompt=prompts)
