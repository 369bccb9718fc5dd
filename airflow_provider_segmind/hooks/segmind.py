"""SegmindHook: the one place this provider talks to Segmind.

Two transports share one set of rules (:mod:`airflow_provider_segmind.protocol`):

- sync, on workers: ``requests`` with a pooled session, retried by ``tenacity``;
- async, in the triggerer: ``aiohttp``, retried by ``tenacity``'s asyncio flavour, with the
  connection resolved through common-compat's ``get_async_connection`` (a synchronous
  ``get_connection`` inside the triggerer's event loop raises on Airflow 3).

Each call is: build the URL, send, wrap the answer in :class:`~..protocol.HttpAnswer`, parse.
Parsing raises the typed errors re-exported here, and :class:`~..protocol.RetryPolicy` decides
from the error alone whether another attempt is useful and safe, so a submit (billed, with no
idempotency key) is never sent twice unless the server certainly did not accept the first.

The API key is read from the connection's password into a private settings object and only ever
placed into request headers: it is not logged, not in errors, not in ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

import requests
import tenacity
from airflow.sdk import BaseHook

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindForbiddenError,
    SegmindInsufficientCreditsError,
    SegmindInvalidParametersError,
    SegmindInvalidResponseError,
    SegmindJobFailedError,
    SegmindModelNotFoundError,
    SegmindModelRetiredError,
    SegmindNotFoundError,
    SegmindRateLimitError,
    SegmindRequestNotFoundError,
    SegmindServerError,
    SegmindTransportError,
    SegmindUnexpectedStatusError,
)
from airflow_provider_segmind.get_provider_info import EXTRA_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_segmind.protocol import (
    Endpoint,
    HttpAnswer,
    JobResult,
    JobStatusResponse,
    RetryPolicy,
    SegmindJobStatus,
    SubmitResponse,
    SyncRunResponse,
    auth_headers,
    credits_url,
    lower_headers,
    normalize_base_url,
    parse_credits,
    parse_result,
    parse_run_sync,
    parse_status,
    parse_submit,
    redact,
    result_url,
    run_sync_url,
    same_origin,
    status_url,
    submit_url,
    transport_error,
    validate_params,
)

if TYPE_CHECKING:
    import aiohttp
    import yarl
    from airflow.sdk import Connection
    from multidict import CIMultiDictProxy

__all__ = [
    "SegmindAuthenticationError",
    "SegmindConnectionSettings",
    "SegmindContentBlockedError",
    "SegmindError",
    "SegmindForbiddenError",
    "SegmindHook",
    "SegmindInsufficientCreditsError",
    "SegmindInvalidParametersError",
    "SegmindInvalidResponseError",
    "SegmindJobFailedError",
    "SegmindJobStatus",
    "SegmindModelNotFoundError",
    "SegmindModelRetiredError",
    "SegmindNotFoundError",
    "SegmindRateLimitError",
    "SegmindRequestNotFoundError",
    "SegmindServerError",
    "SegmindTransportError",
    "SegmindUnexpectedStatusError",
]

T = TypeVar("T")

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
#: A v1 call blocks while the GPU renders (~10 s for SD3 Large, longer when queued).
DEFAULT_RUN_SYNC_TIMEOUT = 300.0
USER_AGENT = "airflow-provider-segmind"
#: How long the triggerer reuses a resolved connection (see :class:`_LoopSettingsCache`).
SETTINGS_CACHE_TTL_SECONDS: Final = 60.0
#: Answers that mean the key is wrong or was revoked: the cached connection is dropped at once.
_AUTH_FAILURE_STATUSES: Final = frozenset({401, 403})


@dataclass(frozen=True)
class SegmindConnectionSettings:
    """What a Segmind connection resolves to. ``api_key`` is excluded from ``repr`` on purpose."""

    base_url: str
    api_key: str = field(repr=False)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    run_sync_timeout: float = DEFAULT_RUN_SYNC_TIMEOUT
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)

    @classmethod
    def from_connection(cls, conn: Connection, *, retry_policy: RetryPolicy | None = None) -> SegmindConnectionSettings:
        """Read a connection: password = API key, host = optional base URL, extras = timeouts/retries.

        Shared by both transports so a connection means the same thing on a worker and in the
        triggerer. A missing key fails here, before anything is sent.
        """
        extras = conn.extra_dejson or {}
        api_key = (conn.password or "").strip()
        if not api_key:
            raise SegmindAuthenticationError(
                f"The Segmind connection {conn.conn_id!r} has no API key: put the key in its password "
                '(API Key) field, e.g. AIRFLOW_CONN_SEGMIND_DEFAULT=\'{"conn_type": "segmind", '
                '"password": "SG_..."}\'.'
            )
        try:
            base_url = normalize_base_url(conn.host, schema=conn.schema or None, port=conn.port)
            return cls(
                base_url=base_url,
                api_key=api_key,
                connect_timeout=_positive(extras, "connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                read_timeout=_positive(extras, "read_timeout", DEFAULT_READ_TIMEOUT),
                run_sync_timeout=_positive(extras, "run_sync_timeout", DEFAULT_RUN_SYNC_TIMEOUT),
                retry_policy=retry_policy or RetryPolicy.from_extras(extras),
            )
        except (TypeError, ValueError) as err:
            raise SegmindInvalidParametersError(
                f"The Segmind connection {conn.conn_id!r} is misconfigured: {redact(str(err), [api_key])}",
                field="connection",
                allowed="host: an http(s) URL; extras connect_timeout/read_timeout/run_sync_timeout: "
                "positive numbers; max_retries: an integer >= 0; retry_backoff: seconds",
            ) from None


def _plain_settings(conn: Connection) -> SegmindConnectionSettings | None:
    """``conn``'s settings without a hook's retry override, for the shared cache (``None``: unusable).

    With an override, extras ``max_retries``/``retry_backoff`` are not read, so a connection whose
    retry extras are invalid still works for that hook; such a connection is simply not cached.
    """
    try:
        return SegmindConnectionSettings.from_connection(conn)
    except SegmindError:
        return None


def _positive(extras: Mapping[str, Any], name: str, default: float) -> float:
    value = extras.get(name)
    if value is None or value == "":
        return default
    number = float(value)
    if number <= 0:
        raise ValueError(f"extra {name!r} must be positive, got {value!r}")
    return number


def _retrying_kwargs(policy: RetryPolicy, *, idempotent: bool, what: str, log: Any) -> dict[str, Any]:
    """The tenacity arguments both transports use, all derived from one :class:`RetryPolicy`."""

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.delay(error, state.attempt_number) if error else 0.0

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "Segmind %s: attempt %d of %d failed (%s); retrying in %.1f s",
            what,
            state.attempt_number,
            policy.max_attempts,
            error,
            delay,
        )

    return {
        "retry": tenacity.retry_if_exception(lambda e: policy.is_retryable(e, idempotent=idempotent)),
        "wait": wait,
        "stop": tenacity.stop_after_attempt(policy.max_attempts),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def _requests_error(err: requests.RequestException, url: str) -> SegmindTransportError:
    """Classify a ``requests`` failure; ``request_sent=False`` only when the server cannot have seen it."""
    if isinstance(err, requests.ConnectTimeout):
        return transport_error("Connect timeout", request_sent=False, url=url, detail=str(err))
    if isinstance(err, requests.ReadTimeout):
        return transport_error("Read timeout", request_sent=True, url=url, detail=str(err))
    if isinstance(err, requests.ConnectionError):
        text = repr(err)
        never_connected = any(
            marker in text
            for marker in ("NewConnectionError", "NameResolutionError", "Connection refused", "ConnectTimeout")
        )
        kind = "Could not connect" if never_connected else "Connection lost"
        return transport_error(kind, request_sent=not never_connected, url=url, detail=str(err))
    return transport_error("HTTP error", request_sent=True, url=url, detail=str(err))


def _aiohttp_error(err: BaseException, url: str) -> SegmindTransportError:
    """Classify an ``aiohttp`` failure like :func:`_requests_error` does for ``requests``."""
    import aiohttp

    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return transport_error("Connect timeout", request_sent=False, url=url, detail=str(err) or "timed out")
    if isinstance(err, aiohttp.ClientConnectorError):
        return transport_error("Could not connect", request_sent=False, url=url, detail=str(err))
    if isinstance(err, (aiohttp.ServerTimeoutError, TimeoutError)):
        return transport_error("Read timeout", request_sent=True, url=url, detail=str(err) or "timed out")
    return transport_error("Connection lost", request_sent=True, url=url, detail=f"{type(err).__name__}: {err}")


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
      revoked key is read again by the very next trigger (e.g. the task's retry), not a minute later.

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
        # hook's retry override: built once and shared, like the request headers built from them).
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

#: Async request headers and timeout per settings object (weakly: they go when no hook uses them),
#: so the triggers sharing a cached connection also share these instead of holding a copy each.
_REQUEST_PARTS: weakref.WeakKeyDictionary[
    SegmindConnectionSettings, tuple[CIMultiDictProxy[str], aiohttp.ClientTimeout]
] = weakref.WeakKeyDictionary()


class SegmindHook(BaseHook):
    """Talk to Segmind's serverless API: v1 (blocking) and v2 (queued) inference, status, results, credits.

    :param segmind_conn_id: the ``segmind`` connection: password = API key, host = optional base
        URL (default ``https://api.segmind.com``), extras ``connect_timeout``, ``read_timeout``,
        ``run_sync_timeout`` (seconds), ``max_retries`` (retries after the first attempt, default 4)
        and ``retry_backoff`` (first backoff in seconds, default 1).
    :param retry_policy: overrides the policy built from the connection's extras.
    """

    conn_name_attr = "segmind_conn_id"
    default_conn_name = "segmind_default"
    conn_type = "segmind"
    hook_name = "Segmind"

    def __init__(
        self,
        segmind_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.segmind_conn_id = segmind_conn_id
        self._retry_policy = retry_policy
        self._settings: SegmindConnectionSettings | None = None
        self._session: requests.Session | None = None
        # Async transport, built once per hook instead of per call (a trigger polls many times):
        # (settings they were built from, request headers with the key, per-request timeout).
        self._aio_prepared: tuple[SegmindConnectionSettings, CIMultiDictProxy[str], aiohttp.ClientTimeout] | None = None
        # (URL builder, request id) -> (URL, parsed ``yarl.URL``): a poll neither re-validates the
        # request id nor has aiohttp re-parse the same URL string.
        self._aio_urls: dict[tuple[Callable[[str, str], str], str], tuple[str, yarl.URL]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(segmind_conn_id={self.segmind_conn_id!r})"

    # ---------------------------------------------------------------- connection form

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 3.1 (3.2+ reads the same from provider info)."""
        return copy.deepcopy(UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Typed extra fields on Airflow 3.1's form; unavailable widget libraries mean no widgets.

        Airflow 3.1 accepts only ``StringField``, ``IntegerField``, ``PasswordField`` and
        ``BooleanField`` here: any other class (``FloatField``) makes its ProvidersManager drop the
        whole hook ("Error when importing hook!", no ``segmind`` connection type) once the FAB
        provider is installed. Decimal extras are therefore ``StringField``s, so the form stores
        them as strings ("2.5"); :class:`SegmindConnectionSettings` parses and validates every extra
        either way, naming the bad one. The form's own check below only catches typos early (3.1's
        UI does not run wtforms validators at all).
        """
        try:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
            from flask_babel import lazy_gettext
            from wtforms import IntegerField, StringField
            from wtforms.validators import NumberRange, Optional, ValidationError
        except ImportError:
            return {}

        def non_negative_number(form: Any, field: Any) -> None:
            try:
                number = float(field.data)
            except (TypeError, ValueError):
                raise ValidationError("Not a number.") from None
            if not number >= 0:  # also refuses NaN
                raise ValidationError("Must be a number >= 0.")

        widgets: dict[str, Any] = {}
        for name, (label, kind, description) in EXTRA_FIELDS.items():
            if kind == "integer":
                field_class, check = IntegerField, NumberRange(min=0)
            else:
                field_class, check = StringField, non_negative_number
            widgets[name] = field_class(
                lazy_gettext(label),
                widget=BS3TextFieldWidget(),
                validators=[Optional(), check],
                description=description,
            )
        return widgets

    # ---------------------------------------------------------------- settings

    def get_settings(self) -> SegmindConnectionSettings:
        """Resolve the connection once (sync path); cached for the hook's life."""
        if self._settings is None:
            conn = self.get_connection(self.segmind_conn_id)
            self._settings = SegmindConnectionSettings.from_connection(conn, retry_policy=self._retry_policy)
        return self._settings

    async def aget_settings(self) -> SegmindConnectionSettings:
        """Resolve the connection without sync DB access, for the triggerer's event loop.

        Cached for the hook's life, and shared with the loop's other hooks for up to a minute
        (:class:`_LoopSettingsCache`: the lookup costs more CPU than a poll, and every trigger
        makes one), dropped early when a call answers 401/403.
        """
        if self._settings is None:
            policy = self._retry_policy
            shared = _SETTINGS_CACHE.get(self.segmind_conn_id, policy)
            if shared is not None:
                settings = shared
            else:
                from airflow.providers.common.compat.connection import get_async_connection

                conn = await get_async_connection(self.segmind_conn_id, hook=self)
                settings = SegmindConnectionSettings.from_connection(conn, retry_policy=policy)
                plain = settings if policy is None else _plain_settings(conn)
                if plain is not None:
                    _SETTINGS_CACHE.put(self.segmind_conn_id, plain)
            self._settings = settings
        return self._settings

    @property
    def base_url(self) -> str:
        return self.get_settings().base_url

    def get_conn(self) -> requests.Session:
        """The pooled ``requests`` session (keep-alive across a task's calls)."""
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            # Redirects would re-send the key elsewhere; the API never redirects.
            session.max_redirects = 0
            self._session = session
        return self._session

    def close(self) -> None:
        """Close pooled connections; the hook can be used again afterwards."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # ---------------------------------------------------------------- sync transport

    def _call(
        self,
        method: str,
        url: str,
        parse: Callable[[HttpAnswer], T],
        *,
        endpoint: Endpoint,
        json_body: Mapping[str, Any] | None = None,
        idempotent: bool = True,
        read_timeout: float | None = None,
    ) -> T:
        settings = self.get_settings()
        session = self.get_conn()
        headers = auth_headers(settings.api_key, json_body=json_body is not None)
        timeout = (settings.connect_timeout, read_timeout or settings.read_timeout)

        def attempt() -> T:
            try:
                response = session.request(
                    method, url, headers=headers, json=json_body, timeout=timeout, allow_redirects=False
                )
            except requests.RequestException as err:
                raise _requests_error(err, url) from None
            answer = HttpAnswer(response.status_code, lower_headers(response.headers.items()), response.content, url)
            return parse(answer)

        retrying = tenacity.Retrying(
            **_retrying_kwargs(settings.retry_policy, idempotent=idempotent, what=endpoint.value, log=self.log)
        )
        return retrying(attempt)

    def run_sync(self, model: str, params: Mapping[str, Any], *, validate: bool = True) -> SyncRunResponse:
        """Run a v1 (blocking) inference; returns the image bytes, content type and cost/credit headers.

        The call is billed, so it is retried only when the server certainly did not accept it.
        """
        body = validate_params(model, params) if validate else dict(params)
        settings = self.get_settings()
        return self._call(
            "POST",
            run_sync_url(settings.base_url, model),
            parse_run_sync,
            endpoint=Endpoint.RUN_SYNC,
            json_body=body,
            idempotent=False,
            read_timeout=settings.run_sync_timeout,
        )

    def submit(self, model: str, params: Mapping[str, Any], *, validate: bool = True) -> SubmitResponse:
        """Submit a v2 (queued) job and return its request id; validates parameters first.

        Billed and without an idempotency key: never retried after the request may have arrived.
        """
        body = validate_params(model, params) if validate else dict(params)
        base_url = self.get_settings().base_url
        return self._call(
            "POST",
            submit_url(base_url, model),
            lambda answer: parse_submit(answer, base_url),
            endpoint=Endpoint.SUBMIT,
            json_body=body,
            idempotent=False,
        )

    def _job_url(self, build: Callable[[str, str], str], request_id: str, advertised: str | None) -> str:
        base_url = self.get_settings().base_url
        if advertised and same_origin(advertised, base_url):
            return advertised
        return build(base_url, request_id)

    def get_status(self, request_id: str, *, url: str | None = None) -> JobStatusResponse:
        """The job's status. FAILED is returned as a status (with the server's reason), not raised."""
        return self._call(
            "GET",
            self._job_url(status_url, request_id, url),
            lambda answer: parse_status(answer, request_id),
            endpoint=Endpoint.STATUS,
        )

    def get_result(self, request_id: str, *, url: str | None = None) -> JobResult:
        """The job's result; raises :class:`SegmindJobFailedError` for a FAILED job."""
        return self._call(
            "GET",
            self._job_url(result_url, request_id, url),
            lambda answer: parse_result(answer, request_id),
            endpoint=Endpoint.RESULT,
        )

    def get_credits(self) -> float:
        """Remaining account credits. Free: it bills nothing and runs no model."""
        return self._call("GET", credits_url(self.get_settings().base_url), parse_credits, endpoint=Endpoint.CREDITS)

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: checks the key with the free credits call, so it tells bad keys apart."""
        try:
            remaining = self.get_credits()
        except SegmindError as err:
            return False, str(err)
        except Exception as err:
            return False, redact(f"{type(err).__name__}: {err}")
        return True, f"Connected to {self.get_settings().base_url}: {remaining:g} credits remaining."

    # ---------------------------------------------------------------- async transport

    @contextlib.asynccontextmanager
    async def shared_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The event loop's shared ``aiohttp`` session (see :class:`_LoopSessionPool`); always released."""
        settings = await self.aget_settings()
        async with _SHARED_SESSIONS.acquire(settings) as session:
            yield session

    def _aio_request_parts(
        self, settings: SegmindConnectionSettings
    ) -> tuple[CIMultiDictProxy[str], aiohttp.ClientTimeout]:
        """Headers and timeout for this hook's async calls, built once (they only depend on settings).

        The headers are a read-only multidict (aiohttp merges them without converting, and nobody
        can alter the shared copy); they hold the key, so they live only here, never in a repr.
        """
        prepared = self._aio_prepared
        if prepared is None or prepared[0] is not settings:
            parts = _REQUEST_PARTS.get(settings)
            if parts is None:
                import aiohttp
                from multidict import CIMultiDict, CIMultiDictProxy

                headers = CIMultiDictProxy(CIMultiDict(auth_headers(settings.api_key)))
                timeout = aiohttp.ClientTimeout(
                    total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
                )
                parts = _REQUEST_PARTS[settings] = (headers, timeout)
            prepared = self._aio_prepared = (settings, *parts)
        return prepared[1], prepared[2]

    def _aio_url(self, build: Callable[[str, str], str], base_url: str, request_id: str) -> tuple[str, yarl.URL]:
        """``build(base_url, request_id)`` and its parsed form, memoized per hook (a trigger polls one id).

        A hook's ``base_url`` never changes once resolved, so the key needs only the builder and id.
        An invalid request id raises from ``build`` every time, as before, and is not stored.
        """
        key = (build, request_id)
        cached = self._aio_urls.get(key)
        if cached is None:
            import yarl

            url = build(base_url, request_id)
            cached = self._aio_urls[key] = (url, yarl.URL(url))
        return cached

    async def _acall(
        self,
        session: aiohttp.ClientSession,
        url: str,
        parse: Callable[[HttpAnswer], T],
        *,
        endpoint: Endpoint,
        retry: bool,
        target: yarl.URL | None = None,
    ) -> T:
        import aiohttp

        settings = self._settings or await self.aget_settings()
        headers, timeout = self._aio_request_parts(settings)
        request_url: str | yarl.URL = target if target is not None else url

        async def attempt() -> T:
            try:
                async with session.get(
                    request_url, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    body = await response.read()
                    answer = HttpAnswer(response.status, lower_headers(response.headers.items()), body, url)
            except (TimeoutError, aiohttp.ClientError) as err:
                raise _aiohttp_error(err, url) from None
            if answer.status in _AUTH_FAILURE_STATUSES:
                # The key may have been rotated or revoked: the next hook must read the connection again.
                _SETTINGS_CACHE.invalidate(self.segmind_conn_id)
            return parse(answer)

        if not retry:
            return await attempt()
        retrying = tenacity.AsyncRetrying(
            **_retrying_kwargs(settings.retry_policy, idempotent=True, what=endpoint.value, log=self.log)
        )
        return await retrying(attempt)

    async def aget_status(
        self, request_id: str, *, session: aiohttp.ClientSession, retry: bool = True
    ) -> JobStatusResponse:
        """Async :meth:`get_status`. ``retry=False`` leaves transient errors to the caller's loop."""
        base_url = (self._settings or await self.aget_settings()).base_url
        url, target = self._aio_url(status_url, base_url, request_id)
        return await self._acall(
            session,
            url,
            lambda answer: parse_status(answer, request_id),
            endpoint=Endpoint.STATUS,
            retry=retry,
            target=target,
        )

    async def aget_result(self, request_id: str, *, session: aiohttp.ClientSession, retry: bool = True) -> JobResult:
        """Async :meth:`get_result`."""
        base_url = (self._settings or await self.aget_settings()).base_url
        url, target = self._aio_url(result_url, base_url, request_id)
        return await self._acall(
            session,
            url,
            lambda answer: parse_result(answer, request_id),
            endpoint=Endpoint.RESULT,
            retry=retry,
            target=target,
        )

    async def aget_credits(self, *, session: aiohttp.ClientSession) -> float:
        """Async :meth:`get_credits`."""
        base_url = (await self.aget_settings()).base_url
        return await self._acall(session, credits_url(base_url), parse_credits, endpoint=Endpoint.CREDITS, retry=True)
