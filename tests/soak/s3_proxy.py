"""A tiny fault-injecting HTTP proxy in front of moto's S3 server: the soak's unreliable S3 endpoint.

Every request is forwarded to the real S3 endpoint (moto) unless a fault is drawn for it. Only
writes are hit (``PutObject``, ``UploadPart``, ``CreateMultipartUpload``, ``CompleteMultipartUpload``,
``AbortMultipartUpload``); reads (``HeadObject``, ``GetObject``, listings) pass untouched, so the
soak checks the writer's behaviour, not boto3's read retries. Faults, drawn from a seeded RNG:

- ``500``: ``InternalError`` before forwarding (nothing stored);
- ``503``: ``SlowDown`` before forwarding (nothing stored);
- ``reset_before``: the request body is read, then the connection is reset (nothing stored);
- ``lost_after``: the request IS forwarded and applied by S3, then the connection is reset, so
  the client never learns that it succeeded (a retried conditional put then meets its own object,
  a retried ``CreateMultipartUpload`` leaves the first upload behind unless someone aborts it);
- an *outage* for chosen keys: the first ``outage_failures`` write requests whose path matches
  ``outage(path)`` answer 503, more than boto3 retries in one call, so the Airflow task try fails
  and an Airflow retry has to finish the job.

Each connection carries one request (``Connection: close``), so every handler thread ends with its
request and :meth:`FaultyS3Proxy.stop` joins them all.
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

#: Fault name -> probability per write request (slices of one draw; keep the sum <= 1).
DEFAULT_RATES: Final[Mapping[str, float]] = {"500": 0.04, "503": 0.03, "reset_before": 0.02, "lost_after": 0.03}
_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
)
_ERRORS: Final = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again. (soak proxy)"),
    "503": (503, "SlowDown", "Please reduce your request rate. (soak proxy)"),
}


class _Reset(Exception):  # a control-flow signal, not an error
    """Raised by a handler after it reset its connection: nothing more may be written."""


def s3_operation(method: str, path: str, query: str) -> str | None:
    """The write operation a request is, or ``None`` for reads and bucket-level calls."""
    params = parse_qs(query, keep_blank_values=True)
    object_path = path.count("/") >= 2 and not path.endswith("/")
    if not object_path:
        return None
    if method == "PUT":
        return "UploadPart" if "uploadId" in params else "PutObject"
    if method == "POST" and "uploads" in params:
        return "CreateMultipartUpload"
    if method == "POST" and "uploadId" in params:
        return "CompleteMultipartUpload"
    if method == "DELETE" and "uploadId" in params:
        return "AbortMultipartUpload"
    return None


class FaultyS3Proxy:
    """Serve on ``127.0.0.1:<free port>`` and forward to ``upstream`` (``http://host:port``), with faults.

    :param rates: fault name -> probability per write request (see the module docstring).
    :param seed: seeds the fault draws, so a run can be replayed.
    :param outage: ``path -> outage key`` (e.g. the map index in the key) or ``None``; each outage
        key's first ``outage_failures`` write requests answer 503.
    :param script: ``(operation, fault)`` steps applied, in order, to the next requests of that
        operation (e.g. ``("CreateMultipartUpload", "lost_after")``), before any random fault.
    """

    def __init__(
        self,
        upstream: str,
        *,
        rates: Mapping[str, float] = DEFAULT_RATES,
        seed: int = 0,
        outage: Callable[[str], str | None] | None = None,
        outage_failures: int = 3,
        script: Iterable[tuple[str, str]] = (),
    ) -> None:
        unknown = set(rates) - {*_ERRORS, "reset_before", "lost_after"}
        if unknown:
            raise ValueError(f"unknown S3 proxy fault(s) {sorted(unknown)}")
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rates = dict(rates)
        self.outage = outage
        self.outage_failures = outage_failures
        #: ``(operation, fault)`` steps, each consumed by the next request of that operation.
        self.script: list[tuple[str, str]] = list(script)
        self._rng = random.Random(f"soak-s3-proxy:{seed}")
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.outage_hits: Counter[str] = Counter()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FaultyS3Proxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = False
        server.block_on_close = True  # server_close() joins every handler thread
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="soak-s3-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> FaultyS3Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---------------------------------------------------------------- decisions

    def decide(self, operation: str | None, path: str) -> str | None:
        """The fault for one request (``None``: forward it normally); counts everything."""
        with self._lock:
            if operation is None:
                self.stats["reads and bucket calls"] += 1
                return None
            self.stats[operation] += 1
            for number, (scripted, fault) in enumerate(self.script):
                if scripted == operation:
                    del self.script[number]
                    self.stats[f"scripted {fault}"] += 1
                    return fault
            key = self.outage(path) if self.outage is not None else None
            if key is not None and self.outage_hits[key] < self.outage_failures:
                self.outage_hits[key] += 1
                self.stats["outage 503"] += 1
                return "503"
            draw = self._rng.random()
            threshold = 0.0
            for name, probability in self.rates.items():
                threshold += probability
                if draw < threshold:
                    self.stats[f"fault {name}"] += 1
                    return name
            return None


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: FaultyS3Proxy
    protocol_version = "HTTP/1.1"  # answers "Expect: 100-continue", which boto3 sends for uploads

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the soak counts requests itself."""

    def handle(self) -> None:
        self.close_connection = True
        self._was_reset = False
        try:
            self.handle_one_request()
        except _Reset:
            self._was_reset = True
        except (ConnectionError, TimeoutError):
            self._was_reset = True

    def finish(self) -> None:
        if not self._was_reset:
            super().finish()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reset(self) -> None:
        """Abort the connection with a TCP reset (no answer at all)."""
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.wfile.close()
        self.connection.close()
        raise _Reset

    def _error(self, name: str) -> None:
        status, code, message = _ERRORS[name]
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>soak-proxy</RequestId></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        owner = self.owner
        upstream = http.client.HTTPConnection(owner.upstream_host, owner.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            return response.status, response.reason, response.getheaders(), data
        finally:
            upstream.close()

    def _proxy(self) -> None:
        parts = urlsplit(self.path)
        operation = s3_operation(self.command, parts.path, parts.query)
        body = self._read_body()
        fault = self.owner.decide(operation, parts.path)
        if fault in _ERRORS:
            self._error(fault)
            return
        if fault == "reset_before":
            self._reset()
        status, reason, headers, data = self._forward(body)
        if fault == "lost_after":
            self._reset()
        self.send_response(status, reason)
        for name, value in headers:
            if name.lower() in _HOP_BY_HOP or (name.lower() == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy
