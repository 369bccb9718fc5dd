"""Segmind's request-history API, as pure functions: its URLs, the list query, rows as records, answers.

Why it matters: a v2 submit is billed, has no idempotency key and cannot be cancelled. When its
answer is lost (a read timeout, a reset, a gateway 5xx after the upstream queued the job), or its v2
record has expired (404 after the 1 hour retention), the request history is the only place that
still knows the job. The provider looks there before it pays for a second submit.

Sources. Everything here comes from the official SDK, ``segmind==1.3.0``,
``segmind/generations.py`` (``Generations.history`` and ``Generations.get``; quoted as [sdk]) and
``segmind-api.md`` ("Added 2026-11-30"). The API is secondary and thinly documented: the page
shape, the timestamp field names and their format are NOT documented, so every field is optional
and each parser accepts several shapes. Nothing here does I/O or reads a clock; the hook
(:mod:`airflow_provider_segmind.hooks.segmind`) sends what this module builds. How a lost submit is
found among the records (body matching, the page-by-page search) is :mod:`.history_search`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

from airflow_provider_segmind.exceptions import (
    SegmindError,
    SegmindInvalidResponseError,
    SegmindNotFoundError,
)
from airflow_provider_segmind.protocol.answer import HttpAnswer
from airflow_provider_segmind.protocol.errors import classify_error
from airflow_provider_segmind.protocol.responses import finite_number
from airflow_provider_segmind.protocol.text import sentences, snippet
from airflow_provider_segmind.protocol.urls import (
    check_request_id,
    has_dot_segment,
    is_loopback_host,
    refuse_cleartext_key,
)
from airflow_provider_segmind.protocol.vocabulary import Endpoint, SegmindJobStatus

#: [sdk] ``REQUEST_HISTORY_URL``: another host than the inference API, same ``x-api-key``.
DEFAULT_HISTORY_URL: Final = "https://api.spotprod.segmind.com/inference-request/request-history"
#: The path of the history API under its host (the emulator serves it under its own base URL).
HISTORY_PATH: Final = "/inference-request/request-history"
#: [sdk] "The window may span at most 31 days" (``from_date``..``to_date``, inclusive).
MAX_WINDOW_DAYS: Final = 31
#: [sdk] ``per_page``: "Rows per page, 1-100".
MAX_PER_PAGE: Final = 100
#: [sdk] ``status``: "One of COMPLETED, FAILED, PENDING".
HISTORY_STATUSES: Final = ("COMPLETED", "FAILED", "PENDING")
#: [sdk] ``sort_by``: ``model_created`` (default), ``model_name`` or ``credits_deduction``.
SORT_FIELDS: Final = ("model_created", "model_name", "credits_deduction")

_DAY: Final = 86400.0
#: Keys a page may keep its rows under. [sdk] says only "Paginated dictionary", so the shape is a
#: guess: every common name is accepted, and a bare list too.
_ROW_KEYS: Final = ("data", "results", "items", "rows", "records", "requests", "history")
#: Timestamp names. [sdk] says "timestamps" without naming them; ``sort_by=model_created`` names one.
_CREATED_KEYS: Final = ("model_created", "created_at", "createdAt", "created", "model_created_at", "timestamp")
#: A status that ends a request; anything else a row says (PENDING [sdk], QUEUED, ...) is in flight.
_FINAL: Final[Mapping[str, SegmindJobStatus]] = {
    "COMPLETED": SegmindJobStatus.COMPLETED,
    "SUCCESS": SegmindJobStatus.COMPLETED,
    "SUCCEEDED": SegmindJobStatus.COMPLETED,
    "FAILED": SegmindJobStatus.FAILED,
    "ERROR": SegmindJobStatus.FAILED,
}


# --------------------------------------------------------------------------------------------
# URLs and the query
# --------------------------------------------------------------------------------------------


def normalize_history_url(url: str, *, allow_insecure_http: bool = False) -> str:
    """Check the ``history_url`` connection extra and drop a trailing slash.

    The history API gets the API key like every other call, so the rules are the base URL's:
    ``https``, or plain ``http`` only to a loopback host (the emulator) or with
    ``allow_insecure_http``. No query, no fragment, no dot segments (they would move the key to
    another path than the one configured).
    """
    raw = url.strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"extra 'history_url' {url!r} is not an http(s) URL")
    refuse_cleartext_key(parts.scheme, parts.hostname, f"extra 'history_url' {url!r}", allow_insecure_http)
    if parts.query or parts.fragment or has_dot_segment(parts.path):
        raise ValueError(f"extra 'history_url' {url!r} must be a plain URL without query, fragment or '..'")
    return raw.rstrip("/")


def default_history_url(base_url: str) -> str:
    """The history URL when the connection names none: the SDK's, except for a loopback base URL.

    A loopback base URL is the emulator (or a local stand-in), which serves the history under its
    own host: sending its key to Segmind's real history host would be wrong twice over.
    """
    if is_loopback_host(urlsplit(base_url).hostname):
        return f"{base_url.rstrip('/')}{HISTORY_PATH}"
    return DEFAULT_HISTORY_URL


def history_list_url(history_url: str) -> str:
    """``GET`` target of the paginated history list ([sdk] ``Generations.history``)."""
    return history_url.rstrip("/")


def history_record_url(history_url: str, request_id: str) -> str:
    """``GET`` target of one request by id ([sdk] ``Generations.get``: ``quote(request_id, safe='')``)."""
    return f"{history_url.rstrip('/')}/{quote(check_request_id(request_id), safe='')}"


def _utc_date(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def history_query(
    *,
    model: str,
    since: float,
    until: float | None = None,
    status: str | None = None,
    page: int = 1,
    per_page: int = MAX_PER_PAGE,
) -> dict[str, str]:
    """Query parameters for the list call, newest first.

    ``since``/``until`` are epoch seconds; they become UTC ``from_date``/``to_date``
    (YYYY-MM-DD [sdk]). The window is clamped to the newest 31 days ([sdk]: at most 31 days), so an
    old ``since`` narrows the search instead of failing it. Without ``until`` no ``to_date`` is
    sent (the server's default is its "today" [sdk]) and the window is not clamped.
    ``model_name`` is a substring filter on the server [sdk]; callers compare it exactly.
    """
    if status is not None and status not in HISTORY_STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(HISTORY_STATUSES)}")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be within 1..{MAX_PER_PAGE}, got {per_page}")
    if page < 1:
        raise ValueError(f"page must be at least 1, got {page}")
    start = since
    query: dict[str, str] = {}
    if until is not None:
        start = min(max(since, until - (MAX_WINDOW_DAYS - 1) * _DAY), until)
    query["from_date"] = _utc_date(start)
    if until is not None:
        query["to_date"] = _utc_date(until)
    query.update(
        {
            "model_name": model,
            "page": str(page),
            "per_page": str(per_page),
            "sort_by": "model_created",
            "sort_order": "desc",
        }
    )
    if status is not None:
        query["status"] = status
    return query


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryRecord:
    """One request as the history knows it; rows of the same request merged (one row per output [sdk]).

    ``status`` ``None`` means the record has not landed yet ([sdk]: fields are ``None`` until it
    does) or the server sent none; PENDING and other in-flight words map to PROCESSING.
    ``credits`` is the request's cost in USD, counted once (every output row carries it in full
    [sdk]). ``created_at`` is epoch seconds, when a timestamp could be read.
    """

    request_id: str
    model_name: str | None = None
    status: SegmindJobStatus | None = None
    output_urls: tuple[str, ...] = ()
    request_body: dict[str, Any] | None = None
    error: str | None = None
    credits: float | None = None
    created_at: float | None = None
    latency_ms: float | None = None

    @property
    def output_url(self) -> str | None:
        """The first output, if any."""
        return self.output_urls[0] if self.output_urls else None


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds from epoch seconds/milliseconds (numbers or digit strings) or ISO 8601 text.

    The format is not documented; a naive ISO time is taken as UTC. Anything else is ``None``.
    """
    number = finite_number(value)
    if number is not None:
        return number / 1000.0 if number > 1e11 else number
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _status(row: Mapping[str, Any]) -> SegmindJobStatus | None:
    # [sdk] ``model_status``; the generations list calls it ``status``, so that is read too.
    raw = row.get("model_status", row.get("status"))
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _FINAL.get(str(raw).strip().upper(), SegmindJobStatus.PROCESSING)


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith(("http://", "https://")) else []
    if isinstance(value, (list, tuple)):
        return [url for item in value for url in _urls(item)]
    return []


def _body(value: Any) -> dict[str, Any] | None:
    """``request_body`` as a dict: [sdk] says "the inputs as sent"; a JSON string is decoded too."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return dict(value) if isinstance(value, Mapping) else None


def _error(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def record_from_row(row: Mapping[str, Any], request_id: str | None = None) -> HistoryRecord | None:
    """One history row as a record (``None`` for a row without a request id)."""
    rid = row.get("request_id", row.get("id", request_id))
    if not isinstance(rid, str) or not rid:
        return None
    created = next((parse_timestamp(row[k]) for k in _CREATED_KEYS if row.get(k) is not None), None)
    model = row.get("model_name")
    return HistoryRecord(
        request_id=rid,
        model_name=model if isinstance(model, str) and model else None,
        status=_status(row),
        output_urls=tuple(dict.fromkeys(_urls(row.get("generation_url")))),
        request_body=_body(row.get("request_body")),
        error=_error(row.get("error")),
        credits=finite_number(row.get("credits_deduction")),
        created_at=created,
        latency_ms=finite_number(row.get("latency_ms")),
    )


_STATUS_RANK: Final[Mapping[SegmindJobStatus | None, int]] = {
    None: 0,
    SegmindJobStatus.QUEUED: 1,
    SegmindJobStatus.PROCESSING: 1,
    SegmindJobStatus.COMPLETED: 2,
    SegmindJobStatus.FAILED: 2,
}


def merge_records(first: HistoryRecord, second: HistoryRecord) -> HistoryRecord:
    """Two rows of one request as one record: outputs joined in order, the more final status, the
    first known value of every other field (the cost is the request's, not summed [sdk])."""
    status = first.status if _STATUS_RANK[first.status] >= _STATUS_RANK[second.status] else second.status
    created = [t for t in (first.created_at, second.created_at) if t is not None]
    return HistoryRecord(
        request_id=first.request_id,
        model_name=first.model_name or second.model_name,
        status=status,
        output_urls=tuple(dict.fromkeys((*first.output_urls, *second.output_urls))),
        request_body=first.request_body if first.request_body is not None else second.request_body,
        error=first.error or second.error,
        credits=first.credits if first.credits is not None else second.credits,
        created_at=min(created) if created else None,
        latency_ms=first.latency_ms if first.latency_ms is not None else second.latency_ms,
    )


def merge_by_request(records: Iterable[HistoryRecord]) -> list[HistoryRecord]:
    """Records merged per ``request_id``, in the order each request first appears."""
    merged: dict[str, HistoryRecord] = {}
    for record in records:
        seen = merged.get(record.request_id)
        merged[record.request_id] = record if seen is None else merge_records(seen, record)
    return list(merged.values())


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------


def _history_error(answer: HttpAnswer) -> SegmindError:
    if answer.status == 404:
        # The list itself is missing: a wrong history_url, or an API that moved.
        where = urlsplit(answer.url)
        return SegmindNotFoundError(
            sentences(
                f"Segmind's request history was not found (HTTP 404) at {where.scheme}://{where.netloc}{where.path}",
                "Check the connection's history_url extra, or set history_lookup to false to turn the lookups off",
            ),
            status_code=404,
        )
    return classify_error(answer, Endpoint.HISTORY)


def _json(answer: HttpAnswer) -> Any:
    if not 200 <= answer.status < 300:
        raise _history_error(answer)
    return answer.json()


def _rows_of(body: Any) -> tuple[list[Any], Mapping[str, Any]] | None:
    """The rows of an answer and the mapping that holds paging fields, or ``None`` if there are none."""
    if isinstance(body, list):
        return body, {}
    if not isinstance(body, Mapping):
        return None
    for key in _ROW_KEYS:
        value = body.get(key)
        if isinstance(value, list):
            return value, body
        if isinstance(value, Mapping):
            inner = _rows_of(value)
            if inner is not None:
                return inner[0], {**body, **inner[1]}
    return None


def _invalid(answer: HttpAnswer, what: str) -> SegmindInvalidResponseError:
    return SegmindInvalidResponseError(
        f"Segmind's request history answered HTTP {answer.status} with {what}: {snippet(answer.body)!r}",
        status_code=answer.status,
    )


def parse_history_record(answer: HttpAnswer, request_id: str | None = None) -> HistoryRecord | None:
    """The answer of ``GET .../request-history/{request_id}``: the record, or ``None`` when not found.

    [sdk] ``Generations.get``: "the same fields as a history row", and another account's id is
    "a not-found error": 404 is ``None``. The shape is a guess beyond that: a row object, a list of
    rows (one per output), or rows under a page key are all read, and rows of other ids ignored.
    """
    if answer.status == 404:
        return None
    body = _json(answer)
    if isinstance(body, Mapping) and (body.get("request_id") or body.get("id")):
        rows: list[Any] = [body]
    else:
        found = _rows_of(body)
        if found is None:
            raise _invalid(answer, "neither a history row nor a list of rows")
        rows = found[0]
    records = [r for r in (record_from_row(row, request_id) for row in rows if isinstance(row, Mapping)) if r]
    if request_id is not None:
        records = [r for r in records if r.request_id == request_id]
    merged = merge_by_request(records)
    return merged[0] if merged else None


def _has_more(paging: Mapping[str, Any], rows: int, per_page: int | None) -> bool:
    for container in (paging, paging.get("pagination"), paging.get("meta")):
        if not isinstance(container, Mapping):
            continue
        if isinstance(container.get("has_more"), bool):
            return bool(container["has_more"])
        if "next" in container:
            return bool(container["next"])
        page = finite_number(container.get("page")) or 1
        total_pages = finite_number(container.get("total_pages"))
        if total_pages is not None:
            return page < total_pages
        size = finite_number(container.get("per_page")) or per_page
        total = finite_number(container.get("total"))
        if total is not None and size:
            return page * size < total
    size = finite_number(paging.get("per_page")) or per_page
    return bool(size) and rows >= (size or 0)


def parse_history_page(answer: HttpAnswer, *, per_page: int | None = MAX_PER_PAGE) -> tuple[list[HistoryRecord], bool]:
    """One page of ``GET .../request-history``: its requests (rows merged per request) and whether
    another page exists.

    The page shape is not documented ([sdk]: "Paginated dictionary"): a bare list, or a dict with
    the rows under any of ``data``, ``results``, ``items``, ``rows``, ``records``, ``requests``,
    ``history`` (also one level deeper). "Has more" comes from ``has_more``, ``next``,
    ``total_pages`` or ``total`` (also under ``pagination``/``meta``), else from a full page
    (``per_page`` rows: the one asked for, unless the answer says its own).
    """
    body = _json(answer)
    found = _rows_of(body)
    if found is None:
        raise _invalid(answer, "no list of rows")
    rows, paging = found
    records = [r for r in (record_from_row(row) for row in rows if isinstance(row, Mapping)) if r]
    return merge_by_request(records), _has_more(paging, len(rows), per_page)
