"""Issue 27 item 1: the provider's metrics, through Airflow's own stats client, to a real StatsD listener.

The whole-cluster test (a real scheduler and triggerer) is in ``tests/integration/test_real_airflow.py``;
here one watch on this process, against the emulator, with Airflow's StatsD backend pointed at a
UDP listener on loopback, and the docs' table checked against the names the code emits.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_segmind.utils import metrics
from tests.integration.statsd_listener import StatsdLine, StatsdListener

DOCS = Path(__file__).resolve().parents[3] / "docs" / "operating.md"


def test_the_docs_list_every_metric_and_every_failure_cause() -> None:
    page = DOCS.read_text()
    for metric in metrics.METRICS:
        shown = f"`airflow.{metric.name}.<cause>`" if metric is metrics.FAILED else f"`airflow.{metric.name}`"
        assert shown in page, metric.name
    for cause in metrics.FAILURE_CAUSES:
        assert f"| `{cause}` |" in page, cause


def test_detection_delay_is_measured_from_the_jobs_end() -> None:
    assert metrics.detection_delay(110.0, 100.0, {"total_time": 8.5}) == pytest.approx(1.5)
    assert metrics.detection_delay(110.0, 100.0, {"queue_time": 1.0, "inference_time": 7.0}) == pytest.approx(2.0)
    assert metrics.detection_delay(100.0, 100.0, {"total_time": 3.0}) == 0.0  # clocks differ: never negative
    assert metrics.detection_delay(110.0, None, {"total_time": 3.0}) is None
    assert metrics.detection_delay(110.0, 100.0, {"inference_time": 3.0}) is None


def test_a_failed_event_is_named_by_its_cause() -> None:
    assert metrics.failure_cause({"status": "failed", "error": "NSFW content detected"}) == "content_blocked"
    assert metrics.failure_cause({"status": "failed", "error": "GPU fell over"}) == "job_failed"
    assert metrics.failure_cause({"status": "timeout"}) == "timeout"
    assert metrics.failure_cause({"status": "expired"}) == "expired"
    assert metrics.failure_cause({"status": "error"}) == "watch_error"


def _sdk_stats() -> Any:
    try:
        module = importlib.import_module("airflow.sdk.observability.stats")
    except ImportError:
        return None
    return module if hasattr(module, "initialize") else None


@pytest.fixture
def statsd_client() -> Iterator[StatsdListener]:
    """Airflow's StatsD backend (influxdb tags on) sending to a loopback listener, restored afterwards."""
    stats = _sdk_stats()
    if stats is None:
        pytest.skip("this Airflow's stats client cannot be re-initialised in-process (Airflow 3.3+ can)")
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger
    from airflow.sdk._shared.observability.metrics.statsd_logger import get_statsd_logger
    from statsd import StatsClient

    with StatsdListener() as listener:
        stats.initialize(
            factory=lambda: get_statsd_logger(
                stats_class=StatsClient, host="127.0.0.1", port=listener.port, prefix="airflow",
                influxdb_tags_enabled=True, statsd_influxdb_enabled=True,
            ),
            export_legacy_names=False,
        )  # fmt: skip
        try:
            yield listener
        finally:
            stats.initialize(factory=NoStatsLogger, export_legacy_names=False)


def _wait_for(listener: StatsdListener, name: str) -> list[StatsdLine]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [line for line in listener.lines(name) if line.name == name]
        if found:
            return found
        time.sleep(0.05)
    return []


def test_a_watch_sends_its_metrics_through_airflows_stats_client(
    statsd_client: StatsdListener, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_segmind.hooks.segmind import SegmindHook
    from airflow_provider_segmind.protocol.schedule import PollSchedule
    from airflow_provider_segmind.triggers.job_watch import wait_for_job
    from tests.support.jobs import FAST_SCHEDULE, use_emulator

    use_emulator(monkeypatch, emulator)
    model = "stable-diffusion-3-large-txt2img"
    metrics.bind(dag_id="metrics_dag", task_id="draw", model=model)
    submitted = SegmindHook().submit(model, {"prompt": "a fox"})
    event = wait_for_job(
        submitted.request_id, model=model, schedule=PollSchedule.from_dict(FAST_SCHEDULE), submitted_at=time.time()
    )
    assert event["status"] == "success"
    tags = {"dag_id": "metrics_dag", "task_id": "draw", "model": model}
    (completed,) = _wait_for(statsd_client, "airflow.segmind.job.completed")
    assert completed.tags == tags
    assert completed.value == 1
    (inference,) = _wait_for(statsd_client, "airflow.segmind.job.inference_time")
    assert inference.kind == "ms"
    assert inference.value == pytest.approx(200, abs=1)  # the fast profile's 0.2 s
    (cost,) = _wait_for(statsd_client, "airflow.segmind.job.cost_usd")
    assert cost.value == pytest.approx(0.04)
    assert _wait_for(statsd_client, "airflow.segmind.job.detection_delay")
    polls = _wait_for(statsd_client, "airflow.segmind.api.status_polls")
    assert sum(line.value for line in polls) >= 1
    assert all(line.tags == tags for line in polls)
    assert not [line for line in statsd_client.lines("airflow.segmind") if emulator.api_key in repr(line)]


def test_a_rate_limited_answer_and_a_failure_are_counted(
    statsd_client: StatsdListener, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_segmind.hooks.segmind import SegmindHook
    from airflow_provider_segmind.protocol.schedule import PollSchedule
    from airflow_provider_segmind.triggers.job_watch import wait_for_job
    from tests.support.jobs import FAST_SCHEDULE, use_emulator

    use_emulator(monkeypatch, emulator)
    metrics.bind(dag_id="metrics_dag", task_id="blocked")
    submitted = SegmindHook().submit("stable-diffusion-3-large-txt2img", {"prompt": "__fail__"})
    emulator.script([{"endpoint": "status", "fault": "429", "times": 1}])
    event = wait_for_job(
        submitted.request_id,
        model="stable-diffusion-3-large-txt2img",
        schedule=PollSchedule.from_dict(FAST_SCHEDULE),
        submitted_at=time.time(),
    )
    assert event["status"] == "failed"
    limited = _wait_for(statsd_client, "airflow.segmind.api.rate_limited")
    assert limited[0].tags["endpoint"] == "v2_status"
    (failed,) = _wait_for(statsd_client, "airflow.segmind.job.failed.job_failed")
    assert failed.tags["cause"] == "job_failed"
