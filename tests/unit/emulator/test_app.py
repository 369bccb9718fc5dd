"""The Segmind emulator over real loopback HTTP: shapes, codes, lifecycle, billing, limits, faults, images.

No mocks and no timing assertions: job lifecycles are driven by a manual clock where order matters,
and waits poll with generous deadlines.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from PIL import Image

from airflow_provider_segmind.emulator.app import create_app, get_state
from airflow_provider_segmind.emulator.config import DEFAULT_API_KEY, EmulatorConfig
from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.emulator.state import key_label
from airflow_provider_segmind.protocol.answer import parse_retry_after
from airflow_provider_segmind.protocol.params import SD3_SIZES
from airflow_provider_segmind.protocol.vocabulary import RATE_LIMIT_RESET_HEADER, SD3_LARGE_MODEL

SD3 = SD3_LARGE_MODEL
INTERNAL_ERROR = "Internal inference error (emulated)"
CONTENT_BLOCKED = "Content blocked: the prompt or image was flagged by the safety filter (emulated)"


class ManualClock:
    """A clock the test moves by hand, so QUEUED -> PROCESSING -> COMPLETED -> expired is exact."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """A tiny Segmind client over ``requests`` (one keep-alive session), for poking the emulator."""

    def __init__(self, emulator: SegmindEmulator, key: str | None = None) -> None:
        self.emulator = emulator
        self.base = emulator.base_url
        self.key = key if key is not None else emulator.api_key
        self.session = requests.Session()

    def _headers(self, key: str | None) -> dict[str, str]:
        key = self.key if key is None else key
        return {"x-api-key": key} if key else {}

    def post(self, path: str, body: Any = None, *, key: str | None = None) -> requests.Response:
        return self.session.post(self.base + path, json=body, headers=self._headers(key), timeout=30)

    def get(self, path: str, *, key: str | None = None, **kwargs: Any) -> requests.Response:
        return self.session.get(self.base + path, headers=self._headers(key), timeout=30, **kwargs)

    def submit(self, params: dict[str, Any] | None = None, *, model: str = SD3, key: str | None = None) -> Any:
        return self.post(f"/v2/{model}", params if params is not None else {"prompt": "a lighthouse"}, key=key)

    def submit_ok(self, params: dict[str, Any] | None = None, *, model: str = SD3) -> str:
        response = self.submit(params, model=model)
        assert response.status_code == 200, response.text
        return str(response.json()["request_id"])

    def run(self, params: dict[str, Any], *, model: str = SD3, key: str | None = None) -> requests.Response:
        return self.post(f"/v1/{model}", params, key=key)

    def status(self, request_id: str, *, key: str | None = None) -> requests.Response:
        return self.get(f"/v2/requests/{request_id}/status", key=key)

    def result(self, request_id: str, *, key: str | None = None) -> requests.Response:
        return self.get(f"/v2/requests/{request_id}", key=key)

    def wait(self, request_id: str, deadline: float = 15.0) -> requests.Response:
        """Poll the status until it is terminal (COMPLETED 200 or FAILED 422) and return that answer."""
        end = time.monotonic() + deadline
        while True:
            response = self.status(request_id)
            if response.status_code != 200 or response.json()["status"] == "COMPLETED":
                return response
            assert time.monotonic() < end, f"job {request_id} did not finish: {response.text}"
            time.sleep(0.02)


@pytest.fixture
def api(emulator: SegmindEmulator) -> Api:
    return Api(emulator)


def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.02)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --------------------------------------------------------------------------------------------
# v2: submit, status, result, media
# --------------------------------------------------------------------------------------------


def test_submit_answers_queued_with_absolute_urls_on_the_emulator(api: Api) -> None:
    response = api.submit({"prompt": "a red fox", "aspect_ratio": "16:9"})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"request_id", "status", "poll_url", "status_url", "response_url"}
    request_id = body["request_id"]
    assert uuid.UUID(request_id).version == 4
    assert body["status"] == "QUEUED"
    assert body["poll_url"] == f"{api.base}/v1/requests/{request_id}"
    assert body["status_url"] == f"{api.base}/v2/requests/{request_id}/status"
    assert body["response_url"] == f"{api.base}/v2/requests/{request_id}"


def test_lifecycle_queued_processing_completed_then_expired(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    clock = ManualClock()
    emulator = emulator_factory(clock=clock, queue_time=2.0, inference_time=10.0, result_ttl=3600.0)
    api = Api(emulator)
    request_id = api.submit_ok({"prompt": "a tidy desk"})

    queued = api.status(request_id)
    assert queued.status_code == 200
    assert queued.json() == {
        "status": "QUEUED",
        "request_id": request_id,
        "status_url": f"{api.base}/v2/requests/{request_id}/status",
        "response_url": f"{api.base}/v2/requests/{request_id}",
        "metrics": {},
    }
    early_result = api.result(request_id)
    assert early_result.status_code == 200
    assert early_result.json()["status"] == "QUEUED"

    clock.advance(2.0)
    assert api.status(request_id).json()["status"] == "PROCESSING"
    assert api.result(request_id).json()["status"] == "PROCESSING"

    clock.advance(10.0)
    completed = api.status(request_id)
    assert completed.status_code == 200
    assert completed.json() == {
        "status": "COMPLETED",
        "request_id": request_id,
        "metrics": {"inference_time": 10.0, "queue_time": 2.0, "total_time": 12.0},
    }
    job = emulator.job(request_id)
    assert job is not None
    assert job["status"] == "COMPLETED"
    assert job["started_at"] == job["submitted_at"] + 2.0
    assert job["completed_at"] == job["submitted_at"] + 12.0
    assert job["expires_at"] == job["submitted_at"] + 3600.0
    assert "api_key" not in json.dumps(job)

    clock.advance(3600.0)
    for response in (api.status(request_id), api.result(request_id)):
        assert response.status_code == 404
        assert response.json() == {"error": f"Request {request_id} not found"}
    assert emulator.stats()["jobs"]["EXPIRED"] == 1


def test_completed_result_has_output_url_images_seed_and_metrics(api: Api) -> None:
    request_id = api.submit_ok({"prompt": "a paper boat", "seed": 1234, "output_format": "png"})
    api.wait(request_id)

    response = api.result(request_id)

    assert response.status_code == 200
    body = response.json()
    media_url = f"{api.base}/media/{request_id}.png"
    assert body["status"] == "COMPLETED"
    assert body["error"] is None
    assert body["request_id"] == request_id
    assert body["output"] == media_url
    assert body["seed"] == 1234
    assert body["prompt"] == "a paper boat"
    assert set(body["metrics"]) == {"inference_time", "queue_time", "total_time", "cost", "remaining_credits"}
    assert body["metrics"]["cost"] == 0.04
    assert body["metrics"]["remaining_credits"] == pytest.approx(99.96)
    [image] = body["images"]
    assert image["url"] == media_url
    assert image["content_type"] == "image/png"
    assert image["file_name"] == f"{request_id}.png"

    media = requests.get(media_url, timeout=30)
    assert media.status_code == 200
    assert media.headers["Content-Type"] == "image/png"
    assert int(media.headers["Content-Length"]) == len(media.content) == image["file_size"]
    assert decode(media.content).format == "PNG"


def test_base64_result_inlines_the_image_instead_of_a_url(api: Api) -> None:
    request_id = api.submit_ok({"prompt": "a snail", "base64": True})
    api.wait(request_id)

    body = api.result(request_id).json()

    assert body["status"] == "COMPLETED"
    assert body["output"] == body["image"]
    assert not body["output"].startswith("http")
    assert "images" not in body
    image = decode(base64.b64decode(body["image"]))
    assert (image.format, image.size) == ("JPEG", (1024, 1024))


def test_media_is_public_and_never_receives_the_api_key(api: Api) -> None:
    request_id = api.submit_ok({"prompt": "a quiet harbour"})
    api.wait(request_id)
    url = api.result(request_id).json()["output"]

    assert requests.get(url, timeout=30).status_code == 200

    [entry] = api.emulator.requests_log("/media")
    assert entry["method"] == "GET"
    assert entry["path"] == f"/media/{request_id}.jpeg"
    assert entry["has_api_key"] is False
    assert "x-api-key" not in {name.lower() for name in entry["headers"]}
    api_calls = api.emulator.requests_log("/v2")
    assert api_calls
    assert all(call["has_api_key"] for call in api_calls)
    assert api.key not in json.dumps(api.emulator.requests_log())


def test_media_of_unknown_unfinished_or_wrong_format_is_404(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(queue_time=30.0)
    api = Api(emulator)
    request_id = api.submit_ok()

    assert requests.get(f"{api.base}/media/{request_id}.jpeg", timeout=30).status_code == 404
    assert requests.get(f"{api.base}/media/{uuid.uuid4()}.jpeg", timeout=30).status_code == 404


def test_legacy_poll_url_answers_the_status(api: Api) -> None:
    body = api.submit().json()
    response = api.get(body["poll_url"].removeprefix(api.base))
    assert response.status_code == 200
    assert response.json()["request_id"] == body["request_id"]


# --------------------------------------------------------------------------------------------
# v1 and credits
# --------------------------------------------------------------------------------------------


def test_v1_returns_image_bytes_with_billing_headers(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(inference_time=0.0)
    response = Api(emulator).run({"prompt": "a blue kite", "seed": 7, "aspect_ratio": "3:2"})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert float(response.headers["X-remaining-credits"]) == pytest.approx(99.96)
    assert uuid.UUID(response.headers["x-request-id"])
    assert float(response.headers["x-cost"]) == 0.04
    assert float(response.headers["x-generation-time"]) == 0.0
    assert response.headers["x-seed-value"] == "7"
    assert decode(response.content).size == SD3_SIZES["3:2"]
    assert emulator.stats()["v1_runs"] == 1


def test_v1_base64_answers_json(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(inference_time=0.0)
    response = Api(emulator).run({"prompt": "a kettle", "base64": True, "output_format": "png", "seed": 3})

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "COMPLETED"
    assert body["seed"] == 3
    assert decode(base64.b64decode(body["image"])).format == "PNG"
    assert response.headers["x-seed-value"] == "3"


def test_v1_rejects_invalid_sd3_params_with_400_and_bills_nothing(api: Api) -> None:
    response = api.run({"prompt": "a cat", "aspect_ratio": "7:3"})

    assert response.status_code == 400
    assert "aspect_ratio" in response.json()["error"]
    assert api.get("/v1/get-user-credits").json()["credits"] == 100.0


@pytest.mark.parametrize(
    ("prompt", "status", "error"), [("__fail__ please", 500, INTERNAL_ERROR), ("__unsafe__", 422, CONTENT_BLOCKED)]
)
def test_v1_failures_answer_an_error_and_are_not_billed(
    emulator_factory: Callable[..., SegmindEmulator], prompt: str, status: int, error: str
) -> None:
    api = Api(emulator_factory(inference_time=0.0))
    response = api.run({"prompt": prompt})
    assert (response.status_code, response.json()) == (status, {"error": error})
    assert api.get("/v1/get-user-credits").json()["credits"] == 100.0


def test_credits_decrease_per_image_and_406_when_exhausted(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(credits=0.1, cost=0.04, inference_time=0.0)
    api = Api(emulator)

    assert api.get("/v1/get-user-credits").json()["credits"] == 0.1
    api.submit_ok()
    assert api.run({"prompt": "one more"}).status_code == 200
    assert api.get("/v1/get-user-credits").json()["credits"] == pytest.approx(0.02)

    for response in (api.submit(), api.run({"prompt": "too many"})):
        assert response.status_code == 406
        assert response.json()["error"].startswith("Insufficient credits")
    stats = emulator.stats()
    assert (stats["submissions"], stats["submit_attempts"], stats["v1_runs"], stats["v1_attempts"]) == (1, 2, 1, 2)
    assert stats["credits_billed"] == pytest.approx(0.08)

    emulator.configure(credits=5)
    assert api.get("/v1/get-user-credits").json()["credits"] == 5.0


def test_each_key_has_its_own_balance_and_jobs(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(api_keys=["SG_aaaaaaaaaaaaaaaa", "SG_bbbbbbbbbbbbbbbb"], credits=1.0)
    first, second = Api(emulator, "SG_aaaaaaaaaaaaaaaa"), Api(emulator, "SG_bbbbbbbbbbbbbbbb")

    request_id = first.submit_ok()

    assert first.get("/v1/get-user-credits").json()["credits"] == pytest.approx(0.96)
    assert second.get("/v1/get-user-credits").json()["credits"] == 1.0
    assert first.status(request_id).status_code == 200
    assert second.status(request_id).status_code == 404
    assert set(emulator.stats()["per_key"]) == {key_label("SG_aaaaaaaaaaaaaaaa"), key_label("SG_bbbbbbbbbbbbbbbb")}


# --------------------------------------------------------------------------------------------
# Auth, methods, paths, models
# --------------------------------------------------------------------------------------------

# A fixed (never issued) request id: parameter ids must be the same in every pytest-xdist process.
_UNKNOWN_REQUEST = "0b0e4d1c-6f1a-4c57-9a43-5f2d8e7c9b10"
_AUTHED_CALLS: list[tuple[str, str]] = [
    ("POST", f"/v2/{SD3}"),
    ("POST", f"/v1/{SD3}"),
    ("GET", f"/v2/requests/{_UNKNOWN_REQUEST}/status"),
    ("GET", f"/v2/requests/{_UNKNOWN_REQUEST}"),
    ("GET", "/v1/get-user-credits"),
]


@pytest.mark.parametrize(("method", "path"), _AUTHED_CALLS)
def test_missing_and_invalid_keys_answer_401(api: Api, method: str, path: str) -> None:
    missing = api.session.request(method, api.base + path, json={"prompt": "x"}, timeout=30)
    invalid = api.session.request(
        method, api.base + path, json={"prompt": "x"}, headers={"x-api-key": "SG_ffffffffffffffff"}, timeout=30
    )

    assert (missing.status_code, missing.json()) == (401, {"error": "Missing Authorization or x-api-key in header"})
    assert invalid.status_code == 401
    assert invalid.json()["error"].startswith("Unauthorized. API key is invalid or may have expired")
    assert api.emulator.stats()["submissions"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v2/{SD3}"),
        ("GET", f"/v1/{SD3}"),
        ("POST", "/v2/requests/abc/status"),
        ("POST", "/v2/requests/abc"),
        ("POST", "/v1/get-user-credits"),
        ("PUT", f"/v2/{SD3}"),
    ],
)
def test_wrong_method_on_a_known_route_is_405_html(api: Api, method: str, path: str) -> None:
    response = api.session.request(method, api.base + path, headers={"x-api-key": api.key}, timeout=30)

    assert response.status_code == 405
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text


def test_unknown_path_and_unknown_request_are_404_json(api: Api) -> None:
    unknown_path = api.get("/v3/whatever")
    assert (unknown_path.status_code, unknown_path.json()) == (404, {"error": "Not Found"})
    request_id = str(uuid.uuid4())
    for response in (api.status(request_id), api.result(request_id)):
        assert (response.status_code, response.json()) == (404, {"error": f"Request {request_id} not found"})


def test_model_catalogue_missing_forbidden_retired_strict(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(
        missing_models=["gone-model"], forbidden_models=["vip-model"], retired_models=["old-model"]
    )
    api = Api(emulator)

    missing = api.submit(model="gone-model")
    assert (missing.status_code, missing.json()) == (404, {"error": "Model not found"})
    assert api.submit(model="vip-model").status_code == 403
    assert api.run({"prompt": "x"}, model="old-model").status_code == 410
    assert api.submit(model="any-other-model").status_code == 200

    emulator.configure(strict_models=True)
    assert api.submit(model="any-other-model").status_code == 404
    assert api.submit().status_code == 200


def test_generic_model_passes_params_through_and_renders_requested_size(
    emulator_factory: Callable[..., SegmindEmulator],
) -> None:
    api = Api(emulator_factory(inference_time=0.0))
    params = {"prompt": "a tiny robot", "width": 512, "height": 768, "steps": 30, "anything": [1, 2]}

    request_id = api.submit_ok(params, model="flux-schnell")
    api.wait(request_id)

    assert api.emulator.job(request_id)["params"] == params  # type: ignore[index]
    media = requests.get(api.result(request_id).json()["output"], timeout=30)
    assert decode(media.content).size == (512, 768)
    assert api.emulator.stats()["per_model"] == {"flux-schnell": {"submissions": 1}}


def test_non_json_body_is_400(api: Api) -> None:
    response = api.session.post(
        f"{api.base}/v2/{SD3}", data=b"{not json", headers={"x-api-key": api.key, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "error" in response.json()


# --------------------------------------------------------------------------------------------
# FAILED jobs and v2 validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"prompt": "a __fail__ castle"}, INTERNAL_ERROR),
        ({"prompt": "something __unsafe__"}, CONTENT_BLOCKED),
        ({"prompt": "a cat", "aspect_ratio": "7:3"}, "Invalid parameter 'aspect_ratio'"),
        # docs.segmind.com, async inference (v2 status): Segmind's own FAILED text for a missing prompt.
        ({"negative_prompt": "no prompt at all"}, "Prompt is Mandatory and must be string"),
    ],
)
def test_failed_jobs_answer_422_on_status_and_result(api: Api, params: dict[str, Any], error: str) -> None:
    request_id = api.submit_ok(params)

    status = api.wait(request_id)
    result = api.result(request_id)

    for response in (status, result):
        assert response.status_code == 422
        body = response.json()
        assert body["status"] == "FAILED"
        assert body["request_id"] == request_id
        assert body["error"].startswith(error)
        assert set(body["metrics"]) == {"inference_time", "queue_time", "total_time"}
    assert api.emulator.stats()["jobs"]["FAILED"] == 1


def test_v2_validation_submit_mode_rejects_at_submit_without_billing(
    emulator_factory: Callable[..., SegmindEmulator],
) -> None:
    api = Api(emulator_factory(v2_validation="submit"))

    response = api.submit({"prompt": "a cat", "mode": "sketch"})

    assert response.status_code == 400
    assert "Invalid parameter 'mode'" in response.json()["error"]
    assert api.get("/v1/get-user-credits").json()["credits"] == 100.0
    assert api.emulator.jobs() == []


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


def test_rate_limit_429_with_a_parseable_reset_header(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    clock = ManualClock()
    emulator = emulator_factory(clock=clock, rate_limit=2)
    api = Api(emulator)
    request_id = api.submit_ok()
    clock.advance(10)
    api.submit_ok()

    limited = api.submit()

    assert limited.status_code == 429
    assert limited.json()["error"].startswith("Rate limit exceeded")
    reset = limited.headers[RATE_LIMIT_RESET_HEADER]
    assert reset.endswith("Z")
    assert parse_retry_after({RATE_LIMIT_RESET_HEADER: reset}, now=clock()) == pytest.approx(50.0, abs=0.01)
    assert api.status(request_id).status_code == 200  # scope "submit": polls do not count
    assert api.run({"prompt": "x"}).status_code == 429
    clock.advance(50)
    assert api.submit().status_code == 200
    stats = emulator.stats()
    assert stats["rate_limited"] == 2
    assert stats["responses"]["429"] == 2


def test_rate_limit_scope_all_counts_every_authenticated_call(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    api = Api(emulator_factory(rate_limit=3, rate_limit_scope="all"))
    api.submit_ok()
    assert api.get("/v1/get-user-credits").status_code == 200
    assert api.get("/v1/get-user-credits").status_code == 200

    assert api.get("/v1/get-user-credits").status_code == 429
    assert api.submit().status_code == 429


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def _call(api: Api, endpoint: str, request_id: str) -> requests.Response:
    calls: dict[str, Callable[[], requests.Response]] = {
        "submit": api.submit,
        "v1": lambda: api.run({"prompt": "x"}),
        "status": lambda: api.status(request_id),
        "result": lambda: api.result(request_id),
        "credits": lambda: api.get("/v1/get-user-credits"),
    }
    return calls[endpoint]()


@pytest.mark.parametrize("endpoint", ["submit", "v1", "status", "result", "credits"])
@pytest.mark.parametrize(
    ("fault", "status", "content_type"),
    [
        ("429", 429, "application/json"),
        ("500", 500, "application/json"),
        ("502", 502, "application/json"),
        ("504", 504, "application/json"),
        ("html502", 502, "text/html"),
    ],
)
def test_scripted_gateway_faults(api: Api, endpoint: str, fault: str, status: int, content_type: str) -> None:
    request_id = api.submit_ok()
    api.emulator.script([{"endpoint": endpoint, "fault": fault}])

    response = _call(api, endpoint, request_id)

    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(content_type)
    if content_type == "application/json":
        assert response.json()["error"]
    if fault == "429":
        assert parse_retry_after(dict(response.headers.lower_items()), now=time.time()) is not None
    assert api.emulator.stats()["faults"] == {fault: 1}
    assert _call(api, endpoint, request_id).status_code in (200, 404)  # the step is consumed


def test_504_on_submit_means_the_job_was_accepted_and_billed(api: Api) -> None:
    api.emulator.script([{"endpoint": "submit", "fault": "504"}])
    assert api.submit().status_code == 504
    assert len(api.emulator.jobs()) == 1
    assert api.emulator.stats()["submissions"] == 1


def test_500_on_submit_creates_nothing(api: Api) -> None:
    api.emulator.script([{"endpoint": "submit", "fault": "500"}])
    assert api.submit().status_code == 500
    assert api.emulator.jobs() == []
    assert api.get("/v1/get-user-credits").json()["credits"] == 100.0


@pytest.mark.parametrize("endpoint", ["submit", "status", "result", "credits"])
def test_bad_json_is_a_200_with_a_truncated_body(api: Api, endpoint: str) -> None:
    request_id = api.submit_ok()
    api.emulator.script([{"endpoint": endpoint, "fault": "bad_json"}])

    response = _call(api, endpoint, request_id)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_reset_before_on_submit_drops_the_connection_and_creates_no_job(api: Api) -> None:
    api.emulator.script([{"endpoint": "submit", "fault": "reset_before"}])

    with pytest.raises(requests.ConnectionError):
        api.submit()

    stats = api.emulator.stats()
    assert (stats["submissions"], stats["submit_attempts"], stats["aborted_connections"]) == (0, 1, 1)
    assert api.emulator.jobs() == []
    assert api.submit().status_code == 200  # the server keeps serving


def test_reset_after_on_submit_creates_and_bills_the_job(api: Api) -> None:
    api.emulator.script([{"endpoint": "submit", "fault": "reset_after"}])

    with pytest.raises(requests.ConnectionError):
        api.submit({"prompt": "an orphaned job"})

    [job] = api.emulator.jobs()
    assert job["params"]["prompt"] == "an orphaned job"
    assert api.emulator.stats()["submissions"] == 1
    assert api.get("/v1/get-user-credits").json()["credits"] == pytest.approx(99.96)


@pytest.mark.parametrize("fault", ["reset_before", "reset_after"])
def test_resets_on_status_polls(api: Api, fault: str) -> None:
    request_id = api.submit_ok()
    api.emulator.script([{"endpoint": "status", "fault": fault, "times": 2}])

    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            api.status(request_id)
    assert api.status(request_id).status_code == 200
    assert api.emulator.stats()["faults"] == {fault: 2}


def test_slow_submit_creates_the_job_and_then_answers_normally(api: Api) -> None:
    api.emulator.script([{"endpoint": "submit", "fault": "slow", "seconds": 0.3}])
    answers: list[requests.Response] = []
    thread = threading.Thread(target=lambda: answers.append(Api(api.emulator).submit()))
    thread.start()

    wait_until(lambda: len(api.emulator.jobs()) == 1)
    thread.join(timeout=30)

    [response] = answers
    assert response.status_code == 200
    assert response.json()["request_id"] == api.emulator.jobs()[0]["request_id"]
    assert api.emulator.stats()["faults"] == {"slow": 1}


def test_slow_status_answers_normally(api: Api) -> None:
    request_id = api.submit_ok()
    api.emulator.script([{"endpoint": "status", "fault": "slow", "seconds": 0.2}])
    assert api.status(request_id).status_code == 200
    assert api.emulator.stats()["faults"] == {"slow": 1}


def test_media_faults_truncate_and_wrong_type(api: Api) -> None:
    request_id = api.submit_ok()
    api.wait(request_id)
    url = api.result(request_id).json()["output"]
    api.emulator.script([{"endpoint": "media", "fault": "truncate"}, {"endpoint": "media", "fault": "wrong_type"}])

    with pytest.raises(requests.exceptions.RequestException):
        requests.get(url, timeout=30)
    wrong = requests.get(url, timeout=30)
    assert wrong.status_code == 200
    assert wrong.headers["Content-Type"].startswith("text/html")
    good = requests.get(url, timeout=30)
    assert good.headers["Content-Type"] == "image/jpeg"
    assert int(good.headers["Content-Length"]) == len(good.content)
    assert api.emulator.stats()["faults"] == {"truncate": 1, "wrong_type": 1}


@pytest.mark.parametrize(("fault", "error"), [("failed_job", INTERNAL_ERROR), ("content_safety", CONTENT_BLOCKED)])
def test_scripted_job_faults_fail_the_next_job(api: Api, fault: str, error: str) -> None:
    api.emulator.script([{"endpoint": "submit", "fault": fault}])

    doomed, fine = api.submit_ok(), api.submit_ok()

    assert api.wait(doomed).json()["error"] == error
    assert api.wait(fine).status_code == 200
    assert api.emulator.stats()["faults"] == {fault: 1}


def test_scripted_steps_run_in_order_per_endpoint(api: Api) -> None:
    request_id = api.submit_ok()
    api.emulator.script(
        [
            {"endpoint": "status", "fault": "500", "times": 2},
            {"endpoint": "submit", "fault": "502"},
            {"endpoint": "status", "fault": "none"},
            {"endpoint": "status", "fault": "504"},
        ]
    )

    codes = [api.status(request_id).status_code for _ in range(5)]

    assert codes == [500, 500, 200, 504, 200]
    assert api.submit().status_code == 502
    assert api.emulator.stats()["scripted_pending"] == {}


def test_script_over_http_and_validation(api: Api) -> None:
    added = requests.post(f"{api.base}/_emulator/script", json=[{"endpoint": "credits", "fault": "500"}], timeout=30)
    assert added.json() == {"added": 1, "pending": {"credits": 1}}
    assert api.get("/v1/get-user-credits").status_code == 500

    bad = requests.post(f"{api.base}/_emulator/script", json={"steps": [{"endpoint": "media", "fault": "bad_json"}]})
    assert bad.status_code == 400
    with pytest.raises(ValueError, match="does not apply"):
        api.emulator.script([{"endpoint": "status", "fault": "truncate"}])


def test_random_faults_follow_the_seed(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    def codes(seed: int) -> list[int]:
        api = Api(emulator_factory(faults={"500": 0.5}, seed=seed))
        return [api.status("nope").status_code for _ in range(30)]

    first = codes(7)
    assert first == codes(7)
    assert set(first) == {404, 500}


def test_random_faults_only_hit_configured_endpoints(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    api = Api(emulator_factory(faults={"502": 1.0}, fault_endpoints=["status"]))
    request_id = api.submit_ok()
    assert api.status(request_id).status_code == 502
    assert api.get("/v1/get-user-credits").status_code == 200


def test_random_job_faults(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    api = Api(emulator_factory(faults={"content_safety": 1.0}))
    assert api.wait(api.submit_ok()).json()["error"] == CONTENT_BLOCKED


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("aspect_ratio", sorted(SD3_SIZES))
def test_images_have_the_sd3_size_for_each_aspect_ratio(
    emulator_factory: Callable[..., SegmindEmulator], aspect_ratio: str
) -> None:
    api = Api(emulator_factory(inference_time=0.0))
    response = api.run({"prompt": f"ratio {aspect_ratio}", "aspect_ratio": aspect_ratio, "output_format": "png"})
    image = decode(response.content)
    assert (image.format, image.size) == ("PNG", SD3_SIZES[aspect_ratio])


def test_images_are_deterministic_per_prompt_and_seed(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    api = Api(emulator_factory(inference_time=0.0))

    def render(prompt: str, seed: int | None = None) -> bytes:
        params: dict[str, Any] = {"prompt": prompt} if seed is None else {"prompt": prompt, "seed": seed}
        response = api.run(params)
        assert response.status_code == 200
        return response.content

    assert render("a green owl", 5) == render("a green owl", 5)
    assert render("a green owl") == render("a green owl")  # no seed: derived from the prompt
    assert render("a green owl", 5) != render("a green owl", 6)
    assert render("a green owl", 5) != render("a grey owl", 5)


def test_v2_media_bytes_match_for_identical_requests(api: Api) -> None:
    params = {"prompt": "twin images", "seed": 99, "aspect_ratio": "9:16"}
    request_ids = [api.submit_ok(params), api.submit_ok(params)]
    for request_id in request_ids:
        api.wait(request_id)
    blobs = [requests.get(api.result(rid).json()["output"], timeout=30).content for rid in request_ids]
    assert blobs[0] == blobs[1]
    assert decode(blobs[0]).size == SD3_SIZES["9:16"]


def test_blob_streams_deterministic_bytes(api: Api) -> None:
    response = requests.get(f"{api.base}/_emulator/blob/1000003?content_type=image/jpeg", stream=True, timeout=30)
    data = b"".join(response.iter_content(65536))
    assert response.headers["Content-Type"] == "image/jpeg"
    assert int(response.headers["Content-Length"]) == len(data) == 1000003
    assert data[:256] == bytes(range(256))
    assert data[-1] == (1000003 - 1) % 256
    assert api.emulator.stats()["blob_fetches"] == 1


def test_blob_can_be_chunked_without_content_length(api: Api) -> None:
    response = requests.get(f"{api.base}/_emulator/blob/70000?chunked=1", stream=True, timeout=30)
    data = b"".join(response.iter_content(65536))
    assert "Content-Length" not in response.headers
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert len(data) == 70000
    assert data[:256] == bytes(range(256))


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_answers_a_location_and_is_recorded(api: Api, status: int) -> None:
    target = "http://169.254.169.254/latest/meta-data/"
    response = requests.get(
        f"{api.base}/_emulator/redirect", params={"to": target, "status": status}, allow_redirects=False, timeout=30
    )
    assert response.status_code == status
    assert response.headers["Location"] == target
    logged = api.emulator.requests_log("/_emulator/redirect")
    assert len(logged) == 1
    assert logged[0]["has_api_key"] is False


def test_redirect_validates_its_arguments(api: Api) -> None:
    assert api.get("/_emulator/redirect", allow_redirects=False).status_code == 400
    bad = api.get("/_emulator/redirect?to=https://example.com/&status=200", allow_redirects=False)
    assert bad.status_code == 400
    assert "status must be one of" in bad.json()["error"]


# --------------------------------------------------------------------------------------------
# Stats, introspection, control
# --------------------------------------------------------------------------------------------


def test_stats_count_every_request_by_kind(api: Api) -> None:
    request_id = api.submit_ok()
    api.submit(key="SG_wrongwrongwrong")
    api.wait(request_id)
    polls = api.emulator.stats()["status_polls"]
    api.result(request_id)
    api.get("/v1/get-user-credits")

    stats = api.emulator.stats()

    assert (stats["submit_attempts"], stats["submissions"]) == (2, 1)
    assert stats["result_fetches"] == 1
    assert stats["credit_checks"] == 1
    assert stats["responses"]["401"] == 1
    assert stats["responses"]["200"] == 1 + polls + 2
    assert stats["per_model"] == {SD3: {"submissions": 1}}
    label = key_label(api.key)
    assert stats["per_key"][label]["submissions"] == 1
    assert stats["per_key"][label]["status_polls"] == polls
    assert stats["per_key"][label]["result_fetches"] == 1
    assert stats["jobs"]["COMPLETED"] == 1
    assert stats["connections"] == 1  # one keep-alive session
    assert api.key not in json.dumps(stats)
    assert requests.get(f"{api.base}/_emulator/stats", timeout=30).json()["submissions"] == 1


def test_key_label_is_a_sha256_prefix() -> None:
    assert key_label(DEFAULT_API_KEY) == "e1fd68fa6cae"
    assert len(key_label("anything")) == 12


def test_control_endpoints_expire_job_reset_config(api: Api) -> None:
    request_id = api.submit_ok()
    job = requests.get(f"{api.base}/_emulator/jobs/{request_id}", timeout=30).json()
    assert job["request_id"] == request_id
    assert {"submitted_at", "started_at", "completed_at", "expires_at", "status", "model", "params"} <= set(job)

    expired = requests.post(f"{api.base}/_emulator/expire/{request_id}", timeout=30)
    assert expired.json()["status"] == "EXPIRED"
    assert api.status(request_id).status_code == 404

    config = requests.post(f"{api.base}/_emulator/config", json={"credits": 2, "inference_time": "1-2"}, timeout=30)
    assert config.json()["credits"] == 2
    assert config.json()["inference_time"] == [1.0, 2.0]
    assert api.key not in config.text
    assert api.get("/v1/get-user-credits").json()["credits"] == 2.0
    assert requests.post(f"{api.base}/_emulator/config", json={"nope": 1}, timeout=30).status_code == 400

    assert requests.post(f"{api.base}/_emulator/reset", timeout=30).json() == {"ok": True}
    assert api.emulator.jobs() == []
    assert api.emulator.stats()["submissions"] == 0


def test_reset_restores_credits_and_forgets_jobs(api: Api) -> None:
    api.submit_ok()
    api.emulator.reset()
    assert api.emulator.jobs() == []
    assert api.get("/v1/get-user-credits").json()["credits"] == 100.0


def test_create_app_serves_inside_an_existing_loop() -> None:
    async def scenario() -> dict[str, Any]:
        from airflow_provider_segmind.emulator.server import start_site

        app = create_app(EmulatorConfig.for_profile("fast", queue_time=0.0, inference_time=0.0))
        runner, port = await start_site(app, "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession(headers={"x-api-key": DEFAULT_API_KEY}) as session:
                async with session.post(f"http://127.0.0.1:{port}/v2/{SD3}", json={"prompt": "loop"}) as response:
                    submitted = await response.json()
                async with session.get(submitted["status_url"]) as response:
                    body: dict[str, Any] = await response.json()
            assert get_state(app).stats.submissions == 1
            return body
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario())["status"] == "COMPLETED"


def test_config_profiles_ranges_and_validation() -> None:
    assert EmulatorConfig().inference_time == 9.6
    assert EmulatorConfig().api_key == DEFAULT_API_KEY
    fast = EmulatorConfig.for_profile("fast", inference_time="8-12", fault_endpoints="status,media")
    assert (fast.queue_time, fast.inference_time) == (0.05, (8.0, 12.0))
    assert fast.fault_endpoints == frozenset({"status", "media"})
    assert EmulatorConfig.for_profile("chaos").faults
    with pytest.raises(ValueError, match="Unknown emulator profile"):
        EmulatorConfig.for_profile("turbo")
    with pytest.raises(ValueError, match="Unknown fault"):
        EmulatorConfig(faults={"meteor": 0.1})
    with pytest.raises(ValueError, match="Unknown emulator setting"):
        EmulatorConfig().with_changes(colour="blue")
    with pytest.raises(ValueError, match="inference_time"):
        EmulatorConfig(inference_time=(5.0, 1.0))


def test_inference_time_ranges_are_drawn_per_job_from_the_seed(
    emulator_factory: Callable[..., SegmindEmulator],
) -> None:
    def timings(seed: int) -> list[float]:
        emulator = emulator_factory(queue_time=(10.0, 20.0), inference_time=(8.0, 12.0), seed=seed)
        api = Api(emulator)
        ids = [api.submit_ok() for _ in range(5)]
        jobs = [emulator.job(request_id) for request_id in ids]
        return [job["completed_at"] - job["started_at"] for job in jobs if job is not None]

    drawn = timings(3)
    assert all(8.0 <= value <= 12.0 for value in drawn)
    assert len(set(drawn)) == 5
    assert drawn == pytest.approx(timings(3))


def test_media_answers_head_like_a_cdn(api: Api) -> None:
    request_id = api.submit_ok()
    api.wait(request_id)
    url = api.result(request_id).json()["output"]
    head = requests.head(url, timeout=30)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == api.result(request_id).json()["images"][0]["file_size"]


def test_without_pillow_images_fail_with_an_install_hint() -> None:
    script = """
import sys
sys.modules["PIL"] = None  # as if Pillow were not installed
import requests
from airflow_provider_segmind.emulator import SegmindEmulator
with SegmindEmulator(inference_time=0.0) as emu:
    response = requests.post(f"{emu.base_url}/v1/some-model", json={"prompt": "x"}, headers={"x-api-key": emu.api_key})
    print(response.status_code, response.json()["error"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("500 ")
    assert "pip install 'airflow-provider-segmind[emulator]'" in done.stdout


# --------------------------------------------------------------------------------------------
# CLI and load
# --------------------------------------------------------------------------------------------


def test_cli_serves_on_a_free_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_segmind.emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--api-key",
            "SG_cli0000000000001",
            "--profile",
            "fast",
            "--inference-time",
            "0.1-0.2",
            "--fault",
            "500=0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: port_file.exists() or process.poll() is not None, deadline=30)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        port = int(port_file.read_text())
        base = f"http://127.0.0.1:{port}"
        credits = requests.get(f"{base}/v1/get-user-credits", headers={"x-api-key": "SG_cli0000000000001"}, timeout=30)
        assert credits.json()["credits"] == 100.0
        assert requests.get(f"{base}/v1/get-user-credits", headers={"x-api-key": DEFAULT_API_KEY}).status_code == 401
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert stdout.strip() == f"Segmind emulator listening on {base}"


async def test_500_concurrent_submits_and_polls(emulator: SegmindEmulator) -> None:
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector, headers={"x-api-key": emulator.api_key}) as session:

        async def one(index: int) -> str:
            async with session.post(f"{emulator.base_url}/v2/{SD3}", json={"prompt": f"job {index}"}) as response:
                assert response.status == 200
                submitted = await response.json()
            while True:
                async with session.get(submitted["status_url"]) as response:
                    status = (await response.json())["status"]
                if status == "COMPLETED":
                    return str(submitted["request_id"])
                await asyncio.sleep(0.05)

        request_ids = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(500))), timeout=120)

    assert len(set(request_ids)) == 500
    stats = emulator.stats()
    assert stats["submissions"] == 500
    assert stats["jobs"]["COMPLETED"] == 500
    assert stats["responses"].keys() == {"200"}
    assert stats["connections"] <= 200


# --------------------------------------------------------------------------------------------
# Issue 12: answers as Segmind documents them (docs.segmind.com/api-reference, the SDK segmind/segmind-python)
# --------------------------------------------------------------------------------------------


def test_credits_answer_the_documented_shape_and_free_credits_are_spent_first(
    emulator_factory: Callable[..., SegmindEmulator],
) -> None:
    api = Api(emulator_factory(credits=0.0, free_credits=0.05, cost=0.04))

    assert api.get("/v1/get-user-credits").json() == {"credits": 0.0, "free-credits": 0.05}
    request_id = api.submit_ok()  # free credits alone pay for a job
    assert api.emulator.job(request_id)["model"] == SD3
    assert api.get("/v1/get-user-credits").json() == {"credits": 0.0, "free-credits": pytest.approx(0.01)}
    assert api.submit().status_code == 406  # 0.01 left: not enough


def test_no_credits_record_fault_is_the_documented_404(api: Api) -> None:
    api.emulator.script([{"endpoint": "credits", "fault": "no_credits_record"}])
    response = api.get("/v1/get-user-credits")
    assert (response.status_code, response.json()) == (404, {"error": "No credits found for the user"})
    assert api.get("/v1/get-user-credits").status_code == 200


def test_stale_result_fault_answers_processing_for_a_completed_job(api: Api) -> None:
    request_id = api.submit_ok()
    assert api.wait(request_id).json()["status"] == "COMPLETED"
    api.emulator.script([{"endpoint": "result", "fault": "stale_result", "times": 2}])
    for _ in range(2):
        stale = api.result(request_id)
        assert stale.status_code == 200
        assert stale.json()["status"] == "PROCESSING"
        assert "output" not in stale.json()
    assert api.result(request_id).json()["status"] == "COMPLETED"
    assert api.emulator.stats()["faults"]["stale_result"] == 2


def test_free_credits_flag_reaches_the_config() -> None:
    from airflow_provider_segmind.emulator.__main__ import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--credits", "0", "--free-credits", "0.5"]))
    assert (config.credits, config.free_credits) == (0.0, 0.5)


def test_hold_marker_keeps_a_job_running_at_least_that_long(api: Api) -> None:
    """``__hold_<s>s__`` (the soak's restart prompts): the job is still in flight after the usual runtime."""
    held = api.submit_ok({"prompt": "a mug __hold_1.5s__"})
    plain = api.submit_ok({"prompt": "a mug"})

    held_job, plain_job = api.emulator.job(held), api.emulator.job(plain)
    assert held_job is not None
    assert plain_job is not None

    assert held_job["completed_at"] - held_job["started_at"] >= 1.5
    assert plain_job["completed_at"] - plain_job["started_at"] < 1.5
