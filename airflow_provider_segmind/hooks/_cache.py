"""What the hook caches, in one place: the event loop's shared state (connection settings for a
minute, one ``aiohttp`` session) here, and the list below of every cache the hook keeps.

Why :class:`_LoopSettingsCache` is not a ``cachetools.TTLCache`` (which Airflow installs): its TTL is
two lines here (an expiry beside each entry, checked on read); the rest (one cache per event loop,
held weakly; the retry-policy variants; invalidation on every loop after a 401/403) a ``TTLCache``
does not do, so swapping would save no code and would add a direct dependency whose declared floor
the floors job must test on Airflow 3.1.0, and an untyped import for ``mypy --strict``.

Each cache with its key, lifetime, invalidation and what it saves (B2 = ``python -m benchmarks --only 2``'s triggerer
run at N=1,000 on a shared 2-core box: trigger-side CPU seconds of two runs; the same runs without
any shared session, a session per call: 5.05 and 4.81 s; with every cache below: 2.72 and 2.45 s):

1. **Hook settings** (``SegmindHook._settings``). Key: the hook (its conn id). Lifetime: the hook.
   Invalidation: ``reload_settings``/``areload_settings`` (after a 401/403: the key may have been
   rotated). Saves: a connection lookup per call (``get_connection``; in the triggerer
   ``get_async_connection``, ~0.45 ms of CPU).
2. **Loop settings** (``_SETTINGS_CACHE``, :class:`_LoopSettingsCache`). Key: event loop (weakly),
   conn id. Lifetime: ``SETTINGS_CACHE_TTL_SECONDS`` (60 s), or the loop's. Invalidation: any 401/403
   answer on that conn id (on every loop), ``areload_settings``; failed lookups are never stored.
   Saves: ~0.45-0.5 ms of CPU per trigger (a hit costs 2 us); B2 without it: 2.91 and 2.76 s.
3. **Retry-policy variants** (in a loop-settings entry). Key: the hook's ``RetryPolicy`` override
   (every trigger uses the same one). Lifetime and invalidation: the entry's. Saves: triggers on a
   connection share one settings object, so cache 4 is computed once a minute, not once per
   trigger (0.15 ms each); B2 without it (before cache 4 moved into the settings): 2.77 and 2.56 s,
   within the noise. The shared object is also what ``tests/unit/hooks/test_segmind.py`` expects.
4. **The base URL's proxy decision** (``SegmindConnectionSettings.base_url_proxy``). Key: the
   settings object. Lifetime: the settings object's. Invalidation: none needed (settings are
   frozen; a re-read connection is a new object). Saves: reading ``HTTP(S)_PROXY``/``NO_PROXY``,
   ~0.15 ms of CPU, on every poll; B2 deciding per poll: 3.42 and 3.36 s (+30%).
5. **Loop session** (``_SHARED_SESSIONS``, :class:`_LoopSessionPool`). Key: event loop (weakly).
   Lifetime: while a trigger of the loop holds it (reference counted; the last one closes it).
   Invalidation: a closed session is replaced at the next acquire. Saves: B2 with a session per
   trigger instead: 2.90 and 3.10 s, 1,000 TCP connections instead of 100, 27-29 KB of RSS per
   trigger instead of 15-16; with a session per call: the baseline above.

6. **Model catalogue** (``_CATALOGUE_CACHE``, :class:`_CatalogueCache`). Key: the catalogue URL and
   a SHA-256 digest of the API key (the list may differ per account; the key itself is not kept
   here). Lifetime: ``CATALOGUE_CACHE_TTL_SECONDS`` (1 hour) for a list, ``CATALOGUE_FAILURE_TTL_SECONDS``
   (5 minutes) for a failed read. Invalidation: a slug the cached list lacks reads it again once if
   the list is older than ``CATALOGUE_MISS_REFRESH_SECONDS`` (a minute), so a model added since is
   not refused for an hour; the connection test always reads it afresh. Saves: a GET of the whole
   list (hundreds of models with their parameter schemas) per submit in one process: a
   ``dag.test()`` of a mapped task, the contract check, a worker that runs operators in-process.
   Airflow 3 runs each task in a process of its own, so across tasks it saves nothing: one read
   per task, which is why a failed read is remembered too (a down catalogue costs one connect
   timeout per process, not one per submit) and why the check never blocks a run.

Removed, because they saved nothing measurable: request headers and timeout shared per settings
object (``_REQUEST_PARTS``) and prepared per hook (``_aio_prepared``): they cost ~1 us to build
per call (of their 0.15 ms, all but 1 us was the proxy decision, now cache 4); and the job URLs
memoized per hook (``_aio_urls``): 2.1-2.4 us per poll against 0.1 us, ~0.01 s per 1,000 triggers
(B2 without it: 2.66 and 2.69 s). Measured together, interleaved in one process polling the
emulator: 198 us of CPU per poll without the three, 194 us with them (medians of 8 rounds).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final

from airflow_provider_segmind.exceptions import SegmindError
from airflow_provider_segmind.hooks._settings import SegmindConnectionSettings
from airflow_provider_segmind.hooks._transport import USER_AGENT
from airflow_provider_segmind.protocol.catalogue import ModelCatalogue
from airflow_provider_segmind.protocol.retry import RetryPolicy

if TYPE_CHECKING:
    import aiohttp

#: How long the triggerer reuses a resolved connection (see :class:`_LoopSettingsCache`).
SETTINGS_CACHE_TTL_SECONDS: Final = 60.0

_SettingsEntry = tuple["SegmindConnectionSettings", float, dict[RetryPolicy, "SegmindConnectionSettings"]]


class _LoopSettingsCache:
    """Resolved connection settings, per event loop and connection id, for a short while.

    Why: in the triggerer every trigger builds its own hook, and resolving a connection
    asynchronously (common-compat's ``get_async_connection``: the secrets backends chain, thread
    hops, ``Connection`` parsing, registering the password with the secrets masker) costs about
    0.3 ms of CPU, as much as a status poll. A thousand triggers on one connection would repeat the
    same lookup a thousand times. So a successful lookup is reused by the triggers of the same loop:

    - for ``ttl`` seconds at most (60 by default), so an edited connection (new host, timeouts) is
      picked up by triggers started a minute later at the latest;
    - and never after a call made with it answered 401 or 403 (:meth:`invalidate`): a rotated or
      revoked key is read again at once, by the refused trigger itself
      (:meth:`SegmindHook.areload_settings`, which goes on with a changed key) and by every
      trigger that starts later, not a minute later.

    Only successes are stored: a missing or misconfigured connection is looked up every time, so
    fixing it takes effect at once. Entries hold the settings as the connection defines them (no
    per-hook retry override; hooks apply theirs with ``dataclasses.replace``). Keyed by the loop
    object (weakly), like :class:`_LoopSessionPool`: a loop's entries die with it, so test loops
    never see each other's connections. The settings' ``repr`` omits the key, and so does this
    class's.
    """

    def __init__(self, ttl: float = SETTINGS_CACHE_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        # loop -> conn id -> (settings as the connection defines them, expiry, variants with a
        # hook's retry override: built once and shared, with the proxy decision made for them).
        self._entries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _SettingsEntry]] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        loops = list(self._entries.values())
        return f"{type(self).__name__}(ttl={self.ttl:g}, conn_ids={sorted({c for d in loops for c in d})!r})"

    def get(self, conn_id: str, retry_policy: RetryPolicy | None = None) -> SegmindConnectionSettings | None:
        """The running loop's fresh settings for ``conn_id`` (with ``retry_policy`` applied), or ``None``.

        Expired entries are dropped. The settings for one (connection, override) pair are one shared
        (frozen) object, so hooks also share the request headers and timeout built from it.
        """
        entries = self._entries.get(asyncio.get_running_loop())
        if not entries:
            return None
        entry = entries.get(conn_id)
        if entry is None:
            return None
        plain, expires_at, variants = entry
        if self._clock() >= expires_at:
            del entries[conn_id]
            return None
        if retry_policy is None:
            return plain
        settings = variants.get(retry_policy)
        if settings is None:
            settings = variants[retry_policy] = dataclasses.replace(plain, retry_policy=retry_policy)
        return settings

    def put(self, conn_id: str, settings: SegmindConnectionSettings) -> None:
        """Remember ``settings`` for ``conn_id`` on the running loop for ``ttl`` seconds."""
        if self.ttl <= 0:
            return
        loop = asyncio.get_running_loop()
        entries = self._entries.get(loop)
        if entries is None:
            entries = self._entries[loop] = {}
        entries[conn_id] = (settings, self._clock() + self.ttl, {})

    def invalidate(self, conn_id: str) -> None:
        """Forget ``conn_id`` on every loop (after a 401/403 answer: its key may have changed)."""
        for entries in list(self._entries.values()):
            entries.pop(conn_id, None)

    def clear(self) -> None:
        """Forget everything (tests)."""
        self._entries.clear()


_SETTINGS_CACHE = _LoopSettingsCache()


class _LoopSessionPool:
    """One ``aiohttp.ClientSession`` per event loop, shared by every trigger polling Segmind in it.

    The triggerer runs thousands of triggers on one loop; a session each would open a TCP (and
    TLS) connection each. Sharing one keeps connections alive across triggers. The session is
    reference counted and closed when the last user leaves, so nothing leaks when triggers end.
    API keys are sent per request, never set on the session, so connections with different keys
    can share it safely.
    """

    def __init__(self) -> None:
        # Keyed by the loop object itself (weakly): an id() could be reused by a later loop.
        self._sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, int]] = (
            weakref.WeakKeyDictionary()
        )

    @contextlib.asynccontextmanager
    async def acquire(self, settings: SegmindConnectionSettings) -> AsyncIterator[aiohttp.ClientSession]:
        import aiohttp

        loop = asyncio.get_running_loop()
        session, users = self._sessions.get(loop, (None, 0))
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
                ),
                connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=30),
                headers={"User-Agent": USER_AGENT},
                # Segmind's API sets no cookies; a jar would be filtered and updated on every request.
                cookie_jar=aiohttp.DummyCookieJar(),
                # No trust_env: the proxy (the ``proxy`` extra or HTTP(S)_PROXY/NO_PROXY, decided
                # like requests does on workers) is passed per request, resolved once per connection
                # settings (aiohttp's trust_env would scan the environment on every poll, and read
                # .netrc).
            )
            users = 0
        self._sessions[loop] = (session, users + 1)
        try:
            yield session
        finally:
            session, users = self._sessions.get(loop, (session, 1))
            if users <= 1:
                self._sessions.pop(loop, None)
                await session.close()
            else:
                self._sessions[loop] = (session, users - 1)

    def open_sessions(self) -> int:
        """How many shared sessions are open (for tests that prove nothing leaks)."""
        return sum(1 for session, _ in list(self._sessions.values()) if not session.closed)


_SHARED_SESSIONS = _LoopSessionPool()


#: How long a read model catalogue is used (see :class:`_CatalogueCache`).
CATALOGUE_CACHE_TTL_SECONDS: Final = 3600.0
#: How long a failed catalogue read is remembered (the check is skipped meanwhile, logged).
CATALOGUE_FAILURE_TTL_SECONDS: Final = 300.0
#: A slug missing from a list read longer ago than this reads the list again once before a refusal.
CATALOGUE_MISS_REFRESH_SECONDS: Final = 60.0

CatalogueKey = tuple[str, str]


def catalogue_key(settings: SegmindConnectionSettings) -> CatalogueKey:
    """The cache key of a connection's catalogue: its URL and a digest of its key (never the key)."""
    return settings.catalogue_url, hashlib.sha256(settings.api_key.encode()).hexdigest()


class _CatalogueCache:
    """Model catalogues (or the error of a failed read) per (catalogue URL, key digest), for a while.

    Why it earns its place, and what it cannot do: item 6 of the module docstring. Thread-safe (a
    worker may run operators in threads); entries expire on read. The ``repr`` shows URLs and sizes only.
    """

    def __init__(
        self,
        ttl: float = CATALOGUE_CACHE_TTL_SECONDS,
        failure_ttl: float = CATALOGUE_FAILURE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.failure_ttl = failure_ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[CatalogueKey, tuple[ModelCatalogue | SegmindError, float]] = {}

    def __repr__(self) -> str:
        with self._lock:
            shown = [
                f"{url}: {len(value) if isinstance(value, ModelCatalogue) else 'failed'}"
                for (url, _), (value, _) in self._entries.items()
            ]
        return f"{type(self).__name__}(ttl={self.ttl:g}, entries={shown!r})"

    def lookup(self, key: CatalogueKey) -> tuple[ModelCatalogue | SegmindError, float] | None:
        """The fresh entry for ``key`` and its age in seconds, or ``None`` (expired entries are dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            value, stored_at = entry
            age = self._clock() - stored_at
            if age >= (self.ttl if isinstance(value, ModelCatalogue) else self.failure_ttl):
                del self._entries[key]
                return None
            return value, age

    def put(self, key: CatalogueKey, value: ModelCatalogue | SegmindError) -> None:
        """Remember a list, or the error of a failed read."""
        with self._lock:
            self._entries[key] = (value, self._clock())

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._entries.clear()


_CATALOGUE_CACHE = _CatalogueCache()
