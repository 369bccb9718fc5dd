"""The spend cap's ledger read: today's requests from Segmind's request history, cached briefly.

The query and the arithmetic are :mod:`airflow_provider_segmind.protocol.spend`; this module sends
the pages (through the hook's transport, so the key, proxy, answer cap and retries are the ones
every history call uses) and keeps the last read for :data:`~..protocol.spend.LEDGER_CACHE_SECONDS`
per account, so the tasks of one process (a mapped task under ``dag.test()``, a worker that runs
several) do not read the whole day again for every submit. The cache key holds a hash of the API
key, never the key.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from airflow_provider_segmind.exceptions import SegmindInvalidResponseError
from airflow_provider_segmind.protocol.history import HistoryRecord, history_list_url, parse_history_page
from airflow_provider_segmind.protocol.spend import LEDGER_CACHE_SECONDS, MAX_LEDGER_PAGES, ledger_query, today_records
from airflow_provider_segmind.protocol.vocabulary import Endpoint

if TYPE_CHECKING:
    from airflow_provider_segmind.hooks.segmind import SegmindHook

_lock = threading.Lock()
#: account key -> (read at, today's records)
_CACHE: dict[str, tuple[float, list[HistoryRecord]]] = {}


def ledger_key(hook: SegmindHook) -> str:
    """Which account's ledger (history URL, user filter and a hash of the key): the cache's key."""
    settings = hook.get_settings()
    digest = hashlib.sha256(settings.api_key.encode("utf-8")).hexdigest()[:16]
    return f"{settings.history_url}|{settings.history_user_id or ''}|{settings.history_user_email or ''}|{digest}"


def read_ledger(hook: SegmindHook, *, now: float | None = None, fresh: bool = False) -> list[HistoryRecord]:
    """Today's (UTC) requests of the account, merged per request id (``protocol.spend.today_records``).

    Reads every page of the history list for the days around today (newest first), at most
    :data:`~..protocol.spend.MAX_LEDGER_PAGES`; more raises :class:`SegmindInvalidResponseError`
    (the cap cannot know the day's spend). Errors of the history are the hook's typed errors.
    """
    moment = time.time() if now is None else now
    key = ledger_key(hook)
    with _lock:
        cached = _CACHE.get(key)
    if not fresh and cached is not None and 0 <= moment - cached[0] < LEDGER_CACHE_SECONDS:
        return today_records(cached[1], moment)
    settings = hook.get_settings()
    parse = functools.partial(parse_history_page, naive_zones=settings.history_naive_zones)
    records: list[HistoryRecord] = []
    for page in range(1, MAX_LEDGER_PAGES + 1):
        query = ledger_query(moment, page, user_id=settings.history_user_id, user_email=settings.history_user_email)
        url = f"{history_list_url(settings.history_url)}?{urlencode(query)}"
        rows, more = hook._call("GET", url, parse, endpoint=Endpoint.HISTORY)
        records.extend(rows)
        if not more:
            break
    else:
        raise SegmindInvalidResponseError(
            f"Segmind's request history lists more than {MAX_LEDGER_PAGES} pages of requests for the days "
            "around today: the spend cap cannot read the day's spend (MAX_LEDGER_PAGES)."
        )
    today = today_records(records, moment)
    with _lock:
        _CACHE[key] = (moment, today)
    return today


def forget_ledger() -> None:
    """Drop every cached read (tests; a process that must see the ledger as it is now)."""
    with _lock:
        _CACHE.clear()
