"""A real HTTP forward proxy on loopback, for the proxy tests: it forwards and counts what it forwarded.

Why our own (about 150 lines of asyncio) rather than ``proxy.py``: the tests need to see every
request the proxy forwarded (method, absolute URI or CONNECT target, the headers it received) and
to require proxy credentials, in-process, with an ephemeral port and a clean stop; a third-party
proxy would run as a subprocess with plugin code for the same counting. This one implements just
what clients send to a forward proxy (RFC 9110 §9.3.6, RFC 9112 §3.2.2):

- absolute-form requests (``GET http://host:port/path HTTP/1.1``, any method, with a
  ``Content-Length`` body), forwarded in origin form with ``Connection: close`` and relayed back
  with ``Connection: close`` (one request per client connection: simple and unambiguous);
- ``CONNECT host:port``: a TCP tunnel, bytes piped both ways until either side closes;
- ``Proxy-Authorization: Basic`` when the proxy was started with credentials (407 otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"}
)


@dataclass
class Forwarded:
    """One request the proxy accepted: ``method``, ``target`` (absolute URI or ``host:port``), headers."""

    method: str
    target: str
    headers: dict[str, str]

    @property
    def host(self) -> str:
        return (urlsplit(self.target).hostname or "") if "://" in self.target else self.target.rsplit(":", 1)[0]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path if "://" in self.target else ""


@dataclass
class ForwardProxy:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is ``http://[user:pass@]127.0.0.1:port``."""

    credentials: tuple[str, str] | None = None
    forwarded: list[Forwarded] = field(default_factory=list)
    refused: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.Server | None = None
    _thread: threading.Thread | None = None
    _port: int = 0

    @property
    def url(self) -> str:
        auth = f"{self.credentials[0]}:{self.credentials[1]}@" if self.credentials else ""
        return f"http://{auth}127.0.0.1:{self._port}"

    def count(self, predicate: Callable[[Forwarded], bool] = lambda _: True) -> int:
        return sum(1 for entry in list(self.forwarded) if predicate(entry))

    def start(self) -> ForwardProxy:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self._port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="test-forward-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    # ------------------------------------------------------------------ the proxy itself

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            headers = dict(line.split(":", 1) for line in lines if ":" in line)
            headers = {name.strip(): value.strip() for name, value in headers.items()}
            if not self._authorized(headers):
                self.refused += 1
                writer.write(
                    b'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n'
                    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                return
            self.forwarded.append(Forwarded(method, target, headers))
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, headers, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return any(k.lower() == "proxy-authorization" and v == expected for k, v in headers.items())

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = target.rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        length = int(next((v for k, v in headers.items() if k.lower() == "content-length"), "0"))
        body = await reader.readexactly(length) if length else b""
        up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port or 80)
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        out = [f"{method} {path} HTTP/1.1"]
        out += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in _HOP_BY_HOP]
        out.append("Connection: close")
        up_writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
        await up_writer.drain()
        status_and_headers = await up_reader.readuntil(b"\r\n\r\n")
        status_line, *response_lines = status_and_headers.decode("latin-1").split("\r\n")
        kept = [line for line in response_lines if line and line.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        writer.write(("\r\n".join([status_line, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
        while data := await up_reader.read(65536):
            writer.write(data)
            await writer.drain()
        up_writer.close()


def started(**kwargs: Any) -> ForwardProxy:
    return ForwardProxy(**kwargs).start()
