"""The emulator's aiohttp application: Segmind's API routes, the media host, and ``/_emulator`` controls.

Status codes, bodies and headers follow ``segmind-api.md``. Every handler is O(1) and never blocks
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
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import struct
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from aiohttp import web

from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.faults import Fault
from airflow_provider_segmind.emulator.images import ImageSpec, PillowMissingError, derive_seed, image_spec
from airflow_provider_segmind.emulator.state import (
    CONTENT_BLOCKED,
    JOB_FAULT_ERRORS,
    VALIDATION_FAILURE_SECONDS,
    EmulatorState,
    Job,
    failure_for_prompt,
    key_label,
)
from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.protocol import (
    API_KEY_HEADER,
    RATE_LIMIT_RESET_HEADER,
    SD3_LARGE_MODEL,
    validate_sd3_params,
)

STATE_KEY: Final = web.AppKey("segmind_emulator_state", EmulatorState)
#: Set on a request whose connection the emulator aborted on purpose (not counted as a response).
#: ``web.RequestKey`` exists from aiohttp 3.14; older releases (the declared floor, and the aiohttp
#: that Airflow 3.1/3.2's own constraint files pin) take a plain string key.
_ABORTED: Final[Any] = (
    web.RequestKey("segmind_emulator_aborted", bool) if hasattr(web, "RequestKey") else "segmind_emulator_aborted"
)
#: img2img requests carry base64 images; aiohttp's 1 MiB default body limit is too small.
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
MAX_BLOB_BYTES: Final = 64 * 1024**3
#: Blob content: byte ``i`` of any blob is ``i % 256``, so a reader can verify what it received.
_BLOB_CHUNK: Final = memoryview(bytes(range(256)) * 1024)

MISSING_KEY: Final = "Missing Authorization or x-api-key in header"
INVALID_KEY: Final = "Unauthorized. API key is invalid or may have expired. Check the key in your Segmind console."
PROMPT_MANDATORY: Final = "Prompt is Mandatory and must be string"
NO_CREDITS_RECORD: Final = "No credits found for the user"
NO_CREDITS: Final = "Insufficient credits. Please add credits to your Segmind account to continue."
MODEL_NOT_FOUND: Final = "Model not found"
#: Slugs that are really other endpoints: POSTing to them is a wrong method, as on the real gateway.
_RESERVED_V1_SLUGS: Final = frozenset({"get-user-credits", "requests"})
_RESERVED_V2_SLUGS: Final = frozenset({"requests"})
_STAT_FOR_ENDPOINT: Final = {
    "submit": "submit_attempts",
    "v1": "v1_attempts",
    "status": "status_polls",
    "result": "result_fetches",
    "credits": "credit_checks",
    "history": "history_calls",
}
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_PER_KEY_FOR_ENDPOINT: Final = {
    "status": "status_polls",
    "result": "result_fetches",
    "credits": "credit_checks",
    "history": "history_calls",
}
#: Gateway errors answered after the job was created and billed (``late500`` -> 500 ...).
_LATE_FAULTS: Final = {"late500": 500, "late502": 502, "late503": 503}
#: SDK ``Generations.history``: the window "may span at most 31 days", ``per_page`` 1-100, the
#: statuses and sort fields it names; ``from_date`` defaults to 7 days ago.
_HISTORY_MAX_DAYS: Final = 31
_HISTORY_DEFAULT_DAYS: Final = 7
_HISTORY_STATUSES: Final = frozenset({"COMPLETED", "FAILED", "PENDING"})
_HISTORY_SORTS: Final = frozenset({"model_created", "model_name", "credits_deduction"})
#: Parameters a generic model may use to ask for several outputs (the history lists one row each).
_OUTPUT_COUNT_PARAMS: Final = ("num_outputs", "num_images", "samples", "batch_size")
_MAX_OUTPUTS: Final = 8

_HTML_PAGE: Final = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)

EndpointHandler = Callable[[web.Request, str, Fault | None], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------------------------
# Small response helpers
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Segmind's API
# --------------------------------------------------------------------------------------------


class SegmindApi:
    """Handlers for the v1, v2, credits and media routes."""

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
            return limited
        response = await handler(request, label, fault)
        return await self._late_fault(request, fault, response)

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
            # segmind-api.md, "Added 2026-11-30": the credits endpoint of an account without a record.
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
            f"for this API key. Try again after {iso_utc(reset_at)}.",
            headers={RATE_LIMIT_RESET_HEADER: iso_utc(reset_at)},
        )

    def _model_error(self, slug: str) -> web.Response | None:
        config = self.state.config
        if slug in config.forbidden_models:
            return json_error(403, f"Forbidden. Your account does not have access to the model '{slug}'.")
        if slug in config.retired_models:
            return json_error(410, f"The model '{slug}' has been retired.")
        if slug in config.missing_models or (config.strict_models and slug != SD3_LARGE_MODEL):
            return json_error(404, MODEL_NOT_FOUND)
        return None

    async def _inference_request(
        self, request: web.Request, slug: str, reserved: frozenset[str]
    ) -> tuple[dict[str, Any], web.Response | None]:
        """The checks v1 and v2 inference POSTs share, in Segmind's order: a reserved path is
        nginx's 405 HTML, then the model (404/403/410), then the body. ``(params, refusal)``."""
        if slug in reserved:
            return {}, html_error(405, "Not Allowed")
        refused = self._model_error(slug)
        if refused is not None:
            return {}, refused
        return await self._read_params(request)

    @staticmethod
    async def _read_params(request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        raw = await request.read()
        if not raw.strip():
            return {}, None
        try:
            body = json.loads(raw)
        except ValueError:
            return {}, json_error(400, "Invalid request body: expected a JSON object of model parameters.")
        if not isinstance(body, dict):
            return {}, json_error(400, "Invalid request body: expected a JSON object of model parameters.")
        return body, None

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

    def _job_failure(self, endpoint: str, params: dict[str, Any], fault: Fault | None) -> str | None:
        """A prompt marker, a scripted job fault or a random job fault, in that order."""
        reason = failure_for_prompt(params)
        if reason is not None:
            return reason
        name = fault.name if fault is not None and fault.is_job_fault else None
        name = name or self.state.faults.pick_job_fault(endpoint, self.state.config)
        if name is None:
            return None
        self.state.stats.faults[name] += 1
        return JOB_FAULT_ERRORS[name]

    # ---- v2 ------------------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """``POST /v2/{slug}``: bill, queue, and answer with the absolute status/result URLs."""
        return await self._serve(request, "submit", self._submit, inference=True)

    async def _submit(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        state, config = self.state, self.state.config
        slug = request.match_info["slug"]
        params, refused = await self._inference_request(request, slug, _RESERVED_V2_SLUGS)
        if refused is not None:
            return refused
        sent = json.loads(json.dumps(params))  # a copy, as received (validation may normalise params)
        invalid: str | None = None
        if slug == SD3_LARGE_MODEL:
            try:
                params = validate_sd3_params(params, warn=_ignore)
            except SegmindInvalidParametersError as err:
                if config.v2_validation == "submit":
                    return json_error(422, str(err))
                invalid = str(err)
        prompt = params.get("prompt")
        if ("prompt" in params or invalid is not None) and not (isinstance(prompt, str) and prompt.strip()):
            # Segmind's own words for a job whose prompt is missing or not a string, as a FAILED
            # job (segmind-api.md, v2 status: the FAILED example). Any model with a prompt field.
            invalid = PROMPT_MANDATORY
        remaining = state.ledger.charge(label, config.cost)
        if remaining is None:
            return json_error(406, NO_CREDITS)
        failure = invalid or self._job_failure("submit", params, fault)
        queue_time, inference_time = state.new_timings(params)
        if invalid is not None:
            inference_time = VALIDATION_FAILURE_SECONDS
        now = state.clock()
        seed = derive_seed(params)
        job = Job(
            request_id=str(uuid.uuid4()),
            model=slug,
            key_label=label,
            params=params,
            seed=seed,
            submitted_at=now,
            queue_time=queue_time,
            inference_time=inference_time,
            expires_at=now + config.result_ttl,
            cost=config.cost,
            remaining_credits=remaining,
            image=None if failure else image_spec(slug, params, seed),
            error=failure,
            request_body=sent,
        )
        state.add_job(job)
        stats = state.stats
        stats.submissions += 1
        stats.credits_billed += config.cost
        stats.per_model[slug]["submissions"] += 1
        stats.per_key[label]["submissions"] += 1
        origin = self._origin(request)
        return web.json_response(
            {
                "request_id": job.request_id,
                "status": "QUEUED",
                "poll_url": f"{origin}/v1/requests/{job.request_id}",
                "status_url": f"{origin}/v2/requests/{job.request_id}/status",
                "response_url": f"{origin}/v2/requests/{job.request_id}",
            }
        )

    def _visible_job(self, request: web.Request, label: str) -> Job | web.Response:
        """The job if the caller's account owns it, else the answer to give.

        What Segmind answers for a request id of another account is not documented (it may be 404,
        401 or 403). By default the emulator answers like an unknown id (404);
        ``foreign_request_status`` switches to 403 or 401. The provider ends the wait clearly on
        each: 404 as "unknown or expired", 401/403 as a refused key (after reading the connection
        again), and the tests cover all three.
        """
        job = self.state.live_job(request.match_info["request_id"])
        if job is not None and job.key_label == label:
            return job
        status = self.state.config.foreign_request_status
        if job is not None and status == 401:
            return json_error(401, INVALID_KEY)
        if job is not None and status == 403:
            return json_error(403, "Forbidden. This request belongs to another account.")
        return self._not_found(request)

    @staticmethod
    def _not_found(request: web.Request) -> web.Response:
        return json_error(404, f"Request {request.match_info['request_id']} not found")

    def _pending_body(self, request: web.Request, job: Job, status: str) -> dict[str, Any]:
        origin = self._origin(request)
        return {
            "status": status,
            "request_id": job.request_id,
            "status_url": f"{origin}/v2/requests/{job.request_id}/status",
            "response_url": f"{origin}/v2/requests/{job.request_id}",
            "metrics": {},
        }

    @staticmethod
    def _failed(job: Job) -> web.Response:
        body = {"status": "FAILED", "error": job.error, "metrics": job.metrics(), "request_id": job.request_id}
        return web.json_response(body, status=422)

    async def status(self, request: web.Request) -> web.StreamResponse:
        """``GET /v2/requests/{id}/status``: computed from the job's timestamps, O(1)."""
        return await self._serve(request, "status", self._status)

    async def _status(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        job = self._visible_job(request, label)
        if isinstance(job, web.Response):
            return job
        status = job.status_at(self.state.clock())
        if status == "FAILED":
            return self._failed(job)
        if status == "COMPLETED":
            return web.json_response({"status": status, "request_id": job.request_id, "metrics": job.metrics()})
        return web.json_response(self._pending_body(request, job, status))

    async def result(self, request: web.Request) -> web.StreamResponse:
        """``GET /v2/requests/{id}``: the output once COMPLETED, the FAILED body under 422, else the status."""
        return await self._serve(request, "result", self._result)

    async def _result(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        job = self._visible_job(request, label)
        if isinstance(job, web.Response):
            return job
        status = job.status_at(self.state.clock())
        if status == "FAILED":
            return self._failed(job)
        if status != "COMPLETED" or job.image is None:
            return web.json_response(self._pending_body(request, job, status))
        return web.json_response(await self._completed_body(request, job, job.image))

    async def _stale_result(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        """The ``stale_result`` fault: a COMPLETED job's result answered as still PROCESSING (a lagging
        replica), the case a client must not turn into a COMPLETED summary without output."""
        job = self.state.live_job(request.match_info["request_id"])
        if job is None or response.status != 200:
            return response
        return web.json_response(self._pending_body(request, job, "PROCESSING"))

    async def _completed_body(self, request: web.Request, job: Job, spec: ImageSpec) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "COMPLETED",
            "error": None,
            "request_id": job.request_id,
            "output": None,
            "seed": job.seed,
            "prompt": job.params.get("prompt"),
            "metrics": {**job.metrics(), "cost": job.cost, "remaining_credits": job.remaining_credits},
        }
        if job.params.get("base64") is True:
            encoded = base64.b64encode(await self.state.images.get(spec)).decode("ascii")
            body["output"] = encoded
            body["image"] = encoded
            return body
        if self.state.config.render_on_result:
            data: bytes | None = await self.state.images.get(spec)
        else:
            data = self.state.images.peek(spec)
        file_name = f"{job.request_id}.{spec.output_format}"
        url = f"{self._origin(request)}/media/{file_name}"
        body["output"] = url
        body["images"] = [
            {
                "url": url,
                "content_type": spec.content_type,
                "file_name": file_name,
                "file_size": len(data) if data is not None else None,
            }
        ]
        return body

    # ---- v1 ------------------------------------------------------------------------------

    async def run_v1(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/{slug}``: blocks for the inference time, answers with the image bytes."""
        return await self._serve(request, "v1", self._run_v1, inference=True)

    async def _run_v1(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        state, config = self.state, self.state.config
        slug = request.match_info["slug"]
        params, refused = await self._inference_request(request, slug, _RESERVED_V1_SLUGS)
        if refused is not None:
            return refused
        if slug == SD3_LARGE_MODEL:
            try:
                params = validate_sd3_params(params, warn=_ignore)
            except SegmindInvalidParametersError as err:
                return json_error(422, str(err))
        cost = config.cost
        remaining = state.ledger.charge(label, cost)
        if remaining is None:
            return json_error(406, NO_CREDITS)
        failure = self._job_failure("v1", params, fault)
        _, inference_time = state.new_timings()
        await asyncio.sleep(inference_time)
        if failure is not None:  # only a 200 is billed
            state.ledger.refund(label, cost)
            return json_error(422 if failure == CONTENT_BLOCKED else 500, failure)
        seed = derive_seed(params)
        spec = image_spec(slug, params, seed)
        data = await state.images.get(spec)
        state.stats.v1_runs += 1
        state.stats.credits_billed += cost
        state.stats.per_model[slug]["v1_runs"] += 1
        state.stats.per_key[label]["v1_runs"] += 1
        request_id = str(uuid.uuid4())
        headers = {
            "X-remaining-credits": f"{remaining:g}",
            "x-request-id": request_id,
            "x-cost": f"{cost:g}",
            "x-generation-time": f"{inference_time:.3f}",
            "x-seed-value": str(seed),
        }
        if params.get("base64") is True:
            metrics = {"inference_time": round(inference_time, 3), "cost": cost, "remaining_credits": remaining}
            body = {
                "image": base64.b64encode(data).decode("ascii"),
                "status": "COMPLETED",
                "seed": seed,
                "request_id": request_id,
                "content_type": spec.content_type,
                "metrics": metrics,
            }
            return web.json_response(body, headers=headers)
        return web.Response(body=data, content_type=spec.content_type, headers=headers)

    # ---- request history (SDK ``segmind/generations.py``) -------------------------------------

    async def history_list(self, request: web.Request) -> web.StreamResponse:
        """``GET /inference-request/request-history``: this account's requests, one row per output."""
        return await self._serve(request, "history", self._history_list)

    async def history_record(self, request: web.Request) -> web.StreamResponse:
        """``GET /inference-request/request-history/{request_id}``: one of this account's requests."""
        return await self._serve(request, "history", self._history_record)

    @staticmethod
    def _output_count(job: Job) -> int:
        if job.model == SD3_LARGE_MODEL:
            return 1
        for name in _OUTPUT_COUNT_PARAMS:
            value = job.params.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return min(value, _MAX_OUTPUTS)
        return 1

    def _history_rows(self, request: web.Request, job: Job) -> list[dict[str, Any]]:
        """The job's history rows as of now: none or ``None`` fields while it lags, then one per output."""
        config, now = self.state.config, self.state.clock()
        base: dict[str, Any] = {
            "request_id": job.request_id,
            "model_name": job.model,
            "created_at": iso_utc(job.submitted_at),
        }
        if now < job.submitted_at + config.history_lag_seconds:
            if config.history_lag_mode == "absent":
                return []
            # SDK ``Generations.list``: fields "are None for a generation whose request record has
            # not landed yet".
            empty = dict.fromkeys(
                ("model_status", "credits_deduction", "request_body", "generation_url", "latency_ms", "error")
            )
            return [{**base, **empty, "updated_at": None}]
        status = job.history_status_at(now)
        done = status != "PENDING"
        row = {
            **base,
            "model_status": status,
            "credits_deduction": job.cost,
            "request_body": job.request_body if job.request_body is not None else job.params,
            "generation_url": None,
            "latency_ms": round((job.queue_time + job.inference_time) * 1000, 1) if done else None,
            "error": job.error if status == "FAILED" else None,
            "updated_at": iso_utc(job.completed_at if done else job.submitted_at),
        }
        if status != "COMPLETED" or job.image is None:
            return [row]
        url = f"{self._origin(request)}/media/{job.request_id}.{job.image.output_format}"
        return [
            {**row, "generation_url": url if n == 0 else f"{url}?output={n}"} for n in range(self._output_count(job))
        ]

    @staticmethod
    def _history_date(request: web.Request, name: str, default: date) -> date | web.Response:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC).date()
        except ValueError:
            return json_error(400, f"{name} must be a date as YYYY-MM-DD, got {raw!r}")

    @staticmethod
    def _history_int(request: web.Request, name: str, default: int, low: int, high: int) -> int | web.Response:
        raw = request.query.get(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            return json_error(400, f"{name} must be an integer within {low}..{high}, got {raw!r}")
        return value

    async def _history_list(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        query = request.query
        today = datetime.fromtimestamp(self.state.clock(), UTC).date()
        start = self._history_date(request, "from_date", today - timedelta(days=_HISTORY_DEFAULT_DAYS))
        end = self._history_date(request, "to_date", today)
        page = self._history_int(request, "page", 1, 1, 1_000_000)
        per_page = self._history_int(request, "per_page", 20, 1, 100)
        if isinstance(start, web.Response):
            return start
        if isinstance(end, web.Response):
            return end
        if isinstance(page, web.Response):
            return page
        if isinstance(per_page, web.Response):
            return per_page
        if end < start:
            return json_error(400, "to_date must not be before from_date")
        if (end - start).days + 1 > _HISTORY_MAX_DAYS:
            return json_error(400, f"The date window may span at most {_HISTORY_MAX_DAYS} days")
        status = query.get("status") or None
        if status is not None and status not in _HISTORY_STATUSES:
            return json_error(400, f"status must be one of {', '.join(sorted(_HISTORY_STATUSES))}")
        sort_by = query.get("sort_by") or "model_created"
        sort_order = query.get("sort_order") or "desc"
        if sort_by not in _HISTORY_SORTS or sort_order not in ("asc", "desc"):
            return json_error(
                400, f"sort_by must be one of {', '.join(sorted(_HISTORY_SORTS))}; sort_order asc or desc"
            )
        model = (query.get("model_name") or "").casefold()
        jobs = [
            job
            for job in self.state.history.values()
            if job.key_label == label
            and start <= datetime.fromtimestamp(job.submitted_at, UTC).date() <= end
            and model in job.model.casefold()
        ]
        sort_keys: dict[str, Callable[[Job], Any]] = {
            "model_created": lambda job: job.submitted_at,
            "model_name": lambda job: job.model,
            "credits_deduction": lambda job: job.cost,
        }
        jobs.sort(key=sort_keys[sort_by], reverse=sort_order == "desc")
        rows = [row for job in jobs for row in self._history_rows(request, job)]
        if status is not None:
            rows = [row for row in rows if row["model_status"] == status]
        first = (page - 1) * per_page
        return web.json_response(
            {"data": rows[first : first + per_page], "page": page, "per_page": per_page, "total": len(rows)}
        )

    async def _history_record(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        job = self.state.history.get(request.match_info["request_id"])
        rows = self._history_rows(request, job) if job is not None and job.key_label == label else []
        if not rows:
            return self._not_found(request)
        return web.json_response(rows[0])

    # ---- credits -----------------------------------------------------------------------------

    async def credits(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/get-user-credits``: the key's balance. Free; counts only under rate-limit scope ``all``."""
        return await self._serve(request, "credits", self._credits)

    async def _credits(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        # The documented shape: paid and free credits (segmind-api.md, "Added 2026-11-30").
        ledger = self.state.ledger
        return web.json_response({"credits": ledger.balance(label), "free-credits": ledger.free_balance(label)})

    # ---- media (public, like images.segmind.com: never needs the key) ------------------------

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


# --------------------------------------------------------------------------------------------
# /_emulator controls (no auth: a local test tool's back door)
# --------------------------------------------------------------------------------------------


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
            return json_error(404, f"Request {request.match_info['request_id']} not found")
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
            return json_error(404, f"Request {request.match_info['request_id']} not found")
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
    api, admin = SegmindApi(state), AdminApi(state)
    add = app.router.add_route
    # Specific GET routes first; the catch-all model routes below must not swallow them.
    add("GET", "/v2/requests/{request_id}/status", api.status)
    add("GET", "/v2/requests/{request_id}", api.result)
    add("GET", "/v1/requests/{request_id}", api.status)  # the submit's legacy ``poll_url``
    add("GET", "/v1/get-user-credits", api.credits)
    add("GET", "/inference-request/request-history", api.history_list)
    add("GET", "/inference-request/request-history/{request_id}", api.history_record)
    add("POST", "/v1/{slug}", api.run_v1)
    add("POST", "/v2/{slug}", api.submit)
    app.router.add_get("/media/{file_name}", api.media)  # HEAD too, like a CDN
    app.router.add_get("/_emulator/blob/{nbytes}", api.blob)
    app.router.add_get("/_emulator/redirect", api.redirect)
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
