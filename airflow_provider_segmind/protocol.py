"""The Segmind API's rules, as pure functions: no sockets, no Airflow, no clocks read implicitly.

Both transports (``requests`` on the worker, ``aiohttp`` in the triggerer) and the emulator call
this module, so URL building, parameter validation, status parsing, error classification and the
retry policy are written once and cannot drift between the sync and async paths.

A transport's whole job is: build the request from :func:`build_url` and :func:`auth_headers`,
send it, wrap what came back in an :class:`HttpAnswer`, and hand that to a ``parse_*`` function,
which either returns a typed value or raises the typed error from :mod:`.exceptions`.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import ipaddress
import json
import logging
import math
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote, urlsplit

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

DEFAULT_BASE_URL: Final = "https://api.segmind.com"
API_KEY_HEADER: Final = "x-api-key"
SD3_LARGE_MODEL: Final = "stable-diffusion-3-large-txt2img"
#: Segmind's reset header for 429s (a UTC timestamp); ``Retry-After`` is honoured too if sent.
RATE_LIMIT_RESET_HEADER: Final = "x-rate-limit-reset-at-utc"
#: Response headers of a v1 call worth keeping: they carry cost, credits, seed and timings.
V1_INTERESTING_HEADERS: Final = (
    "content-type",
    "x-request-id",
    "x-remaining-credits",
    "x-cost",
    "x-generation-time",
    "x-seed-value",
)
#: How much of a server's error text we keep: enough to act on, never a whole HTML page.
MAX_ERROR_TEXT: Final = 500


class SegmindJobStatus(StrEnum):
    """The states of a v2 job. COMPLETED and FAILED are terminal; the others are not."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: Final = frozenset({SegmindJobStatus.COMPLETED, SegmindJobStatus.FAILED})


class Endpoint(StrEnum):
    """Which call an answer belongs to: the same status code means different things per call."""

    RUN_SYNC = "v1 inference"
    SUBMIT = "v2 submit"
    STATUS = "v2 status"
    RESULT = "v2 result"
    CREDITS = "credits"
    #: Segmind's request-history API (see :mod:`airflow_provider_segmind.history`).
    HISTORY = "request history"


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

_KEY_SHAPE = re.compile(r"SG_[0-9A-Za-z]{8,}")


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove API keys from text that came from outside (server error bodies, exception reprs).

    Known secrets are replaced verbatim, and anything shaped like a Segmind key (``SG_`` + hex)
    is replaced too, so a key echoed back by a proxy cannot reach a log or an exception.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_SHAPE.sub("***", text)


def sentences(*parts: str | None) -> str:
    """Join message parts into sentences, each ending in exactly one full stop.

    Server texts often end in a full stop already ("... to continue."); appending ". Top up" to
    them gave "continue.. Top up". Every message that joins a server text or another message to
    more text goes through here, so no part is terminated twice. Empty parts are skipped; a part
    that already ends in ``.``, ``!`` or ``?`` (a server's own ellipsis included) is kept as is.
    """
    out: list[str] = []
    for part in parts:
        text = (part or "").strip()
        if not text:
            continue
        out.append(text if text[-1] in ".!?" else text + ".")
    return " ".join(out)


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def is_loopback_host(hostname: str | None) -> bool:
    """Whether ``hostname`` names this machine (``localhost``, 127.0.0.0/8, ``::1``).

    Plain ``http`` is acceptable only there: anywhere else the ``x-api-key`` header would cross a
    network in clear text.
    """
    if not hostname:
        return False
    name = hostname.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refuse_cleartext_key(scheme: str, hostname: str | None, what: str, allow_insecure_http: bool) -> None:
    """Refuse a plain-``http`` URL that would carry the API key off this machine (:func:`is_loopback_host`).

    The one rule for every URL the key is sent to (the API base URL, the request-history URL);
    ``allow_insecure_http`` (connection extra of that name) is the explicit opt-in.
    """
    if scheme == "http" and not allow_insecure_http and not is_loopback_host(hostname):
        raise ValueError(
            f"{what} uses plain http to a host that is not loopback, which would send the API key in clear "
            "text: use https, or set the connection extra allow_insecure_http=true if the network path is trusted"
        )


def normalize_base_url(
    host: str | None, *, schema: str | None = None, port: int | None = None, allow_insecure_http: bool = False
) -> str:
    """Turn a connection's ``host`` (optionally with schema/port) into a base URL with no trailing slash.

    ``host`` may be a full URL (``http://127.0.0.1:8787``) or a bare host name; empty means
    Segmind's public API. A path suffix such as ``/v1`` is dropped, because every call adds
    its own version segment (people paste the SDK's ``base_url`` here).

    Every call carries the API key in a header, so ``http://`` is refused unless the host is
    loopback (the local emulator) or ``allow_insecure_http`` is set explicitly (connection extra
    of the same name), e.g. for a TLS-terminating sidecar on a private network.
    """
    if not host:
        return DEFAULT_BASE_URL
    raw = host.strip()
    if "://" not in raw:
        raw = f"{schema or 'https'}://{raw}"
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"Segmind connection host {host!r} is not an http(s) URL or host name")
    refuse_cleartext_key(parts.scheme, parts.hostname, f"Segmind connection host {host!r}", allow_insecure_http)
    if has_dot_segment(parts.path):
        raise ValueError(f"Segmind connection host {host!r} has a '.' or '..' path segment")
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    if re.fullmatch(r"/v\d+", path):
        path = ""
    return f"{parts.scheme}://{netloc}{path}"


#: A path segment that is only dots, literal or percent-encoded (``.``, ``..``, ``%2e%2E``, ``.%2e``):
#: a server or proxy resolves it, so ``v2/requests/../status`` would reach another endpoint.
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e)+(?:/|$)", re.IGNORECASE)


def has_dot_segment(path: str) -> bool:
    """Whether a URL path (or a slug / id going into one) has a dot-only segment, encoded or not."""
    return bool(_DOT_SEGMENT.search(path))


_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9._\-]+)*")


def _check_slug(model: str) -> str:
    """A model slug is a path below ``/v1/`` or ``/v2/``: no dot-only segment (``a/../../v1/x``
    would POST a billed body to another endpoint), no ``%`` (no encoded variants either)."""
    if not isinstance(model, str) or not _SLUG.fullmatch(model) or has_dot_segment(model):
        raise SegmindInvalidParametersError(
            f"model {model!r} is not a Segmind model slug: use letters, digits, '.', '_' and '-', "
            f"with no '.' or '..' path segment (for example {SD3_LARGE_MODEL!r})",
            field="model",
            allowed="a model slug such as " + SD3_LARGE_MODEL,
        )
    return model


def run_sync_url(base_url: str, model: str) -> str:
    """``POST`` target of a v1 (blocking) inference."""
    return f"{base_url}/v1/{_check_slug(model)}"


def submit_url(base_url: str, model: str) -> str:
    """``POST`` target of a v2 (queued) submit."""
    return f"{base_url}/v2/{_check_slug(model)}"


def _check_request_id(request_id: str) -> str:
    # A dot-only id ('..') would turn /v2/requests/{id}/status into /v2/status.
    if (
        not isinstance(request_id, str)
        or not re.fullmatch(r"[A-Za-z0-9._\-]{1,128}", request_id)
        or has_dot_segment(request_id)
    ):
        raise SegmindInvalidParametersError(
            f"request_id {request_id!r} is not a Segmind request id (letters, digits, '-', '_', '.'; not only dots)",
            field="request_id",
            allowed="the request_id a v2 submit returned",
        )
    return request_id


def status_url(base_url: str, request_id: str) -> str:
    """``GET`` target for a v2 job's status."""
    return f"{base_url}/v2/requests/{quote(_check_request_id(request_id))}/status"


def result_url(base_url: str, request_id: str) -> str:
    """``GET`` target for a v2 job's result."""
    return f"{base_url}/v2/requests/{quote(_check_request_id(request_id))}"


def credits_url(base_url: str) -> str:
    """``GET`` target for the account's remaining credits (free: does not bill)."""
    return f"{base_url}/v1/get-user-credits"


def same_origin(url: str, base_url: str) -> bool:
    """Whether ``url`` is on the configured API's scheme, host and port.

    We follow the absolute ``status_url``/``response_url`` a submit returns (as the SDK does),
    but only on the same origin: those calls carry the API key, and a URL from a response body
    must never make us send it to another host.
    """
    a, b = urlsplit(url), urlsplit(base_url)
    if has_dot_segment(a.path):
        return False  # /v2/requests/../../v1/x is not the URL it looks like: build our own instead
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def auth_headers(api_key: str, *, json_body: bool = False) -> dict[str, str]:
    """Headers for an API call. Only ever built inside a transport, never stored or logged."""
    headers = {API_KEY_HEADER: api_key, "Accept": "application/json"}
    if json_body:
        headers["Content-Type"] = "application/json"
    return headers


# --------------------------------------------------------------------------------------------
# Parameter validation
# --------------------------------------------------------------------------------------------

#: Stability's standard SD3 output size per aspect ratio (also what the emulator renders).
SD3_SIZES: Final[Mapping[str, tuple[int, int]]] = {
    "16:9": (1344, 768),
    "1:1": (1024, 1024),
    "21:9": (1536, 640),
    "2:3": (832, 1216),
    "3:2": (1216, 832),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
SD3_ASPECT_RATIOS: Final = tuple(SD3_SIZES)
SD3_MODES: Final = ("text-to-image", "image-to-image")
SD3_OUTPUT_FORMATS: Final = ("jpeg", "png")
SD3_PROMPT_MAX_CHARS: Final = 10_000
SD3_SEED_MAX: Final = 4_294_967_294
#: Segmind's convention for "pick a random seed" (segmind-api.md, "Added 2026-11-30").
SEED_RANDOM: Final = -1
SD3_DEFAULTS: Final[Mapping[str, Any]] = {
    "negative_prompt": "",
    "aspect_ratio": "1:1",
    "mode": "text-to-image",
    "output_format": "jpeg",
    "base64": False,
}
#: Model families known to take a ``seed`` (0..SD3_SEED_MAX; SD3: segmind-api.md, the SD3 parameter
#: table and Stability's SD3 API [inf]). Segmind's own default seed is random, so the operators
#: fill one when the user gave none (issue 13): bodies become unique, so a lost submit can be
#: found again in the request history, and every image has a known seed.
SEED_MODEL_PREFIXES: Final = ("stable-diffusion-3",)


def model_takes_seed(model: str) -> bool:
    """Whether ``model`` is known to take a ``seed`` parameter (see :data:`SEED_MODEL_PREFIXES`)."""
    return model.strip().lower().startswith(SEED_MODEL_PREFIXES)


#: The parameters Segmind documents for SD3 Large (segmind-api.md, the [seed] table).
SD3_DOCUMENTED_FIELDS: Final = frozenset({"prompt", *SD3_DEFAULTS})
#: Not in Segmind's table: they come from Stability's SD3 API (segmind-api.md [inf]). Their values
#: are checked like the documented ones; whether Segmind forwards them is not confirmed.
SD3_STABILITY_FIELDS: Final = frozenset({"image", "strength", "seed"})
SD3_FIELDS: Final = SD3_DOCUMENTED_FIELDS | SD3_STABILITY_FIELDS

_log = logging.getLogger(__name__)


def _allowed(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in values)


def _invalid(field_name: str, problem: str, allowed: str) -> SegmindInvalidParametersError:
    return invalid_parameters([(field_name, problem, allowed)])


def invalid_parameters(
    problems: Iterable[tuple[str, str, str]], *, model: str | None = None
) -> SegmindInvalidParametersError:
    """One error for every bad field: ``(field, problem, allowed values)`` triples.

    Reporting one field at a time made a DAG author fix, deploy and fail once per field.
    """
    found = list(problems)
    if len(found) == 1:
        ((name, problem, allowed),) = found
        message = sentences(f"Invalid parameter {name!r}: {problem}", f"Allowed: {allowed}")
    else:
        where = f" for {model}" if model else ""
        listed = "; ".join(f"{name!r}: {problem} (allowed: {allowed})" for name, problem, allowed in found)
        message = sentences(f"{len(found)} invalid parameters{where}: {listed}")
    first_field, _, first_allowed = found[0]
    return SegmindInvalidParametersError(message, field=first_field, allowed=first_allowed, problems=found)


def _check_text(params: Mapping[str, Any], name: str, *, required: bool) -> tuple[str, str, str] | None:
    value = params.get(name)
    allowed = f"a non-blank string of at most {SD3_PROMPT_MAX_CHARS:,} characters"
    if value is None:
        return (name, "it is missing", allowed) if required else None
    if not isinstance(value, str):
        return name, f"got {type(value).__name__}, not a string", allowed
    if required and not value.strip():
        return name, "it is blank", allowed
    if len(value) > SD3_PROMPT_MAX_CHARS:
        return name, f"it is {len(value):,} characters long", allowed
    return None


def _check_choice(params: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> tuple[str, str, str] | None:
    if name in params and params[name] not in choices:
        return name, f"got {params[name]!r}", _allowed(choices)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def unknown_params(model: str, params: Mapping[str, Any]) -> list[str]:
    """Parameter names ``model`` is not known to take (only SD3 Large is known; others: none)."""
    if model != SD3_LARGE_MODEL:
        return []
    return sorted(str(name) for name in set(params) - SD3_FIELDS)


def validate_sd3_params(
    params: Mapping[str, Any], *, strict: bool = False, warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Validate Stable Diffusion 3 Large parameters; return them with the documented defaults filled in.

    Every bad value of a known field is reported in one :class:`SegmindInvalidParametersError`,
    naming each field and its allowed values, so a bad DAG fails on the worker before any credit
    is spent. Unknown fields are passed through with a warning (``warn``, default: this module's
    logger): Segmind's table is not the whole truth (``image``, ``strength`` and ``seed`` come
    from Stability's API), so refusing what we do not know would block valid requests. With
    ``strict=True`` they are refused too, which catches a typo (``aspect-ratio``) before it
    silently becomes an image nobody asked for.
    """
    problems: list[tuple[str, str, str]] = []
    unknown = unknown_params(SD3_LARGE_MODEL, params)
    if unknown:
        allowed_names = _allowed(sorted(SD3_FIELDS))
        if strict:
            problems += [
                (name, f"unknown parameter for {SD3_LARGE_MODEL} (strict mode)", allowed_names) for name in unknown
            ]
        else:
            note = (
                f"Parameter(s) {_allowed(unknown)} are not known for {SD3_LARGE_MODEL} (known: {allowed_names}); "
                "sending them anyway. Pass strict_params=True to refuse unknown parameters."
            )
            (warn or _log.warning)(note)
    checks = [
        _check_text(params, "prompt", required=True),
        _check_text(params, "negative_prompt", required=False),
        _check_choice(params, "aspect_ratio", SD3_ASPECT_RATIOS),
        _check_choice(params, "mode", SD3_MODES),
        _check_choice(params, "output_format", SD3_OUTPUT_FORMATS),
    ]
    problems += [found for found in checks if found is not None]
    if "base64" in params and not isinstance(params["base64"], bool):
        problems.append(("base64", f"got {params['base64']!r}", "true or false"))
    if params.get("seed") is not None:
        seed = params["seed"]
        if (
            not isinstance(seed, int)
            or isinstance(seed, bool)
            or not (seed == SEED_RANDOM or 0 <= seed <= SD3_SEED_MAX)
        ):
            problems.append(
                ("seed", f"got {seed!r}", f"an integer from 0 to {SD3_SEED_MAX}, or {SEED_RANDOM} for random")
            )
    mode = params.get("mode", SD3_DEFAULTS["mode"])
    if mode == "image-to-image":
        image = params.get("image")
        if not isinstance(image, str) or not image.strip():
            problems.append(("image", "image-to-image mode needs an input image", "an image URL or base64 string"))
        strength = params.get("strength")
        if strength is None or not _is_number(strength) or not 0 <= strength <= 1:
            problems.append(("strength", f"image-to-image mode needs it, got {strength!r}", "a number from 0 to 1"))
    elif mode in SD3_MODES:
        for name in ("image", "strength"):
            if params.get(name) is not None:
                problems.append((name, "only used in image-to-image mode", "omit it, or set mode='image-to-image'"))
    if problems:
        raise invalid_parameters(problems, model=SD3_LARGE_MODEL)
    return {**SD3_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}


def validate_params(
    model: str, params: Mapping[str, Any], *, strict: bool = False, warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Validate parameters for ``model``: SD3 Large is checked in full, other slugs pass through.

    Segmind hosts hundreds of models whose parameters we cannot know; for those we only insist
    the body is a JSON object, so a generic operator still fails early on garbage. ``strict`` and
    ``warn``: see :func:`validate_sd3_params`.
    """
    _check_slug(model)
    if not isinstance(params, Mapping):
        raise _invalid("params", f"got {type(params).__name__}", "a mapping of parameter names to values")
    if model == SD3_LARGE_MODEL:
        return validate_sd3_params(params, strict=strict, warn=warn)
    try:
        json.dumps(params)
    except (TypeError, ValueError) as err:
        raise _invalid("params", f"not JSON-serializable ({err})", "JSON values only") from None
    return dict(params)


# --------------------------------------------------------------------------------------------
# Answers and their parsing
# --------------------------------------------------------------------------------------------


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
                f"({self.content_type or 'no content type'}: {_snippet(self.body)!r}). "
                "A proxy or an outage page is the usual cause; it is retried.",
                status_code=self.status,
            ) from None


def lower_headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case header names (first value wins), the form :class:`HttpAnswer` expects."""
    out: dict[str, str] = {}
    for name, value in items:
        out.setdefault(name.lower(), value)
    return out


def _snippet(body: bytes, limit: int = 120) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return re.sub(r"\s+", " ", text).strip()


def _error_text(answer: HttpAnswer) -> str | None:
    """The server's ``error`` text from a JSON error body (or a short snippet of anything else)."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return _snippet(answer.body) or None
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if value:
                text = value if isinstance(value, str) else json.dumps(value)
                return redact(text)[:MAX_ERROR_TEXT]
    return None


#: What :func:`_loads` returns for a body that is not JSON (``None`` is a valid JSON value).
_NOT_JSON: Final = object()


def _loads(answer: HttpAnswer) -> Any:
    """The body as JSON, or ``_NOT_JSON``: status and result answers are parsed once, not twice
    (once to look for a FAILED body, once for the object), since the triggerer parses thousands."""
    try:
        return json.loads(answer.body)
    except ValueError:
        return _NOT_JSON


def _json_object(answer: HttpAnswer, endpoint: Endpoint, parsed: Any = _NOT_JSON) -> dict[str, Any]:
    """The body as a JSON object; ``parsed`` is the body already parsed by :func:`_loads`, if it was."""
    # Not parsed yet, or not JSON: answer.json() parses (again) and raises the not-JSON error.
    body = answer.json() if parsed is _NOT_JSON else parsed
    if not isinstance(body, dict):
        raise SegmindInvalidResponseError(
            f"Segmind's {endpoint.value} answer is JSON but not an object: {_snippet(answer.body)!r}",
            status_code=answer.status,
        )
    return body


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


_SUBMIT_404_HINT = "Check the model slug on segmind.com/models (slugs are lower-case, with dashes)"
#: Where a DAG author finds a current model when theirs is retired.
MODEL_CATALOGUE_URL: Final = "https://www.segmind.com/models"
#: The credits endpoint's 404 for an account without a credits record (segmind-api.md, "Added 2026-11-30").
_NO_CREDITS_RECORD = re.compile(r"no credits", re.IGNORECASE)


def _clause(text: str | None) -> str:
    """A server text to embed after a colon: without the full stop(s) our own join will add."""
    return (text or "").strip().rstrip(".").rstrip()


def _advice_406(text: str | None) -> str:
    """406 is "refused before the run", for several reasons (segmind-api.md, "Added 2026-11-30"):
    insufficient credits, a team spend limit, a missing/wrong Content-Type, a refused parameter."""
    lowered = (text or "").lower()
    if "content type" in lowered or "content-type" in lowered:
        return (
            "Segmind did not see a JSON request (a proxy may have changed the Content-Type): check the "
            "connection's host and any proxy in between"
        )
    if "limit" in lowered or "spend" in lowered:
        return "A team spend limit was reached: raise it in the Segmind team settings, or wait for it to reset"
    if "credit" in lowered:
        return "The account has insufficient credits (paid and free together): Top up before running again"
    return (
        "Segmind answers 406 for insufficient credits, a team spend limit, a missing or wrong Content-Type, "
        "or a parameter it refused before the run: the server's text says which"
    )


def classify_error(answer: HttpAnswer, endpoint: Endpoint, *, request_id: str | None = None) -> SegmindError:
    """Turn a non-success answer into the typed error that says what happened and what to do.

    The same status means different things per call: 404 at submit is an unknown model, at status
    it is an unknown or expired request, at credits an account without credits or a wrong host;
    422 at submit is a bad parameter, at status a FAILED job. Messages are joined with
    :func:`sentences`, so a server text ending in a full stop does not get a second one.
    """
    status = answer.status
    text = _error_text(answer)
    said = f": {_clause(text)}" if _clause(text) else ""
    where = f"Segmind {endpoint.value}" + (f" for request {request_id}" if request_id else "")
    common: dict[str, Any] = {"status_code": status, "error_text": text, "request_id": request_id}
    if status == 401:
        # The server's own text already says what is wrong with the key; say it ourselves only without one.
        return SegmindAuthenticationError(
            sentences(
                f"{where} was refused (HTTP 401){said}",
                "" if said else "The API key is missing, wrong or expired",
                "Put a valid key in the Segmind connection's password (API Key) field",
            ),
            **common,
        )
    if status == 403:
        return SegmindForbiddenError(
            sentences(
                f"{where} was forbidden (HTTP 403){said}",
                "The key is valid but this account may not use this model or endpoint: check the plan and the "
                "model's access on segmind.com",
            ),
            **common,
        )
    if status == 404:
        if endpoint in (Endpoint.STATUS, Endpoint.RESULT):
            return SegmindRequestNotFoundError(
                sentences(
                    f"{where} was not found (HTTP 404){said}",
                    "The id is unknown or its 1 hour retention has passed: submit the job again to get a new result",
                ),
                **common,
            )
        if endpoint is Endpoint.CREDITS:
            return SegmindNotFoundError(
                sentences(
                    f"{where} was not found (HTTP 404) at {answer.url or 'the credits URL'}{said}",
                    "This is not Segmind's credits endpoint: check the connection's host",
                ),
                **common,
            )
        return SegmindModelNotFoundError(
            sentences(f"{where} was not found (HTTP 404){said}", _SUBMIT_404_HINT), **common
        )
    if status == 410:
        # Retired models answer 410 (segmind-api.md [3p], "Added 2026-11-30").
        return SegmindModelRetiredError(
            sentences(
                f"{where} failed: Segmind has retired this model (HTTP 410){said}",
                f"Pick a current model in the catalogue, {MODEL_CATALOGUE_URL}, and change the task's model slug",
            ),
            **common,
        )
    if status == 406:
        return SegmindInsufficientCreditsError(
            sentences(
                f"{where} was refused before the run (HTTP 406){said}",
                _advice_406(text),
                "Nothing was generated or billed",
            ),
            **common,
        )
    if status in (400, 422):
        if endpoint in (Endpoint.STATUS, Endpoint.RESULT):
            # A FAILED job arrives as 422 with a JSON body; parse_status/parse_result handle it
            # before reaching here, so this is a 400/422 without that body.
            return SegmindJobFailedError(sentences(f"{where} reports the job failed (HTTP {status}){said}"), **common)
        return SegmindInvalidParametersError(
            sentences(
                f"{where} rejected the parameters (HTTP {status}){said}",
                "Fix the task's parameters; nothing was billed",
            ),
            **common,
        )
    if status == 429:
        return SegmindRateLimitError(
            sentences(
                f"{where} was rate limited (HTTP 429){said}",
                "The plan allows 5 (Free) or 50 (Pro) requests a minute: lower the DAG's concurrency with a pool, "
                "or upgrade",
            ),
            retry_after=parse_retry_after(answer.headers, answer.received_at),
            **common,
        )
    if status >= 500:
        billed_call = endpoint in (Endpoint.SUBMIT, Endpoint.RUN_SYNC)
        advice = (
            "The job may have been queued (and billed), so the submit is not sent again"
            if billed_call and status not in SUBMIT_REFUSED_5XX
            else "This is usually temporary and is retried with backoff"
        )
        return SegmindServerError(
            sentences(f"{where} failed on Segmind's side (HTTP {status}){said}", advice), **common
        )
    return SegmindUnexpectedStatusError(
        sentences(
            f"{where} answered with unexpected HTTP {status}{said}",
            "HTTP 405 means a wrong method or URL: check the connection's host" if status == 405 else "",
        ),
        **common,
    )


@dataclass(frozen=True)
class SubmitResponse:
    """A v2 submit's answer. ``status_url``/``response_url`` are already checked to be same-origin."""

    request_id: str
    status: SegmindJobStatus
    status_url: str
    response_url: str


@dataclass(frozen=True)
class JobStatusResponse:
    """A v2 status answer. ``error`` is the server's reason when ``status`` is FAILED."""

    request_id: str
    status: SegmindJobStatus
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class JobResult:
    """A COMPLETED v2 job's result body, with the fields image models carry pulled out.

    ``raw`` is the whole body; model-specific keys stay there. ``base64_image`` is set when the
    model returned the image inline instead of a URL (``base64: true``).
    """

    request_id: str
    status: SegmindJobStatus
    output: Any
    output_urls: tuple[str, ...]
    images: tuple[dict[str, Any], ...]
    seed: int | None
    metrics: dict[str, Any]
    base64_image: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class SyncRunResponse:
    """A v1 inference's answer: the bytes (an image, or JSON for other models) and useful headers."""

    content: bytes
    content_type: str
    headers: dict[str, str]

    @property
    def remaining_credits(self) -> float | None:
        return _as_float(self.headers.get("x-remaining-credits"))


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_status_value(value: Any, answer: HttpAnswer, endpoint: Endpoint) -> SegmindJobStatus:
    try:
        return SegmindJobStatus(str(value).upper())
    except ValueError:
        raise SegmindInvalidResponseError(
            f"Segmind's {endpoint.value} answer has an unknown status {value!r}; expected one of "
            f"{_allowed(s.value for s in SegmindJobStatus)}.",
            status_code=answer.status,
        ) from None


def _follow(advertised: Any, fallback: str, base_url: str) -> str:
    is_url = isinstance(advertised, str) and advertised.startswith(("http://", "https://"))
    if is_url and same_origin(advertised, base_url):
        return str(advertised)
    return fallback


def parse_submit(answer: HttpAnswer, base_url: str) -> SubmitResponse:
    """Parse a v2 submit; a 2xx without ``request_id`` is an error (as the SDK treats it)."""
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.SUBMIT)
    body = _json_object(answer, Endpoint.SUBMIT)
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise SegmindInvalidResponseError(
            f"Segmind's v2 submit answered HTTP {answer.status} without a request_id "
            f"(keys: {sorted(body)}). The job may exist: check the Segmind console before retrying.",
            status_code=answer.status,
        )
    _check_request_id(request_id)
    return SubmitResponse(
        request_id=request_id,
        status=_parse_status_value(body.get("status", "QUEUED"), answer, Endpoint.SUBMIT),
        status_url=_follow(body.get("status_url"), status_url(base_url, request_id), base_url),
        response_url=_follow(body.get("response_url"), result_url(base_url, request_id), base_url),
    )


def _failed_body(answer: HttpAnswer, parsed: Any = _NOT_JSON) -> dict[str, Any] | None:
    """The FAILED body Segmind serves under HTTP 422 (or any code), if this answer is one.

    ``parsed`` is the body already parsed by :func:`_loads` (parsed here otherwise).
    """
    body = _loads(answer) if parsed is _NOT_JSON else parsed
    if isinstance(body, dict) and str(body.get("status", "")).upper() == SegmindJobStatus.FAILED.value:
        return body
    return None


def _metrics(body: Mapping[str, Any]) -> dict[str, Any]:
    metrics = body.get("metrics")
    return dict(metrics) if isinstance(metrics, dict) else {}


def parse_status(answer: HttpAnswer, request_id: str) -> JobStatusResponse:
    """Parse a v2 status answer. FAILED (HTTP 422 with a JSON body) is a status, not an error."""
    parsed = _loads(answer)
    failed = _failed_body(answer, parsed)
    if failed is not None:
        error = failed.get("error")
        return JobStatusResponse(
            request_id=request_id,
            status=SegmindJobStatus.FAILED,
            metrics=_metrics(failed),
            error=redact(str(error))[:MAX_ERROR_TEXT] if error else "the job failed without an error text",
        )
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.STATUS, request_id=request_id)
    body = _json_object(answer, Endpoint.STATUS, parsed)
    return JobStatusResponse(
        request_id=request_id,
        status=_parse_status_value(body.get("status"), answer, Endpoint.STATUS),
        metrics=_metrics(body),
    )


_CONTENT_BLOCK = re.compile(r"safety|nsfw|\brai\b|content polic|moderation|flagged|blocked", re.IGNORECASE)

#: How a model says it refused its input. Segmind's own example of a FAILED job is "Prompt is
#: Mandatory and must be string" (segmind-api.md, v2 status); the other phrasings are the common
#: ones of input validators (pydantic, FastAPI, the models' own checks).
_INVALID_INPUT = re.compile(
    r"\bmandatory\b|\brequired\b|\bmissing\b|\bmust (?:be|have|contain|not)\b|\bshould be\b"
    r"|\binvalid\b|\bnot (?:a )?valid\b|\bnot allowed\b|\bnot supported\b|\bunsupported\b"
    r"|\bout of range\b|\bvalidation\b|\bunprocessable\b|\bcannot be (?:empty|blank|null)\b"
    r"|\bexpected (?:a |an )?(?:string|str|integer|int|number|float|boolean|bool|list|array|object|dict)\b"
    r"|\btoo (?:long|short|large|small|big|many)\b|\bexceeds?\b|\b(?:greater|less) than\b",
    re.IGNORECASE,
)
#: Signs of a failure on Segmind's side, which a later run can survive: these win over
#: :data:`_INVALID_INPUT` ("CUDA out of memory: tensor too large" is the GPU's problem, not the input's).
_TRANSIENT_FAILURE = re.compile(
    r"out of memory|\boom\b|\bcuda\b|\bgpu\b|timed? ?out|timeout|temporar|unavailable|overload|capacity"
    r"|internal (?:server )?error|\bworker\b|crash|connection|network|\bretry\b|try again|rate limit|busy",
    re.IGNORECASE,
)


def is_content_block(error: str | None) -> bool:
    """Whether a FAILED job's reason reads as a content-safety block (Segmind reports those as FAILED)."""
    return bool(error and _CONTENT_BLOCK.search(error))


def is_invalid_input(error: str | None) -> bool:
    """Whether a FAILED job's reason says the model refused its input, for any model.

    Such a job fails the same way on every submit of the same body, and each submit is billed,
    so it must not be retried. Models other than SD3 Large have no client-side validation, so
    this is the only place their bad inputs are caught. A reason that also names a server-side
    cause (GPU, memory, timeout, worker, ...) stays retryable: when in doubt, a retry is allowed.
    """
    if not error or _TRANSIENT_FAILURE.search(error):
        return False
    return bool(_INVALID_INPUT.search(error))


def job_failed_error(
    request_id: str, error: str | None, metrics: Mapping[str, Any] | None = None
) -> SegmindJobFailedError:
    """The error for a FAILED job, with the server's reason in the message.

    A content-safety block becomes :class:`SegmindContentBlockedError` and a refused input
    :class:`SegmindInvalidInputJobError`; a task retry cannot fix either.
    """
    reason = _clause(error) or "no reason given"
    common: dict[str, Any] = {
        "error_text": error,
        "request_id": request_id,
        "status_code": 422,
        "metrics": dict(metrics or {}),
    }
    if is_content_block(error):
        return SegmindContentBlockedError(
            sentences(
                f"Segmind job {request_id} FAILED: {reason}",
                "The content-safety filter blocked it: change the prompt or input image; retrying the same "
                "request would be billed and blocked again",
            ),
            **common,
        )
    if is_invalid_input(error):
        return SegmindInvalidInputJobError(
            sentences(
                f"Segmind job {request_id} FAILED: {reason}",
                "The model refused its input: fix the task's parameters; retrying the same request would be "
                "billed and fail again, so the task is not retried",
            ),
            **common,
        )
    return SegmindJobFailedError(
        sentences(
            f"Segmind job {request_id} FAILED: {reason}",
            "Check the prompt and parameters and run the task again; a new submit is billed",
        ),
        **common,
    )


def _output_urls(output: Any, images: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    urls: list[str] = []
    candidates: list[Any] = [output] if not isinstance(output, list) else list(output)
    candidates += [img.get("url") for img in images]
    for item in candidates:
        if isinstance(item, str) and item.startswith(("http://", "https://")) and item not in urls:
            urls.append(item)
    return tuple(urls)


#: Leading bytes of the image formats image models return, to tell base64 images from long text.
_IMAGE_MAGIC: Final = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"RIFF")


def _looks_like_base64_image(value: str) -> bool:
    head = value[:64]
    if len(value) <= 64 or not re.fullmatch(r"[A-Za-z0-9+/=_-]+", head):
        return False
    try:
        prefix = base64.b64decode(head[: len(head) - len(head) % 4], validate=False)
    except ValueError:
        return False
    return prefix.startswith(_IMAGE_MAGIC)


def _base64_image(body: Mapping[str, Any]) -> str | None:
    """Find an inline base64 image: the key is not documented, so look where models put it.

    Only a string whose decoded first bytes are an image header counts, so a long text output
    (an LLM's answer) is never mistaken for an image.
    """
    for key in ("image", "output", "images"):
        value = body.get(key)
        if isinstance(value, list) and value and isinstance(value[0], str):
            value = value[0]
        if not isinstance(value, str):
            continue
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]
        if _looks_like_base64_image(value):
            return value
    return None


def parse_int(value: Any) -> int | None:
    """An integer from an int or a numeric string ("42", " 42 ", "42.0"); anything else is ``None``.

    Results' ``seed`` and ``images[].file_size`` may arrive as strings (segmind-api.md,
    "Added 2026-11-30"): parse them rather than drop them.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = _as_float(value) if isinstance(value, (str, float)) else None
    if number is None or not number.is_integer():
        return None
    return int(number)


def _image_fields(image: Mapping[str, Any]) -> dict[str, Any]:
    """One ``images[]`` entry with ``seed`` / ``file_size`` as integers where they are numeric strings."""
    out = dict(image)
    for name in ("seed", "file_size"):
        if name in out and out[name] is not None:
            parsed = parse_int(out[name])
            if parsed is not None:
                out[name] = parsed
    return out


def parse_result(answer: HttpAnswer, request_id: str) -> JobResult:
    """Parse a v2 result. A FAILED body raises the job-failed error with the reason.

    The result's own ``status`` is checked: a result fetched after the status said COMPLETED may
    still say QUEUED/PROCESSING (a lagging replica), and must not become a COMPLETED summary with
    no output. That raises :class:`SegmindResultNotReadyError`, which is transient: every caller
    (trigger, sensor, blocking loop, re-attach) fetches the result again after a wait, bounded
    like any transient error. A body without ``status`` counts as COMPLETED (older answers).
    """
    parsed = _loads(answer)
    failed = _failed_body(answer, parsed)
    if failed is not None:
        raise job_failed_error(request_id, failed.get("error"), _metrics(failed))
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.RESULT, request_id=request_id)
    body = _json_object(answer, Endpoint.RESULT, parsed)
    status = _parse_status_value(body.get("status", "COMPLETED"), answer, Endpoint.RESULT)
    if status is not SegmindJobStatus.COMPLETED:
        raise SegmindResultNotReadyError(
            sentences(
                f"Segmind v2 result for request {request_id} still says {status.value} although its status "
                "said COMPLETED",
                "The result is fetched again after a wait; the job is not submitted again",
            ),
            status_code=answer.status,
            request_id=request_id,
        )
    raw_images = body.get("images")
    images = tuple(_image_fields(i) for i in raw_images if isinstance(i, dict)) if isinstance(raw_images, list) else ()
    seed = parse_int(body.get("seed"))
    if seed is None and images:
        seed = next((i["seed"] for i in images if isinstance(i.get("seed"), int)), None)
    return JobResult(
        request_id=request_id,
        status=status,
        output=body.get("output"),
        output_urls=_output_urls(body.get("output"), images),
        images=images,
        seed=seed,
        metrics=_metrics(body),
        base64_image=_base64_image(body),
        raw=body,
    )


def parse_run_sync(answer: HttpAnswer) -> SyncRunResponse:
    """Parse a v1 inference: raw image bytes (or JSON for ``base64: true`` and non-image models)."""
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.RUN_SYNC)
    if answer.content_type == "text/html":
        raise SegmindInvalidResponseError(
            f"Segmind's v1 inference answered HTTP {answer.status} with an HTML page "
            f"({_snippet(answer.body)!r}); expected an image or JSON. Check the connection's host.",
            status_code=answer.status,
        )
    kept = {name: answer.headers[name] for name in V1_INTERESTING_HEADERS if name in answer.headers}
    return SyncRunResponse(content=answer.body, content_type=answer.content_type, headers=kept)


@dataclass(frozen=True)
class CreditBalance:
    """An account's balance: paid ``credits`` and ``free_credits``, both spendable.

    ``{"credits": 0.0, "free-credits": 0.018}`` (segmind-api.md, "Added 2026-11-30"): an account
    with only free credits can still run jobs, so guards compare :attr:`total`. ``note`` carries
    the server's text when it answered without a balance (404 "No credits found for the user").
    """

    credits: float
    free_credits: float = 0.0
    note: str | None = None

    @property
    def total(self) -> float:
        return self.credits + self.free_credits

    def describe(self) -> str:
        """E.g. ``0.018 credits remaining (0 paid + 0.018 free)``, for logs and the connection test."""
        text = f"{self.total:g} credits remaining ({self.credits:g} paid + {self.free_credits:g} free)"
        return f"{text}; Segmind says: {self.note}" if self.note else text


_PAID_KEYS: Final = ("credits", "remaining_credits", "balance", "credit_balance")
_FREE_KEYS: Final = ("free-credits", "free_credits", "freeCredits")


def _first_number(scopes: Iterable[Mapping[str, Any]], keys: Iterable[str]) -> float | None:
    for scope in scopes:
        for key in keys:
            value = scope.get(key)
            number = _as_float(value) if not isinstance(value, bool) else None
            if number is not None:
                return number
    return None


def parse_credit_balance(answer: HttpAnswer) -> CreditBalance:
    """Parse ``GET /v1/get-user-credits`` into paid and free credits.

    Documented shape: ``{"credits": 0.0, "free-credits": 0.018}`` (segmind-api.md, "Added
    2026-11-30"). Tolerated too: a bare number, other balance key names, nesting under ``data``,
    and no free-credit key (0 free). A 404 whose text says the user has no credits ("No credits
    found for the user", same source) is an account with a zero balance, not a wrong model or URL.
    """
    if answer.status == 404:
        text = _error_text(answer)
        if text and _NO_CREDITS_RECORD.search(text):
            return CreditBalance(0.0, 0.0, note=_clause(text))
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.CREDITS)
    body = answer.json()
    if not isinstance(body, dict):
        number = _as_float(body) if not isinstance(body, bool) else None
        if number is not None:
            return CreditBalance(number)
    else:
        nested = body.get("data")
        scopes = [body, nested] if isinstance(nested, dict) else [body]
        paid = _first_number(scopes, _PAID_KEYS)
        free = _first_number(scopes, _FREE_KEYS)
        if paid is not None or free is not None:
            return CreditBalance(paid or 0.0, free or 0.0)
    raise SegmindInvalidResponseError(
        f"Segmind's credits answer has no credit balance in it: {_snippet(answer.body)!r}", status_code=answer.status
    )


def parse_credits(answer: HttpAnswer) -> float:
    """The spendable balance (paid + free credits) of a credits answer; see :func:`parse_credit_balance`."""
    return parse_credit_balance(answer).total


# --------------------------------------------------------------------------------------------
# Retry policy (one for both transports)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry one HTTP call; the sync and async transports both obey it.

    - 429: wait what the server said (``Retry-After`` or the reset header), capped, plus jitter;
      if it said nothing, back off exponentially.
    - 5xx, connection errors, undecodable bodies: exponential backoff with full jitter.
    - 400/401/403/404/406/410/422 and FAILED jobs: never; another attempt gives the same answer.
    - A submit (``idempotent=False``) is retried only when the server certainly did not accept it
      (:func:`submit_certainly_refused`): a 429, a 500/502/503 answer, or a connection that never
      opened. Never after a read timeout, a reset mid-request or an unreadable answer, and never
      after a 504 or another 5xx, whose upstream may have queued (and billed) the job.
    """

    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    rate_limit_max_wait: float = 65.0
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    def is_retryable(self, error: BaseException, *, idempotent: bool, trust_5xx: bool = True) -> bool:
        """Whether another attempt of the same call may succeed and is safe (never double-bills).

        ``trust_5xx=False``: a 500/502/503 answer to a submit is not taken as a refusal (see
        :func:`submit_certainly_refused`); the caller checks the request history instead.
        """
        if not isinstance(error, SegmindError) or not error.transient:
            return False
        if idempotent:
            return True
        return submit_certainly_refused(error, trust_5xx=trust_5xx)

    def delay(self, error: BaseException, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        draw = (rng or random._inst).uniform
        if isinstance(error, SegmindRateLimitError) and error.retry_after is not None:
            return min(error.retry_after, self.rate_limit_max_wait) + draw(0, self.jitter)
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** (attempt - 1)))
        return draw(ceiling / 2, ceiling) + draw(0, self.jitter) * 0.1

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> RetryPolicy:
        """Build from connection extras ``max_retries`` (attempts after the first) and ``retry_backoff``."""
        kwargs: dict[str, Any] = {}
        if extras.get("max_retries") is not None:
            kwargs["max_attempts"] = int(extras["max_retries"]) + 1
        if extras.get("retry_backoff") is not None:
            kwargs["backoff_initial"] = float(extras["retry_backoff"])
        if extras.get("retry_backoff_max") is not None:
            kwargs["backoff_max"] = float(extras["retry_backoff_max"])
        return cls(**kwargs)


#: 5xx answers to a submit that mean no job was queued. Segmind's submit errors, 5xx included,
#: "come back at once with the error body" (segmind-api.md, v2 submit [doc, 3p]): an answer from
#: Segmind itself, before queueing. 503 means the server could not take the request at all (RFC
#: 9110 section 15.6.4). Any other 5xx leaves the outcome unknown: 504 is a gateway that gave up
#: waiting while the upstream may have queued (and billed) the job, and proxies' 52x codes (a
#: timeout after connecting, an unknown upstream error) say nothing about it either.
SUBMIT_REFUSED_5XX: Final = frozenset({500, 502, 503})


def submit_certainly_refused(error: BaseException, *, trust_5xx: bool = True) -> bool:
    """Whether a failed submit certainly created no job, so sending it again cannot bill twice.

    True for a 429, a 500/502/503 (:data:`SUBMIT_REFUSED_5XX`) and a connection that never opened
    (``request_sent=False``). Not for a read timeout or a reset after the body was sent, an
    unreadable answer (a 200 whose body was cut is a billed job), a 504 or another 5xx.

    ``trust_5xx=False`` (the operators, when the request history can be searched): a 500/502/503
    is not trusted either. Issue 13 reports gateway 5xx answers sent *after* the upstream queued
    the job (a "late" 5xx); with the history on, such a submit is reconciled through the history
    (found -> re-attach, not found -> submit) instead of being resent blindly, so it never bills
    twice. Without the history, the documented reading above stands (a resend is the only way on).
    """
    if isinstance(error, SegmindRateLimitError):
        return True
    if isinstance(error, SegmindServerError):
        return trust_5xx and error.status_code in SUBMIT_REFUSED_5XX
    if isinstance(error, SegmindTransportError):
        return not error.request_sent
    return False


def submit_outcome_unknown(error: BaseException, *, trust_5xx: bool = True) -> bool:
    """Whether a submit that raised ``error`` may nevertheless have queued (and billed) a job.

    Such a submit must not be sent again by anything (the hook's retries, a task retry): Segmind
    has no idempotency key, so only Segmind's request history can tell whether it arrived.
    An answered refusal (4xx) or a certain refusal (:func:`submit_certainly_refused`) is known.
    """
    return (
        isinstance(error, SegmindError) and error.transient and not submit_certainly_refused(error, trust_5xx=trust_5xx)
    )


def transport_error(kind: str, *, request_sent: bool, url: str, detail: str) -> SegmindTransportError:
    """The error for a failed connection or timeout; the URL has no query and no key in it."""
    where = urlsplit(url)
    target = f"{where.scheme}://{where.netloc}{where.path}"
    advice = (
        "Segmind may not have received it; it is retried"
        if not request_sent
        else "The request may have reached Segmind: reads are retried, a submit is not (it would bill twice)"
    )
    summary = sentences(f"{kind} calling {target}: {_clause(redact(detail)[:MAX_ERROR_TEXT])}")
    return SegmindTransportError(sentences(summary, advice), request_sent=request_sent, summary=summary)


# --------------------------------------------------------------------------------------------
# Poll schedule
# --------------------------------------------------------------------------------------------

#: A v2 request's status and result stay retrievable this long after submission, then answer 404.
RESULT_RETENTION_SECONDS: Final = 3600.0
#: How long a watch waits out uninterrupted 429s (each with a wait hint) before giving up: past the
#: result's retention there is nothing left to fetch anyway.
RATE_LIMIT_PATIENCE_SECONDS: Final = RESULT_RETENTION_SECONDS
#: Typical inference seconds per model, where known: the model-dependent part of the schedule.
#: SD3 Large: ~9.6 s per image (Segmind's model page).
KNOWN_INFERENCE_SECONDS: Final[Mapping[str, float]] = {SD3_LARGE_MODEL: 9.6}
#: Shortest plausible inference, as a fraction of the typical one: no poll is spent before it.
_MIN_RUNTIME_FRACTION: Final = 0.8
#: Past this multiple of the typical inference, the job is late: polls slow down.
_SLOW_AFTER_FACTOR: Final = 1.5

#: Jitter source of trackers not given one (private, so user code seeding ``random`` cannot
#: synchronize the retries of every job).
_TRACKER_RNG: Final = random.Random()

#: Outcomes a poll step can end with (the trigger's terminal event statuses, plus ``completed``,
#: which means "fetch the result now", and ``None``, which means "poll again after ``delay``").
OUTCOME_COMPLETED: Final = "completed"
OUTCOME_FAILED: Final = "failed"
OUTCOME_EXPIRED: Final = "expired"
OUTCOME_TIMEOUT: Final = "timeout"
OUTCOME_ERROR: Final = "error"


def _finite_non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"PollSchedule.{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PollSchedule:
    """When to ask Segmind about a v2 job: the one schedule the trigger and the sync poll loop share.

    Every status call may count against the account's rate limit (Free 5/min, Pro 50/min) and the
    official SDK spends one per second per job. This schedule spends calls where they carry
    information, using what the API tells us and the model's typical runtime:

    1. No call for ``initial_delay`` after submit: nothing can have finished yet.
    2. While QUEUED, one call every ``queued_interval``: the point is to notice when inference
       starts, because that pins down when it can end.
    3. When PROCESSING is first seen, inference began after the last QUEUED answer; no call before
       that moment plus ``min_runtime`` (the model's shortest plausible inference), because the job
       cannot be done earlier.
    4. From then on, one call every ``interval``: this bounds the detection latency (completion ->
       noticed) by ``interval`` plus a round trip.
    5. A job still PROCESSING ``slow_after`` seconds after it can have started is late (bigger
       input, a cold GPU, an unknown model): the interval grows by ``slowdown`` times the overrun,
       up to ``max_interval``, so an hour-long job costs minutes of calls, not thousands.
    6. After a transient error the next call waits ``error_backoff`` doubled per consecutive error
       (with jitter, capped at ``max_interval``); a 429 waits at least what the server asked
       (``Retry-After`` / reset header), capped at ``rate_limit_max_wait``, plus up to half an
       ``interval`` of jitter.

    Nothing is tuned to one job length: the waits follow the observed QUEUED -> PROCESSING
    transition, so queue time is measured rather than guessed, and only the model's inference
    runtime (``min_runtime``, ``slow_after``) comes from :meth:`for_model`. With the defaults for SD3
    Large and jobs drawn from queue 0-5 s + inference 8-12 s, a job costs ~6 status calls (the SDK
    ~14) with a detection latency below ``interval``.

    All fields are plain floats (seconds, except the ``slowdown`` ratio) so the schedule travels in
    trigger kwargs as a dict (:meth:`to_dict`) and old dicts still load (:meth:`from_dict`).
    """

    initial_delay: float = 2.0
    queued_interval: float = 2.0
    min_runtime: float = 0.0
    interval: float = 1.25
    slow_after: float = 15.0
    slowdown: float = 0.25
    max_interval: float = 30.0
    error_backoff: float = 1.0
    rate_limit_max_wait: float = 65.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            object.__setattr__(self, name, _finite_non_negative(name, getattr(self, name)))
        if self.interval <= 0 or self.queued_interval <= 0:
            raise ValueError("PollSchedule.interval and queued_interval must be > 0 (a zero interval hammers the API)")
        if self.max_interval < max(self.interval, self.queued_interval):
            raise ValueError("PollSchedule.max_interval must be >= interval and queued_interval")

    @classmethod
    def for_model(cls, model: str | None, **overrides: float) -> PollSchedule:
        """The schedule for ``model``: its typical runtime sets ``min_runtime``/``slow_after``.

        Unknown slugs get no ``min_runtime`` (poll every ``interval`` once processing) and start
        slowing down after 15 s, which suits fast models and long video jobs alike.
        """
        typical = KNOWN_INFERENCE_SECONDS.get(model or "")
        values: dict[str, float] = {}
        if typical is not None:
            values = {
                "min_runtime": round(typical * _MIN_RUNTIME_FRACTION, 3),
                "slow_after": round(typical * _SLOW_AFTER_FACTOR, 3),
            }
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict[str, float]:
        """Plain ``{name: float}``, for trigger kwargs."""
        return {name: float(getattr(self, name)) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PollSchedule:
        """Rebuild from :meth:`to_dict` output; missing keys take defaults, unknown keys are ignored.

        Kwargs written by an older or newer provider version must still load in the triggerer.
        """
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__ and v is not None}
        # A triggerer rebuilds thousands of triggers carrying the same dict: validated schedules are
        # memoized (frozen, so sharing one is safe). Types are part of the key so that, e.g., True
        # is still refused where 1 is accepted; unhashable values skip the memo and fail as before.
        if cls is not PollSchedule:
            return cls(**known)
        try:
            items = tuple(sorted((k, type(v), v) for k, v in known.items()))
            hash(items)
        except TypeError:
            return cls(**known)
        return _schedule_from_items(items)

    def delay_after_status(
        self,
        status: SegmindJobStatus,
        *,
        now: float,
        started_at: float,
        last_queued_at: float | None,
        processing_since: float | None,
        first_processing: bool,
    ) -> float:
        """Seconds to wait after a non-terminal status answer (pure; the caller passes the clock).

        :param started_at: when watching began (the submit time, when known).
        :param last_queued_at: the last time the job was known QUEUED (the submit time counts), or
            ``None`` if its history is unknown (a sensor given someone else's request id).
        :param processing_since: the earliest time inference can have started, once PROCESSING.
        :param first_processing: whether this answer is the first PROCESSING one.
        """
        if status is SegmindJobStatus.QUEUED:
            overrun = (now - started_at) - self.slow_after
            return min(self.max_interval, max(self.queued_interval, self.slowdown * overrun))
        since = processing_since if processing_since is not None else now
        if first_processing and last_queued_at is not None and self.min_runtime > 0:
            earliest_done = since + self.min_runtime
            return min(self.max_interval, max(self.interval, earliest_done - now))
        overrun = (now - since) - max(self.slow_after, self.min_runtime)
        return min(self.max_interval, max(self.interval, self.slowdown * overrun))

    def delay_after_error(self, error: BaseException, consecutive: int, *, rand: float = 1.0) -> float:
        """Seconds to wait after the ``consecutive``-th transient error in a row.

        :param rand: a number in [0, 1) for jitter (so many triggers do not retry in lockstep);
            1.0 gives the deterministic upper bound.
        """
        if isinstance(error, SegmindRateLimitError) and error.retry_after is not None:
            # Every trigger limited in the same window is told the same reset time: spread them over
            # half an interval after it, or they all come back at once and are limited again.
            waited = max(self.interval, min(error.retry_after, self.rate_limit_max_wait))
            return waited + 0.5 * self.interval * min(max(rand, 0.0), 1.0)
        ceiling = min(self.max_interval, self.error_backoff * 2.0 ** max(0, consecutive - 1))
        return max(self.interval, ceiling / 2 + (ceiling / 2) * min(max(rand, 0.0), 1.0))


@functools.lru_cache(maxsize=64)
def _schedule_from_items(items: tuple[tuple[str, type, Any], ...]) -> PollSchedule:
    """:meth:`PollSchedule.from_dict`'s memo (exceptions are not cached: a bad dict raises every time)."""
    return PollSchedule(**{name: value for name, _, value in items})


@dataclass(frozen=True)
class PollStep:
    """What to do after one poll: stop with ``outcome``, or call again after ``delay`` seconds.

    ``transition`` is ``(old, new)`` when the job's status changed (``old`` may be ``None``), so
    both loops log each transition exactly once. ``error`` is the exception behind a failed
    ``expired``/``error`` outcome or a counted transient failure; ``message`` is a redacted text.
    """

    outcome: str | None
    delay: float = 0.0
    message: str = ""
    transition: tuple[SegmindJobStatus | None, SegmindJobStatus] | None = None
    error: BaseException | None = None
    status: JobStatusResponse | None = None


class PollTracker:
    """The decision logic of watching one v2 job, shared by the trigger (async) and the sync loop.

    It performs no I/O and reads no clock: the loop calls the API, passes each answer or error with
    the current time, and gets back a :class:`PollStep`. So the deferrable and the blocking paths
    reach the same outcome on the same answers, and the rules are testable without sockets.

    Rules: COMPLETED -> fetch the result (and from then on only the result is retried: the
    status is known, and another status call per failed fetch would spend the rate limit that made
    the fetch fail); FAILED -> ``failed`` with the server's text; 404 -> ``expired``; transient
    errors (5xx, transport, a 429 without a wait hint) are waited out and end the watch only after
    ``max_consecutive_errors`` in a row (-> ``error`` with the last error); a 429 that says how
    long to wait is congestion, not a failure: it is waited out without counting, for at most
    ``RATE_LIMIT_PATIENCE_SECONDS`` of uninterrupted limiting; any other error -> ``error`` at
    once; past ``deadline`` -> ``timeout`` (after one last look, so a job that just finished is
    not reported as timed out).
    """

    def __init__(
        self,
        schedule: PollSchedule,
        *,
        started_at: float,
        deadline: float | None = None,
        submitted: bool = True,
        max_consecutive_errors: int = 10,
        last_status: SegmindJobStatus | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """
        :param started_at: the submit time if known, else when watching began.
        :param submitted: whether ``started_at`` is the submit time (the job was QUEUED then).
        :param last_status: a status this watcher itself already observed, for logging; ``None``
            (the default) makes the first status answer a "first seen" step, not a transition.
        """
        if max_consecutive_errors < 1:
            raise ValueError("max_consecutive_errors must be at least 1")
        self.schedule = schedule
        self.started_at = started_at
        self.deadline = deadline
        self.max_consecutive_errors = max_consecutive_errors
        self.last_status = last_status
        self.last_queued_at: float | None = started_at if submitted else None
        self.processing_since: float | None = None
        self.consecutive_errors = 0
        #: Start of the current run of rate-limited answers (``None`` outside one).
        self.rate_limited_since: float | None = None
        self.polls = 0
        # One process-wide generator by default: seeding a fresh ``random.Random()`` reads the OS
        # entropy pool and costs more than a whole status decision, once per watched job.
        self._rng = rng or _TRACKER_RNG

    def first_delay(self, now: float) -> float:
        """Seconds until the first call: ``initial_delay`` after submit (0 if that has passed)."""
        if self.last_queued_at is None:
            return 0.0
        return self._bounded(max(0.0, self.started_at + self.schedule.initial_delay - now), now)

    def _bounded(self, delay: float, now: float) -> float:
        """Never sleep past the deadline: the last call happens at the deadline."""
        if self.deadline is not None:
            delay = min(delay, max(0.0, self.deadline - now))
        return delay

    def _timed_out(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def _timeout_step(self, now: float, step: PollStep) -> PollStep:
        return PollStep(
            OUTCOME_TIMEOUT,
            message=f"the job was not finished by its deadline ({self.deadline:.0f}, {now - self.started_at:.1f} s "
            "after watching began)",
            transition=step.transition,
            error=step.error,
            status=step.status,
        )

    def on_status(self, answer: JobStatusResponse, now: float) -> PollStep:
        """Digest one status answer taken at ``now``."""
        self.polls += 1
        self.consecutive_errors = 0
        self.rate_limited_since = None
        status = answer.status
        transition = (self.last_status, status) if status is not self.last_status else None
        self.last_status = status
        if status is SegmindJobStatus.COMPLETED:
            return PollStep(OUTCOME_COMPLETED, transition=transition, status=answer)
        if status is SegmindJobStatus.FAILED:
            return PollStep(OUTCOME_FAILED, message=answer.error or "", transition=transition, status=answer)
        first_processing = False
        if status is SegmindJobStatus.QUEUED:
            self.last_queued_at = now
        elif self.processing_since is None:
            first_processing = True
            self.processing_since = self.last_queued_at if self.last_queued_at is not None else now
        step = PollStep(None, transition=transition, status=answer)
        if self._timed_out(now):
            return self._timeout_step(now, step)
        delay = self.schedule.delay_after_status(
            status,
            now=now,
            started_at=self.started_at,
            last_queued_at=self.last_queued_at,
            processing_since=self.processing_since,
            first_processing=first_processing,
        )
        return PollStep(None, delay=self._bounded(delay, now), transition=transition, status=answer)

    def on_error(self, error: BaseException, now: float) -> PollStep:
        """Digest an error from a status or result call made at ``now``."""
        self.polls += 1
        message = redact(str(error) or type(error).__name__)[:MAX_ERROR_TEXT]
        if isinstance(error, SegmindRequestNotFoundError):
            return PollStep(OUTCOME_EXPIRED, message=message, error=error)
        if isinstance(error, SegmindJobFailedError):
            return PollStep(OUTCOME_FAILED, message=error.error_text or message, error=error)
        if not (isinstance(error, SegmindError) and error.transient):
            return PollStep(OUTCOME_ERROR, message=message, error=error)
        if isinstance(error, SegmindRateLimitError) and error.retry_after is not None:
            # Waiting is what the server asked for, so it does not count as a failed call. Under a
            # saturated plan limit every trigger sees runs of 429s; counting them would fail jobs
            # that are fine. The patience bound keeps a limit that never lifts from looping forever.
            if self.rate_limited_since is None:
                self.rate_limited_since = now
            if now - self.rate_limited_since >= RATE_LIMIT_PATIENCE_SECONDS:
                return PollStep(
                    OUTCOME_ERROR,
                    message=f"rate limited without a break for {now - self.rate_limited_since:.0f} s; the last: "
                    f"{message}",
                    error=error,
                )
        else:
            self.consecutive_errors += 1
        if self.consecutive_errors >= self.max_consecutive_errors:
            return PollStep(
                OUTCOME_ERROR,
                message=f"{self.consecutive_errors} consecutive transient errors; the last: {message}",
                error=error,
            )
        step = PollStep(None, message=message, error=error)
        if self._timed_out(now):
            return self._timeout_step(now, step)
        delay = self.schedule.delay_after_error(error, self.consecutive_errors, rand=self._rng.random())
        return PollStep(None, delay=self._bounded(delay, now), message=message, error=error)
