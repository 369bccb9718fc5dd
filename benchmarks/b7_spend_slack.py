"""Benchmark 7: the spend cap's slack across processes (issue 27 item 2), against the emulator's lagging ledger.

The cap counts what Segmind's request history shows plus what *this process* submitted; another
process's submit is seen only once its history row lands. So the cap can be overrun by the submits
of other processes within the history's lag: its known slack. This measures it as a deployment
sees it: ``workers`` processes each run "tasks" back to back (every task a fresh process state:
the ledger is read anew, nothing remembered, as Airflow runs each task in its own process), each
task = the spend check, the billed submit, then the job's wait; until the cap refuses. The cap is
worth ``cap_images`` images; the emulator's history lags ``lag`` seconds with the rows absent (the
worst case). Reported: images billed vs the cap, per lag.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from typing import Any

from benchmarks._common import BenchResult, EmulatorProcess, Row

PRICE = 0.04
MODEL = "stable-diffusion-3-large-txt2img"


def _worker(conn_json: str, task_seconds: float, deadline: float) -> int:
    """One worker: tasks until the cap refuses (or the deadline); returns how many it submitted."""
    os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"] = conn_json
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_segmind.hooks._spend import forget_ledger
    from airflow_provider_segmind.hooks.segmind import SegmindHook
    from airflow_provider_segmind.operators._spend import check_spend, forget_own_submits, note_submitted

    log = logging.getLogger("spend-slack")
    submitted = 0
    while time.time() < deadline:
        forget_ledger()  # a task is a fresh process: nothing cached, nothing remembered
        forget_own_submits()
        hook = SegmindHook()
        try:
            estimate = check_spend(hook, MODEL, PRICE, log)
        except AirflowFailException:
            return submitted
        answer = hook.submit(MODEL, {"prompt": f"slack {os.getpid()} {submitted}", "seed": submitted})
        note_submitted(hook, answer.request_id, estimate)
        submitted += 1
        time.sleep(task_seconds)  # the task waits for its job
    return submitted


def measure(workers: int, lag: float, cap_images: int, task_seconds: float) -> dict[str, Any]:
    with EmulatorProcess("--inference-time", "0.5", "--queue-time", "0.05") as emu:
        emu.configure(cost=PRICE, history_lag_seconds=lag, history_lag_mode="absent")
        conn = emu.conn_json()
        conn_obj = __import__("json").loads(conn)
        conn_obj["extra"] = {"max_spend_per_day": cap_images * PRICE}
        conn = __import__("json").dumps(conn_obj)
        context = multiprocessing.get_context("spawn")
        deadline = time.time() + 120
        with context.Pool(workers) as pool:
            counts = pool.starmap(_worker, [(conn, task_seconds, deadline)] * workers)
        jobs = emu.jobs()
        billed = sum(job["cost"] for job in jobs if job.get("billed"))
    return {
        "workers": workers,
        "lag_s": lag,
        "cap_images": cap_images,
        "billed_images": round(billed / PRICE),
        "billed_usd": round(billed, 4),
        "per_worker": counts,
    }


def run(quick: bool) -> BenchResult:
    result = BenchResult(7, "Spend cap slack across processes (billed vs cap)")
    # --quick (CI: that it runs, not its figures): 2 worker processes and 2 lags, not 4 and 3 (each
    # spawned worker imports Airflow, about 4 CPU-seconds).
    workers, cap_images, task_seconds = (2, 10, 1.0) if quick else (4, 40, 1.0)
    for lag in (0.0, 5.0) if quick else (0.0, 2.0, 5.0):
        figures = measure(workers, lag, cap_images, task_seconds)
        result.figures[f"lag_{lag:g}s"] = figures
        over = figures["billed_images"] - cap_images
        result.rows.append(
            Row(
                "7",
                f"images billed, cap {cap_images}, {workers} workers, history lag {lag:g} s",
                str(figures["billed_images"]),
                target=f"<= {cap_images} + slack",
                met="yes" if over <= workers * max(1, round(lag / task_seconds + 0.5)) else "no",
                note=f"over the cap by {over}",
            )
        )
    result.notes.append(
        "Slack = submits of other processes whose history rows had not landed yet: at most about one job per "
        "concurrent worker per (lag / task duration, rounded up), at the job's price."
    )
    return result
