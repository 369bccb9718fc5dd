"""The emulator's ``/_emulator`` control routes: introspection and control for tests, demos and benchmarks.

No auth: a local test tool's back door. Stats, jobs, the request log, fault scripts, expiry,
keys, reset and live configuration.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from airflow_provider_segmind.emulator.responses import (
    json_error,
    not_found,
)
from airflow_provider_segmind.emulator.state import (
    EmulatorState,
)


class AdminApi:
    """Introspection and control for tests, demos and benchmarks."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats_snapshot())

    async def job(self, request: web.Request) -> web.Response:
        job = self.state.jobs.get(request.match_info["request_id"])
        if job is None:
            return not_found(request)
        return web.json_response(job.describe(self.state.clock()))

    async def jobs(self, request: web.Request) -> web.Response:
        now = self.state.clock()
        return web.json_response([job.describe(now) for job in self.state.jobs.values()])

    async def requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.requests_log(request.query.get("path_prefix", "")))

    async def script(self, request: web.Request) -> web.Response:
        body, error = await _json_body(request)
        if error is not None:
            return error
        steps = body.get("steps") if isinstance(body, dict) else body
        if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
            return json_error(400, 'Expected a JSON list of steps (or {"steps": [...]})')
        try:
            added = self.state.faults.script(steps)
        except (TypeError, ValueError) as err:
            return json_error(400, str(err))
        return web.json_response({"added": added, "pending": self.state.faults.pending()})

    async def expire(self, request: web.Request) -> web.Response:
        job = self.state.jobs.get(request.match_info["request_id"])
        if job is None:
            return not_found(request)
        job.expires_at = min(job.expires_at, self.state.clock())
        return web.json_response(job.describe(self.state.clock()))

    async def keys(self, request: web.Request) -> web.Response:
        """``GET|POST /_emulator/keys``: the accounts and their keys (labels only); POST adds/revokes a key.

        POST body: ``{"add": KEY, "same_account_as": KEY, "revoke": KEY}``, every field optional but
        at least one of ``add``/``revoke`` (see :meth:`EmulatorState.change_keys`). Answers the same
        view as GET, or 400 ``{"error": ...}`` naming the problem (keys appear only as labels).
        """
        if request.method == "POST":
            body, error = await _json_body(request)
            if error is not None:
                return error
            if not isinstance(body, dict) or set(body) - {"add", "same_account_as", "revoke"}:
                return json_error(400, 'Expected a JSON object with "add", "same_account_as" and/or "revoke"')
            try:
                self.state.change_keys(**body)
            except ValueError as err:
                return json_error(400, str(err))
        return web.json_response(self.state.keys_snapshot())

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"ok": True})

    async def config(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            body, error = await _json_body(request)
            if error is not None:
                return error
            if not isinstance(body, dict):
                return json_error(400, "Expected a JSON object of config changes")
            try:
                self.state.configure(**body)
            except (TypeError, ValueError) as err:
                return json_error(400, str(err))
        return web.json_response(self.state.public_config())


async def _json_body(request: web.Request) -> tuple[Any, web.Response | None]:
    try:
        return json.loads(await request.read() or b"null"), None
    except ValueError:
        return None, json_error(400, "Invalid JSON body")
