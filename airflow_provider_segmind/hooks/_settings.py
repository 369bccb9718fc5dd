"""What a Segmind connection means: its fields and extras parsed into :class:`SegmindConnectionSettings`
(one reading for workers and the triggerer), and the typed extra fields of Airflow 3.1's connection form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from airflow_provider_segmind.exceptions import SegmindAuthenticationError, SegmindError, SegmindInvalidParametersError
from airflow_provider_segmind.get_provider_info import EXTRA_DEFAULTS, EXTRA_FIELDS
from airflow_provider_segmind.protocol.catalogue import DEFAULT_CATALOGUE_URL, default_catalogue_url
from airflow_provider_segmind.protocol.history import (
    DEFAULT_HISTORY_URL,
    NAIVE_TIMESTAMP_ZONES,
    default_history_url,
    history_zone,
    normalize_history_url,
)
from airflow_provider_segmind.protocol.rate_budget import TASK_TURNAROUND_S, WINDOW_S, RateBudget
from airflow_provider_segmind.protocol.retry import RetryPolicy
from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.protocol.urls import is_loopback_host, normalize_base_url
from airflow_provider_segmind.utils.proxy import normalize_proxy_url, proxy_for, proxy_secrets, public_proxy_url

if TYPE_CHECKING:
    from airflow.sdk import Connection

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
#: A v1 call blocks while the GPU renders (~10 s for SD3 Large, longer when queued).
DEFAULT_RUN_SYNC_TIMEOUT = 300.0


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
    #: The ``history_timezone`` extra: the zone of the history's naive timestamps (an IANA name such
    #: as ``Asia/Kolkata`` or an offset such as ``+05:30``). ``None``: unknown, so a naive time is
    #: read in each of :data:`~airflow_provider_segmind.history.NAIVE_TIMESTAMP_ZONES`.
    history_timezone: str | None = None
    #: The ``history_user_id``/``history_user_email`` extras (at most one): a team account's
    #: history lists every member's requests (SDK 1.3.0 ``segmind/generations.py``,
    #: ``Generations.history``: "Inside a team this may be any member"), so searches send this
    #: filter to see only this connection's user.
    history_user_id: str | None = None
    history_user_email: str | None = None
    #: The ``check_model_catalogue`` extra: before a submit, refuse a slug Segmind's model catalogue
    #: (SDK 1.3.0 ``segmind/models.py``, ``Models.list``) does not list or lists as retired; an
    #: unreachable catalogue never stops a run. Default: on, except for a loopback base URL (the
    #: emulator, whose tests and demos count every request, or another local stand-in).
    check_model_catalogue: bool = False
    #: The ``max_spend_per_day`` extra (USD, ``None``: no cap): before every submit, today's (UTC)
    #: spend in Segmind's request history plus the in-flight estimates must leave room for the job
    #: (:mod:`airflow_provider_segmind.protocol.spend`).
    max_spend_per_day: float | None = None
    #: Where the catalogue is read: the SDK's URL, or a loopback base URL's own path.
    catalogue_url: str = DEFAULT_CATALOGUE_URL
    #: The ``requests_per_minute`` extra (the key's limit, docs.segmind.com/api-reference/rate-limits)
    #: with ``rate_limit_worker_slots`` and ``rate_limit_triggerers``: every call of this process waits
    #: for its share (``hooks/_budget.py``). ``None`` (no extra): nothing waits, a 429 is waited out.
    rate_budget: RateBudget | None = None
    #: The proxy for calls to the base URL (:meth:`proxy_for`), decided once when the settings are
    #: built: the decision reads the environment's proxy variables (~0.15 ms of CPU, more than a
    #: status poll), and the triggerer sends thousands of polls there with the same settings
    #: (see :mod:`~airflow_provider_segmind.hooks._cache`). Out of ``repr``: it may carry a password.
    base_url_proxy: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url_proxy", self.proxy_for(self.base_url))

    @property
    def history_naive_zones(self) -> tuple[str, ...]:
        """The zones the history's naive timestamps are read in: ``history_timezone``, else both defaults."""
        return (self.history_timezone,) if self.history_timezone else NAIVE_TIMESTAMP_ZONES

    @property
    def proxy_shown(self) -> str | None:
        """The proxy as it may be logged: ``scheme://***@host:port`` (``None`` without one)."""
        return public_proxy_url(self.proxy) if self.proxy else None

    def proxy_for(self, url: str) -> str | None:
        """The proxy for ``url``: the ``proxy`` extra, else ``HTTP(S)_PROXY``; none for a ``NO_PROXY``
        host (:func:`~airflow_provider_segmind.utils.proxy.proxy_for`). One rule for both transports, so
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
                history_timezone=_history_timezone(extras),
                check_model_catalogue=_bool_extra(
                    extras, "check_model_catalogue", default=not is_loopback_host(urlsplit(base_url).hostname)
                ),
                catalogue_url=default_catalogue_url(base_url),
                max_spend_per_day=_positive(extras, "max_spend_per_day", 0.0) or None,
                rate_budget=_rate_budget(extras),
                **_history_user(extras),
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
                "history_url: an https URL (http only for loopback); history_lookup: true or false; "
                "history_timezone: an IANA time zone name (e.g. Asia/Kolkata) or a UTC offset (e.g. +05:30); "
                "history_user_id or history_user_email (not both): one team member's id or email; "
                "check_model_catalogue: true or false; max_spend_per_day: a positive number of USD; "
                "requests_per_minute, rate_limit_worker_slots, "
                "rate_limit_triggerers: whole numbers >= 1 (the key's limit and the processes sharing it); "
                "rate_limit_task_turnaround: positive seconds",
            ) from None


def plain_settings(conn: Connection) -> SegmindConnectionSettings | None:
    """``conn``'s settings without a hook's retry override, for the shared cache (``None``: unusable).

    With an override, extras ``max_retries``/``retry_backoff`` are not read, so a connection whose
    retry extras are invalid still works for that hook; such a connection is simply not cached.
    """
    try:
        return SegmindConnectionSettings.from_connection(conn)
    except SegmindError:
        return None


_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off"})


def _flag(extras: Mapping[str, Any], name: str) -> bool:
    """A boolean extra given as JSON ``true`` or a string (``"true"``, ``"1"``, ``"yes"``); default off."""
    value = extras.get(name)
    if isinstance(value, str):
        return value.strip().lower() in _TRUE_WORDS
    return value is True


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


def _history_timezone(extras: Mapping[str, Any]) -> str | None:
    """The ``history_timezone`` extra, checked (:func:`~airflow_provider_segmind.history.history_zone`)."""
    value = extras.get("history_timezone")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"extra 'history_timezone' must be a string, got {value!r}")
    try:
        history_zone(value)
    except ValueError as err:
        raise ValueError(f"extra 'history_timezone': {err}") from None
    return value.strip()


def _history_user(extras: Mapping[str, Any]) -> dict[str, str]:
    """The ``history_user_id``/``history_user_email`` extras: at most one, a single word each."""
    found: dict[str, str] = {}
    for name in ("history_user_id", "history_user_email"):
        value = extras.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        text = value.strip() if isinstance(value, str) else ""
        if not text or any(c.isspace() or not c.isprintable() for c in text):
            raise ValueError(
                f"extra {name!r} must be one {name.removeprefix('history_user_')} without spaces, got {value!r}"
            )
        if name == "history_user_email" and text.count("@") != 1:
            raise ValueError(f"extra 'history_user_email' must be an email address, got {value!r}")
        found[name] = text
    if len(found) == 2:
        # SDK 1.3.0 segmind/generations.py, Generations.history: "user_email: Same as user_id, by
        # email. Pass one or the other."
        raise ValueError("set extra 'history_user_id' or 'history_user_email', not both (the history takes one)")
    return found


def _whole(extras: Mapping[str, Any], name: str, default: int | None) -> int | None:
    """A whole-number extra (JSON number or the form's string), or ``default`` when absent."""
    value = extras.get(name)
    if value is None or value == "":
        return default
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"extra {name!r} must be a whole number, got {value!r}")
    return int(number)


def _rate_budget(extras: Mapping[str, Any]) -> RateBudget | None:
    """The ``requests_per_minute`` extra and the processes that share it, checked (``RateBudget``)."""
    limit = _whole(extras, "requests_per_minute", None)
    if limit is None:
        return None
    return RateBudget(
        limit,
        worker_slots=_whole(extras, "rate_limit_worker_slots", 1) or 1,
        triggerers=_whole(extras, "rate_limit_triggerers", 1) or 1,
        # Not on the form: only an emulator with a sped-up clock counts in a shorter window.
        window_s=_positive(extras, "rate_limit_window", WINDOW_S),
        task_turnaround_s=_positive(extras, "rate_limit_task_turnaround", TASK_TURNAROUND_S),
    )


def _positive(extras: Mapping[str, Any], name: str, default: float) -> float:
    value = extras.get(name)
    if value is None or value == "":
        return default
    number = float(value)
    if number <= 0:
        raise ValueError(f"extra {name!r} must be positive, got {value!r}")
    return number


def connection_form_widgets() -> dict[str, Any]:
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
