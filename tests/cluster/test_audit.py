"""The cluster audit on a made-up run: a worker kill that lands on a last try is its own named outcome.

Issue 24 item 10: ``make test-cluster`` (seed 7, Airflow 3.3.2) failed when the worker SIGKILL hit the
last try of a ``__fail__`` prompt: the scheduler failed that try by heartbeat timeout, its log named
no cause, and the audit reported "no named cause" and "did not end as a FAILED job". No cluster here
(the audit reads what :func:`tests.cluster.scenario.run_cluster` collected): runs in the normal suite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cluster.scenario import (
    GENERATE,
    PERSIST,
    WORKER_KILLED_ON_LAST_TRY,
    ClusterRun,
    ClusterSettings,
    _last_try,
    audit,
)

FAILED_LOG = "SegmindJobFailedError: Segmind job job-000{n}-aaaa FAILED: Internal inference error (emulated)."
KILLED_LOG = "Submitted Segmind job job-0003-aaaa (model stable-diffusion-3-large-txt2img)."  # the log just stops


def _run(*, killed_last: bool, heartbeat_timeout: bool = True, stale_retries: bool = False) -> ClusterRun:
    """Prompt 0 stored; prompt 1 (``__fail__``) failed twice as FAILED jobs, then its last try was killed or FAILED."""
    run = ClusterRun(settings=ClusterSettings.short(seed=7), api_key="SG_x", bucket="b", workdir=Path("."))
    run.settings = ClusterSettings(prompts=2, seed=7)
    run.specs = [{"prompt": "[p0000] a lighthouse"}, {"prompt": "[p0001] __fail__ a castle"}]
    run.fail_marked = {1}
    run.state = "failed"
    run.run_id = "cluster_7"
    run.celery_messages_seen = 1
    run.scanned["postgres control: a request id present"] = 1
    run.task_instances = [
        {"task_id": GENERATE, "map_index": 0, "state": "success", "try_number": 1, "max_tries": 2, "pid": None},
        {"task_id": PERSIST, "map_index": 0, "state": "failed", "try_number": 1, "max_tries": 2, "pid": None},
        {"task_id": GENERATE, "map_index": 1, "state": "failed", "try_number": 3, "max_tries": 2, "pid": None},
    ]
    last = KILLED_LOG if killed_last else FAILED_LOG.format(n=1 if stale_retries else 3)
    run.attempt_logs = {
        (GENERATE, 1): [FAILED_LOG.format(n=1), FAILED_LOG.format(n=1 if stale_retries else 2), last],
        (PERSIST, 0): ["S3 write failed: SlowDown"],
    }
    run.errors = {key: texts[-1] for key, texts in run.attempt_logs.items()}
    run.jobs = [
        {"request_id": "r-0", "status": "COMPLETED", "submitted_at": 1.0, "params": {"prompt": run.specs[0]["prompt"]}},
        *(
            {
                "request_id": f"r-{n}",
                "status": "FAILED",
                "submitted_at": 1.0 + n,
                "params": {"prompt": run.specs[1]["prompt"]},
            }
            for n in (1, 2, 3)
        ),
    ]
    run.emulator_stats = {"submissions": 4}
    killed = [[GENERATE, 1, 3]] if killed_last else []
    if killed_last and heartbeat_timeout:
        run.heartbeat_timeouts = {(GENERATE, 1, 3)}
    events: list[dict[str, Any]] = [
        {"kind": "triggerer killed", "triggerer": "triggerer-1", "triggers": 2},
        {"kind": "triggers reassigned", "moved": 2, "of": 2, "first_seconds": 15.0, "last_seconds": 15.2},
        {
            "kind": "worker killed",
            "worker": "worker-1",
            "generate_after_accepted_submit": [1],
            "persist_running": [],
            "killed_tries": killed,
            "killed_last_tries": killed,
            "avoided_last_tries": False,
        },
        {"kind": "worker restarted"},
        {"kind": "scheduler restarted"},
    ]
    run.events = events
    return run


def test_a_kill_on_a_last_try_is_a_named_outcome() -> None:
    result = audit(_run(killed_last=True))
    assert result.violations == []
    rows = dict(result.rows)
    assert f"generate: {WORKER_KILLED_ON_LAST_TRY} x1" in rows["  failed, cause named in its log"]
    assert rows["  tries killed on their last try"] == "generate[1] try 3: failed by heartbeat timeout"
    assert rows["paid submissions (emulator)"].startswith("4 = 2 prompts + 2 resubmits of FAILED")


def test_the_usual_ending_is_unchanged() -> None:
    result = audit(_run(killed_last=False))
    assert result.violations == []
    rows = dict(result.rows)
    assert "generate: job FAILED x1" in rows["  failed, cause named in its log"]
    assert rows["  tries killed on their last try"].startswith("none (the kill aims at tries with retries left")


def test_retries_that_fail_with_the_first_trys_job_are_a_violation() -> None:
    """What Airflow 3.1.0 did before the operator dropped an earlier try's event (item 7): every try
    ended with job 1's error, none submitted. Billing alone does not show it (one job, no resubmit)."""
    result = audit(_run(killed_last=False, stale_retries=True))
    assert any("a retry failed with an earlier try's job" in v for v in result.violations)


def test_a_last_try_that_died_without_the_kill_still_has_no_named_cause() -> None:
    """Without the scheduler's heartbeat-timeout record the killed try's log names nothing: still a violation."""
    result = audit(_run(killed_last=True, heartbeat_timeout=False))
    assert any("no named cause" in v for v in result.violations)
    assert any("did not fail it by heartbeat timeout" in v for v in result.violations)


def test_the_last_try_is_the_one_past_max_tries() -> None:
    assert _last_try({"try_number": 3, "max_tries": 2})
    assert not _last_try({"try_number": 2, "max_tries": 2})
    assert not _last_try({"try_number": 1, "max_tries": 2})
    assert _last_try({"try_number": 1, "max_tries": 0})
