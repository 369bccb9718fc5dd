"""Forward-proxy settings shared by the API transports (requests, aiohttp) and the media downloads.

Why one module: a proxy URL is read in three places (the connection's ``proxy`` extra for the
worker and the triggerer, the transfer's opt-in ``download_proxy``) and must mean the same in each:
an ``http://`` or ``https://`` proxy URL, optionally with ``user:password@``, never shown with its
credentials (a proxy password is as secret as the API key), and skipped for hosts that
``NO_PROXY``/``no_proxy`` names, as ``requests`` and ``curl`` skip their proxies.

Pure apart from reading ``NO_PROXY`` from the environment.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote, urlsplit

__all__ = [
    "PROXY_SCHEMES",
    "bypasses_proxy",
    "normalize_proxy_url",
    "proxy_credentials",
    "proxy_for",
    "proxy_secrets",
    "public_proxy_url",
]

#: What every path can use: aiohttp, requests/urllib3 all speak to http(s) proxies (not SOCKS).
PROXY_SCHEMES: Final = ("http", "https")


def normalize_proxy_url(value: object, *, what: str = "proxy") -> str | None:
    """``value`` as a proxy URL (``None`` for empty), or ``ValueError`` saying what is allowed.

    A bare ``host:port`` is taken as ``http://host:port`` (what ``HTTPS_PROXY`` users usually
    write). The error never repeats the value: it may hold a password.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a URL string such as 'http://proxy.example.com:3128'")
    text = value.strip()
    if not text:
        return None
    if "://" not in text:
        text = f"http://{text}"
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in PROXY_SCHEMES
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or any(c.isspace() for c in text)
    ):
        shown = public_proxy_url(text)
        raise ValueError(
            f"{what} {shown!r} is not a proxy URL: expected http://host:port or https://host:port, optionally "
            "with user:password@ (SOCKS proxies are not supported)"
        )
    return text.rstrip("/")


def public_proxy_url(url: str) -> str:
    """``url`` as it may appear in logs, errors and reprs: ``scheme://host:port``, credentials as ``***``."""
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable proxy URL>"
    userinfo = "***@" if parts.username is not None or parts.password is not None else ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{userinfo}{host}{port}"


def proxy_credentials(url: str | None) -> tuple[str, str] | None:
    """``(user, password)`` from a proxy URL (percent-decoded), or ``None`` without credentials."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def proxy_secrets(url: str | None) -> list[str]:
    """What must be redacted from error texts when ``url`` is in use (its password, raw and decoded)."""
    if not url:
        return []
    parts = urlsplit(url)
    password = parts.password
    return [p for p in {password, unquote(password or "")} if p]


def proxy_for(url: str, explicit: str | None) -> str | None:
    """The proxy a request to ``url`` goes through: ``explicit`` (a connection's ``proxy`` extra),
    else the environment's ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` for the URL's scheme, and
    none for a host that ``NO_PROXY`` exempts. This is exactly what ``requests`` does on workers
    (its own functions decide), so the triggerer's aiohttp calls, which get the answer explicitly,
    reach Segmind the same way.
    """
    if bypasses_proxy(url):
        return None
    if explicit:
        return explicit
    from requests.utils import get_environ_proxies, select_proxy

    chosen = select_proxy(url, get_environ_proxies(url, no_proxy=None))
    if not chosen:
        return None
    return chosen if "://" in chosen else f"http://{chosen}"  # requests' reading of "host:port"


def bypasses_proxy(url: str) -> bool:
    """Whether ``NO_PROXY``/``no_proxy`` exempts ``url``'s host from any proxy (requests' own rule:
    host names, domain suffixes, ``*``, IP addresses and CIDR ranges)."""
    from requests.utils import should_bypass_proxies

    return bool(should_bypass_proxies(url, no_proxy=None))
