"""The emulator's media host: generated images under ``/media``, and test blobs and redirects.

Public like ``images.segmind.com`` (never needs the key); media faults (truncation, slowness,
errors) apply. ``/_emulator/blob`` and ``/_emulator/redirect`` serve download tests and benchmarks.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from airflow_provider_segmind.emulator.gateway import Gateway
from airflow_provider_segmind.emulator.responses import (
    abort_connection,
    json_error,
)

MAX_BLOB_BYTES: Final = 64 * 1024**3
#: Blob content: byte ``i`` of any blob is ``i % 256``, so a reader can verify what it received.
_BLOB_CHUNK: Final = memoryview(bytes(range(256)) * 1024)
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})


class MediaRoutes(Gateway):
    """Handlers for media, blobs and redirects."""

    async def media(self, request: web.Request) -> web.StreamResponse:
        """``GET /media/{request_id}.{jpeg|png}``: render on first fetch (off the loop), then cached."""
        state = self.state
        state.stats.media_fetches += 1
        fault = state.faults.pick("media", state.config)
        if fault is not None and fault.name not in ("truncate", "slow"):
            state.stats.faults[fault.name] += 1
            return self._fault_response(request, fault.name)
        request_id, _, extension = request.match_info["file_name"].rpartition(".")
        job = state.any_job(request_id)
        extension = "jpeg" if extension == "jpg" else extension
        spec = job.image if job is not None else None
        if job is None or spec is None or not job.is_done(state.clock()) or extension != spec.output_format:
            return json_error(404, "Not Found")
        data = await state.images.get(spec)
        headers = {"Cache-Control": "public, max-age=604800"}
        if fault is not None:
            state.stats.faults[fault.name] += 1
            if fault.name == "truncate":
                return await self._truncated_stream(request, data, spec.content_type)
            await asyncio.sleep(self._slow_seconds(fault))
        return web.Response(body=data, content_type=spec.content_type, headers=headers)

    @staticmethod
    async def _truncated_stream(request: web.Request, data: bytes, content_type: str) -> web.StreamResponse:
        """Promise the whole body in Content-Length, send half, then reset the connection."""
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.content_length = len(data)
        await response.prepare(request)
        await response.write(data[: len(data) // 2])
        abort_connection(request)
        return response

    async def blob(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/blob/{nbytes}``: stream deterministic bytes without holding them in memory.

        For download benchmarks (hundreds of MB): byte ``i`` is ``i % 256``. Media faults apply.
        ``?content_type=`` sets the Content-Type; ``?chunked=1`` sends no Content-Length (chunked).
        """
        state = self.state
        try:
            nbytes = int(request.match_info["nbytes"])
        except ValueError:
            return json_error(400, "nbytes must be an integer")
        if not 0 <= nbytes <= MAX_BLOB_BYTES:
            return json_error(400, f"nbytes must be within 0..{MAX_BLOB_BYTES}")
        state.stats.blob_fetches += 1
        fault = state.faults.pick("media", state.config)
        if fault is not None:
            state.stats.faults[fault.name] += 1
            if fault.name == "slow":
                await asyncio.sleep(self._slow_seconds(fault))
            elif fault.name != "truncate":
                return self._fault_response(request, fault.name)
        content_type = request.query.get("content_type", "application/octet-stream")
        response = web.StreamResponse(headers={"Content-Type": content_type})
        if request.query.get("chunked") in ("1", "true"):
            response.enable_chunked_encoding()  # no Content-Length: a client cannot size-check up front
        else:
            response.content_length = nbytes
        await response.prepare(request)
        remaining = nbytes // 2 if fault is not None and fault.name == "truncate" else nbytes
        while remaining > 0:
            piece = _BLOB_CHUNK[: min(remaining, len(_BLOB_CHUNK))]
            await response.write(piece)
            remaining -= len(piece)
        if fault is not None and fault.name == "truncate":
            abort_connection(request)
            return response
        await response.write_eof()
        return response

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        """``GET /_emulator/redirect?to=URL[&status=302]``: answer a redirect to any URL, like a CDN would.

        For testing clients that follow redirects by hand (and must refuse some targets): the
        emulator never fetches ``to`` itself. ``status`` is one of 301, 302, 303, 307, 308.
        """
        target = request.query.get("to", "")
        try:
            status = int(request.query.get("status", "302"))
        except ValueError:
            status = 0
        if status not in _REDIRECT_STATUSES:
            return json_error(400, f"status must be one of {sorted(_REDIRECT_STATUSES)}")
        if not target:
            return json_error(400, "Missing ?to=URL")
        return web.Response(status=status, headers={"Location": target})
