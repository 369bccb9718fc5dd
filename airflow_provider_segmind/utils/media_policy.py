"""Which media may be fetched and stored: the download policy, the URL, host, address and content-type checks.

The URL comes from a remote API's answer, so it is treated as hostile input (SSRF):

- https only; plain http only to a loopback address, and only with ``allow_insecure_loopback``
  (the local emulator). No user info in URLs.
- The host must match the allow-list (``images.segmind.com``, ``*.segmind.com`` by default).
- The host name is resolved once and every address must be public: private, shared (CGNAT),
  link-local, cloud metadata (169.254.169.254, fd00:ec2::254), multicast, reserved and (unless
  allowed) loopback addresses are refused. The connection then goes to the checked address
  (the TLS certificate is still verified against the host name), so DNS cannot be re-pointed
  between the check and the connect (rebinding).
- Redirects are followed by hand, each hop checked again like the first URL, at most
  ``max_redirects`` of them.
- Only our own headers are sent: no API key, no ``Authorization``, no cookies, no ``.netrc``.
  Proxies from the environment (``HTTP(S)_PROXY``) are NOT used: a media URL comes from a remote
  answer, and an environment proxy would reach hosts our address checks never saw.
- An explicit, opt-in forward proxy (``DownloadPolicy.proxy``, off by default) keeps every rule
  above: the URL is checked and the host resolved and checked here first, then the proxy is
  asked for the checked IP address (``CONNECT 203.0.113.7:443``, TLS still verified against the
  host name; plain http to loopback as an absolute-URI GET), never for the name, so the proxy's
  own DNS cannot lead it elsewhere. Only the proxy's own credentials go to the proxy
  (``Proxy-Authorization``); hosts in ``NO_PROXY`` are fetched directly. Consequences: the media
  host must resolve where the worker runs, and a proxy that allows CONNECT by name only refuses.
- Connect, read and whole-download timeouts; the status, the declared and sniffed content type,
  the declared and actual size, and the Content-Length are all checked.

A URL that breaks a rule raises :class:`SegmindOutputRefusedError` (a retry cannot help);
:mod:`._download` applies these checks to every hop and to the bytes it receives.
"""

from __future__ import annotations

import contextlib
import fnmatch
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from airflow_provider_segmind.exceptions import SegmindOutputDownloadError, SegmindOutputRefusedError
from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.utils.proxy import (
    normalize_proxy_url,
)

#: Where Segmind serves generated files (``https://images.segmind.com/generations/...``).
DEFAULT_MEDIA_HOSTS: Final = ("images.segmind.com", "*.segmind.com")
DEFAULT_ALLOWED_CONTENT_TYPES: Final = ("image/*",)
DEFAULT_MAX_SIZE: Final = 100 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_READ_TIMEOUT: Final = 60.0
DEFAULT_DOWNLOAD_TIMEOUT: Final = 600.0
DEFAULT_MAX_REDIRECTS: Final = 5
#: Extra attempts after a download that broke off (reset, timeout, 5xx, truncated body).
DEFAULT_DOWNLOAD_RETRIES: Final = 2
DEFAULT_DOWNLOAD_RETRY_BACKOFF: Final = 1.0
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
#: Addresses of cloud instance-metadata services, named in errors because they are the usual target.
_METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_MAX_URL_LENGTH: Final = 8192
#: Bytes of one download held in memory before its spool moves to a temporary file.
DEFAULT_SPOOL_MEMORY: Final = 8 * 1024 * 1024
GENERIC_TYPES: Final = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})


# --------------------------------------------------------------------------------------------
# Policy and URL checks (pure, except for DNS resolution)
# --------------------------------------------------------------------------------------------


def public_url(url: str) -> str:
    """``url`` without query, fragment or user info: what may appear in logs, errors and manifests.

    Pre-signed URLs carry credentials in the query string; output URLs are unguessable paths,
    which is as much as a log needs to identify them.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if _safe_port(parts) else ""
    suffix = "?…" if parts.query else ""
    return redact(f"{parts.scheme}://{host}{port}{parts.path}{suffix}")[:2000]


def _safe_port(parts: Any) -> int | None:
    try:
        port = parts.port
    except ValueError:
        return None
    return int(port) if port is not None else None


_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*")


def _normalize_pattern(pattern: str) -> str:
    """One allow-list entry: a host name, ``*.suffix``, ``*`` or an IP address."""
    text = pattern.strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if text == "*":
        return text
    name = text[2:] if text.startswith("*.") else text
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(
            f"allowed_hosts entry {pattern!r} is not a host name: use 'images.segmind.com', '*.example.com' or '*' "
            "(no scheme, port or path)"
        )
    return text


def normalize_allowed_hosts(hosts: str | Iterable[str]) -> tuple[str, ...]:
    """Validate and lower-case an allow-list (a comma-separated string or a list)."""
    items = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    normalized = tuple(_normalize_pattern(str(h)) for h in items if str(h).strip())
    if not normalized:
        raise ValueError("allowed_hosts is empty: no output could ever be downloaded")
    return normalized


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether ``host`` matches an allow-list entry: exact, ``*.suffix`` (any subdomain) or ``*``."""
    host = host.lower().rstrip(".")
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    for pattern in patterns:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
    return False


def content_type_allowed(content_type: str, patterns: Sequence[str]) -> bool:
    """Whether a media type (``image/jpeg``) matches one of ``patterns`` (``image/*``, ``video/mp4``)."""
    return any(fnmatch.fnmatchcase(content_type, p.strip().lower()) for p in patterns)


def media_type(header: str | None) -> str:
    """``"image/jpeg; charset=x"`` -> ``"image/jpeg"``."""
    return (header or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class DownloadPolicy:
    """What a download may do. See the module docstring for the rules each field feeds."""

    allowed_hosts: tuple[str, ...] = DEFAULT_MEDIA_HOSTS
    allow_insecure_loopback: bool = False
    allowed_content_types: tuple[str, ...] = DEFAULT_ALLOWED_CONTENT_TYPES
    max_size: int = DEFAULT_MAX_SIZE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    spool_memory: int = DEFAULT_SPOOL_MEMORY
    tmp_dir: str | None = None
    retries: int = DEFAULT_DOWNLOAD_RETRIES
    retry_backoff: float = DEFAULT_DOWNLOAD_RETRY_BACKOFF
    #: Opt-in forward proxy for downloads (``None``: direct, whatever the environment says). Out of
    #: ``repr``: the URL may carry a password.
    proxy: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", normalize_allowed_hosts(self.allowed_hosts))
        object.__setattr__(self, "proxy", normalize_proxy_url(self.proxy, what="download_proxy"))
        types = tuple(media_type(t) or t.strip().lower() for t in self.allowed_content_types)
        if not types or not all(re.fullmatch(r"[a-z0-9*.+\-]+/[a-z0-9*.+\-]+", t) for t in types):
            raise ValueError(
                f"allowed_content_types {self.allowed_content_types!r} must be media types or patterns "
                "such as 'image/*' or 'video/mp4'"
            )
        object.__setattr__(self, "allowed_content_types", types)
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 1:
            raise ValueError(f"max_size must be a positive number of bytes, got {self.max_size!r}")
        for name in ("connect_timeout", "read_timeout", "download_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if not isinstance(self.max_redirects, int) or not 0 <= self.max_redirects <= 20:
            raise ValueError(f"max_redirects must be an integer from 0 to 20, got {self.max_redirects!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 10:
            raise ValueError(f"download_retries must be an integer from 0 to 10, got {self.retries!r}")
        backoff = self.retry_backoff
        if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff <= 60:
            raise ValueError(f"download_retry_backoff must be 0 to 60 seconds, got {backoff!r}")

    def describe_hosts(self) -> str:
        extra = " (and loopback: allow_insecure_loopback=True)" if self.allow_insecure_loopback else ""
        return ", ".join(self.allowed_hosts) + extra


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str
    port: int
    request_path: str
    loopback_name: bool

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _is_loopback_host(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: Any, policy: DownloadPolicy, *, what: str = "output URL") -> Target:
    """Check a URL against the policy without any network access; return where to connect."""
    if not isinstance(url, str) or not url:
        raise SegmindOutputRefusedError(f"The {what} {url!r} is not a URL string")
    shown = public_url(url)
    if len(url) > _MAX_URL_LENGTH or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise SegmindOutputRefusedError(f"The {what} {shown} is too long or contains spaces/control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise SegmindOutputRefusedError(f"The {what} {shown} is not a valid URL ({err})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise SegmindOutputRefusedError(f"The {what} {shown} has scheme {scheme!r}: only https is allowed")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise SegmindOutputRefusedError(f"The {what} {shown} has no host")
    if parts.username is not None or parts.password is not None:
        raise SegmindOutputRefusedError(
            f"The {what} {shown} carries user credentials; outputs are fetched without any credentials"
        )
    if not host.isascii():
        raise SegmindOutputRefusedError(f"The {what} {shown} has a non-ASCII host; use its IDNA (xn--) form")
    loopback = _is_loopback_host(host)
    if scheme == "http" and not (loopback and policy.allow_insecure_loopback):
        hint = (
            " (plain http is only allowed to a loopback host with allow_insecure_loopback=True, for the emulator)"
            if loopback
            else ""
        )
        raise SegmindOutputRefusedError(f"The {what} {shown} is not https: only https downloads are allowed{hint}")
    if not (host_allowed(host, policy.allowed_hosts) or (loopback and policy.allow_insecure_loopback)):
        raise SegmindOutputRefusedError(
            f"The {what} {shown} is on host {host!r}, which is not in allowed_hosts ({policy.describe_hosts()}). "
            "Add the host to allowed_hosts if it is a legitimate media host."
        )
    path = parts.path or "/"
    request_path = f"{path}?{parts.query}" if parts.query else path
    default_port = 443 if scheme == "https" else 80
    return Target(url, scheme, host, port or default_port, request_path, loopback)


def address_problem(address: str, *, allow_loopback: bool) -> str | None:
    """Why a resolved address may not be contacted, or ``None`` if it is a public address."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address: judge the IPv4 address they reach.
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _METADATA_ADDRESSES:
        return "a cloud instance-metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private-network address"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "a non-public (reserved, shared or special-purpose) address"
    return None


def resolve_checked(target: Target, policy: DownloadPolicy, *, what: str = "output URL") -> list[str]:
    """Resolve the target's host and check EVERY address; return them (the connection uses these)."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as err:
        raise SegmindOutputDownloadError(
            f"Cannot resolve the host of the {what} {public_url(target.url)}: {err}"
        ) from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise SegmindOutputDownloadError(f"The host of the {what} {public_url(target.url)} has no address")
    allow_loopback = policy.allow_insecure_loopback
    for address in addresses:
        problem = address_problem(address, allow_loopback=allow_loopback)
        if problem is not None:
            raise SegmindOutputRefusedError(
                f"The {what} {public_url(target.url)} resolves to {address}, {problem}: refused (SSRF protection). "
                "Outputs are only fetched from public addresses"
                + ("" if allow_loopback else " (loopback only with allow_insecure_loopback=True)")
                + "."
            )
    if target.scheme == "http" and not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SegmindOutputRefusedError(f"The {what} {public_url(target.url)} is plain http to a non-loopback address")
    return addresses


# --------------------------------------------------------------------------------------------
# Content: what the bytes are, and whether they may be stored
# --------------------------------------------------------------------------------------------


def sniff_media_type(head: bytes) -> str | None:
    """The media type the first bytes announce (common image/video formats), else ``None``."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"mif1", b"msf1"):
            return "image/heic"
        return "video/mp4"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def looks_like_markup_or_json(head: bytes) -> bool:
    """An error page or an API answer where bytes of an image were expected."""
    text = head.lstrip()[:16].lower()
    return text.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"{", b"["))


def final_content_type(declared: str, head: bytes, policy: DownloadPolicy, shown: str) -> str:
    """The content type to store: the sniffed image type when recognised, else the declared one."""
    sniffed = sniff_media_type(head)
    if (
        sniffed is None
        and looks_like_markup_or_json(head)
        and not content_type_allowed("text/html", policy.allowed_content_types)
    ):
        raise SegmindOutputRefusedError(
            f"The output {shown} was declared {declared or 'without a type'} but its body is an HTML/JSON/XML "
            f"document, not media ({redact(head[:60].decode('utf-8', 'replace'))!r}); nothing was written"
        )
    final = sniffed or declared
    if not final or final in GENERIC_TYPES:
        raise SegmindOutputRefusedError(
            f"The output {shown} has no usable content type (declared {declared or 'none'!r}, not a recognised "
            "image format); nothing was written"
        )
    if not content_type_allowed(final, policy.allowed_content_types):
        raise SegmindOutputRefusedError(
            f"The output {shown} is {final}, not an allowed content type ({', '.join(policy.allowed_content_types)}); "
            "set allowed_content_types for models that produce other media. Nothing was written"
        )
    return final
