"""Fetch one generated output: over a checked connection, streamed into a spool, verified, retried.

Every URL, redirect hop and resolved address passes the rules of
:mod:`~airflow_provider_segmind.utils.media_policy` (https,
allow-listed host, public addresses, no credentials, no environment proxy), and the connection goes
to the checked address. The body is streamed into a :class:`Spool` (memory up to a threshold, then
an anonymous temporary file) while its SHA-256 is computed, so memory stays bounded whatever the
size. Status, declared and sniffed content type, declared and actual size and Content-Length are
checked; a download that broke off is tried again (tenacity). Nothing here talks to S3: the caller
uploads only after the download has been completely verified, so a truncated or refused download
writes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import random
import re
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urljoin

import tenacity

from airflow_provider_segmind.exceptions import (
    SegmindOutputDownloadError,
    SegmindOutputError,
    SegmindOutputRefusedError,
)
from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.transfers._spool import Spool
from airflow_provider_segmind.utils.media_policy import (
    GENERIC_TYPES,
    DownloadPolicy,
    Target,
    check_url,
    content_type_allowed,
    final_content_type,
    media_type,
    public_url,
    resolve_checked,
)
from airflow_provider_segmind.utils.proxy import (
    bypasses_proxy,
    proxy_credentials,
    proxy_secrets,
    public_proxy_url,
)

CHUNK_SIZE: Final = 1024 * 1024
USER_AGENT: Final = "airflow-provider-segmind (output transfer)"
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
#: How every media GET is sent, direct or through a proxy: redirects are followed by hand (each hop
#: is checked like the first URL), retries are tenacity's, the body is streamed and its length enforced.
_STREAMED_GET: Final[dict[str, Any]] = {
    "redirect": False,
    "retries": False,
    "preload_content": False,
    "decode_content": True,
    "enforce_content_length": True,
}


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
            and declared not in GENERIC_TYPES
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
            final = final_content_type(declared, spool.head(), policy, shown)
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
    final = final_content_type(declared, data[:64], policy, what)
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
