"""What a Segmind task returns: the small JSON-safe summary of a COMPLETED job (pushed to XCom).

The trigger's success event, the blocking wait, the operators and the sensor all return this same
shape, so a downstream task (the S3 transfer, a user's ``@task``) reads one schema whichever path
produced it. It must stay well under XCom's comfortable 48 KB: ids, URLs and numbers, never image
bytes; parameters pass through :mod:`airflow_provider_segmind.utils.redaction` (no secrets, no inline data).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

from airflow_provider_segmind.exceptions import SegmindOutputError
from airflow_provider_segmind.protocol.responses import JobResult, parse_int
from airflow_provider_segmind.protocol.schedule import RESULT_RETENTION_SECONDS
from airflow_provider_segmind.protocol.urls import is_request_id
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus
from airflow_provider_segmind.utils.redaction import XCOM_LIMITS, finite_number, plain

__all__ = [
    "XCOM_OUTPUT_URL",
    "XCOM_REQUEST_ID",
    "CompletedResult",
    "ResultOutput",
    "completed_summary",
    "fit_summary",
    "job_metrics",
    "output_link",
    "result_from_summary",
    "result_summary",
    "submitted_summary",
    "summarize_params",
    "utc_iso",
    "with_filled_seed",
]

#: XCom keys the operators push besides the return value (the trigger pushes the same when it ends the task).
XCOM_REQUEST_ID: Final = "segmind_request_id"
XCOM_OUTPUT_URL: Final = "segmind_output_url"

#: Longest string parameter kept whole (SD3 prompts go up to 10,000 characters); longer ones are
#: inline data (a base64 input image) and are replaced by a note.
_MAX_PARAM_TEXT: Final = XCOM_LIMITS.text_limit
_MAX_URL: Final = 4_096
_MAX_IMAGES: Final = 32
#: A summary above this is shrunk further (prompts clipped): XCom rows should stay small.
_SUMMARY_BUDGET_BYTES: Final = 40_000
_METRIC_NAMES: Final = ("queue_time", "inference_time", "total_time", "cost", "remaining_credits")


def summarize_params(params: Mapping[str, Any] | None, *, text_limit: int = _MAX_PARAM_TEXT) -> dict[str, Any]:
    """The request's parameters as they may appear in XCom: JSON-safe, no secrets, no inline data.

    Credential-looking names are masked, key-shaped strings are redacted, and long strings (a
    base64 input image) are replaced by a note with their length.
    """
    if not params:
        return {}
    limits = XCOM_LIMITS if text_limit == XCOM_LIMITS.text_limit else replace(XCOM_LIMITS, text_limit=text_limit)
    summary: dict[str, Any] = plain(params, limits)
    return summary


def _image_entry(image: Mapping[str, Any]) -> dict[str, Any] | None:
    url = image.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > _MAX_URL:
        return None
    entry: dict[str, Any] = {"url": url}
    for name in ("content_type", "file_name"):
        value = image.get(name)
        entry[name] = value[:200] if isinstance(value, str) else None
    # Numeric strings are parsed, not dropped (docs.segmind.com/api-reference: ``images[]`` may
    # carry them as strings).
    entry["file_size"] = parse_int(image.get("file_size"))
    seed = parse_int(image.get("seed"))
    if seed is not None:
        entry["seed"] = seed
    return entry


def job_metrics(*sources: Mapping[str, Any] | None) -> dict[str, float | int]:
    """The known timing/credit metrics found in ``sources`` (later ones win), finite numbers only."""
    out: dict[str, float | int] = {}
    for source in sources:
        for name in _METRIC_NAMES:
            number = finite_number((source or {}).get(name))
            if number is not None:
                out[name] = number
    return out


def utc_iso(epoch: float) -> str:
    """An epoch time as ISO 8601 UTC to the second, as summaries and event messages show it."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def result_summary(
    result: JobResult,
    *,
    model: str,
    status_metrics: Mapping[str, Any] | None = None,
    submitted_at: float | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The small, JSON-safe description of a COMPLETED job that a task returns (and XCom stores).

    It holds ids, URLs and numbers, never image bytes. When the model returned the image inline
    (``base64: true``) the summary says ``"output_inline": true`` and carries no data: the result
    stays retrievable by ``request_id`` until ``retrievable_until`` (1 hour after submission), and
    a transfer operator re-fetches it through the hook to write it to storage.
    """
    images = [entry for entry in (_image_entry(i) for i in result.images[:_MAX_IMAGES]) if entry]
    urls = [u for u in result.output_urls if len(u) <= _MAX_URL][:_MAX_IMAGES]
    summary: dict[str, Any] = {
        "request_id": result.request_id,
        "model": model,
        "status": SegmindJobStatus.COMPLETED.value,
        "output_url": urls[0] if urls else None,
        "output_urls": urls,
        "output_inline": result.base64_image is not None,
        "images": images,
        "seed": result.seed,
        "metrics": job_metrics(status_metrics, result.metrics),
        "retrievable_until": utc_iso(submitted_at + RESULT_RETENTION_SECONDS) if submitted_at else None,
        "params": summarize_params(params),
    }
    return fit_summary(summary)


def fit_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """Keep a summary under the XCom budget: clip parameter strings if it is still too big."""
    if len(json.dumps(summary)) <= _SUMMARY_BUDGET_BYTES:
        return summary
    shrunk = dict(summary)
    shrunk["params"] = summarize_params(summary.get("params"), text_limit=500)
    shrunk["images"] = summary.get("images", [])[:4]
    shrunk["output_urls"] = summary.get("output_urls", [])[:4]
    shrunk["truncated"] = True
    return shrunk


def with_filled_seed(summary: dict[str, Any], filled_seed: int | None) -> dict[str, Any]:
    """Put the seed the operator filled into a result summary (issue 13: every image has a known seed).

    The result's own ``seed`` wins where Segmind reports one; ``seed_filled`` says the provider chose it.
    """
    if filled_seed is None:
        return summary
    out = dict(summary)
    if out.get("seed") is None:
        out["seed"] = filled_seed
    out["seed_filled"] = True
    params = out.get("params")
    if isinstance(params, Mapping) and params.get("seed") is None:
        out["params"] = {**params, "seed": filled_seed}
    return out


def completed_summary(
    event_result: Mapping[str, Any], params: Mapping[str, Any], filled_seed: int | None
) -> dict[str, Any]:
    """An operator's return value from a success event's summary: its parameters and filled seed added.

    One rule for the two places a task ends: ``execute_complete`` on the worker, and the trigger
    when it ends the task itself (``end_from_trigger``), so both push the same value.
    ``params`` is already :func:`summarize_params` output (JSON-safe, no secret).
    """
    summary = dict(event_result)
    summary["params"] = dict(params)
    return fit_summary(with_filled_seed(summary, filled_seed))


#: The ``status`` of a submit-only summary when no status of the request was read (see :func:`submitted_summary`).
STATUS_SUBMITTED: Final = "SUBMITTED"


def submitted_summary(
    request_id: str,
    *,
    model: str,
    status: SegmindJobStatus | None,
    submitted_at: float | None,
    params: Mapping[str, Any],
    filled_seed: int | None,
) -> dict[str, Any]:
    """A submit-only task's return value (``wait_for_completion=False``): the request, no output yet.

    The keys of :func:`result_summary`, so a downstream task reads one schema: ``status`` is what
    Segmind last said of the request (``QUEUED`` after a submit, what a retry re-attaching read),
    or ``SUBMITTED`` when nothing was read; no output (``output_url`` ``None``, empty lists);
    ``wait_for_completion`` is ``false``. ``params`` is already :func:`summarize_params` output.
    """
    seed = parse_int(params.get("seed"))
    summary: dict[str, Any] = {
        "request_id": request_id,
        "model": model,
        "status": status.value if status is not None else STATUS_SUBMITTED,
        "output_url": None,
        "output_urls": [],
        "output_inline": False,
        "images": [],
        "seed": seed if seed is not None and seed >= 0 else None,
        "metrics": {},
        "retrievable_until": utc_iso(submitted_at + RESULT_RETENTION_SECONDS) if submitted_at else None,
        "params": dict(params),
        "wait_for_completion": False,
    }
    return fit_summary(with_filled_seed(summary, filled_seed))


def output_link(url: Any) -> str:
    """What the link shows for an output URL: the URL if it is http(s), else nothing.

    Also what a trigger that ends the task itself (``end_from_trigger``) stores under the link's
    XCom key, since no task process then runs ``get_link``.
    """
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else ""


# The summary read back: what the S3 transfer and the lineage facets take from an XCom summary.


@dataclass(frozen=True)
class ResultOutput:
    """One output of one result: a URL to download, or the result's inline (base64) image."""

    index: int
    url: str | None = None
    content_type: str | None = None
    size: int | None = None


@dataclass
class CompletedResult:
    """A COMPLETED Segmind result, from an XCom summary or fetched by request id."""

    request_id: str
    model: str | None
    seed: int | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    outputs: list[ResultOutput]
    inline: bool = False
    base64_image: str | None = None
    inline_content_type: str | None = None
    retrievable_until: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _int_or_none(value: Any) -> int | None:
    """``seed`` / ``file_size`` may be numeric strings in Segmind's answers: parsed, not dropped."""
    return parse_int(value)


def _outputs_from(images: Any, urls: Iterable[Any]) -> list[ResultOutput]:
    """Every distinct output URL, ``images`` entries first (they carry type and size)."""
    found: dict[str, ResultOutput] = {}
    for entry in images if isinstance(images, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("url"), str) and entry["url"] not in found:
            content_type = entry.get("content_type")
            found[entry["url"]] = ResultOutput(
                len(found),
                entry["url"],
                content_type.lower() if isinstance(content_type, str) else None,
                _int_or_none(entry.get("file_size")),
            )
    for url in urls:
        if isinstance(url, str) and url.strip() and url not in found:
            found[url] = ResultOutput(len(found), url)
    return list(found.values())


def _summary_urls(summary: Mapping[str, Any]) -> list[Any]:
    """Output URLs of a summary; any string counts (the download policy refuses bad ones loudly)."""
    urls: list[Any] = []
    for name in ("output_urls", "output_url", "output"):
        value = summary.get(name)
        for item in value if isinstance(value, list) else [value]:
            # ``output`` of a raw result may be text (LLMs) or base64: only URL-shaped entries count.
            if isinstance(item, str) and (name != "output" or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", item)):
                urls.append(item)
    return urls


def result_from_summary(summary: Mapping[str, Any]) -> CompletedResult:
    request_id = summary.get("request_id")
    if not isinstance(request_id, str) or not is_request_id(request_id):
        raise SegmindOutputError(
            f"A result handed to SegmindToS3Operator has no valid request_id ({request_id!r}); pass the return "
            "value of a Segmind operator, a list of them, or request ids"
        )
    status = summary.get("status")
    if status is not None and str(status).upper() != SegmindJobStatus.COMPLETED.value:
        raise SegmindOutputError(f"Segmind request {request_id} is {status}, not COMPLETED: it has no output to store")
    params = summary.get("params") if isinstance(summary.get("params"), Mapping) else {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), Mapping) else {}
    model = summary.get("model")
    return CompletedResult(
        request_id=request_id,
        model=model if isinstance(model, str) else None,
        seed=_int_or_none(summary.get("seed")),
        metrics=dict(metrics or {}),
        params=dict(params or {}),
        outputs=_outputs_from(summary.get("images"), _summary_urls(summary)),
        inline=summary.get("output_inline") is True,
        retrievable_until=until if isinstance(until := summary.get("retrievable_until"), str) else None,
    )
