"""The request pipeline every Segmind API route of the emulator shares, in the gateway's order.

Fault (before) -> API key -> rate limit -> the route's handler -> fault (after): :meth:`Gateway._serve`.
Also the answers several routes build alike (absolute URLs, a pending job's body, an unknown id).
The route classes (:mod:`.jobs`, :mod:`.request_history`, :mod:`.media`) extend :class:`Gateway`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from airflow_provider_segmind.emulator.faults import Fault
from airflow_provider_segmind.emulator.responses import (
    INVALID_KEY,
    MISSING_KEY,
    NO_CREDITS_RECORD,
    _truncated_json,
    abort_connection,
    html_error,
    iso_utc,
    json_error,
)
from airflow_provider_segmind.emulator.state import (
    EmulatorState,
    Job,
)
from airflow_provider_segmind.protocol.vocabulary import API_KEY_HEADER, RATE_LIMIT_RESET_HEADER

_STAT_FOR_ENDPOINT: Final = {
    "submit": "submit_attempts",
    "v1": "v1_attempts",
    "status": "status_polls",
    "result": "result_fetches",
    "credits": "credit_checks",
    "history": "history_calls",
    "models": "catalogue_calls",
}
#: The counters also kept per key (the polling and free calls, per account).
_PER_KEY_FOR_ENDPOINT: Final = {name: _STAT_FOR_ENDPOINT[name] for name in ("status", "result", "credits", "history")}
#: Gateway errors answered after the job was created and billed (``late500`` -> 500 ...).
_LATE_FAULTS: Final = {"late500": 500, "late502": 502, "late503": 503}

EndpointHandler = Callable[[web.Request, str, Fault | None], Awaitable[web.StreamResponse]]


class Gateway:
    """The shared pipeline and answers of the API routes; one instance per route group, all on one state."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # ---- shared request pipeline -----------------------------------------------------------

    async def _serve(
        self, request: web.Request, endpoint: str, handler: EndpointHandler, *, inference: bool = False
    ) -> web.StreamResponse:
        """Fault (before) -> auth -> rate limit -> handler -> fault (after), for every API call."""
        state = self.state
        stats = state.stats
        stats.increment(_STAT_FOR_ENDPOINT[endpoint])
        fault = state.faults.pick(endpoint, state.config)
        if fault is not None and not fault.is_job_fault:
            early = await self._early_fault(request, endpoint, fault)
            if early is not None:
                return early
            if fault.name == "slow" and endpoint not in ("submit", "v1"):
                fault = None  # already delayed; answer with the state as of now
        label = self._authenticate(request)
        if isinstance(label, web.Response):
            return label
        if endpoint in _PER_KEY_FOR_ENDPOINT:
            stats.per_key[label][_PER_KEY_FOR_ENDPOINT[endpoint]] += 1
        limited = self._rate_limited(label, inference=inference)
        if limited is not None:
            return self._with_rate_limit_headers(label, limited)
        response = await handler(request, label, fault)
        return self._with_rate_limit_headers(label, await self._late_fault(request, fault, response))

    def _with_rate_limit_headers(self, label: str, response: web.StreamResponse) -> web.StreamResponse:
        """``rate_limit_headers``: the account's counters on an answer (see :class:`~.config.EmulatorConfig`)."""
        config = self.state.config
        if not config.rate_limit_headers or config.rate_limit is None or response.prepared:
            return response
        left, reset_at = self.state.limiter.peek(label, config.rate_limit, config.rate_limit_window, self.state.clock())
        response.headers["x-ratelimit-limit"] = str(config.rate_limit)
        response.headers["x-ratelimit-remaining"] = str(left)
        response.headers.setdefault(RATE_LIMIT_RESET_HEADER, iso_utc(reset_at))
        return response

    async def _early_fault(self, request: web.Request, endpoint: str, fault: Fault) -> web.StreamResponse | None:
        """Faults that replace the answer before anything happens (nothing created or billed)."""
        name = fault.name
        after = {"bad_json", "reset_after", "stale_result"} | (
            {"504", "slow", *_LATE_FAULTS} if endpoint in ("submit", "v1") else set()
        )
        if name in after:
            return None
        self.state.stats.faults[name] += 1
        if name == "slow":
            await asyncio.sleep(self._slow_seconds(fault))
            return None
        return self._fault_response(request, name)

    def _fault_response(self, request: web.Request, name: str) -> web.StreamResponse:
        if name == "reset_before":
            return abort_connection(request)
        if name == "429":
            reset_at = self.state.clock() + self.state.config.fault_retry_after
            return json_error(
                429,
                f"Rate limit exceeded (emulated fault). Try again after {iso_utc(reset_at)}.",
                headers={RATE_LIMIT_RESET_HEADER: iso_utc(reset_at)},
            )
        if name == "html502":
            return html_error(502, "Bad Gateway")
        if name == "no_credits_record":
            # docs.segmind.com/api-reference, ``GET /v1/get-user-credits``: an account without a record.
            return json_error(404, NO_CREDITS_RECORD)
        if name == "wrong_type":
            return web.Response(
                text="<html><body><h1>Service Unavailable</h1><p>Please retry.</p></body></html>",
                content_type="text/html",
            )
        messages = {"500": "Internal Server Error (emulated)", "502": "Bad Gateway (emulated)"}
        return json_error(int(name), messages.get(name, "Gateway Timeout (emulated)"))

    async def _late_fault(
        self, request: web.Request, fault: Fault | None, response: web.StreamResponse
    ) -> web.StreamResponse:
        """Faults that strike after the work is done: the job exists and is billed, the answer is lost."""
        if fault is None or fault.is_job_fault:
            return response
        self.state.stats.faults[fault.name] += 1
        if fault.name == "reset_after":
            return abort_connection(request)
        if fault.name == "bad_json":
            return _truncated_json(response)
        if fault.name == "504":
            return json_error(504, "Gateway Timeout (emulated)")
        if fault.name in _LATE_FAULTS:
            # Indistinguishable from the early 500/502/503 to the client: that is the point.
            code = _LATE_FAULTS[fault.name]
            messages = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
            return json_error(code, f"{messages[code]} (emulated)")
        if fault.name == "stale_result":
            return await self._stale_result(request, response)
        await asyncio.sleep(self._slow_seconds(fault))
        return response

    def _slow_seconds(self, fault: Fault) -> float:
        return fault.seconds if fault.seconds is not None else self.state.config.slow_seconds

    def _authenticate(self, request: web.Request) -> str | web.Response:
        """The caller's key label, or the 401 to answer with."""
        key = request.headers.get(API_KEY_HEADER, "").strip()
        if not key:
            return json_error(401, MISSING_KEY)
        label = self.state.label_for(key)
        return label if label is not None else json_error(401, INVALID_KEY)

    def _rate_limited(self, label: str, *, inference: bool) -> web.Response | None:
        """The 429 of ``rate_limit`` (per account, in ``rate_limit_window`` seconds), or ``None``.

        Which calls count is ``rate_limit_scope``, because Segmind does not say whether status polls
        count: ``submit`` (inference POSTs only) or ``all`` (every authenticated call). The numbers'
        sources are :data:`~.config.RATE_LIMIT_PLANS`'.
        """
        config = self.state.config
        if config.rate_limit is None or (config.rate_limit_scope == "submit" and not inference):
            return None
        reset_at = self.state.limiter.acquire(label, config.rate_limit, config.rate_limit_window, self.state.clock())
        if reset_at is None:
            return None
        self.state.stats.rate_limited += 1
        self.state.stats.per_key[label]["rate_limited"] += 1
        return json_error(
            429,
            f"Rate limit exceeded: at most {config.rate_limit} requests per {config.rate_limit_window:g} s "
            f"for this account. Try again after {iso_utc(reset_at)}.",
            headers={RATE_LIMIT_RESET_HEADER: iso_utc(reset_at)},
        )

    def _origin(self, request: web.Request) -> str:
        """scheme://host:port for absolute URLs: the configured public URL, else the request's Host.

        Without a Host header (HTTP/1.0), the socket's own address: aiohttp's fallback would be a
        blocking ``getfqdn()`` without the port.
        """
        public = self.state.config.public_url
        if public:
            return public.rstrip("/")
        host = request.headers.get("Host")
        if not host:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            address, port = (sockname[0], sockname[1]) if sockname else ("127.0.0.1", 80)
            host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        return f"{request.scheme}://{host}"

    def _pending_body(self, request: web.Request, job: Job, status: str) -> dict[str, Any]:
        origin = self._origin(request)
        return {
            "status": status,
            "request_id": job.request_id,
            "status_url": f"{origin}/v2/requests/{job.request_id}/status",
            "response_url": f"{origin}/v2/requests/{job.request_id}",
            "metrics": {},
        }

    async def _stale_result(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """The ``stale_result`` fault: a COMPLETED job's result answered as still PROCESSING (a lagging
        replica), the case a client must not turn into a COMPLETED summary without output."""
        job = self.state.live_job(request.match_info["request_id"])
        if job is None or response.status != 200:
            return response
        return web.json_response(self._pending_body(request, job, "PROCESSING"))
