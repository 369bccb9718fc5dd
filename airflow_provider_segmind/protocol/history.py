"""Segmind's request-history API, as pure functions: its URLs, the list query, rows as records, answers.

Why it matters: a v2 submit is billed, has no idempotency key and cannot be cancelled. When its
answer is lost (a read timeout, a reset, a gateway 5xx after the upstream queued the job), or its v2
record has expired (404 after the 1 hour retention), the request history is the only place that
still knows the job. The provider looks there before it pays for a second submit.

Sources. Everything here comes from the official SDK, ``segmind==1.3.0``,
``segmind/generations.py`` (``Generations.history`` and ``Generations.get``; quoted as [sdk]) and
the SDK's tests (``tests/test_generations.py``). The API is secondary and thinly documented: the page
shape, the timestamp field names and their format are NOT documented, so every field is optional
and each parser accepts several shapes. Nothing here does I/O or reads a clock; the hook
(:mod:`airflow_provider_segmind.hooks.segmind`) sends what this module builds. How a lost submit is
found among the records (body matching, the page-by-page search) is :mod:`.history_search`.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
#: The zones a naive timestamp (no offset, no ``Z``) is read in when the connection names none
#: (extra ``history_timezone``). [sdk] says only "timestamps", with no format and no zone, so the
#: zone of a naive time is unknown: UTC (the usual server default) or India's +05:30 (an assumption:
#: Segmind is based in India, and a server may write its local time). The first zone gives
#: :attr:`HistoryRecord.created_at`; :attr:`HistoryRecord.created_candidates` holds every reading.
NAIVE_TIMESTAMP_ZONES: Final = ("UTC", "+05:30")
#: The most one history answer may be (decoded bytes). [sdk] caps a page at 100 rows ("Rows per
#: page, 1-100") but not a row's size: a ``request_body`` is "the inputs as sent", which may hold
#: base64 images. 100 rows of a few tens of KiB is far below this; more is refused, not buffered.
MAX_HISTORY_ANSWER_BYTES: Final = 8 * 1024 * 1024
#: The longest ``request_body`` string that is read as a Python literal (see :func:`parse_request_body`).
MAX_REPR_BODY_CHARS: Final = 256 * 1024
#: A UTC offset as ``+05:30``, ``+0530`` or ``+05`` (also ``-``).
_OFFSET: Final = re.compile(r"([+-])(\d{2}):?(\d{2})?")
#: An id made of hex digits and dashes only (a UUID with or without its dashes).
_HEX_ID: Final = re.compile(r"[0-9A-Fa-f-]+")
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
    user_id: str | None = None,
    user_email: str | None = None,
) -> dict[str, str]:
    """Query parameters for the list call, newest first.

    ``since``/``until`` are epoch seconds; they become UTC ``from_date``/``to_date``
    (YYYY-MM-DD [sdk]). The window is clamped to the newest 31 days ([sdk]: at most 31 days), so an
    old ``since`` narrows the search instead of failing it. Without ``until`` no ``to_date`` is
    sent (the server's default is its "today" [sdk]) and the window is not clamped.
    ``model_name`` is a substring filter on the server [sdk]; callers compare it exactly.
    ``user_id``/``user_email`` narrow a team account's history to one member ([sdk]: "Inside a team
    this may be any member; otherwise only your own"; "Pass one or the other"): one of them, or none.
    """
    if user_id and user_email:
        raise ValueError("pass user_id or user_email, not both (the history takes one or the other)")
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
    if user_id:
        query["user_id"] = user_id
    if user_email:
        query["user_email"] = user_email
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
    ``created_candidates`` is every instant the row's creation time may mean: one for a time with a
    zone (or epoch seconds), one per zone for a naive time (:data:`NAIVE_TIMESTAMP_ZONES`, or the
    connection's ``history_timezone``); ``created_at`` is the first of them.
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
    created_candidates: tuple[float, ...] = ()

    @property
    def output_url(self) -> str | None:
        """The first output, if any."""
        return self.output_urls[0] if self.output_urls else None


@functools.lru_cache(maxsize=64)
def history_zone(name: str) -> tzinfo:
    """A zone for naive history timestamps: ``UTC``/``Z``, an offset (``+05:30``, ``+0530``, ``-08``)
    or an IANA name (``Asia/Kolkata``, read from the system's zone database or ``tzdata``).

    ``ValueError`` for anything else.
    """
    text = name.strip()
    problem = f"{name!r} is neither an IANA time zone name (e.g. Asia/Kolkata) nor a UTC offset (e.g. +05:30)"
    if text.upper() in ("UTC", "Z", "GMT"):
        return UTC
    offset = _OFFSET.fullmatch(text)
    if offset is not None:
        sign, hours, minutes = offset.groups()
        if int(hours) > 23 or int(minutes or 0) > 59:
            raise ValueError(f"{problem}: the offset is out of range")
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of the database, e.g. "Asia"
        raise ValueError(problem) from None


def _moment(text: str) -> datetime | None:
    """ISO 8601 (with or without a zone), else RFC 1123 / RFC 2822 (``Mon, 30 Nov 2026 12:00:00 GMT``,
    the HTTP date format); ``None`` if neither."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        pass
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def timestamp_candidates(value: Any, naive_zones: Sequence[str] = NAIVE_TIMESTAMP_ZONES) -> tuple[float, ...]:
    """Every epoch instant a history timestamp may mean, in order; ``()`` if it cannot be read.

    The format is not documented ([sdk]: "timestamps"), so all of these are read: epoch seconds or
    milliseconds (numbers or digit strings; above 1e11 is milliseconds), ISO 8601 with a zone or
    ``Z``, RFC 1123 (``Mon, 30 Nov 2026 12:00:00 GMT``). Those name one instant. A naive time (ISO
    without a zone) names one instant per zone of ``naive_zones`` (:func:`history_zone` forms),
    duplicates dropped.
    """
    number = finite_number(value)
    if number is not None:
        return (number / 1000.0 if number > 1e11 else number,)
    if not isinstance(value, str) or not value.strip():
        return ()
    moment = _moment(value.strip())
    if moment is None:
        return ()
    try:
        if moment.tzinfo is not None:
            return (moment.timestamp(),)
        return tuple(dict.fromkeys(moment.replace(tzinfo=history_zone(zone)).timestamp() for zone in naive_zones))
    except OverflowError:
        return ()


def parse_timestamp(value: Any) -> float | None:
    """Epoch seconds from a history timestamp (:func:`timestamp_candidates`); a naive time is read as
    UTC. Anything unreadable is ``None``."""
    candidates = timestamp_candidates(value, ("UTC",))
    return candidates[0] if candidates else None


def request_id_key(request_id: str) -> str:
    """One spelling of a request id, so two spellings of one request compare equal.

    The history may list an id in another spelling than the v2 API returned it (a UUID without its
    dashes, or in upper case): an id made only of hex digits and dashes becomes lowercase without
    dashes. Any other id stays as it is, so ``req-1`` never equals ``req1``.
    """
    text = request_id.strip()
    plain = text.replace("-", "").lower()
    return plain if plain and _HEX_ID.fullmatch(text) else text


def same_request_id(a: str, b: str) -> bool:
    """Whether two request ids name the same request (:func:`request_id_key`)."""
    if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
        return False
    key = request_id_key(a)
    return bool(key.strip("-")) and key == request_id_key(b)


def v2_request_id(history_id: str) -> str:
    """The id to ask the v2 API about for a request the history lists as ``history_id``.

    v2 answers with dashed UUIDs (the submit's ``request_id``); a history that lists 32 hex digits
    names the same UUID, which v2 is asked about in its own, dashed spelling. Any other id as is.
    """
    text = history_id.strip()
    if re.fullmatch(r"[0-9a-fA-F]{32}", text):
        return str(uuid.UUID(hex=text))
    return text


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


def _plain(value: Any) -> Any:
    """A Python literal as JSON data (tuples as lists); ``TypeError`` for what JSON cannot hold."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TypeError("not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _plain(item) for key, item in value.items()}
    raise TypeError(f"{type(value).__name__} is not JSON data")


def parse_request_body(value: Any) -> dict[str, Any] | None:
    """A row's ``request_body`` as a dict, or ``None``.

    [sdk] says only "the inputs as sent", not in what form, so three are read: an object, a JSON
    string, and a Python ``repr`` string (``"{'prompt': 'fox', 'seed': 42}"``, what a server that
    stores ``str(dict)`` answers). A repr is read with :func:`ast.literal_eval` (literals only, never
    code), at most :data:`MAX_REPR_BODY_CHARS` characters, and only if it is a dict of JSON data.
    """
    if isinstance(value, Mapping):
        return dict(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping):
        return dict(decoded)
    if not text.startswith("{") or len(text) > MAX_REPR_BODY_CHARS:
        return None
    try:
        literal = _plain(ast.literal_eval(text))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return literal if isinstance(literal, dict) else None


def _error(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(value, default=str)


def record_from_row(
    row: Mapping[str, Any],
    request_id: str | None = None,
    *,
    naive_zones: Sequence[str] = NAIVE_TIMESTAMP_ZONES,
) -> HistoryRecord | None:
    """One history row as a record (``None`` for a row without a request id).

    The creation time is the first of :data:`_CREATED_KEYS` that can be read
    (:func:`timestamp_candidates`, naive times in ``naive_zones``).
    """
    rid = row.get("request_id", row.get("id", request_id))
    if not isinstance(rid, str) or not rid:
        return None
    candidates: tuple[float, ...] = next(
        (
            found
            for key in _CREATED_KEYS
            if row.get(key) is not None and (found := timestamp_candidates(row[key], naive_zones))
        ),
        (),
    )
    model = row.get("model_name")
    return HistoryRecord(
        request_id=rid,
        model_name=model if isinstance(model, str) and model else None,
        status=_status(row),
        output_urls=tuple(dict.fromkeys(_urls(row.get("generation_url")))),
        request_body=parse_request_body(row.get("request_body")),
        error=_error(row.get("error")),
        credits=finite_number(row.get("credits_deduction")),
        created_at=candidates[0] if candidates else None,
        latency_ms=finite_number(row.get("latency_ms")),
        created_candidates=candidates,
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
    first known value of every other field (the cost is the request's, not summed [sdk]). The
    creation time, and its candidates, are the earliest row's."""
    status = first.status if _STATUS_RANK[first.status] >= _STATUS_RANK[second.status] else second.status
    dated = [record for record in (first, second) if record.created_at is not None]
    earliest = min(dated, key=lambda record: record.created_at or 0.0) if dated else None
    return HistoryRecord(
        request_id=first.request_id,
        model_name=first.model_name or second.model_name,
        status=status,
        output_urls=tuple(dict.fromkeys((*first.output_urls, *second.output_urls))),
        request_body=first.request_body if first.request_body is not None else second.request_body,
        error=first.error or second.error,
        credits=first.credits if first.credits is not None else second.credits,
        created_at=earliest.created_at if earliest is not None else None,
        latency_ms=first.latency_ms if first.latency_ms is not None else second.latency_ms,
        created_candidates=earliest.created_candidates if earliest is not None else (),
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


def parse_history_record(
    answer: HttpAnswer,
    request_id: str | None = None,
    *,
    naive_zones: Sequence[str] = NAIVE_TIMESTAMP_ZONES,
) -> HistoryRecord | None:
    """The answer of ``GET .../request-history/{request_id}``: the record, or ``None`` when not found.

    [sdk] ``Generations.get``: "the same fields as a history row", and another account's id is
    "a not-found error": 404 is ``None``. The shape is a guess beyond that: a row object, a list of
    rows (one per output), or rows under a page key are all read, and rows of other ids ignored.
    A row whose id is ``request_id`` in another spelling (:func:`same_request_id`: a UUID without
    dashes) is this request, and the record carries ``request_id`` as asked.
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
    records = [
        r
        for r in (record_from_row(row, request_id, naive_zones=naive_zones) for row in rows if isinstance(row, Mapping))
        if r
    ]
    if request_id is not None:
        records = [replace(r, request_id=request_id) for r in records if same_request_id(r.request_id, request_id)]
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


def parse_history_page(
    answer: HttpAnswer,
    *,
    per_page: int | None = MAX_PER_PAGE,
    naive_zones: Sequence[str] = NAIVE_TIMESTAMP_ZONES,
) -> tuple[list[HistoryRecord], bool]:
    """One page of ``GET .../request-history``: its requests (rows merged per request) and whether
    another page exists.

    The page shape is not documented ([sdk]: "Paginated dictionary"): a bare list, or a dict with
    the rows under any of ``data``, ``results``, ``items``, ``rows``, ``records``, ``requests``,
    ``history`` (also one level deeper). "Has more" comes from ``has_more``, ``next``,
    ``total_pages`` or ``total`` (also under ``pagination``/``meta``), else from a full page
    (``per_page`` rows: the one asked for, unless the answer says its own). Naive timestamps are
    read in ``naive_zones`` (:func:`timestamp_candidates`).
    """
    body = _json(answer)
    found = _rows_of(body)
    if found is None:
        raise _invalid(answer, "no list of rows")
    rows, paging = found
    records = [
        r for r in (record_from_row(row, naive_zones=naive_zones) for row in rows if isinstance(row, Mapping)) if r
    ]
    return merge_by_request(records), _has_more(paging, len(rows), per_page)


def history_answer_too_large(
    status: int, url: str, limit: int = MAX_HISTORY_ANSWER_BYTES
) -> SegmindInvalidResponseError:
    """The error for a history answer over ``limit`` bytes (the transports stop reading there).

    Not retried: the same page would be as large again.
    """
    where = urlsplit(url)
    error = SegmindInvalidResponseError(
        sentences(
            f"Segmind's request history at {where.scheme}://{where.netloc}{where.path} answered HTTP {status} "
            f"with more than {limit:,} bytes (the most one history answer may be, MAX_HISTORY_ANSWER_BYTES)",
            "Reading stopped there; a proxy page or a wrong history_url is the usual cause",
        ),
        status_code=status,
    )
    error.transient = False
    return error
