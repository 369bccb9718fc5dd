"""Finding "the request we sent" in Segmind's request history: body matching and the page-by-page search.

When a billed v2 submit's answer is lost, the hook searches the history (the rules of its pages and
rows are in :mod:`.history`) for a request of the same model, created in the attempt's window,
whose recorded body is the one sent; found, the job is re-attached instead of paid for twice.
Sources as in :mod:`.history`: ``segmind==1.3.0`` ``segmind/generations.py`` ([sdk]) and
``segmind-api.md`` ("Added 2026-11-30"). Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from airflow_provider_segmind.protocol.history import MAX_PER_PAGE, HistoryRecord, history_query, merge_records
from airflow_provider_segmind.protocol.image_input import same_presigned_object

#: How far our clock and Segmind's may disagree: a record a little "before" the attempt still counts.
CLOCK_SKEW_SECONDS: Final = 60.0
#: How many pages of 100 a search reads at most: an attempt is minutes old, so its request is near
#: the top of a newest-first list; a bound keeps a busy account from turning one search into a crawl.
MAX_SEARCH_PAGES: Final = 5

_NUMERIC_TEXT: Final = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")


def _as_number(value: Any) -> float | None:
    """A number, or a string that is one: segmind-api.md ("Added 2026-11-30") notes that Segmind
    sends ``seed`` as a string in places, so a recorded body may too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value):
        return float(value)
    return None


def _same(sent: Any, recorded: Any) -> bool:
    if isinstance(sent, Mapping):
        return isinstance(recorded, Mapping) and _covers(sent, recorded)
    if isinstance(sent, (list, tuple)):
        return (
            isinstance(recorded, (list, tuple))
            and len(sent) == len(recorded)
            and all(_same(a, b) for a, b in zip(sent, recorded, strict=True))
        )
    if isinstance(sent, bool) or isinstance(recorded, bool):
        return sent is recorded or (isinstance(recorded, str) and str(sent).lower() == recorded.lower())
    if isinstance(sent, (int, float)) or isinstance(recorded, (int, float)):
        a, b = _as_number(sent), _as_number(recorded)
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(sent, str) and isinstance(recorded, str) and sent != recorded:
        # An S3 input sent as a presigned URL is signed anew by every try: the same object is the same input.
        return same_presigned_object(sent, recorded)
    return bool(sent == recorded)


def _covers(sent: Mapping[str, Any], recorded: Mapping[str, Any]) -> bool:
    for key, value in sent.items():
        if key not in recorded:
            if value is None:
                continue  # a null we sent may simply not be stored
            return False
        if value is None:
            if recorded[key] is not None:
                return False
            continue
        if not _same(value, recorded[key]):
            return False
    return True


def body_matches(sent: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> bool:
    """Whether a history row's ``request_body`` is what we sent.

    Tolerant of the server adding keys (defaults it filled in): every key we sent must be there and
    equal after JSON normalisation (numbers numerically, also against numeric strings; strings
    exactly, except two presigned URLs of the same object, which a retry signs anew; nested objects
    by the same rule). A row without a body (older servers, or a record
    not landed yet [sdk]) never matches.
    """
    if recorded is None:
        return False
    plain = json.loads(json.dumps(dict(sent), default=str))
    return _covers(plain, recorded)


# --------------------------------------------------------------------------------------------
# Searching for a submit whose answer was lost
# --------------------------------------------------------------------------------------------


@dataclass
class HistorySearch:
    """The rules of one search for "the request we sent", shared by the sync and async hook paths.

    The transport asks :meth:`query` for the next page, hands each page to :meth:`take` (which says
    whether another page is worth reading) and finally asks :meth:`best`. A request matches when:

    - its model is ``model``, ignoring case (the server's filter is a substring [sdk], so
      ``flux-schnell`` also lists ``flux-schnell-lora``); a row without a model name is accepted,
      the filter already applied. A server whose ``model_name`` is not the slug would make every
      search miss: that costs a billed resubmit (the behaviour without history), never a wrong
      re-attach;
    - its ``request_body`` matches ``body`` (:func:`body_matches`);
    - it was created at or after ``since`` and at or before ``until``, each widened by the clock
      skew, or its time is unknown. A time without a zone may mean several instants
      (:attr:`~.history.HistoryRecord.created_candidates`): one of them in the window is enough.

    The newest match wins; the record returned has as ``created_at`` its reading in the window.
    ``user_id``/``user_email`` (one or none) are sent as the list's filters, so a team account's
    search sees only this connection's user (:func:`~.history.history_query`).
    """

    model: str
    body: Mapping[str, Any]
    since: float
    until: float
    max_pages: int = MAX_SEARCH_PAGES
    per_page: int = MAX_PER_PAGE
    page: int = 0
    seen: dict[str, HistoryRecord] | None = None
    user_id: str | None = None
    user_email: str | None = None

    def query(self) -> dict[str, str]:
        """The query of the next page (and counts it)."""
        self.page += 1
        return history_query(
            model=self.model,
            since=self.since - CLOCK_SKEW_SECONDS,
            until=self.until + CLOCK_SKEW_SECONDS,
            page=self.page,
            per_page=self.per_page,
            user_id=self.user_id,
            user_email=self.user_email,
        )

    def take(self, records: Iterable[HistoryRecord], more: bool) -> bool:
        """Remember a page's requests; ``True`` if the next page should be read too.

        Rows of one request may straddle pages (one row per output [sdk]), so records are merged
        across pages. The search stops after ``max_pages``, at the last page, or at a page whose
        dated requests are all older than the window (the list is newest first).
        """
        seen = self.seen if self.seen is not None else {}
        self.seen = seen
        cutoff = self.since - CLOCK_SKEW_SECONDS
        dated_recent = dated = 0
        for record in records:
            times = _times(record)
            if times:
                dated += 1
                dated_recent += max(times) >= cutoff
            known = seen.get(record.request_id)
            seen[record.request_id] = record if known is None else merge_records(known, record)
        all_older = dated > 0 and dated_recent == 0
        return more and not all_older and self.page < self.max_pages

    def _in_window(self, record: HistoryRecord) -> float | None:
        """The first reading of the record's creation time inside the window (``nan``: undated)."""
        times = _times(record)
        if not times:
            return math.nan
        low, high = self.since - CLOCK_SKEW_SECONDS, self.until + CLOCK_SKEW_SECONDS
        return next((t for t in times if low <= t <= high), None)

    def matches(self, record: HistoryRecord) -> bool:
        if record.model_name is not None and record.model_name.casefold() != self.model.casefold():
            return False
        if self._in_window(record) is None:
            return False
        return body_matches(self.body, record.request_body)

    def best(self) -> HistoryRecord | None:
        """The newest matching request (dated ones first; among undated, the server's first), with
        its ``created_at`` read in the window."""
        chosen: HistoryRecord | None = None
        for record in (self.seen or {}).values():
            if not self.matches(record):
                continue
            when = self._in_window(record)
            if when is not None and not math.isnan(when) and when != record.created_at:
                record = replace(record, created_at=when)
            if chosen is None or (
                record.created_at is not None and (chosen.created_at is None or record.created_at > chosen.created_at)
            ):
                chosen = record
        return chosen


def _times(record: HistoryRecord) -> tuple[float, ...]:
    """Every instant the record's creation time may mean (older records have only ``created_at``)."""
    if record.created_candidates:
        return record.created_candidates
    return () if record.created_at is None else (record.created_at,)
