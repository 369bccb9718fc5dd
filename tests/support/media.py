"""Fixtures for the s3:// input image tests: moto's S3 server, the emulator, photos, a recording media host.

The S3 endpoint (moto in server mode) and the emulator are the transfer tests' own fixtures
(``s3_servers.py``): real servers on loopback, nothing mocked. The media host is a plain HTTP
server on loopback that records the headers it was sent (to prove no key reaches it).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from typing import Any

import pytest


def photo(colour: tuple[int, int, int], fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A solid-colour product "photo" in ``fmt`` (PNG, JPEG, WEBP or GIF)."""
    from PIL import Image

    out = BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt)
    return out.getvalue()


class MediaHost:
    """A loopback HTTP server serving one body at any path, recording every request's headers."""

    def __init__(self, body: bytes, content_type: str = "image/png") -> None:
        self.body, self.content_type = body, content_type
        self.requests: list[dict[str, str]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests.append({name.lower(): value for name, value in self.headers.items()})
                self.send_response(200)
                self.send_header("Content-Type", host.content_type)
                self.send_header("Content-Length", str(len(host.body)))
                self.end_headers()
                self.wfile.write(host.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/photo.png"


@pytest.fixture
def media_host() -> Iterator[MediaHost]:
    host = MediaHost(photo((200, 30, 30)))
    host.thread.start()
    try:
        yield host
    finally:
        host.server.shutdown()
        host.server.server_close()
        host.thread.join(timeout=5)
