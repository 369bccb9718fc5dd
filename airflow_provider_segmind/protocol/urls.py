"""Where each call goes and what it carries: base URL, per-call URLs, auth headers, and their safety.

Every URL the API key is sent to is built here, so the rules that keep the key safe hold for every
call: no plain ``http`` off this machine, no dot-only path segment (``..`` would reach another
endpoint), and absolute URLs from a response body followed only on the configured origin.
Model slugs and request ids are checked before they become part of a path.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import quote, urlsplit

from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.protocol.vocabulary import API_KEY_HEADER, DEFAULT_BASE_URL, SD3_LARGE_MODEL


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


def check_model_slug(model: str) -> str:
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
    return f"{base_url}/v1/{check_model_slug(model)}"


def submit_url(base_url: str, model: str) -> str:
    """``POST`` target of a v2 (queued) submit."""
    return f"{base_url}/v2/{check_model_slug(model)}"


#: What a Segmind request id looks like: letters, digits, ``.``, ``_`` and ``-``, at most 128 of them.
#: The one pattern for every place that takes a request id (URLs here, the request history, the
#: S3 transfer's inputs); :func:`is_request_id` adds the dot-only rule.
REQUEST_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9._\-]{1,128}")


def is_request_id(value: object) -> bool:
    """Whether ``value`` is a Segmind request id that is safe in a URL path (see :func:`check_request_id`)."""
    # A dot-only id ('..') would turn /v2/requests/{id}/status into /v2/status.
    return isinstance(value, str) and bool(REQUEST_ID_PATTERN.fullmatch(value)) and not has_dot_segment(value)


def check_request_id(request_id: str) -> str:
    """``request_id`` unchanged if it is a request id (:func:`is_request_id`), else the parameter error."""
    if not is_request_id(request_id):
        raise SegmindInvalidParametersError(
            f"request_id {request_id!r} is not a Segmind request id (letters, digits, '-', '_', '.'; not only dots)",
            field="request_id",
            allowed="the request_id a v2 submit returned",
        )
    return request_id


def status_url(base_url: str, request_id: str) -> str:
    """``GET`` target for a v2 job's status."""
    return f"{base_url}/v2/requests/{quote(check_request_id(request_id))}/status"


def result_url(base_url: str, request_id: str) -> str:
    """``GET`` target for a v2 job's result."""
    return f"{base_url}/v2/requests/{quote(check_request_id(request_id))}"


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
