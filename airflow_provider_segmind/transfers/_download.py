"""Fetch one generated output safely: an allow-listed https URL, streamed into a bounded spool.

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

The body is streamed into a :class:`Spool` (memory up to a threshold, then an anonymous temporary
file) while its SHA-256 is computed, so memory stays bounded whatever the size. Nothing here talks
to S3: the caller uploads only after the download has been completely verified, so a truncated
or refused download writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fnmatch
import hashlib
import io
import ipaddress
import os
import random
import re
import socket
import ssl
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import tenacity

from airflow_provider_segmind.exceptions import SegmindError
from airflow_provider_segmind.protocol import redact
from airflow_provider_segmind.proxy import (
    bypasses_proxy,
    normalize_proxy_url,
    proxy_credentials,
    proxy_secrets,
    public_proxy_url,
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
DEFAULT_SPOOL_MEMORY: Final = 8 * 1024 * 1024
CHUNK_SIZE: Final = 1024 * 1024
USER_AGENT: Final = "airflow-provider-segmind (output transfer)"
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
#: Addresses of cloud instance-metadata services, named in errors because they are the usual target.
_METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_MAX_URL_LENGTH: Final = 8192
#: How every media GET is sent, direct or through a proxy: redirects are followed by hand (each hop
#: is checked like the first URL), retries are tenacity's, the body is streamed and its length enforced.
_STREAMED_GET: Final[dict[str, Any]] = {
    "redirect": False,
    "retries": False,
    "preload_content": False,
    "decode_content": True,
    "enforce_content_length": True,
}
_GENERIC_TYPES: Final = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/binary"})


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class SegmindOutputError(SegmindError):
    """An output could not be fetched or was refused; nothing was written to S3."""


class SegmindOutputRefusedError(SegmindOutputError, ValueError):
    """The output breaks the transfer's policy (URL, host, address, redirect, type, size): a retry cannot help."""

    task_retry_helps = False


class SegmindOutputDownloadError(SegmindOutputError):
    """The download failed on the way (connection, timeout, 5xx, truncated body): a retry may help."""

    transient = True


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
# Spool: bounded memory, then an anonymous temporary file
# --------------------------------------------------------------------------------------------


class Spool:
    """Bytes written once, then read back by position (parts may be read concurrently).

    Up to ``memory_limit`` bytes stay in memory; beyond, everything moves to an unnamed temporary
    file (deleted when closed, or by the OS if the process dies), so memory stays bounded.
    """

    def __init__(self, memory_limit: int = DEFAULT_SPOOL_MEMORY, tmp_dir: str | None = None) -> None:
        self.memory_limit = memory_limit
        self.tmp_dir = tmp_dir
        self._buffer: bytearray | None = bytearray()
        self._file: Any = None
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._buffer is not None and self.size + len(data) > self.memory_limit:
            self._file = tempfile.TemporaryFile(dir=self.tmp_dir)  # noqa: SIM115 - closed by close()
            self._file.write(self._buffer)
            self._buffer = None
        if self._buffer is not None:
            self._buffer += data
        else:
            self._file.write(data)
        self.size += len(data)

    def finish(self) -> None:
        """Flush pending writes; call before reading."""
        if self._file is not None:
            self._file.flush()

    @property
    def in_memory(self) -> bool:
        return self._buffer is not None

    def read_range(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (thread-safe: positional reads, no shared file position)."""
        if self._buffer is not None:
            return bytes(self._buffer[offset : offset + length])
        chunks: list[bytes] = []
        fd = self._file.fileno()
        while length > 0:
            chunk = os.pread(fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def head(self, length: int = 64) -> bytes:
        return self.read_range(0, min(length, self.size))

    def getvalue(self) -> bytes:
        return self.read_range(0, self.size)

    def open_range(self, offset: int, length: int) -> SpoolSlice:
        return SpoolSlice(self, offset, length)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffer = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SpoolSlice(io.RawIOBase):
    """A read-only, seekable window on a spool: an upload part's body that is read lazily.

    It has a length but no ``fileno`` (botocore would size it from the whole file).
    """

    def __init__(self, spool: Spool, offset: int, length: int) -> None:
        super().__init__()
        self._spool = spool
        self._start = offset
        self._length = length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + offset))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        remaining = self._length - self._pos
        if size is None or size < 0 or size > remaining:
            size = remaining
        if size <= 0:
            return b""
        data = self._spool.read_range(self._start + self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# --------------------------------------------------------------------------------------------
# Content sniffing
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


# --------------------------------------------------------------------------------------------
# The download
# --------------------------------------------------------------------------------------------


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Fetched:
    """A fully received and verified output, held in ``spool``."""

    spool: Spool
    size: int
    sha256: str
    content_type: str
    declared_content_type: str | None
    source_kind: str  # "url" or "base64"
    source_url: str | None
    final_url: str | None
    redirects: int = 0
    started_at: str = field(default_factory=_utc_now)
    finished_at: str = field(default_factory=_utc_now)

    def close(self) -> None:
        self.spool.close()


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    try:
        import certifi

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    return context


def _final_type(declared: str, head: bytes, policy: DownloadPolicy, shown: str) -> str:
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
    if not final or final in _GENERIC_TYPES:
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


class _ProxyPool:
    """What :meth:`Downloader._open` returns for a proxied download: ``close()`` closes the manager's pools."""

    def __init__(self, manager: Any) -> None:
        self._manager = manager

    def close(self) -> None:
        self._manager.clear()


class Downloader:
    """Downloads outputs under one :class:`DownloadPolicy`; reusable for many URLs."""

    def __init__(self, policy: DownloadPolicy, *, log: Any = None) -> None:
        self.policy = policy
        self.log = log
        self._ssl: ssl.SSLContext | None = None

    def fetch(self, url: str, *, expected_size: int | None = None) -> Fetched:
        """Download ``url`` into a spool and verify it, or raise; the caller closes the result.

        A download that broke off (:class:`SegmindOutputDownloadError`: reset, timeout, 5xx,
        truncated body) is tried again up to ``policy.retries`` times, with exponential backoff and
        jitter: a GET of a finished output is safe to repeat, and a media host's hiccup should not
        cost a whole task retry (nor, for a deferrable upstream, its worker start-up). A refused
        output (policy, type, size) is never retried. Each attempt starts from an empty spool.
        """
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(SegmindOutputDownloadError),
            stop=tenacity.stop_after_attempt(self.policy.retries + 1),
            wait=self._retry_delay,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(self._fetch_once, url, expected_size=expected_size)

    def _retry_delay(self, state: tenacity.RetryCallState) -> float:
        """``retry_backoff`` doubled per failed attempt, times a jitter factor from 0.5 to 1."""
        return float(self.policy.retry_backoff * 2 ** (state.attempt_number - 1) * (0.5 + random.random() / 2))

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        if self.log is not None:
            self.log.warning(
                "Download attempt %d of %d failed, trying again in %.1f s: %s",
                state.attempt_number,
                self.policy.retries + 1,
                state.next_action.sleep if state.next_action else 0.0,
                state.outcome.exception() if state.outcome else None,
            )

    def _fetch_once(self, url: str, *, expected_size: int | None = None) -> Fetched:
        import urllib3

        policy = self.policy
        deadline = time.monotonic() + policy.download_timeout
        started_at = _utc_now()
        target = check_url(url, policy)
        redirects = 0
        while True:
            addresses = resolve_checked(target, policy, what="output URL" if redirects == 0 else "redirect target")
            pool, response = self._open(target, addresses, deadline)
            if response.status not in _REDIRECT_CODES:
                break
            location = response.headers.get("Location")
            response.close()  # never read a redirect's body: it could be endless
            pool.close()
            if not location:
                raise SegmindOutputDownloadError(
                    f"{public_url(target.url)} answered HTTP {response.status} without a Location header"
                )
            redirects += 1
            if redirects > policy.max_redirects:
                raise SegmindOutputRefusedError(
                    f"The output {public_url(url)} redirected more than max_redirects={policy.max_redirects} times"
                )
            target = check_url(
                urljoin(target.url, location), policy, what=f"redirect target of {public_url(target.url)}"
            )
        shown = public_url(target.url)
        try:
            return self._receive(response, target, url, shown, redirects, started_at, deadline, expected_size)
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise SegmindOutputDownloadError(
                f"The download of {shown} broke off ({type(err).__name__}: {redact(str(err))[:300]}); "
                "the body is incomplete and nothing was written. A retry may succeed."
            ) from None
        finally:
            response.close()
            pool.close()

    def _open(self, target: Target, addresses: list[str], deadline: float) -> tuple[Any, Any]:
        """Send the GET to the first checked address that accepts a connection: ``(pool, response)``."""
        import urllib3

        policy = self.policy
        remaining = max(0.1, deadline - time.monotonic())
        timeout = urllib3.Timeout(
            connect=min(policy.connect_timeout, remaining), read=min(policy.read_timeout, remaining)
        )
        headers = {
            "Host": target.host_header,
            "User-Agent": USER_AGENT,
            "Accept": "image/*, video/*;q=0.9, */*;q=0.1",
            "Accept-Encoding": "identity",
        }
        proxy = policy.proxy if policy.proxy and not bypasses_proxy(target.url) else None
        last_error: Exception | None = None
        for address in addresses:
            pool: Any
            if proxy is not None:
                try:
                    return self._open_via_proxy(proxy, target, address, headers, timeout)
                except urllib3.exceptions.NewConnectionError as err:
                    last_error = err
                    continue
            pool_class = urllib3.HTTPSConnectionPool if target.scheme == "https" else urllib3.HTTPConnectionPool
            pool = pool_class(address, target.port, **self._pool_kwargs(target, timeout))
            try:
                response = pool.urlopen(
                    "GET", target.request_path, headers=headers, assert_same_host=False, **_STREAMED_GET
                )
            except urllib3.exceptions.NewConnectionError as err:
                pool.close()
                last_error = err
                continue
            except (urllib3.exceptions.HTTPError, OSError) as err:
                pool.close()
                raise SegmindOutputDownloadError(
                    f"Could not download {public_url(target.url)}: {type(err).__name__}: {redact(str(err))[:300]}"
                ) from None
            return pool, response
        via = f" through the proxy {public_proxy_url(proxy)}" if proxy else ""
        raise SegmindOutputDownloadError(
            f"Could not connect to {public_url(target.url)} ({', '.join(addresses)}){via}: "
            f"{redact(str(last_error), proxy_secrets(proxy))[:300]}"
        )

    def _pool_kwargs(self, target: Target, timeout: Any) -> dict[str, Any]:
        """One connection, no urllib3 retries (ours are tenacity's), TLS verified against the host name."""
        kwargs: dict[str, Any] = {"timeout": timeout, "retries": False, "maxsize": 1}
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = _ssl_context()
            kwargs.update(server_hostname=target.host, ssl_context=self._ssl)
        return kwargs

    def _open_via_proxy(
        self, proxy: str, target: Target, address: str, headers: dict[str, str], timeout: Any
    ) -> tuple[Any, Any]:
        """GET ``target`` at the checked ``address`` through ``proxy``: ``(pool, response)``.

        https: a CONNECT tunnel to ``address:port`` (the IP, not the name: the proxy cannot resolve
        the name to somewhere else), TLS verified against the host name. http (loopback only, see
        :func:`check_url`): an absolute-URI GET for ``http://address:port/path`` with our Host.
        """
        import urllib3

        proxy_headers: dict[str, str] = {}
        credentials = proxy_credentials(proxy)
        if credentials is not None:
            proxy_headers = urllib3.make_headers(proxy_basic_auth=":".join(credentials))
        manager = urllib3.ProxyManager(
            proxy, num_pools=1, proxy_headers=proxy_headers, **self._pool_kwargs(target, timeout)
        )
        host = f"[{address}]" if ":" in address else address
        try:
            response = manager.urlopen(
                "GET", f"{target.scheme}://{host}:{target.port}{target.request_path}", headers=headers, **_STREAMED_GET
            )
        except urllib3.exceptions.NewConnectionError:
            manager.clear()
            raise
        except (urllib3.exceptions.HTTPError, OSError) as err:
            manager.clear()
            raise SegmindOutputDownloadError(
                f"Could not download {public_url(target.url)} through the proxy {public_proxy_url(proxy)}: "
                f"{type(err).__name__}: {redact(str(err), proxy_secrets(proxy))[:300]}"
            ) from None
        return _ProxyPool(manager), response

    def _receive(
        self,
        response: Any,
        target: Target,
        original_url: str,
        shown: str,
        redirects: int,
        started_at: str,
        deadline: float,
        expected_size: int | None,
    ) -> Fetched:
        policy = self.policy
        status = response.status
        if status != 200:
            transient = status >= 500 or status in (408, 425, 429)
            error_class = SegmindOutputDownloadError if transient else SegmindOutputError
            raise error_class(
                f"The output {shown} answered HTTP {status}, not 200"
                + (" (Segmind keeps output files about 7 days)" if status in (403, 404, 410) else "")
                + "; nothing was written"
            )
        declared = media_type(response.headers.get("Content-Type"))
        if (
            declared
            and declared not in _GENERIC_TYPES
            and not content_type_allowed(declared, policy.allowed_content_types)
        ):
            raise SegmindOutputRefusedError(
                f"The output {shown} is declared {declared}, not an allowed content type "
                f"({', '.join(policy.allowed_content_types)}); nothing was written. Set allowed_content_types for "
                "models that produce other media."
            )
        encoded = media_type(response.headers.get("Content-Encoding")) not in ("", "identity")
        length_header = response.headers.get("Content-Length")
        content_length: int | None = None
        if length_header is not None and not encoded:
            try:
                content_length = int(length_header)
            except ValueError:
                raise SegmindOutputDownloadError(
                    f"The output {shown} has an invalid Content-Length {length_header!r}"
                ) from None
            if content_length > policy.max_size:
                raise SegmindOutputRefusedError(
                    f"The output {shown} is {content_length:,} bytes, above max_size={policy.max_size:,}; "
                    "nothing was written"
                )
        spool = Spool(policy.spool_memory, policy.tmp_dir)
        digest = hashlib.sha256()
        try:
            for chunk in response.stream(CHUNK_SIZE, decode_content=True):
                if spool.size + len(chunk) > policy.max_size:
                    raise SegmindOutputRefusedError(
                        f"The output {shown} is larger than max_size={policy.max_size:,} bytes; nothing was written"
                    )
                if time.monotonic() > deadline:
                    raise SegmindOutputDownloadError(
                        f"The download of {shown} took longer than download_timeout={policy.download_timeout:g} s "
                        f"({spool.size:,} bytes received); nothing was written"
                    )
                digest.update(chunk)
                spool.write(chunk)
            spool.finish()
            size = spool.size
            if content_length is not None and size != content_length:
                raise SegmindOutputDownloadError(
                    f"The download of {shown} is truncated: {size:,} of {content_length:,} bytes; nothing was written"
                )
            if size == 0:
                raise SegmindOutputDownloadError(f"The output {shown} is empty; nothing was written")
            if expected_size is not None and size != expected_size:
                if content_length is None:  # no other evidence that the body is complete
                    raise SegmindOutputDownloadError(
                        f"The output {shown} is {size:,} bytes but the Segmind result said {expected_size:,} "
                        "(and the server sent no Content-Length); nothing was written"
                    )
                if self.log is not None:
                    self.log.warning(
                        "%s: %d bytes received as its Content-Length promised, but the Segmind result said %d.",
                        shown,
                        size,
                        expected_size,
                    )
            final = _final_type(declared, spool.head(), policy, shown)
        except BaseException:
            spool.close()
            raise
        return Fetched(
            spool=spool,
            size=size,
            sha256=digest.hexdigest(),
            content_type=final,
            declared_content_type=declared or None,
            source_kind="url",
            source_url=public_url(original_url),
            final_url=public_url(target.url),
            redirects=redirects,
            started_at=started_at,
        )


def spool_base64(
    encoded: str, policy: DownloadPolicy, *, declared_type: str | None = None, what: str = "inline output"
) -> Fetched:
    """Decode an inline (base64) output into a spool with the same checks as a download."""
    started_at = _utc_now()
    text = encoded.strip()
    if text.startswith("data:") and "," in text:
        header, text = text.split(",", 1)
        declared_type = declared_type or media_type(header[5:].split(";", 1)[0])
    text = re.sub(r"\s+", "", text)
    if len(text) * 3 // 4 > policy.max_size + 3:
        raise SegmindOutputRefusedError(
            f"The {what} is about {len(text) * 3 // 4:,} bytes, above max_size={policy.max_size:,}; nothing was written"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise SegmindOutputError(f"The {what} is not valid base64 ({err}); nothing was written") from None
    if not data:
        raise SegmindOutputError(f"The {what} is empty; nothing was written")
    if len(data) > policy.max_size:
        raise SegmindOutputRefusedError(
            f"The {what} is {len(data):,} bytes, above max_size={policy.max_size:,}; nothing was written"
        )
    declared = media_type(declared_type)
    final = _final_type(declared, data[:64], policy, what)
    spool = Spool(policy.spool_memory, policy.tmp_dir)
    spool.write(data)
    spool.finish()
    return Fetched(
        spool=spool,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=final,
        declared_content_type=declared or None,
        source_kind="base64",
        source_url=None,
        final_url=None,
        started_at=started_at,
    )


def image_dimensions(fetched: Fetched) -> tuple[int, int] | None:
    """``(width, height)`` when Pillow is installed and recognises the image (reads the header only)."""
    if not fetched.content_type.startswith("image/"):
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BufferedReader(fetched.spool.open_range(0, fetched.size))) as image:
            width, height = image.size
            return int(width), int(height)
    except Exception:
        return None
