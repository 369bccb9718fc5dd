"""The emulator's answer shapes: Segmind's JSON errors and messages, nginx's HTML pages, connection resets.

Status codes, bodies and headers follow docs.segmind.com/api-reference and the SDK (segmind/segmind-python);
every route module answers through these.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

#: Set on a request whose connection the emulator aborted on purpose (not counted as a response).
#: ``web.RequestKey`` exists from aiohttp 3.14; older releases (the declared floor, and the aiohttp
#: that Airflow 3.1/3.2's own constraint files pin) take a plain string key.
_ABORTED: Final[Any] = (
    web.RequestKey("segmind_emulator_aborted", bool) if hasattr(web, "RequestKey") else "segmind_emulator_aborted"
)

MISSING_KEY: Final = "Missing Authorization or x-api-key in header"
INVALID_KEY: Final = "Unauthorized. API key is invalid or may have expired. Check the key in your Segmind console."
PROMPT_MANDATORY: Final = "Prompt is Mandatory and must be string"
NO_CREDITS_RECORD: Final = "No credits found for the user"
NO_CREDITS: Final = "Insufficient credits. Please add credits to your Segmind account to continue."
MODEL_NOT_FOUND: Final = "Model not found"

_HTML_PAGE: Final = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def _ignore(message: str) -> None:
    """The emulator passes unknown parameters on silently (the client warns about them)."""


def json_error(status: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    """Segmind's error shape: ``{"error": "<message>"}``."""
    return web.json_response({"error": message}, status=status, headers=headers)


def html_error(status: int, reason: str) -> web.Response:
    """An HTML error page, as nginx in front of the API serves for 405s and proxy failures."""
    return web.Response(status=status, text=_HTML_PAGE.format(code=status, reason=reason), content_type="text/html")


def iso_utc(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: the format of Segmind's rate-limit reset header."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def abort_connection(request: web.Request) -> web.Response:
    """Reset the TCP connection (RST, no answer). The returned response is never sent."""
    request[_ABORTED] = True
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # linger 0 makes the close a reset, like a crashed upstream
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=499)


def _truncated_json(response: web.StreamResponse) -> web.Response:
    """The ``bad_json`` fault: HTTP 200 with the first half of the JSON body the client should have got."""
    body = getattr(response, "body", None)
    is_json = isinstance(body, bytes) and response.content_type == "application/json"
    raw = body if is_json and isinstance(body, bytes) else b'{"status": "COMPLETED", "output": "https://'
    return web.Response(status=200, body=raw[: max(1, len(raw) // 2)], content_type="application/json")


def not_found(request: web.Request) -> web.Response:
    """404 for the ``{request_id}`` a route names: unknown, expired, or (by default) another account's."""
    return json_error(404, f"Request {request.match_info['request_id']} not found")
