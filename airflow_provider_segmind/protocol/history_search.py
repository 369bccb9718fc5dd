"""Finding "the request we sent" in Segmind's request history: body matching and the page-by-page search.

When a billed v2 submit's answer is lost, the hook searches the history (the rules of its pages and
rows are in :mod:`.history`) for requests of the same model, created within the attempt's own send
window, whose recorded body is the one sent; the operator then takes one only if exactly one such
request is unclaimed (``operators/_claims.py``). Sources as in :mod:`.history`: the official SDK
``segmind==1.3.0``, ``segmind/generations.py`` ([sdk]). Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from airflow_provider_segmind.protocol.history import MAX_PER_PAGE, HistoryRecord, history_query, merge_records
from airflow_provider_segmind.protocol.image_input import same_presigned_object

#: How far our clock and Segmind's may disagree: a record a little outside the send window still counts.
#: Small on purpose: a wider allowance admits a twin's request sent seconds before ours (issue 22).
CLOCK_SKEW_SECONDS: Final = 10.0
#: The list's ``from_date``/``to_date`` carry no zone [sdk], so the date filter is padded a day each
#: side and the window is applied here, on the client.
DATE_PAD_SECONDS: Final = 86400.0
#: How many pages of 100 a search reads at most: an attempt is minutes old, so its request is near
#: the top of a newest-first list; a bound keeps a busy account from turning one search into a crawl.
MAX_SEARCH_PAGES: Final = 5

_NUMERIC_TEXT: Final = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*")


def _as_number(value: Any) -> float | None:
    """A number, or a string that is one: a recorded body may keep numbers as text (the SDK's
    ``request_body`` is "the inputs as sent", whatever their JSON types were)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value):
        return float(value)
    return None


class Match(enum.Enum):
    """How a history row's ``request_body`` compares with what we sent."""

    #: A key both have differs: another request.
    NO = "no"
    #: Every key the row kept is ours, but it lacks (or replaced) some we sent: the history may keep
    #: only a model's declared parameters (SD3 Large's page lists no ``seed``) and never keeps input
    #: media ("Segmind does not store any input images ...", docs.segmind.com). Cannot prove the
    #: request is ours; a candidate under the ambiguity rule.
    PARTIAL = "partial"
    #: Every key we sent is in the row and equal.
    EXACT = "exact"


#: Values a row may hold in place of input media it did not store.
_MEDIA_PREFIXES: Final = ("http://", "https://", "data:")
_LONG_TEXT: Final = 1024


def _is_media(value: Any) -> bool:
    """An input image as we send it: a URL, a data URL, or a long (base64) text."""
    return isinstance(value, str) and (value.startswith(_MEDIA_PREFIXES) or len(value) > _LONG_TEXT)


def _same(sent: Any, recorded: Any) -> Match:
    if isinstance(sent, Mapping):
        return _covers(sent, recorded) if isinstance(recorded, Mapping) else Match.NO
    if isinstance(sent, (list, tuple)):
        if sent and isinstance(recorded, str) and all(_is_media(item) for item in sent):
            # A list of input media (s3:// inputs resolved item by item) the row replaced by a placeholder.
            return Match.NO if recorded.startswith(_MEDIA_PREFIXES) else Match.PARTIAL
        if not isinstance(recorded, (list, tuple)) or len(sent) != len(recorded):
            return Match.NO
        return _weakest(_same(a, b) for a, b in zip(sent, recorded, strict=True))
    if isinstance(sent, bool) or isinstance(recorded, bool):
        same = sent is recorded or (isinstance(recorded, str) and str(sent).lower() == recorded.lower())
        return Match.EXACT if same else Match.NO
    if isinstance(sent, (int, float)) or isinstance(recorded, (int, float)):
        a, b = _as_number(sent), _as_number(recorded)
        same = a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
        return Match.EXACT if same else Match.NO
    if isinstance(sent, str) and isinstance(recorded, str) and sent != recorded:
        # An S3 input sent as a presigned URL is signed anew by every try: the same object is the same input.
        if same_presigned_object(sent, recorded):
            return Match.EXACT
        # Media the history did not store may be replaced by a placeholder: neither proof nor disproof.
        if _is_media(sent) and not recorded.startswith(_MEDIA_PREFIXES):
            return Match.PARTIAL
        return Match.NO
    return Match.EXACT if sent == recorded else Match.NO


def _weakest(matches: Iterable[Match]) -> Match:
    result = Match.EXACT
    for match in matches:
        if match is Match.NO:
            return Match.NO
        if match is Match.PARTIAL:
            result = Match.PARTIAL
    return result


def _covers(sent: Mapping[str, Any], recorded: Mapping[str, Any]) -> Match:
    result = Match.EXACT
    proven = False
    for key, value in sent.items():
        if key not in recorded:
            if value is not None:
                result = Match.PARTIAL  # not kept: proves nothing either way
            continue
        if value is None:
            if recorded[key] is not None:
                return Match.NO
            continue
        match = _same(value, recorded[key])
        if match is Match.NO:
            return Match.NO
        proven = proven or match is Match.EXACT
        if match is Match.PARTIAL:
            result = Match.PARTIAL
    # A row that kept none of what we sent proves nothing at all: not a candidate.
    return result if proven or not sent else Match.NO


def body_match(sent: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> Match:
    """How a history row's ``request_body`` compares with what we sent (see :class:`Match`).

    Tolerant of the server adding keys (defaults it filled in) and of keys it did not keep; every
    key both have must be equal after JSON normalisation (numbers numerically, also against numeric
    strings; strings exactly, except two presigned URLs of the same object, which a retry signs
    anew, and media the row replaced by a placeholder; nested objects by the same rule). A row
    without a body (a record not landed yet [sdk]) is :attr:`Match.NO`, and so is one that kept
    none of our keys.
    """
    if recorded is None:
        return Match.NO
    plain = json.loads(json.dumps(dict(sent), default=str))
    return _covers(plain, recorded)


def body_matches(sent: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> bool:
    """Whether a history row's ``request_body`` is exactly what we sent (every key kept and equal)."""
    return body_match(sent, recorded) is Match.EXACT


# --------------------------------------------------------------------------------------------
# Searching for a submit whose answer was lost
# --------------------------------------------------------------------------------------------


def created_instants(record: HistoryRecord) -> tuple[float, ...]:
    """Every plausible instant of a row's creation: one for a zoned or epoch time, one per plausible
    zone for a naive one (the history's zone is not documented), none for a row without a readable time."""
    if record.created_candidates:
        return record.created_candidates
    return () if record.created_at is None else (record.created_at,)


@dataclass
class HistorySearch:
    """The rules of one search for "the request we sent", shared by the sync and async hook paths.

    The transport asks :meth:`query` for the next page, hands each page to :meth:`take` (which says
    whether another page is worth reading) and finally asks :meth:`candidates`. A request is a
    candidate when:

    - its model is ``model``, ignoring case (the server's filter is a substring [sdk], so
      ``flux-schnell`` also lists ``flux-schnell-lora``); a row without a model name is accepted,
      the filter already applied;
    - its ``request_body`` matches ``body`` (:func:`body_match`: exact, or partial where the row
      did not keep a key);
    - it is **dated** and was created within ``since``..``until``, the attempt's own send window,
      each widened by :data:`CLOCK_SKEW_SECONDS`. A row whose time cannot be read is never a
      candidate: without a date, a request of hours ago with the same body would pass for ours.

    Which candidate (if any) is ours is the caller's decision (the claims and the ambiguity rule
    of ``operators/_history.py``): a search never guesses. Each candidate's ``created_at`` is its
    reading in the window. ``user_id``/``user_email`` (one or none) are sent as the list's filters,
    so a team account's search sees only this connection's user (:func:`~.history.history_query`).
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
        """The query of the next page (and counts it); the dates padded a day each side."""
        self.page += 1
        return history_query(
            model=self.model,
            since=self.since - CLOCK_SKEW_SECONDS - DATE_PAD_SECONDS,
            until=self.until + CLOCK_SKEW_SECONDS + DATE_PAD_SECONDS,
            page=self.page,
            per_page=self.per_page,
            user_id=self.user_id,
            user_email=self.user_email,
        )

    def take(self, records: Iterable[HistoryRecord], more: bool) -> bool:
        """Remember a page's requests; ``True`` if the next page should be read too.

        Rows of one request may straddle pages (one row per output [sdk]), so records are merged
        across pages. The search stops after ``max_pages``, at the last page, or at a page whose
        dated requests are all older than the window under every reading of their time (the list
        is newest first).
        """
        seen = self.seen if self.seen is not None else {}
        self.seen = seen
        cutoff = self.since - CLOCK_SKEW_SECONDS
        dated_recent = dated = 0
        for record in records:
            instants = created_instants(record)
            if instants:
                dated += 1
                dated_recent += max(instants) >= cutoff
            known = seen.get(record.request_id)
            seen[record.request_id] = record if known is None else merge_records(known, record)
        all_older = dated > 0 and dated_recent == 0
        return more and not all_older and self.page < self.max_pages

    def in_window(self, record: HistoryRecord) -> bool:
        """Whether the request is dated and was created within the send window (under some reading)."""
        low, high = self.since - CLOCK_SKEW_SECONDS, self.until + CLOCK_SKEW_SECONDS
        return any(low <= instant <= high for instant in created_instants(record))

    def match(self, record: HistoryRecord) -> Match:
        """How the request compares with ours (:attr:`Match.NO` outside the window or of another model)."""
        if record.model_name is not None and record.model_name.casefold() != self.model.casefold():
            return Match.NO
        if not self.in_window(record):
            return Match.NO
        return body_match(self.body, record.request_body)

    def matches(self, record: HistoryRecord) -> bool:
        """Whether the request is a candidate (exact or partial match, in the window)."""
        return self.match(record) is not Match.NO

    def candidates(self) -> list[HistoryRecord]:
        """Every candidate, newest first, each with ``created_at`` set to its reading in the window."""
        low, high = self.since - CLOCK_SKEW_SECONDS, self.until + CLOCK_SKEW_SECONDS
        found = [
            replace(record, created_at=next(t for t in created_instants(record) if low <= t <= high))
            for record in (self.seen or {}).values()
            if self.matches(record)
        ]
        found.sort(key=lambda record: record.created_at or 0.0, reverse=True)
        return found

    def best(self) -> HistoryRecord | None:
        """The newest candidate, or ``None`` (callers that must not guess use :meth:`candidates`)."""
        found = self.candidates()
        return found[0] if found else None
