"""The emulator's aiohttp application: the route table, the traffic accounting, and :func:`create_app`.

The routes live in modules of their own: :mod:`.jobs` (v1, v2, credits), :mod:`.request_history`,
:mod:`.media` (media host, blobs, redirects), :mod:`.control` (``/_emulator``), all through the
shared pipeline of :mod:`.gateway` (faults, key, rate limit) and the answer shapes of :mod:`.responses`.

Status codes, bodies and headers follow docs.segmind.com/api-reference. Every handler is O(1) and never blocks
the event loop (images render in a thread pool), so one process can be the load target of thousands
of concurrent polled jobs. Use :func:`create_app` inside an existing loop, or the threaded
:class:`~airflow_provider_segmind.emulator.server.SegmindEmulator`, or the CLI.

Choices where Segmind's docs are silent (see the module docstring of the package for the rest):

- ``GET /v2/requests/{id}`` on a job that is not finished answers 200 with its QUEUED/PROCESSING
  status body (the SDK tolerates it; a client can tell by ``status``).
- A job is only visible to the key that submitted it; another valid key gets 404.
- Media URLs outlive the 1 hour result retention (Segmind keeps files ~7 days), as long as the
  request history keeps the request (``history_size`` requests).
- The request history (SDK ``segmind/generations.py``, ``Generations.history``/``get``) is served
  under ``/inference-request/request-history`` on the same host. Its page shape is not documented;
  the emulator answers ``{"data": [rows], "page", "per_page", "total"}`` (the client also reads
  other shapes). Only v2 requests are listed. ``user_id``/``user_email`` (teams) are ignored: an
  account sees its own requests, and the by-id lookup 404s another account's id (SDK: "passing one
  of their ids here raises a not-found error").
- The model catalogue (SDK ``segmind/models.py``, ``Models.list``) is served under
  ``/inference-model-information/list`` on the same host (:mod:`.catalogue`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from airflow_provider_segmind.emulator.catalogue import CatalogueRoutes
from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.control import AdminApi
from airflow_provider_segmind.emulator.images import PillowMissingError
from airflow_provider_segmind.emulator.jobs import JobRoutes
from airflow_provider_segmind.emulator.media import MediaRoutes
from airflow_provider_segmind.emulator.request_history import HistoryRoutes
from airflow_provider_segmind.emulator.responses import (
    _ABORTED,
    html_error,
    json_error,
)
from airflow_provider_segmind.emulator.state import (
    EmulatorState,
    key_label,
)
from airflow_provider_segmind.protocol.vocabulary import API_KEY_HEADER

STATE_KEY: Final = web.AppKey("segmind_emulator_state", EmulatorState)
#: img2img requests carry base64 images; aiohttp's 1 MiB default body limit is too small.
MAX_BODY_BYTES: Final = 64 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Accounting middleware and the app factory
# --------------------------------------------------------------------------------------------


def _is_control_path(path: str) -> bool:
    """``/_emulator`` controls are not traffic: they are not counted or recorded (blobs and redirects are)."""
    return path.startswith("/_emulator/") and not path.startswith(("/_emulator/blob/", "/_emulator/redirect"))


def _record(state: EmulatorState, request: web.Request) -> None:
    """Remember the request for ``/_emulator/requests``, with any API key replaced by its label."""
    has_key = False
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        if name.lower() == API_KEY_HEADER:
            has_key = True
            value = f"<redacted:{key_label(value.strip())}>"
        elif state.is_known_key_text(value):
            has_key = True
            value = "<redacted>"
        headers[name] = value
    query = request.query_string
    if query and state.is_known_key_text(query):
        has_key, query = True, "<redacted>"
    state.requests.append(
        {
            "time": state.clock(),
            "method": request.method,
            "path": request.path,
            "query": query,
            "headers": headers,
            "has_api_key": has_key,
        }
    )


def _accounting_middleware(state: EmulatorState) -> Any:
    @web.middleware
    async def accounting(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        if _is_control_path(request.path):
            return await _answer(request, handler)
        stats = state.stats
        stats.note_connection(request.transport)
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        _record(state, request)
        try:
            response = await _answer(request, handler)
        finally:
            stats.in_flight -= 1
        if request.get(_ABORTED):
            stats.aborted_connections += 1
        else:
            stats.responses[str(response.status)] += 1
        return response

    return accounting


async def _answer(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Run the handler; turn router and aiohttp errors into the gateway's shapes (405 HTML, JSON)."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        return html_error(405, "Not Allowed")
    except web.HTTPNotFound:
        return json_error(404, "Not Found")
    except PillowMissingError as err:
        return json_error(500, str(err))
    except web.HTTPException as err:
        if err.status < 400:
            raise
        return json_error(err.status, err.reason)


def create_app(config: EmulatorConfig | None = None, *, state: EmulatorState | None = None) -> web.Application:
    """Build the emulator's application. Serve it with any aiohttp runner, inside any event loop.

    The state is ``app[STATE_KEY]`` (or :func:`get_state`); mutate it only from the serving loop.
    """
    state = state or EmulatorState(config or EmulatorConfig())
    app = web.Application(middlewares=[_accounting_middleware(state)], client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = state
    api, history, media = JobRoutes(state), HistoryRoutes(state), MediaRoutes(state)
    admin, catalogue = AdminApi(state), CatalogueRoutes(state)
    add = app.router.add_route
    # Specific GET routes first; the catch-all model routes below must not swallow them.
    add("GET", "/v2/requests/{request_id}/status", api.status)
    add("GET", "/v2/requests/{request_id}", api.result)
    add("GET", "/v1/requests/{request_id}", api.status)  # the submit's legacy ``poll_url``
    add("GET", "/v1/get-user-credits", api.credits)
    add("GET", "/inference-request/request-history", history.history_list)
    add("GET", "/inference-request/request-history/{request_id}", history.history_record)
    add("GET", "/inference-model-information/list", catalogue.catalogue)
    add("POST", "/v1/{slug}", api.run_v1)
    add("POST", "/v2/{slug}", api.submit)
    app.router.add_get("/media/{file_name}", media.media)  # HEAD too, like a CDN
    app.router.add_get("/_emulator/blob/{nbytes}", media.blob)
    app.router.add_get("/_emulator/redirect", media.redirect)
    add("GET", "/_emulator/health", admin.health)
    add("GET", "/_emulator/stats", admin.stats)
    add("GET", "/_emulator/jobs", admin.jobs)
    add("GET", "/_emulator/jobs/{request_id}", admin.job)
    add("GET", "/_emulator/requests", admin.requests)
    add("POST", "/_emulator/script", admin.script)
    add("POST", "/_emulator/expire/{request_id}", admin.expire)
    add("POST", "/_emulator/reset", admin.reset)
    add("GET", "/_emulator/keys", admin.keys)
    add("POST", "/_emulator/keys", admin.keys)
    add("GET", "/_emulator/config", admin.config)
    add("POST", "/_emulator/config", admin.config)

    async def close_renderer(app: web.Application) -> None:
        app[STATE_KEY].images.close()

    app.on_cleanup.append(close_renderer)
    return app


def get_state(app: web.Application) -> EmulatorState:
    """The :class:`EmulatorState` behind an app made by :func:`create_app`."""
    return app[STATE_KEY]
