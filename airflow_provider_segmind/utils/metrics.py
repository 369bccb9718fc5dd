"""The provider's metrics: their names, their tags, and one emit function over Airflow's own stats client.

Why Airflow's client: a deployment has already chosen where its metrics go (``[metrics] statsd_on``,
``statsd_datadog_enabled`` or ``otel_on``, with its host, prefix, allow and block lists), and the
worker's task runner and the triggerer both initialise that client in their own process. Sending
through it (``Stats`` as ``airflow.providers.common.compat.sdk`` resolves it on Airflow 3.1 to
3.3: ``airflow.sdk.observability.stats`` on 3.3, ``airflow.stats`` on 3.1) puts the provider's
figures next to Airflow's, under the same prefix, with no setting of its own.

Every metric is in :data:`METRICS` with its kind, unit and meaning (docs/operating.md's table is
checked against it). Tags (``model``, ``dag_id``, ``task_id``, and ``cause``/``endpoint`` where
said) go to the backends that take them (StatsD with ``statsd_influxdb_enabled``, Datadog,
OpenTelemetry); the names alone carry everything a plain StatsD dashboard needs, so a failure's
cause is also in its name (``segmind.job.failed.<cause>``, a fixed set: :data:`FAILURE_CAUSES`).

A metric never costs a task anything: :func:`emit` swallows every error of the stats client.
The task's identity is bound once per task (:func:`bind`) in a context variable, so calls deep in
the hook (history lookups, 429 answers) carry it without being passed it; in the triggerer each
trigger runs as its own asyncio task, whose context is its own.
"""

from __future__ import annotations

import contextvars
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Final

log = logging.getLogger(__name__)

#: Prefix of every metric name (Airflow's own ``[metrics] statsd_prefix`` comes before it).
PREFIX: Final = "segmind"


@dataclass(frozen=True)
class Metric:
    """One metric: its name (without Airflow's prefix), kind, unit and meaning (for the docs' table)."""

    name: str
    kind: str  # "counter", "timer" or "gauge"
    unit: str
    meaning: str
    tags: tuple[str, ...] = ("model", "dag_id", "task_id")


def _m(name: str, kind: str, unit: str, meaning: str, *extra_tags: str) -> Metric:
    return Metric(f"{PREFIX}.{name}", kind, unit, meaning, ("model", "dag_id", "task_id", *extra_tags))


SUBMITTED: Final = _m(
    "job.submitted", "counter", "jobs", "A billed v2 submit Segmind accepted (a request id came back)."
)
RESUBMITTED: Final = _m(
    "job.resubmitted",
    "counter",
    "jobs",
    "A submit sent although this task instance had sent one before (an earlier try's job FAILED, expired or "
    "was changed, or a refused submit was sent again): each is also counted in job.submitted.",
)
REATTACHED: Final = _m(
    "job.reattached",
    "counter",
    "jobs",
    "A try that waited for a request an earlier try (or a lost submit found in the request history) had "
    "already paid for, instead of submitting.",
)
COMPLETED: Final = _m("job.completed", "counter", "jobs", "A watch (worker or triggerer) saw its job COMPLETED.")
FAILED: Final = _m(
    "job.failed",
    "counter",
    "jobs",
    "A job or a submit that ended without an image, by cause: the name is job.failed.<cause> "
    "(the causes are listed below), and the tag cause says the same.",
    "cause",
)
QUEUE_TIME: Final = _m("job.queue_time", "timer", "ms", "Segmind's queue time of a COMPLETED job (its metrics).")
INFERENCE_TIME: Final = _m(
    "job.inference_time", "timer", "ms", "Segmind's inference time of a COMPLETED job (its metrics)."
)
DETECTION_DELAY: Final = _m(
    "job.detection_delay",
    "timer",
    "ms",
    "How long after the job finished the watch saw it COMPLETED: the status answer's arrival minus "
    "(submit time + Segmind's total_time, else queue + inference time). The price of polling instead of a callback.",
)
COST: Final = _m(
    "job.cost_usd",
    "counter",
    "USD",
    "What a COMPLETED job cost, as Segmind's metrics say (cost); summed, the spend per model, DAG and task.",
)
STATUS_POLLS: Final = _m(
    "api.status_polls", "counter", "calls", "v2 status calls (every watch poll, and a retry's look at its request)."
)
RATE_LIMITED: Final = _m(
    "api.rate_limited", "counter", "answers", "HTTP 429 answers of any Segmind call (tag endpoint).", "endpoint"
)
HISTORY_LOOKUPS: Final = _m(
    "api.history_lookups",
    "counter",
    "calls",
    "Calls to Segmind's request history (lost-submit searches, expired results, the spend cap's ledger reads).",
)
SPEND_TODAY: Final = _m(
    "spend.today_usd",
    "gauge",
    "USD",
    "Today's (UTC) spend as the spend cap last read it: the ledger plus in-flight estimates, before a submit.",
)

#: Every metric the provider emits, in the docs' order.
METRICS: Final[tuple[Metric, ...]] = (
    SUBMITTED,
    RESUBMITTED,
    REATTACHED,
    COMPLETED,
    FAILED,
    QUEUE_TIME,
    INFERENCE_TIME,
    DETECTION_DELAY,
    COST,
    STATUS_POLLS,
    RATE_LIMITED,
    HISTORY_LOOKUPS,
    SPEND_TODAY,
)

#: ``segmind.job.failed.<cause>``: why a job or a submit ended without an image.
FAILURE_CAUSES: Final[Mapping[str, str]] = {
    "job_failed": "Segmind ran the job and it FAILED (not a content block, not a refused input).",
    "content_blocked": "The job FAILED on Segmind's content-safety filter.",
    "invalid_input": "The job FAILED because the model refused its input.",
    "timeout": "The job was not finished by the task's job_timeout or execution_timeout.",
    "expired": "The request was gone (404) before the watch saw it finish.",
    "watch_error": "The watch gave up (errors in a row, a refused key, rate limits without a break).",
    "submit_refused": "Segmind refused the submit (e.g. 401, 406 insufficient credits, 422): nothing was billed.",
    "outcome_unknown": "A submit's answer was lost and the request history could not tell: failed without resending.",
    "spend_cap": "The spend cap (max_spend_per_day) left no room, or the model costs more than max_cost: "
    "nothing was submitted.",
}

_TAGS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "segmind_metric_tags", default=MappingProxyType({})
)
_stats: Any = None


def bind(*, dag_id: Any = None, task_id: Any = None, model: Any = None) -> None:
    """Tag every metric emitted from here on in this context (a task's process, a trigger's asyncio task)."""
    _TAGS.set({k: str(v) for k, v in (("dag_id", dag_id), ("task_id", task_id), ("model", model)) if v})


def bind_task(ti: Any, model: Any = None) -> None:
    """:func:`bind` with a task instance's ``dag_id``/``task_id`` (``None``: only the model)."""
    bind(dag_id=getattr(ti, "dag_id", None), task_id=getattr(ti, "task_id", None), model=model)


def _client() -> Any:
    """Airflow's stats client, imported once (``None`` if this Airflow has none)."""
    global _stats
    if _stats is None:
        try:
            from airflow.providers.common.compat.sdk import Stats
        except Exception:  # pragma: no cover - every supported Airflow has one
            _stats = False
        else:
            _stats = Stats
    return _stats or None


def tags_for(metric: Metric, **tags: Any) -> dict[str, str]:
    """The bound tags plus ``tags`` (``None`` values left out), restricted to the metric's own tags."""
    merged = {**_TAGS.get(), **{k: str(v) for k, v in tags.items() if v is not None and v != ""}}
    return {k: v for k, v in merged.items() if k in metric.tags}


def emit(metric: Metric, value: float = 1, *, name: str | None = None, **tags: Any) -> None:
    """Send one value of ``metric`` through Airflow's stats client; never raises.

    Counters add ``value`` (a float for USD), timers take seconds (sent as a ``timedelta``, which
    each backend converts to its own unit), gauges set ``value``. ``name``: another name for the
    same metric (a failure's ``segmind.job.failed.<cause>``). A value that is not a finite number
    (or a negative count or time) is dropped.
    """
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return
    if metric.kind != "gauge" and value < 0:
        return
    client = _client()
    if client is None:
        return
    stat = name or metric.name
    try:
        tagged = tags_for(metric, **tags)
        if metric.kind == "counter":
            client.incr(stat, value, tags=tagged)
        elif metric.kind == "timer":
            client.timing(stat, timedelta(seconds=value), tags=tagged)
        else:
            client.gauge(stat, value, tags=tagged)
    except Exception as err:  # a metric must never fail a task or a trigger
        log.debug("Could not emit metric %s: %s", stat, err)


def failed(cause: str, **tags: Any) -> None:
    """Count a job (or submit) that ended without an image, by ``cause`` (one of :data:`FAILURE_CAUSES`)."""
    known = cause if cause in FAILURE_CAUSES else "job_failed"
    emit(FAILED, name=f"{FAILED.name}.{known}", cause=known, **tags)


def answer_seen(endpoint: str, status: int) -> None:
    """Count what one HTTP answer means for the metrics (called by both transports for every answer)."""
    if endpoint == "v2 status":
        emit(STATUS_POLLS)
    elif endpoint == "request history":
        emit(HISTORY_LOOKUPS)
    if status == 429:
        emit(RATE_LIMITED, endpoint=endpoint.replace(" ", "_"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def detection_delay(seen_at: float, submitted_at: float | None, metrics: Mapping[str, Any] | None) -> float | None:
    """Seconds between the job's end and the status answer that showed it COMPLETED (``None`` if unknown).

    The end is the submit time plus Segmind's ``total_time``, else ``queue_time + inference_time``.
    Clocks differ (ours vs Segmind's measure of its own times), so a small negative is read as 0.
    """
    if submitted_at is None or not metrics:
        return None
    total = _number(metrics.get("total_time"))
    if total is None:
        queue, inference = _number(metrics.get("queue_time")), _number(metrics.get("inference_time"))
        if queue is None or inference is None:
            return None
        total = queue + inference
    return max(0.0, seen_at - (submitted_at + total))


def failure_cause(event: Mapping[str, Any]) -> str:
    """The :data:`FAILURE_CAUSES` key of a watch's non-success event."""
    status = event.get("status")
    if status == "failed":
        from airflow_provider_segmind.exceptions import SegmindContentBlockedError, SegmindInvalidInputJobError
        from airflow_provider_segmind.protocol.errors import job_failed_error

        error = job_failed_error(str(event.get("request_id") or "?"), event.get("error"))
        if isinstance(error, SegmindContentBlockedError):
            return "content_blocked"
        if isinstance(error, SegmindInvalidInputJobError):
            return "invalid_input"
        return "job_failed"
    if status in ("timeout", "expired"):
        return str(status)
    return "watch_error"


def watch_ended(event: Mapping[str, Any], *, seen_at: float | None, submitted_at: float | None) -> None:
    """Emit what a watch's end says: completed with its times and cost, or failed by cause.

    Called where the one polling loop ends (:class:`~airflow_provider_segmind.polling.JobWatch`), so
    a deferred job is counted in the triggerer and a blocking one on the worker, each exactly once.
    ``seen_at``: when the COMPLETED status answer arrived.
    """
    model = event.get("model") or None
    if event.get("status") != "success":
        failed(failure_cause(event), model=model)
        return
    emit(COMPLETED, model=model)
    result = event.get("result")
    metrics = result.get("metrics") if isinstance(result, Mapping) else None
    metrics = metrics if isinstance(metrics, Mapping) else {}
    for metric, key in ((QUEUE_TIME, "queue_time"), (INFERENCE_TIME, "inference_time")):
        seconds = _number(metrics.get(key))
        if seconds is not None:
            emit(metric, seconds, model=model)
    cost = _number(metrics.get("cost"))
    if cost is not None:
        emit(COST, cost, model=model)
    if seen_at is not None:
        delay = detection_delay(seen_at, submitted_at, metrics)
        if delay is not None:
            emit(DETECTION_DELAY, delay, model=model)
