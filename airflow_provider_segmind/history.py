"""The request-history rules' old import path, kept working: they now live in the protocol package.

They moved to :mod:`.protocol.history` and :mod:`.protocol.history_search`, with the rest of
Segmind's API rules; ``from airflow_provider_segmind.history import ...`` (the hook, the operators,
user code) keeps working unchanged.
"""

from __future__ import annotations

from airflow_provider_segmind.protocol.history import (
    DEFAULT_HISTORY_URL,
    HISTORY_PATH,
    HISTORY_STATUSES,
    MAX_HISTORY_ANSWER_BYTES,
    MAX_PER_PAGE,
    MAX_REPR_BODY_CHARS,
    MAX_WINDOW_DAYS,
    NAIVE_TIMESTAMP_ZONES,
    SORT_FIELDS,
    HistoryRecord,
    default_history_url,
    history_answer_too_large,
    history_list_url,
    history_query,
    history_record_url,
    history_zone,
    merge_by_request,
    merge_records,
    normalize_history_url,
    parse_history_page,
    parse_history_record,
    parse_request_body,
    parse_timestamp,
    record_from_row,
    same_request_id,
    timestamp_candidates,
)
from airflow_provider_segmind.protocol.history_search import (
    CLOCK_SKEW_SECONDS,
    MAX_SEARCH_PAGES,
    HistorySearch,
    body_matches,
)

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "DEFAULT_HISTORY_URL",
    "HISTORY_PATH",
    "HISTORY_STATUSES",
    "MAX_HISTORY_ANSWER_BYTES",
    "MAX_PER_PAGE",
    "MAX_REPR_BODY_CHARS",
    "MAX_SEARCH_PAGES",
    "MAX_WINDOW_DAYS",
    "NAIVE_TIMESTAMP_ZONES",
    "SORT_FIELDS",
    "HistoryRecord",
    "HistorySearch",
    "body_matches",
    "default_history_url",
    "history_answer_too_large",
    "history_list_url",
    "history_query",
    "history_record_url",
    "history_zone",
    "merge_by_request",
    "merge_records",
    "normalize_history_url",
    "parse_history_page",
    "parse_history_record",
    "parse_request_body",
    "parse_timestamp",
    "record_from_row",
    "same_request_id",
    "timestamp_candidates",
]
