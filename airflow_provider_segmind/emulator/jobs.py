"""The emulator's inference and account routes: ``POST /v2/{slug}`` and its status/result, ``POST /v1/{slug}``, credits.

A v2 job is billed and queued at submit and its status is computed from its timestamps (O(1)); a job
that will FAIL is queued without a charge (``EmulatorConfig.bill_failed_jobs``, off by default, as
Segmind's error docs say). A v1 call blocks for the inference time and answers with the image, and
is billed only when it answers 200. See docs.segmind.com/api-reference.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any, Final

from aiohttp import web

from airflow_provider_segmind.emulator.faults import Fault
from airflow_provider_segmind.emulator.gateway import Gateway
from airflow_provider_segmind.emulator.images import ImageSpec, derive_seed, image_spec
from airflow_provider_segmind.emulator.input_image import InputImageError, load_input_image
from airflow_provider_segmind.emulator.responses import (
    INVALID_KEY,
    MODEL_NOT_FOUND,
    NO_CREDITS,
    PROMPT_MANDATORY,
    _ignore,
    html_error,
    json_error,
    not_found,
)
from airflow_provider_segmind.emulator.state import (
    CONTENT_BLOCKED,
    JOB_FAULT_ERRORS,
    VALIDATION_FAILURE_SECONDS,
    Job,
    failure_for_prompt,
)
from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.protocol.params import SD3_IMAGE_FIELDS, validate_sd3_img2img_params, validate_sd3_params
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_IMG2IMG_MODEL, SD3_LARGE_MODEL

#: Slugs that are really other endpoints: POSTing to them is a wrong method, as on the real gateway.
_RESERVED_V1_SLUGS: Final = frozenset({"get-user-credits", "requests"})
_RESERVED_V2_SLUGS: Final = frozenset({"requests"})
#: The slugs whose parameters the emulator knows (SD3 Large text-to-image and image-to-image).
SD3_SLUGS: Final = frozenset({SD3_LARGE_MODEL, SD3_LARGE_IMG2IMG_MODEL})


def sd3_params(slug: str, params: dict[str, Any]) -> dict[str, Any]:
    """An SD3 Large request's parameters as Segmind would take them; raises ``SegmindInvalidParametersError``.

    Image-to-image (``stable-diffusion-3-large-img2img``) is checked like the provider checks it: its
    ``image`` is required. The text-to-image slug's page documents no input image, and Segmind may
    ignore one and bill a text-to-image (issue 23): an ``image``, a ``strength`` or ``mode:
    "image-to-image"`` sent there is accepted and ignored (kept in the job's params as received, never
    rendered), where the provider itself refuses them before submitting.
    """
    if slug == SD3_LARGE_IMG2IMG_MODEL:
        return validate_sd3_img2img_params(params, warn=_ignore)
    ignored: dict[str, Any] = {name: params[name] for name in SD3_IMAGE_FIELDS if name in params}
    view = {name: value for name, value in params.items() if name not in SD3_IMAGE_FIELDS}
    mode = view.get("mode")
    if mode == "image-to-image":
        view["mode"] = "text-to-image"
    checked = validate_sd3_params(view, warn=_ignore)
    if mode == "image-to-image":
        checked["mode"] = mode
    return {**checked, **ignored}


class JobRoutes(Gateway):
    """Handlers for the v1, v2 and credits routes."""

    def _model_error(self, slug: str) -> web.Response | None:
        config = self.state.config
        if slug in config.forbidden_models:
            return json_error(403, f"Forbidden. Your account does not have access to the model '{slug}'.")
        if slug in config.retired_models:
            return json_error(410, f"The model '{slug}' has been retired.")
        if slug in config.missing_models or (config.strict_models and slug not in SD3_SLUGS):
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

    @staticmethod
    async def _input_image(slug: str, params: dict[str, Any]) -> tuple[bytes, web.Response | None]:
        """An image-to-image request's input, fetched or decoded before billing: ``(thumbnail, refusal)``.

        Only SD3 Large's image-to-image slug: the text-to-image slug ignores an input image (see
        :func:`sd3_params`), and the parameters of the other slugs are not known here, so their
        ``image`` (if any) is passed through unread. An unusable input is a 400, not billed
        (assumptions and sources: ``input_image.py``).
        """
        if slug != SD3_LARGE_IMG2IMG_MODEL:
            return b"", None
        image = params.get("image")
        try:
            return await load_input_image(image), None
        except InputImageError as err:
            return b"", json_error(400, str(err))

    # ---- v2 ------------------------------------------------------------------------------

    async def submit(self, request: web.Request) -> web.StreamResponse:
        """``POST /v2/{slug}``: bill (unless the job will FAIL), queue, answer with the absolute status/result URLs."""
        return await self._serve(request, "submit", self._submit, inference=True)

    async def _submit(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        state, config = self.state, self.state.config
        slug = request.match_info["slug"]
        params, refused = await self._inference_request(request, slug, _RESERVED_V2_SLUGS)
        if refused is not None:
            return refused
        sent = json.loads(json.dumps(params))  # a copy, as received (validation may normalise params)
        invalid: str | None = None
        if slug in SD3_SLUGS:
            try:
                params = sd3_params(slug, params)
            except SegmindInvalidParametersError as err:
                if config.v2_validation == "submit":  # refused before running: 400, not 422 (a FAILED job)
                    return json_error(400, str(err))
                invalid = str(err)
        source = b""
        if invalid is None:
            source, refused = await self._input_image(slug, params)
            if refused is not None:
                return refused
        prompt = params.get("prompt")
        if ("prompt" in params or invalid is not None) and not (isinstance(prompt, str) and prompt.strip()):
            # Segmind's own words for a job whose prompt is missing or not a string, as a FAILED
            # job (docs.segmind.com, async inference: the FAILED status example). Any model with a prompt field.
            invalid = PROMPT_MANDATORY
        if not state.ledger.can_pay(label, config.cost):
            return json_error(406, NO_CREDITS)
        failure = invalid or self._job_failure("submit", params, fault)
        # A job that FAILs is not charged (Segmind's error docs: "nothing was charged"), unless the
        # config takes the other reading (``bill_failed_jobs``). Either way the submit needs the credits.
        billed = failure is None or config.bill_failed_jobs
        remaining = state.ledger.charge(label, config.cost) if billed else state.ledger.total(label)
        if remaining is None:  # cannot happen after can_pay; kept for the type
            return json_error(406, NO_CREDITS)
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
            cost=config.cost if billed else 0.0,
            remaining_credits=remaining,
            image=None if failure else image_spec(slug, params, seed, source),
            error=failure,
            request_body=sent,
            billed=billed,
        )
        state.add_job(job)
        stats = state.stats
        stats.submissions += 1
        if billed:
            stats.credits_billed += config.cost
        else:
            stats.unbilled_failures += 1
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
        return not_found(request)

    @staticmethod
    def _failed(job: Job) -> web.Response:
        body = {"status": "FAILED", "error": job.error, "metrics": job.metrics(), "request_id": job.request_id}
        return web.json_response(body, status=422)

    async def status(self, request: web.Request) -> web.StreamResponse:
        """``GET /v2/requests/{id}/status``: computed from the job's timestamps, O(1)."""
        return await self._serve(request, "status", self._status)

    def _answerable_job(self, request: web.Request, label: str) -> tuple[Job, str] | web.Response:
        """The caller's job and its status now, or the answer to give instead (unknown, foreign, FAILED)."""
        job = self._visible_job(request, label)
        if isinstance(job, web.Response):
            return job
        status = job.status_at(self.state.clock())
        if status == "FAILED":
            return self._failed(job)
        return job, status

    async def _status(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        found = self._answerable_job(request, label)
        if isinstance(found, web.Response):
            return found
        job, status = found
        if status == "COMPLETED":
            return web.json_response({"status": status, "request_id": job.request_id, "metrics": job.metrics()})
        return web.json_response(self._pending_body(request, job, status))

    async def result(self, request: web.Request) -> web.StreamResponse:
        """``GET /v2/requests/{id}``: the output once COMPLETED, the FAILED body under 422, else the status."""
        return await self._serve(request, "result", self._result)

    async def _result(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        found = self._answerable_job(request, label)
        if isinstance(found, web.Response):
            return found
        job, status = found
        if status != "COMPLETED" or job.image is None:
            return web.json_response(self._pending_body(request, job, status))
        return web.json_response(await self._completed_body(request, job, job.image))

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
        if slug in SD3_SLUGS:
            try:
                params = sd3_params(slug, params)
            except SegmindInvalidParametersError as err:
                return json_error(400, str(err))
        source, refused = await self._input_image(slug, params)
        if refused is not None:
            return refused
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
        spec = image_spec(slug, params, seed, source)
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

    # ---- credits -----------------------------------------------------------------------------

    async def credits(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/get-user-credits``: the key's balance. Free; counts only under rate-limit scope ``all``."""
        return await self._serve(request, "credits", self._credits)

    async def _credits(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        # The documented shape: paid and free credits (docs.segmind.com/api-reference, ``GET /v1/get-user-credits``).
        ledger = self.state.ledger
        return web.json_response({"credits": ledger.balance(label), "free-credits": ledger.free_balance(label)})
