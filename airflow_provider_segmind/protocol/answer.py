"""What came back from one HTTP call, transport-neutral, and how its headers and error body are read.

Both transports wrap a response in an :class:`HttpAnswer` (lower-cased headers, the body as bytes,
the arrival time) and hand it to the parsers in :mod:`.responses` and :mod:`.errors`. Reading a
rate-limit wait from the headers and the server's error text from the body is done once, here.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_provider_segmind.exceptions import SegmindInvalidResponseError
from airflow_provider_segmind.protocol.text import MAX_ERROR_TEXT, redact, snippet
from airflow_provider_segmind.protocol.vocabulary import RATE_LIMIT_RESET_HEADER


@dataclass(frozen=True)
class HttpAnswer:
    """What came back from one HTTP call, transport-neutral. Headers are lower-cased."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str = ""
    #: UNIX time the answer arrived; turns an absolute rate-limit reset time into a wait.
    received_at: float = field(default_factory=time.time)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON, or :class:`SegmindInvalidResponseError` if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise SegmindInvalidResponseError(
                f"Segmind answered HTTP {self.status} with a body that is not JSON "
                f"({self.content_type or 'no content type'}: {snippet(self.body)!r}). "
                "A proxy or an outage page is the usual cause; it is retried.",
                status_code=self.status,
            ) from None


def lower_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case header names (first value wins), the form :class:`HttpAnswer` expects."""
    out: dict[str, str] = {}
    for name, value in items:
        out.setdefault(name.lower(), value)
    return out


def error_text(answer: HttpAnswer) -> str | None:
    """The server's ``error`` text from a JSON error body (or a short snippet of anything else)."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return snippet(answer.body) or None
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                return redact(text)[:MAX_ERROR_TEXT]
    return None


def _seconds_until(raw: str, now: float) -> float | None:
    """Seconds from ``now`` to a timestamp given as epoch seconds/ms, ISO 8601 or an HTTP date."""
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if value > 1e12:  # epoch milliseconds
            value /= 1000.0
        # A small number is a delay in seconds (some gateways send that), a large one a timestamp.
        return max(0.0, value - now) if value > 1e9 else max(0.0, value)
    for parse in (_parse_iso, email.utils.parsedate_to_datetime):
        try:
            stamp = parse(raw)
        except (TypeError, ValueError, IndexError):
            continue
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return max(0.0, stamp.timestamp() - now)
    return None


def _parse_iso(raw: str) -> datetime:
    return datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` or Segmind's ``x-rate-limit-reset-at-utc``; ``None`` if absent.

    :param now: the current UNIX time; passed in so this stays a pure function.
    """
    for name in ("retry-after", RATE_LIMIT_RESET_HEADER):
        raw = headers.get(name)
        if raw:
            wait = _seconds_until(raw, now)
            if wait is not None:
                return wait
    return None
