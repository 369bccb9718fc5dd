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
from urllib.parse import urlencode

import requests
import tenacity
from airflow.sdk import BaseHook

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindForbiddenError,
    SegmindInsufficientCreditsError,
    SegmindInvalidInputJobError,
    SegmindInvalidParametersError,
    SegmindInvalidResponseError,
    SegmindJobFailedError,
    SegmindModelNotFoundError,
    SegmindModelRetiredError,
    SegmindNotFoundError,
    SegmindRateLimitError,
    SegmindRequestNotFoundError,
    SegmindResultNotReadyError,
    SegmindServerError,
    SegmindTransportError,
    SegmindUnexpectedStatusError,
)
from airflow_provider_segmind.get_provider_info import EXTRA_DEFAULTS, EXTRA_FIELDS, UI_FIELD_BEHAVIOUR
from airflow_provider_segmind.history import (
    DEFAULT_HISTORY_URL,
    HistoryRecord,
    HistorySearch,
    default_history_url,
    history_list_url,
    history_record_url,
    normalize_history_url,
    parse_history_page,
    parse_history_record,
)
from airflow_provider_segmind.protocol import (
    CreditBalance,
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
    parse_credit_balance,
    parse_result,
    parse_run_sync,
    parse_status,
    parse_submit,
    redact,
    result_url,
    run_sync_url,
    same_origin,
    sentences,
    status_url,
    submit_url,
    transport_error,
    validate_params,
)
from airflow_provider_segmind.proxy import normalize_proxy_url, proxy_for, proxy_secrets, public_proxy_url

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
    "SegmindInvalidInputJobError",
    "SegmindInvalidParametersError",
    "SegmindInvalidResponseError",
    "SegmindJobFailedError",
    "SegmindJobStatus",
    "SegmindModelNotFoundError",
    "SegmindModelRetiredError",
    "SegmindNotFoundError",
    "SegmindRateLimitError",
    "SegmindRequestNotFoundError",
    "SegmindResultNotReadyError",
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
    #: The ``proxy`` extra: a forward proxy for every API call of this connection, on workers and in
    #: the triggerer (``None``: the environment's ``HTTP(S)_PROXY``/``NO_PROXY`` apply, on both
    #: paths). Out of ``repr``: its URL may carry a password (see :attr:`proxy_shown`).
    proxy: str | None = field(default=None, repr=False)
    #: The ``history_url`` extra: Segmind's request-history API (default: the SDK's URL, or the
    #: base URL's own history path for a loopback base URL, i.e. the emulator).
    history_url: str = DEFAULT_HISTORY_URL
    #: The ``history_lookup`` extra (default true): false turns every history lookup off.
    history_lookup: bool = True

    @property
    def proxy_shown(self) -> str | None:
        """The proxy as it may be logged: ``scheme://***@host:port`` (``None`` without one)."""
        return public_proxy_url(self.proxy) if self.proxy else None

    def proxy_for(self, url: str) -> str | None:
        """The proxy for ``url``: the ``proxy`` extra, else ``HTTP(S)_PROXY``; none for a ``NO_PROXY``
        host (:func:`~airflow_provider_segmind.proxy.proxy_for`). One rule for both transports, so
        a worker and the triggerer reach Segmind the same way."""
        return proxy_for(url, self.proxy)

    @property
    def secrets(self) -> list[str]:
        """Everything error texts must not show: the key and the proxy's password."""
        return [self.api_key, *proxy_secrets(self.proxy)]

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
            base_url = normalize_base_url(
                conn.host,
                schema=conn.schema or None,
                port=conn.port,
                allow_insecure_http=_flag(extras, "allow_insecure_http"),
            )
            return cls(
                base_url=base_url,
                api_key=api_key,
                connect_timeout=_positive(extras, "connect_timeout", DEFAULT_CONNECT_TIMEOUT),
                read_timeout=_positive(extras, "read_timeout", DEFAULT_READ_TIMEOUT),
                run_sync_timeout=_positive(extras, "run_sync_timeout", DEFAULT_RUN_SYNC_TIMEOUT),
                retry_policy=retry_policy or RetryPolicy.from_extras(extras),
                proxy=normalize_proxy_url(extras.get("proxy"), what="extra 'proxy'"),
                history_url=(
                    normalize_history_url(
                        str(extras["history_url"]), allow_insecure_http=_flag(extras, "allow_insecure_http")
                    )
                    if extras.get("history_url")
                    else default_history_url(base_url)
                ),
                history_lookup=_bool_extra(extras, "history_lookup", default=True),
            )
        except (TypeError, ValueError) as err:
            raise SegmindInvalidParametersError(
                f"The Segmind connection {conn.conn_id!r} is misconfigured: "
                f"{redact(str(err), [api_key, *proxy_secrets(str(extras.get('proxy') or ''))])}",
                field="connection",
                allowed="host: an https URL (http only for loopback, or with extra allow_insecure_http=true); "
                "extras connect_timeout/read_timeout/run_sync_timeout: "
                "positive numbers; max_retries: an integer >= 0; retry_backoff: seconds; "
                "proxy: an http(s)://[user:password@]host:port URL; "
                "history_url: an https URL (http only for loopback); history_lookup: true or false",
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


def _flag(extras: Mapping[str, Any], name: str) -> bool:
    """A boolean extra given as JSON ``true`` or a string (``"true"``, ``"1"``, ``"yes"``); default off."""
    value = extras.get(name)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return value is True


_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off"})


def _bool_extra(extras: Mapping[str, Any], name: str, *, default: bool) -> bool:
    """A boolean extra with a default (JSON ``true``/``false``, or the words of :func:`_flag`).

    Unlike :func:`_flag`, an unreadable value is an error: for ``history_lookup`` a typo must not
    silently turn a safety feature off (or on).
    """
    value = extras.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return value.strip().lower() in _TRUE_WORDS
    raise ValueError(f"extra {name!r} must be true or false, got {value!r}")


def _test_failure_text(err: SegmindError, reached: str) -> str:
    """The connection test's text for an HTTP error: what came back and what to check, and nothing
    about retries or billing (the test makes one free call, and a person presses the button)."""
    code = err.status_code
    said = f": {err.error_text.strip().rstrip('.')}" if err.error_text else ""
    hints = {
        404: "This is not a Segmind API host: check the Host field (empty means https://api.segmind.com)",
        405: "This is not a Segmind API host: check the Host field (empty means https://api.segmind.com)",
        429: "The account is rate limited right now: test again in a minute",
    }
    hint = hints.get(
        code or 0, "Segmind (or a gateway in front of it) failed: test again later" if (code or 0) >= 500 else ""
    )
    return sentences(f"{reached} answered HTTP {code}{said}", hint)


def _positive(extras: Mapping[str, Any], name: str, default: float) -> float:
    value = extras.get(name)
    if value is None or value == "":
        return default
    number = float(value)
    if number <= 0:
        raise ValueError(f"extra {name!r} must be positive, got {value!r}")
    return number


def _retrying_kwargs(
    policy: RetryPolicy, *, idempotent: bool, what: str, log: Any, trust_5xx: bool = True
) -> dict[str, Any]:
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
        "retry": tenacity.retry_if_exception(
            lambda e: policy.is_retryable(e, idempotent=idempotent, trust_5xx=trust_5xx)
        ),
        "wait": wait,
        "stop": tenacity.stop_after_attempt(policy.max_attempts),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def _requests_error(err: requests.RequestException, url: str, secrets: list[str]) -> SegmindTransportError:
    """Classify a ``requests`` failure; ``request_sent=False`` only when the server cannot have seen it.

    ``secrets`` (the proxy's password) are removed from the detail.
    """
    if isinstance(err, requests.exceptions.ProxyError):
        # urllib3 raises it when the proxy cannot be reached or refuses the tunnel (e.g. 407):
        # before anything was forwarded to Segmind.
        return transport_error(
            "Could not connect through the proxy", request_sent=False, url=url, detail=redact(str(err), secrets)
        )
    if isinstance(err, requests.ConnectTimeout):
        return transport_error("Connect timeout", request_sent=False, url=url, detail=redact(str(err), secrets))
    if isinstance(err, requests.ReadTimeout):
        return transport_error("Read timeout", request_sent=True, url=url, detail=redact(str(err), secrets))
    if isinstance(err, requests.ConnectionError):
        text = repr(err)
        never_connected = any(
            marker in text
            for marker in ("NewConnectionError", "NameResolutionError", "Connection refused", "ConnectTimeout")
        )
        kind = "Could not connect" if never_connected else "Connection lost"
        return transport_error(kind, request_sent=not never_connected, url=url, detail=redact(str(err), secrets))
    return transport_error("HTTP error", request_sent=True, url=url, detail=redact(str(err), secrets))


def _aiohttp_error(err: BaseException, url: str, secrets: list[str]) -> SegmindTransportError:
    """Classify an ``aiohttp`` failure like :func:`_requests_error` does for ``requests``."""
    import aiohttp

    if isinstance(err, aiohttp.ClientHttpProxyError):
        # The proxy refused the tunnel (CONNECT answered e.g. 407 or 403): nothing reached Segmind.
        return transport_error(
            "Could not connect through the proxy",
            request_sent=False,
            url=url,
            detail=redact(f"the proxy answered HTTP {err.status} {err.message}", secrets),
        )
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return transport_error("Connect timeout", request_sent=False, url=url, detail=str(err) or "timed out")
    if isinstance(err, aiohttp.ClientConnectorError):
        return transport_error("Could not connect", request_sent=False, url=url, detail=redact(str(err), secrets))
    if isinstance(err, (aiohttp.ServerTimeoutError, TimeoutError)):
        return transport_error("Read timeout", request_sent=True, url=url, detail=str(err) or "timed out")
    return transport_error(
        "Connection lost", request_sent=True, url=url, detail=redact(f"{type(err).__name__}: {err}", secrets)
    )


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

#: Async request headers and timeout per settings object (weakly: they go when no hook uses them),
#: so the triggers sharing a cached connection also share these instead of holding a copy each.
_REQUEST_PARTS: weakref.WeakKeyDictionary[
    SegmindConnectionSettings, tuple[CIMultiDictProxy[str], aiohttp.ClientTimeout, str | None]
] = weakref.WeakKeyDictionary()


class SegmindHook(BaseHook):
    """Talk to Segmind's serverless API: v1 (blocking) and v2 (queued) inference, status, results, credits.

    :param segmind_conn_id: the ``segmind`` connection: password = API key, host = optional base
        URL (default ``https://api.segmind.com``), extras ``connect_timeout``, ``read_timeout``,
        ``run_sync_timeout`` (seconds), ``max_retries`` (retries after the first attempt, default 4)
        and ``retry_backoff`` (first backoff in seconds, default 1), ``proxy`` (a forward proxy URL,
        ``http://[user:password@]host:port``, for every API call on workers and in the triggerer;
        without it both honour ``HTTP(S)_PROXY``/``NO_PROXY``, and ``NO_PROXY`` applies to it too),
        ``history_url`` (Segmind's request-history API; default the SDK's, or the loopback base
        URL's own) and ``history_lookup`` (default true; false turns history lookups off).
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
        self._aio_prepared: (
            tuple[SegmindConnectionSettings, CIMultiDictProxy[str], aiohttp.ClientTimeout, str | None] | None
        ) = None
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
            from wtforms import BooleanField, IntegerField, StringField
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
            if kind == "string":
                widgets[name] = StringField(lazy_gettext(label), widget=BS3TextFieldWidget(), description=description)
                continue
            if kind == "boolean":
                # Airflow 3.1's form takes BooleanField (a checkbox; no text widget). Checked by
                # default where the extra's absence means "on", so saving the form keeps it on.
                widgets[name] = BooleanField(
                    lazy_gettext(label), description=description, default=EXTRA_DEFAULTS.get(name, False)
                )
                continue
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

    def reload_settings(self) -> SegmindConnectionSettings:
        """Read the connection again (sync path), e.g. after a 401/403: its key may have been rotated.

        The pooled session holds no key (keys go per request), so it is kept.
        """
        self._settings = None
        return self.get_settings()

    async def areload_settings(self) -> SegmindConnectionSettings:
        """Read the connection again, bypassing every cache, e.g. after a 401/403 (key rotation).

        The loop's shared entry is replaced by what was read, so the loop's other triggers on this
        connection pick the new key up too. The hook's prepared headers and job URLs (built from
        the old settings) are dropped.
        """
        _SETTINGS_CACHE.invalidate(self.segmind_conn_id)
        self._settings = None
        self._aio_prepared = None
        self._aio_urls.clear()
        return await self.aget_settings(fresh=True)

    async def aget_settings(self, *, fresh: bool = False) -> SegmindConnectionSettings:
        """Resolve the connection without sync DB access, for the triggerer's event loop.

        Cached for the hook's life, and shared with the loop's other hooks for up to a minute
        (:class:`_LoopSettingsCache`: the lookup costs more CPU than a poll, and every trigger
        makes one), dropped early when a call answers 401/403. ``fresh``: skip the shared cache
        (read the connection itself) and store what was read.
        """
        if self._settings is None:
            policy = self._retry_policy
            shared = None if fresh else _SETTINGS_CACHE.get(self.segmind_conn_id, policy)
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
        trust_5xx: bool = True,
    ) -> T:
        settings = self.get_settings()
        session = self.get_conn()
        headers = auth_headers(settings.api_key, json_body=json_body is not None)
        timeout = (settings.connect_timeout, read_timeout or settings.read_timeout)
        # The same rule as the triggerer's (requests would apply the environment by itself too).
        proxy = settings.proxy_for(url)
        proxies = {"http": proxy, "https": proxy} if proxy else None

        def attempt() -> T:
            try:
                response = session.request(
                    method,
                    url,
                    headers=headers,
                    json=json_body,
                    timeout=timeout,
                    allow_redirects=False,
                    proxies=proxies,
                )
            except requests.RequestException as err:
                raise _requests_error(err, url, settings.secrets) from None
            answer = HttpAnswer(response.status_code, lower_headers(response.headers.items()), response.content, url)
            return parse(answer)

        retrying = tenacity.Retrying(
            **_retrying_kwargs(
                settings.retry_policy, idempotent=idempotent, what=endpoint.value, log=self.log, trust_5xx=trust_5xx
            )
        )
        return retrying(attempt)

    def run_sync(
        self, model: str, params: Mapping[str, Any], *, validate: bool = True, strict: bool = False
    ) -> SyncRunResponse:
        """Run a v1 (blocking) inference; returns the image bytes, content type and cost/credit headers.

        The call is billed, so it is retried only when the server certainly did not accept it.
        ``strict`` refuses parameters the model is not known to take (default: warn and send them).
        """
        body = validate_params(model, params, strict=strict, warn=self.log.warning) if validate else dict(params)
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

    def submit(
        self,
        model: str,
        params: Mapping[str, Any],
        *,
        validate: bool = True,
        strict: bool = False,
        trust_5xx: bool = True,
    ) -> SubmitResponse:
        """Submit a v2 (queued) job and return its request id; validates parameters first.

        Billed and without an idempotency key: never retried after the request may have arrived.
        ``strict`` refuses parameters the model is not known to take (default: warn and send them).
        ``trust_5xx=False`` also raises a 500/502/503 instead of resending (it may be a "late" 5xx,
        sent after the job was queued): for a caller that then searches the request history
        (:func:`~airflow_provider_segmind.protocol.submit_certainly_refused`).
        """
        body = validate_params(model, params, strict=strict, warn=self.log.warning) if validate else dict(params)
        base_url = self.get_settings().base_url
        return self._call(
            "POST",
            submit_url(base_url, model),
            lambda answer: parse_submit(answer, base_url),
            endpoint=Endpoint.SUBMIT,
            json_body=body,
            idempotent=False,
            trust_5xx=trust_5xx,
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

    def get_credit_balance(self) -> CreditBalance:
        """The account's paid and free credits (both spendable). Free: it bills nothing and runs no model."""
        return self._call(
            "GET", credits_url(self.get_settings().base_url), parse_credit_balance, endpoint=Endpoint.CREDITS
        )

    def get_credits(self) -> float:
        """Spendable credits: paid plus free (see :meth:`get_credit_balance`)."""
        return self.get_credit_balance().total

    # ---------------------------------------------------------------- request history (sync)

    @property
    def history_enabled(self) -> bool:
        """Whether history lookups are on (the ``history_lookup`` extra, default true).

        In the triggerer, call :meth:`ahistory_enabled` (or resolve the settings first).
        """
        return (self._settings or self.get_settings()).history_lookup

    def get_history_record(self, request_id: str) -> HistoryRecord | None:
        """One of this account's requests from Segmind's request history, of any age; ``None`` when
        the history does not know it (404: unknown, another account's [sdk ``Generations.get``], or
        not landed yet) or when ``history_lookup`` is off (then nothing is sent).

        A GET, retried like a status poll. Errors of the history host (down, 404 for the whole
        endpoint, garbage) raise the usual typed errors: the caller decides what "unknown" means.
        """
        settings = self.get_settings()
        if not settings.history_lookup:
            return None
        return self._call(
            "GET",
            history_record_url(settings.history_url, request_id),
            lambda answer: parse_history_record(answer, request_id),
            endpoint=Endpoint.HISTORY,
        )

    def find_submitted(
        self, model: str, body: Mapping[str, Any], *, since: float, until: float | None = None
    ) -> HistoryRecord | None:
        """The request of ``model`` whose recorded ``request_body`` matches ``body``, created since
        ``since`` (epoch seconds, minus a minute of clock skew): a submit whose answer was lost.

        Reads at most :data:`~airflow_provider_segmind.history.MAX_SEARCH_PAGES` pages of 100,
        newest first (:class:`~airflow_provider_segmind.history.HistorySearch` holds the rules).
        ``None``: not (yet) found, or ``history_lookup`` off. A record that has not landed yet has
        no body and is not found: the caller waits a bounded time and asks again.
        """
        settings = self.get_settings()
        if not settings.history_lookup:
            return None
        search = HistorySearch(model, body, since, time.time() if until is None else until)
        while True:
            url = f"{history_list_url(settings.history_url)}?{urlencode(search.query())}"
            records, more = self._call("GET", url, parse_history_page, endpoint=Endpoint.HISTORY)
            if not search.take(records, more):
                return search.best()

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: one credits call (free), so it tells a bad key from a bad host.

        One attempt and no retry loop: the button should answer in about a round trip, and a person
        is there to press it again. The message names the URL it reached and both balances, and
        leaves out what does not apply to a test (retry advice, Airflow's temporary connection id).
        """
        try:
            conn = self.get_connection(self.segmind_conn_id)
        except Exception as err:
            return False, redact(f"Could not read the connection: {err}")
        host = (conn.host or "").strip()
        assumed = ""
        if host and "://" not in host:
            scheme = conn.schema or "https"
            assumed = f" (the host has no scheme, so {scheme}:// was used)"
        try:
            settings = SegmindConnectionSettings.from_connection(conn, retry_policy=RetryPolicy(max_attempts=1))
        except SegmindInvalidParametersError as err:
            # Drop "The Segmind connection '<temporary id>' is misconfigured: " for the form.
            return False, sentences(f"Invalid connection: {str(err).split(': ', 1)[-1]}")
        except SegmindAuthenticationError:
            return False, "No API key: put the Segmind API key in the API Key (password) field."
        self._settings = settings
        url = credits_url(settings.base_url)
        try:
            balance = self.get_credit_balance()
        except SegmindInvalidResponseError as err:
            return False, sentences(
                f"{settings.base_url}{assumed} answered HTTP {err.status_code}, but not like Segmind's API",
                "A proxy page or a wrong host is the usual cause: check the Host field",
            )
        except SegmindTransportError as err:
            return False, sentences(f"Could not reach {settings.base_url}{assumed}: {err.summary}")
        except (SegmindAuthenticationError, SegmindForbiddenError) as err:
            return False, str(err)  # already says what to fix in the form
        except SegmindError as err:
            return False, _test_failure_text(err, f"{settings.base_url}{assumed}")
        except Exception as err:
            return False, redact(f"Calling {url} failed: {type(err).__name__}: {err}", [settings.api_key])
        finally:
            self.close()
        return True, sentences(f"Connected to {settings.base_url}{assumed}; the key works", balance.describe())

    # ---------------------------------------------------------------- async transport

    @contextlib.asynccontextmanager
    async def shared_session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """The event loop's shared ``aiohttp`` session (see :class:`_LoopSessionPool`); always released."""
        settings = await self.aget_settings()
        async with _SHARED_SESSIONS.acquire(settings) as session:
            yield session

    def _aio_request_parts(
        self, settings: SegmindConnectionSettings
    ) -> tuple[CIMultiDictProxy[str], aiohttp.ClientTimeout, str | None]:
        """Headers, timeout and proxy for this hook's async calls, built once (they only depend on
        settings: every call goes to the base URL's host, so the environment's proxy variables are
        read when the connection is resolved, not on every poll).

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
                parts = _REQUEST_PARTS[settings] = (headers, timeout, settings.proxy_for(settings.base_url))
            prepared = self._aio_prepared = (settings, *parts)
        return prepared[1], prepared[2], prepared[3]

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
        other_host: bool = False,
    ) -> T:
        import aiohttp

        settings = self._settings or await self.aget_settings()
        headers, timeout, proxy = self._aio_request_parts(settings)
        if other_host:
            # Not the base URL's host (the request history): its own proxy/NO_PROXY decision.
            proxy = settings.proxy_for(url)
        request_url: str | yarl.URL = target if target is not None else url

        async def attempt() -> T:
            try:
                async with session.get(
                    request_url, headers=headers, timeout=timeout, allow_redirects=False, proxy=proxy
                ) as response:
                    body = await response.read()
                    answer = HttpAnswer(response.status, lower_headers(response.headers.items()), body, url)
            except (TimeoutError, aiohttp.ClientError) as err:
                raise _aiohttp_error(err, url, settings.secrets) from None
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
            lambda answer: parse_history_record(answer, request_id),
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
        search = HistorySearch(model, body, since, time.time() if until is None else until)
        while True:
            url = f"{history_list_url(settings.history_url)}?{urlencode(search.query())}"
            records, more = await self._acall(
                session, url, parse_history_page, endpoint=Endpoint.HISTORY, retry=retry, other_host=True
            )
            if not search.take(records, more):
                return search.best()
