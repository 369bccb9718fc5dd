"""The triggerer's half of :class:`~airflow_provider_segmind.hooks.segmind.SegmindHook`: resolving the
connection without sync DB access and calling Segmind with ``aiohttp`` on the event loop's shared
session, retried by ``tenacity``'s asyncio flavour. What these calls reuse between polls and
between triggers is listed in one table, in :mod:`airflow_provider_segmind.hooks._cache`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlencode

import tenacity
from airflow.sdk import BaseHook

from airflow_provider_segmind.hooks import _budget, _cache
from airflow_provider_segmind.hooks._settings import SegmindConnectionSettings, plain_settings
from airflow_provider_segmind.hooks._transport import aiohttp_error, retrying_kwargs
from airflow_provider_segmind.protocol.answer import HttpAnswer, lower_headers
from airflow_provider_segmind.protocol.history import (
    MAX_HISTORY_ANSWER_BYTES,
    HistoryRecord,
    history_answer_too_large,
    history_list_url,
    history_record_url,
    parse_history_page,
    parse_history_record,
)
from airflow_provider_segmind.protocol.history_search import HistorySearch
from airflow_provider_segmind.protocol.responses import (
    CreditBalance,
    JobResult,
    JobStatusResponse,
    parse_credit_balance,
    parse_result,
    parse_status,
)
from airflow_provider_segmind.protocol.retry import RetryPolicy
from airflow_provider_segmind.protocol.urls import auth_headers, credits_url, result_url, status_url
from airflow_provider_segmind.protocol.vocabulary import Endpoint
from airflow_provider_segmind.utils import metrics

if TYPE_CHECKING:
    import aiohttp
    from multidict import CIMultiDictProxy

T = TypeVar("T")

#: Answers that mean the key is wrong or was revoked: the cached connection is dropped at once.
_AUTH_FAILURE_STATUSES: Final = frozenset({401, 403})


async def _aread_capped(response: aiohttp.ClientResponse, url: str, limit: int) -> bytes:
    """An answer's body, decoded; :func:`history_answer_too_large` past ``limit`` bytes (the rest is
    not read: leaving the response unread closes its connection)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise history_answer_too_large(response.status, url, limit)
        chunks.append(chunk)
    return b"".join(chunks)


class SegmindAsyncCalls(BaseHook):
    """The async methods of :class:`~airflow_provider_segmind.hooks.segmind.SegmindHook` (its base
    class; use the hook itself). Sync and async calls share the hook's settings and conn id."""

    segmind_conn_id: str
    _retry_policy: RetryPolicy | None
    _settings: SegmindConnectionSettings | None

    # ---------------------------------------------------------------- settings (async)

    async def areload_settings(self) -> SegmindConnectionSettings:
        """Read the connection again, bypassing every cache, e.g. after a 401/403 (key rotation).

        The loop's shared entry is replaced by what was read, so the loop's other triggers on this
        connection pick the new key up too.
        """
        _cache._SETTINGS_CACHE.invalidate(self.segmind_conn_id)
        self._settings = None
        return await self.aget_settings(fresh=True)

    async def aget_settings(self, *, fresh: bool = False) -> SegmindConnectionSettings:
        """Resolve the connection without sync DB access, for the triggerer's event loop.

        Cached for the hook's life, and shared with the loop's other hooks for up to a minute
        (:class:`~._cache._LoopSettingsCache`: the lookup costs more CPU than a poll, and every trigger
        makes one), dropped early when a call answers 401/403. ``fresh``: skip the shared cache
        (read the connection itself) and store what was read.
        """
        if self._settings is None:
            policy = self._retry_policy
            shared = None if fresh else _cache._SETTINGS_CACHE.get(self.segmind_conn_id, policy)
            if shared is not None:
                settings = shared
            else:
                from airflow.providers.common.compat.connection import get_async_connection

                conn = await get_async_connection(self.segmind_conn_id, hook=self)
                settings = SegmindConnectionSettings.from_connection(conn, retry_policy=policy)
                plain = settings if policy is None else plain_settings(conn)
                if plain is not None:
                    _cache._SETTINGS_CACHE.put(self.segmind_conn_id, plain)
            self._settings = settings
        return self._settings

    @contextlib.asynccontextmanager
    async def shared_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The event loop's shared ``aiohttp`` session (see :class:`~._cache._LoopSessionPool`); always released."""
        settings = await self.aget_settings()
        async with _cache._SHARED_SESSIONS.acquire(settings) as session:
            yield session

    @staticmethod
    def _aio_request_parts(settings: SegmindConnectionSettings) -> tuple[CIMultiDictProxy[str], aiohttp.ClientTimeout]:
        """Headers and timeout for an async call: about 1 us to build, so built per call (the
        costly part, the proxy decision, is made once per settings object: ``base_url_proxy``).

        The headers are a read-only multidict (aiohttp merges them without converting); they hold
        the key, so they live only for the call, never in a repr.
        """
        import aiohttp
        from multidict import CIMultiDict, CIMultiDictProxy

        headers = CIMultiDictProxy(CIMultiDict(auth_headers(settings.api_key)))
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        return headers, timeout

    async def _acall(
        self,
        session: aiohttp.ClientSession,
        url: str,
        parse: Callable[[HttpAnswer], T],
        *,
        endpoint: Endpoint,
        retry: bool,
        other_host: bool = False,
    ) -> T:
        import aiohttp

        settings = self._settings or await self.aget_settings()
        headers, timeout = self._aio_request_parts(settings)
        # Not the base URL's host (the request history): its own proxy/NO_PROXY decision.
        proxy = settings.proxy_for(url) if other_host else settings.base_url_proxy
        # A history answer is read up to a cap, as on workers (:meth:`SegmindHook._call`).
        limit = MAX_HISTORY_ANSWER_BYTES if endpoint is Endpoint.HISTORY else None

        async def attempt() -> T:
            await _budget.await_turn(settings.api_key, settings.rate_budget, endpoint)  # every attempt spends one
            try:
                async with session.get(
                    url, headers=headers, timeout=timeout, allow_redirects=False, proxy=proxy
                ) as response:
                    body = await response.read() if limit is None else await _aread_capped(response, url, limit)
                    answer = HttpAnswer(response.status, lower_headers(response.headers.items()), body, url)
            except (TimeoutError, aiohttp.ClientError) as err:
                raise aiohttp_error(err, url, settings.secrets) from None
            metrics.answer_seen(endpoint.value, answer.status)
            if answer.status in _AUTH_FAILURE_STATUSES:
                # The key may have been rotated or revoked: the next hook must read the connection again.
                _cache._SETTINGS_CACHE.invalidate(self.segmind_conn_id)
            return parse(answer)

        if not retry:
            return await attempt()
        retrying = tenacity.AsyncRetrying(
            **retrying_kwargs(settings.retry_policy, idempotent=True, what=endpoint.value, log=self.log)
        )
        return await retrying(attempt)

    async def _ajob_call(
        self,
        build: Callable[[str, str], str],
        parse: Callable[[HttpAnswer, str], T],
        request_id: str,
        *,
        endpoint: Endpoint,
        session: aiohttp.ClientSession,
        retry: bool,
    ) -> T:
        """A GET of one job's status or result URL."""
        base_url = (self._settings or await self.aget_settings()).base_url
        return await self._acall(
            session,
            build(base_url, request_id),
            lambda answer: parse(answer, request_id),
            endpoint=endpoint,
            retry=retry,
        )

    async def aget_status(
        self, request_id: str, *, session: aiohttp.ClientSession, retry: bool = True
    ) -> JobStatusResponse:
        """Async :meth:`get_status`. ``retry=False`` leaves transient errors to the caller's loop."""
        return await self._ajob_call(
            status_url, parse_status, request_id, endpoint=Endpoint.STATUS, session=session, retry=retry
        )

    async def aget_result(self, request_id: str, *, session: aiohttp.ClientSession, retry: bool = True) -> JobResult:
        """Async :meth:`get_result`."""
        return await self._ajob_call(
            result_url, parse_result, request_id, endpoint=Endpoint.RESULT, session=session, retry=retry
        )

    async def aget_credit_balance(self, *, session: aiohttp.ClientSession) -> CreditBalance:
        """Async :meth:`get_credit_balance`."""
        base_url = (await self.aget_settings()).base_url
        return await self._acall(
            session, credits_url(base_url), parse_credit_balance, endpoint=Endpoint.CREDITS, retry=True
        )

    async def aget_credits(self, *, session: aiohttp.ClientSession) -> float:
        """Async :meth:`get_credits`: paid plus free credits."""
        return (await self.aget_credit_balance(session=session)).total

    # ---------------------------------------------------------------- request history (async)

    async def ahistory_enabled(self) -> bool:
        """Async :attr:`history_enabled` (resolves the connection without sync DB access)."""
        return (self._settings or await self.aget_settings()).history_lookup

    async def aget_history_record(
        self, request_id: str, *, session: aiohttp.ClientSession, retry: bool = True
    ) -> HistoryRecord | None:
        """Async :meth:`get_history_record`."""
        settings = self._settings or await self.aget_settings()
        if not settings.history_lookup:
            return None
        return await self._acall(
            session,
            history_record_url(settings.history_url, request_id),
            functools.partial(parse_history_record, request_id=request_id, naive_zones=settings.history_naive_zones),
            endpoint=Endpoint.HISTORY,
            retry=retry,
            other_host=True,
        )

    async def afind_submitted(
        self,
        model: str,
        body: Mapping[str, Any],
        *,
        since: float,
        until: float | None = None,
        session: aiohttp.ClientSession,
        retry: bool = True,
    ) -> HistoryRecord | None:
        """Async :meth:`find_submitted`."""
        settings = self._settings or await self.aget_settings()
        if not settings.history_lookup:
            return None
        search = HistorySearch(
            model,
            body,
            since,
            time.time() if until is None else until,
            user_id=settings.history_user_id,
            user_email=settings.history_user_email,
        )
        parse_page = functools.partial(parse_history_page, naive_zones=settings.history_naive_zones)
        while True:
            url = f"{history_list_url(settings.history_url)}?{urlencode(search.query())}"
            records, more = await self._acall(
                session, url, parse_page, endpoint=Endpoint.HISTORY, retry=retry, other_host=True
            )
            if not search.take(records, more):
                return search.best()
