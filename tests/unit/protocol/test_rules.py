"""The pure protocol layer: the rules both transports share, checked without any I/O."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest

from airflow_provider_segmind import exceptions as exc
from airflow_provider_segmind.protocol.answer import HttpAnswer, parse_retry_after
from airflow_provider_segmind.protocol.errors import classify_error, is_invalid_input, job_failed_error, transport_error
from airflow_provider_segmind.protocol.params import model_takes_seed, unknown_params, validate_params
from airflow_provider_segmind.protocol.responses import (
    parse_credit_balance,
    parse_credits,
    parse_int,
    parse_result,
    parse_run_sync,
    parse_status,
    parse_submit,
)
from airflow_provider_segmind.protocol.retry import RetryPolicy, submit_certainly_refused, submit_outcome_unknown
from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.protocol.urls import (
    credits_url,
    normalize_base_url,
    result_url,
    run_sync_url,
    status_url,
    submit_url,
)
from airflow_provider_segmind.protocol.vocabulary import (
    SD3_LARGE_IMG2IMG_MODEL,
    SD3_LARGE_MODEL,
    Endpoint,
    SegmindJobStatus,
)

KEY = "SG_0123456789abcdef"
BASE = "https://api.segmind.com"


def answer(status: int, body: object = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
    data = raw if raw is not None else json.dumps(body).encode()
    return HttpAnswer(status, {"content-type": "application/json", **(headers or {})}, data)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("params", "field", "allowed_fragment"),
    [
        ({}, "prompt", "non-blank string"),
        ({"prompt": "   "}, "prompt", "non-blank string"),
        ({"prompt": 42}, "prompt", "non-blank string"),
        ({"prompt": "x" * 10_001}, "prompt", "10,000"),
        ({"prompt": "ok", "negative_prompt": "x" * 10_001}, "negative_prompt", "10,000"),
        ({"prompt": "ok", "aspect_ratio": "4:3"}, "aspect_ratio", "'16:9', '1:1'"),
        ({"prompt": "ok", "output_format": "webp"}, "output_format", "'jpeg', 'png'"),
        ({"prompt": "ok", "mode": "inpaint"}, "mode", "'text-to-image', 'image-to-image'"),
        # Image-to-image is its own slug: the text-to-image one refuses it, naming the other (issue 23).
        ({"prompt": "ok", "mode": "image-to-image"}, "mode", "model='stable-diffusion-3-large-img2img'"),
        ({"prompt": "ok", "image": "https://x/y.png"}, "image", "model='stable-diffusion-3-large-img2img'"),
        ({"prompt": "ok", "strength": 0.5}, "strength", "SegmindImageToImageOperator"),
        ({"prompt": "ok", "seed": -2}, "seed", "4294967294"),
        ({"prompt": "ok", "seed": 4_294_967_295}, "seed", "4294967294"),
        ({"prompt": "ok", "seed": True}, "seed", "4294967294"),
        ({"prompt": "ok", "base64": "yes"}, "base64", "true or false"),
        ({"prompt": "ok", "aspect-ratio": "1:1"}, "aspect-ratio", "'aspect_ratio'"),
    ],
)
def test_sd3_validation_names_field_and_allowed_values(params, field, allowed_fragment):
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        validate_params(SD3_LARGE_MODEL, params, strict=True)
    err = info.value
    assert err.field == field
    assert field in str(err)
    assert allowed_fragment in str(err)
    assert isinstance(err, ValueError)  # usable where callers catch ValueError
    assert err.task_retry_helps is False


def test_sd3_validation_fills_defaults_and_keeps_valid_values():
    out = validate_params(SD3_LARGE_MODEL, {"prompt": "a fox", "aspect_ratio": "16:9", "seed": 7, "image": None})
    assert out == {
        "prompt": "a fox",
        "negative_prompt": "",
        "aspect_ratio": "16:9",
        "mode": "text-to-image",
        "output_format": "jpeg",
        "base64": False,
        "seed": 7,
    }
    i2i = {"prompt": "a fox", "image": "https://x/y.png", "strength": 0}
    assert validate_params(SD3_LARGE_IMG2IMG_MODEL, i2i) == {
        "prompt": "a fox",
        "image": "https://x/y.png",
        "strength": 0,
        "mode": "image-to-image",
        "output_format": "jpeg",
        "base64": False,
    }


@pytest.mark.parametrize(
    ("params", "field", "allowed_fragment"),
    [
        ({"image": "https://x/y.png"}, "prompt", "non-blank string"),
        ({"prompt": "ok"}, "image", "an image URL or base64 string"),
        ({"prompt": "ok", "image": ""}, "image", "an image URL or base64 string"),
        ({"prompt": "ok", "image": ["a", "b"]}, "image", "one image per task"),
        ({"prompt": "ok", "image": "s3://bucket/"}, "image", "s3://bucket/key"),
        ({"prompt": "ok", "image": "https://x/y.png", "mode": "text-to-image"}, "mode", "'image-to-image'"),
        ({"prompt": "ok", "image": "https://x/y.png", "strength": 1.5}, "strength", "a number from 0 to 1"),
        ({"prompt": "ok", "image": "https://x/y.png", "strength": "strong"}, "strength", "a number from 0 to 1"),
        ({"prompt": "ok", "image": "https://x/y.png", "output_format": "webp"}, "output_format", "'jpeg', 'png'"),
        ({"prompt": "ok", "image": "https://x/y.png", "base64": "no"}, "base64", "true or false"),
        ({"prompt": "ok", "image": "https://x/y.png", "seed": 2**32}, "seed", "4294967294"),
        ({"prompt": "ok", "image": "https://x/y.png", "aspect_ratio": "1:1"}, "aspect_ratio", "'image'"),
    ],
)
def test_sd3_img2img_validation_names_field_and_allowed_values(params, field, allowed_fragment):
    """segmind.com/models/stable-diffusion-3-large-img2img/api: image required, mode image-to-image, strength 0..1."""
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        validate_params(SD3_LARGE_IMG2IMG_MODEL, params, strict=True)
    err = info.value
    assert err.field == field
    assert allowed_fragment in str(err)
    assert err.task_retry_helps is False


def test_sd3_img2img_reports_every_bad_field_and_leaves_strength_to_segmind():
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        validate_params(SD3_LARGE_IMG2IMG_MODEL, {"prompt": "", "mode": "inpaint", "strength": -1})
    assert [problem[0] for problem in info.value.problems] == ["prompt", "mode", "image", "strength"]
    assert "for stable-diffusion-3-large-img2img" in str(info.value)
    warned: list[str] = []
    body = validate_params(
        SD3_LARGE_IMG2IMG_MODEL, {"prompt": "a fox", "image": "aGVsbG8=", "aspect_ratio": "16:9"}, warn=warned.append
    )
    assert "strength" not in body  # omitted: Segmind's default applies
    assert body["aspect_ratio"] == "16:9"  # not on the page: sent with a warning
    assert len(warned) == 1
    assert "'aspect_ratio'" in warned[0]
    assert unknown_params(SD3_LARGE_IMG2IMG_MODEL, {"prompt": "x", "seed": 1, "style": 2}) == ["style"]


def test_generic_models_pass_params_through_but_must_be_json():
    assert validate_params("flux-schnell", {"prompt": "x", "steps": 4, "anything": [1]}) == {
        "prompt": "x",
        "steps": 4,
        "anything": [1],
    }
    with pytest.raises(exc.SegmindInvalidParametersError, match="JSON"):
        validate_params("flux-schnell", {"prompt": object()})
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        validate_params("../etc/passwd", {"prompt": "x"})
    assert info.value.field == "model"


# ------------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        (None, BASE),
        ("", BASE),
        ("api.segmind.com", BASE),
        ("https://api.segmind.com/", BASE),
        ("https://api.segmind.com/v1", BASE),
        ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
        ("http://127.0.0.1:8787/v1/", "http://127.0.0.1:8787"),
        ("https://proxy.example.com/segmind", "https://proxy.example.com/segmind"),
    ],
)
def test_base_url_normalization(host, expected):
    assert normalize_base_url(host) == expected


def test_base_url_rejects_non_http():
    with pytest.raises(ValueError, match="not an http"):
        normalize_base_url("ftp://x")


def test_urls():
    assert submit_url(BASE, SD3_LARGE_MODEL) == f"{BASE}/v2/{SD3_LARGE_MODEL}"
    assert run_sync_url(BASE, "flux") == f"{BASE}/v1/flux"
    assert status_url(BASE, "abc-1") == f"{BASE}/v2/requests/abc-1/status"
    assert result_url(BASE, "abc-1") == f"{BASE}/v2/requests/abc-1"
    assert credits_url(BASE) == f"{BASE}/v1/get-user-credits"
    with pytest.raises(exc.SegmindInvalidParametersError):
        status_url(BASE, "../../v1/get-user-credits")


def test_submit_follows_absolute_urls_only_on_same_origin():
    good = {
        "request_id": "r1",
        "status": "QUEUED",
        "status_url": "https://api.segmind.com/v2/requests/r1/status",
        "response_url": "https://api.segmind.com/v2/requests/r1",
    }
    sub = parse_submit(answer(200, good), BASE)
    assert (sub.request_id, sub.status, sub.status_url) == ("r1", SegmindJobStatus.QUEUED, good["status_url"])
    # A body pointing elsewhere must not make the hook send the API key to another host.
    evil = {**good, "status_url": "https://attacker.example/steal", "response_url": "http://api.segmind.com/x"}
    sub = parse_submit(answer(200, evil), BASE)
    assert sub.status_url == status_url(BASE, "r1")
    assert sub.response_url == result_url(BASE, "r1")


def test_submit_without_request_id_is_an_error_that_warns_of_a_possible_job():
    with pytest.raises(exc.SegmindInvalidResponseError, match="may exist"):
        parse_submit(answer(200, {"status": "QUEUED"}), BASE)


# ------------------------------------------------------------------ status and result


def test_status_values_and_terminality():
    for value in ("QUEUED", "PROCESSING"):
        st = parse_status(answer(200, {"status": value, "metrics": {}}), "r1")
        assert st.status.value == value
        assert not st.status.is_terminal
    done = parse_status(answer(200, {"status": "COMPLETED", "metrics": {"inference_time": 9.6}}), "r1")
    assert done.status.is_terminal
    assert done.metrics == {"inference_time": 9.6}


def test_failed_arrives_as_422_and_is_a_status_with_the_reason():
    body = {"status": "FAILED", "error": "Prompt is Mandatory and must be string", "metrics": {"queue_time": 0.2}}
    st = parse_status(answer(422, body), "r1")
    assert st.status is SegmindJobStatus.FAILED
    assert st.error == "Prompt is Mandatory and must be string"
    with pytest.raises(exc.SegmindJobFailedError, match="Prompt is Mandatory") as info:
        parse_result(answer(422, body), "r1")
    assert info.value.request_id == "r1"
    assert info.value.metrics == {"queue_time": 0.2}


def test_unknown_status_value_is_an_invalid_response():
    with pytest.raises(exc.SegmindInvalidResponseError, match="unknown status 'RUNNING'"):
        parse_status(answer(200, {"status": "RUNNING"}), "r1")


def test_result_extracts_urls_images_seed_and_metrics():
    body = {
        "status": "COMPLETED",
        "output": "https://images.segmind.com/generations/a.jpeg",
        "images": [
            {"url": "https://images.segmind.com/generations/a.jpeg", "content_type": "image/jpeg"},
            {"url": "https://images.segmind.com/generations/b.jpeg"},
        ],
        "seed": 42,
        "metrics": {"cost": 0.04, "remaining_credits": 9.9},
    }
    res = parse_result(answer(200, body), "r1")
    assert res.output_urls == (
        "https://images.segmind.com/generations/a.jpeg",
        "https://images.segmind.com/generations/b.jpeg",
    )
    assert res.seed == 42
    assert res.metrics["cost"] == 0.04
    assert res.base64_image is None


def test_result_finds_inline_base64():
    b64 = "iVBORw0KGgo" + "A" * 100  # a PNG header, base64-encoded
    res = parse_result(answer(200, {"status": "COMPLETED", "output": b64, "metrics": {}}), "r1")
    assert res.base64_image == b64
    assert res.output_urls == ()
    res = parse_result(answer(200, {"status": "COMPLETED", "image": "data:image/png;base64," + b64}), "r1")
    assert res.base64_image == b64


def test_long_text_output_is_not_mistaken_for_an_image():
    text = "The quick brown fox jumps over the lazy dog and keeps running far beyond the hills " * 3
    res = parse_result(answer(200, {"status": "COMPLETED", "output": text}), "r1")
    assert res.base64_image is None
    letters = "QWxhZGRpbjpvcGVuIHNlc2FtZQ" * 5  # valid base64, but not an image
    assert parse_result(answer(200, {"status": "COMPLETED", "output": letters}), "r1").base64_image is None


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("status", "endpoint", "cls", "hint"),
    [
        (401, Endpoint.SUBMIT, exc.SegmindAuthenticationError, "password (API Key)"),
        (403, Endpoint.SUBMIT, exc.SegmindForbiddenError, "plan"),
        (404, Endpoint.SUBMIT, exc.SegmindModelNotFoundError, "model slug"),
        (404, Endpoint.RUN_SYNC, exc.SegmindModelNotFoundError, "model slug"),
        (404, Endpoint.STATUS, exc.SegmindRequestNotFoundError, "1 hour retention"),
        (404, Endpoint.RESULT, exc.SegmindRequestNotFoundError, "1 hour retention"),
        (410, Endpoint.SUBMIT, exc.SegmindModelRetiredError, "retired"),
        (406, Endpoint.SUBMIT, exc.SegmindInsufficientCreditsError, "insufficient credits"),
        (400, Endpoint.SUBMIT, exc.SegmindInvalidParametersError, "parameters"),
        (400, Endpoint.RUN_SYNC, exc.SegmindInvalidParametersError, "parameters"),
        # 422: "the inference itself ran and failed. NOT a malformed request body" (Segmind's error docs).
        (422, Endpoint.RUN_SYNC, exc.SegmindJobFailedError, "ran and FAILED"),
        (422, Endpoint.SUBMIT, exc.SegmindJobFailedError, "Nothing was charged"),
        (429, Endpoint.STATUS, exc.SegmindRateLimitError, "pool"),
        (500, Endpoint.STATUS, exc.SegmindServerError, "retried"),
        (500, Endpoint.SUBMIT, exc.SegmindServerError, "parameter problem"),
        (500, Endpoint.RUN_SYNC, exc.SegmindServerError, "parameter problem"),
        (502, Endpoint.SUBMIT, exc.SegmindServerError, "retried"),
        (504, Endpoint.RESULT, exc.SegmindServerError, "retried"),
        (405, Endpoint.SUBMIT, exc.SegmindUnexpectedStatusError, "method"),
    ],
)
def test_every_status_code_is_classified_with_advice(status, endpoint, cls, hint):
    err = classify_error(answer(status, {"error": "server says why"}), endpoint, request_id="r9")
    assert type(err) is cls
    assert err.status_code == status
    assert "server says why" in str(err)
    assert hint in str(err)


def test_html_error_bodies_are_summarised_not_dumped():
    html = b"<html><head><title>502 Bad Gateway</title></head><body>" + b"x" * 5000 + b"</body></html>"
    err = classify_error(HttpAnswer(502, {"content-type": "text/html"}, html), Endpoint.STATUS)
    assert isinstance(err, exc.SegmindServerError)
    assert len(str(err)) < 400
    with pytest.raises(exc.SegmindInvalidResponseError, match="not JSON"):
        parse_status(HttpAnswer(200, {"content-type": "text/html"}, html), "r1")


def test_server_text_is_redacted_of_keys():
    err = classify_error(answer(401, {"error": f"key {KEY} is invalid"}), Endpoint.SUBMIT)
    assert KEY not in str(err)
    assert KEY not in repr(err)
    assert redact(f"x {KEY} y", [KEY]) == "x *** y"
    assert redact("token=abcd1234", ["abcd1234"]) == "token=***"


# ------------------------------------------------------------------ retry policy


def test_retry_after_header_forms():
    now = 1_700_000_000.0
    assert parse_retry_after({"retry-after": "7"}, now) == 7.0
    iso = datetime.fromtimestamp(now + 12, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert parse_retry_after({"x-rate-limit-reset-at-utc": iso}, now) == pytest.approx(12, abs=1)
    assert parse_retry_after({"x-rate-limit-reset-at-utc": str(now + 3)}, now) == pytest.approx(3)
    assert parse_retry_after({"x-rate-limit-reset-at-utc": str((now + 3) * 1000)}, now) == pytest.approx(3)
    assert parse_retry_after({}, now) is None
    assert parse_retry_after({"retry-after": "garbage"}, now) is None


def _transport(sent: bool) -> exc.SegmindTransportError:
    return transport_error("x", request_sent=sent, url="https://api.segmind.com/v2/m?k=1", detail="boom")


@pytest.mark.parametrize(
    ("error", "idempotent", "expected"),
    [
        (exc.SegmindRateLimitError("429"), False, True),
        (exc.SegmindServerError("500", status_code=500), False, True),
        (exc.SegmindServerError("502", status_code=502), False, True),
        # A 504's upstream may have queued (and billed) the job: a submit is not repeated.
        (exc.SegmindServerError("504", status_code=504), False, False),
        (exc.SegmindServerError("504", status_code=504), True, True),
        (_transport(sent=False), False, True),
        (_transport(sent=True), False, False),
        (_transport(sent=True), True, True),
        (exc.SegmindInvalidResponseError("html"), True, True),
        (exc.SegmindAuthenticationError("401"), True, False),
        (exc.SegmindForbiddenError("403"), True, False),
        (exc.SegmindRequestNotFoundError("404"), True, False),
        (exc.SegmindInsufficientCreditsError("406"), True, False),
        (exc.SegmindInvalidParametersError("422"), True, False),
        (exc.SegmindJobFailedError("failed"), True, False),
        (ValueError("not ours"), True, False),
    ],
)
def test_retry_decisions(error, idempotent, expected):
    assert RetryPolicy().is_retryable(error, idempotent=idempotent) is expected


@pytest.mark.parametrize(
    ("error", "unknown"),
    [
        # Answered refusals and connections that never opened: no job, a new submit is safe.
        (exc.SegmindRateLimitError("429"), False),
        (exc.SegmindServerError("500", status_code=500), False),
        (exc.SegmindServerError("502", status_code=502), False),
        (exc.SegmindServerError("503", status_code=503), False),
        (exc.SegmindInvalidParametersError("422"), False),
        (exc.SegmindInsufficientCreditsError("406"), False),
        (_transport(sent=False), False),
        # The request may have arrived: a job may be queued and billed, nothing may send it again.
        (exc.SegmindServerError("504", status_code=504), True),
        (exc.SegmindServerError("524", status_code=524), True),
        (exc.SegmindServerError("520", status_code=520), True),
        (_transport(sent=True), True),
        (exc.SegmindInvalidResponseError("a 200 whose body was cut"), True),
    ],
)
def test_which_failed_submits_have_an_unknown_outcome(error, unknown):
    assert submit_outcome_unknown(error) is unknown
    # The hook's retry policy resends a submit exactly when its outcome is known to be "no job".
    assert RetryPolicy().is_retryable(error, idempotent=False) is (error.transient and not unknown)


def test_retry_delays_honour_the_server_and_back_off_with_jitter():
    policy = RetryPolicy(backoff_initial=1.0, backoff_max=8.0, rate_limit_max_wait=60.0, jitter=1.0)
    rng = random.Random(3)
    limited = exc.SegmindRateLimitError("429", retry_after=20.0)
    assert 20.0 <= policy.delay(limited, 1, rng) <= 21.0
    capped = exc.SegmindRateLimitError("429", retry_after=3600.0)
    assert policy.delay(capped, 1, rng) <= 61.0
    server = exc.SegmindServerError("500")
    delays = [policy.delay(server, n, rng) for n in range(1, 7)]
    assert delays[0] <= 1.1
    assert all(d <= 8.1 for d in delays)
    assert delays[3] >= 4.0  # grows exponentially until the cap
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


def test_retry_policy_from_connection_extras():
    policy = RetryPolicy.from_extras({"max_retries": "2", "retry_backoff": 0.5})
    assert policy.max_attempts == 3
    assert policy.backoff_initial == 0.5
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy.from_extras({"max_retries": -1})


def test_transport_errors_never_carry_query_strings():
    err = _transport(sent=False)
    assert "k=1" not in str(err)
    assert "https://api.segmind.com/v2/m" in str(err)


def test_credits_parsing_is_defensive():
    assert parse_credits(answer(200, {"credits": 12.5})) == 12.5
    assert parse_credits(answer(200, {"data": {"remaining_credits": "3"}})) == 3.0
    assert parse_credits(answer(200, 7)) == 7.0
    with pytest.raises(exc.SegmindInvalidResponseError, match="no credit balance"):
        parse_credits(answer(200, {"user": "x"}))
    with pytest.raises(exc.SegmindAuthenticationError):
        parse_credits(answer(401, {"error": "bad key"}))


def test_v1_response_keeps_useful_headers_and_rejects_html():
    ans = HttpAnswer(
        200,
        {"content-type": "image/jpeg", "x-remaining-credits": "9.5", "x-seed-value": "4", "set-cookie": "s=1"},
        b"\xff\xd8jpeg",
    )
    out = parse_run_sync(ans)
    assert out.content_type == "image/jpeg"
    assert out.remaining_credits == 9.5
    assert "set-cookie" not in out.headers
    with pytest.raises(exc.SegmindInvalidResponseError, match="HTML"):
        parse_run_sync(HttpAnswer(200, {"content-type": "text/html"}, b"<html>"))


def test_content_safety_failures_are_not_worth_a_task_retry():
    blocked = job_failed_error("r1", "Content blocked: the prompt was flagged by the safety filter")
    assert isinstance(blocked, exc.SegmindContentBlockedError)
    assert isinstance(blocked, exc.SegmindJobFailedError)
    assert blocked.task_retry_helps is False
    assert "flagged by the safety filter" in str(blocked)
    other = job_failed_error("r2", "Internal inference error")
    assert type(other) is exc.SegmindJobFailedError
    assert other.task_retry_helps is True
    assert "Internal inference error" in str(other)


def test_poll_schedule_from_dict_memo_keeps_validation() -> None:
    """Triggers rebuilt from equal dicts share one validated schedule; validation still runs per type."""
    from airflow_provider_segmind.protocol.schedule import PollSchedule

    data = PollSchedule.for_model(SD3_LARGE_MODEL).to_dict()
    first = PollSchedule.from_dict(dict(data))
    assert PollSchedule.from_dict(dict(data)) is first
    assert first == PollSchedule.for_model(SD3_LARGE_MODEL)
    assert PollSchedule.from_dict({"interval": 1}).interval == 1.0
    with pytest.raises(ValueError, match="finite number"):
        PollSchedule.from_dict({"interval": True})  # equal to 1 and hashing alike, still refused
    with pytest.raises(ValueError, match="finite number"):
        PollSchedule.from_dict({"interval": [1]})  # unhashable: not memoized, refused as before


def test_status_parsed_once_still_tells_failed_and_not_json_apart() -> None:
    from airflow_provider_segmind.exceptions import SegmindInvalidResponseError
    from airflow_provider_segmind.protocol.answer import HttpAnswer
    from airflow_provider_segmind.protocol.responses import parse_status

    failed = parse_status(HttpAnswer(422, {}, b'{"status": "FAILED", "error": "boom"}'), "r1")
    assert failed.status.value == "FAILED"
    assert failed.error == "boom"
    with pytest.raises(SegmindInvalidResponseError, match="not JSON"):
        parse_status(HttpAnswer(200, {"content-type": "text/html"}, b"<html>"), "r1")
    with pytest.raises(SegmindInvalidResponseError, match="not an object"):
        parse_status(HttpAnswer(200, {}, b"null"), "r1")


# ------------------------------------------------------------------ issue 12: answers as they really are


def test_sd3_validation_reports_every_bad_field_in_one_error():
    """Every bad field, each with its allowed values (image-to-image fields name the image-to-image slug)."""
    params = {"prompt": " ", "mode": "image-to-image", "strength": 2, "aspect_ratio": "4:3", "seed": "x"}
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        validate_params(SD3_LARGE_MODEL, params)
    err = info.value
    named = [problem[0] for problem in err.problems]
    assert sorted(named) == ["aspect_ratio", "mode", "prompt", "seed", "strength"]
    text = str(err)
    for name, allowed in [
        ("mode", "model='stable-diffusion-3-large-img2img'"),
        ("strength", "SegmindImageToImageOperator"),
        ("aspect_ratio", "'16:9'"),
        ("prompt", "non-blank string"),
        ("seed", "-1 for random"),
    ]:
        assert repr(name) in text
        assert allowed in text
    assert "5 invalid parameters" in text
    assert ".." not in text


def test_sd3_accepts_seed_minus_one_and_warns_on_unknown_fields_unless_strict():
    """seed=-1 is Segmind's 'random' (docs.segmind.com/api-reference); unknown fields warn, strict refuses."""
    warnings: list[str] = []
    out = validate_params(SD3_LARGE_MODEL, {"prompt": "a fox", "seed": -1, "style": "vivid"}, warn=warnings.append)
    assert out["seed"] == -1
    assert out["style"] == "vivid"
    assert len(warnings) == 1
    assert "'style'" in warnings[0]
    assert "strict" in warnings[0]
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        validate_params(SD3_LARGE_MODEL, {"prompt": "a fox", "style": "vivid", "mode": "x"}, strict=True)
    assert [problem[0] for problem in info.value.problems] == ["style", "mode"]
    # A known field with a bad value is refused even without strict mode.
    with pytest.raises(exc.SegmindInvalidParametersError, match="output_format"):
        validate_params(SD3_LARGE_MODEL, {"prompt": "a fox", "output_format": "webp", "style": 1}, warn=warnings.append)


@pytest.mark.parametrize(
    "model",
    ["a/../../v1/get-user-credits", "..", "./flux", "flux/.", "a/%2e%2e/v1/x", "a/.%2E/x", "a/%2e/x", "a//b"],
)
def test_model_slug_refuses_dot_segments_and_encoded_variants(model):
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        submit_url(BASE, model)
    assert info.value.field == "model"
    with pytest.raises(exc.SegmindInvalidParametersError):
        validate_params(model, {"prompt": "x"})


def test_model_slug_keeps_dots_inside_names():
    assert submit_url(BASE, "sdxl1.0-txt2img") == f"{BASE}/v2/sdxl1.0-txt2img"
    assert run_sync_url(BASE, "org/model.v2") == f"{BASE}/v1/org/model.v2"


@pytest.mark.parametrize("request_id", ["..", ".", "...", "%2e%2e", "a/b", ""])
def test_request_id_refuses_dot_only_and_encoded(request_id):
    with pytest.raises(exc.SegmindInvalidParametersError):
        status_url(BASE, request_id)
    with pytest.raises(exc.SegmindInvalidParametersError):
        result_url(BASE, request_id)


def test_request_id_with_inner_dots_is_fine():
    assert status_url(BASE, "a.b..c") == f"{BASE}/v2/requests/a.b..c/status"


def test_advertised_urls_with_dot_segments_are_not_followed():
    body = {
        "request_id": "r1",
        "status": "QUEUED",
        "status_url": "https://api.segmind.com/v2/requests/r1/../../../v1/get-user-credits",
        "response_url": "https://api.segmind.com/v2/requests/%2e%2e/x",
    }
    sub = parse_submit(answer(200, body), BASE)
    assert sub.status_url == status_url(BASE, "r1")
    assert sub.response_url == result_url(BASE, "r1")


@pytest.mark.parametrize(
    "host",
    ["http://api.segmind.com", "http://10.0.0.5:8787", "http://segmind.internal", "http://[fe80::1]:80"],
)
def test_plain_http_to_a_non_loopback_host_is_refused_unless_opted_in(host):
    with pytest.raises(ValueError, match="allow_insecure_http"):
        normalize_base_url(host)
    assert normalize_base_url(host, allow_insecure_http=True).startswith("http://")


@pytest.mark.parametrize(
    "host", ["http://127.0.0.1:8787", "http://localhost:9", "http://[::1]:8787", "http://127.3.2.1"]
)
def test_plain_http_to_loopback_stays_allowed(host):
    assert normalize_base_url(host).startswith("http://")


def test_plain_http_schema_field_to_a_remote_host_is_refused():
    with pytest.raises(ValueError, match="clear text"):
        normalize_base_url("api.segmind.com", schema="http")


def test_credits_reads_free_credits_in_the_documented_shape():
    """docs.segmind.com/api-reference, get-user-credits: {"credits": 0.0, "free-credits": 0.018...}; both spendable."""
    balance = parse_credit_balance(answer(200, {"credits": 0.0, "free-credits": 0.0184921035}))
    assert (balance.credits, balance.free_credits) == (0.0, 0.0184921035)
    assert balance.total == pytest.approx(0.0184921035)
    assert "0 paid" in balance.describe()
    assert "0.0184921 free" in balance.describe()
    assert parse_credits(answer(200, {"credits": "1.5", "free-credits": "0.5"})) == 2.0
    # Older/other shapes still load, with no free credits.
    assert parse_credit_balance(answer(200, {"credits": 3})).free_credits == 0.0
    assert parse_credit_balance(answer(200, {"free_credits": 2})).total == 2.0


def test_credits_404_no_credits_record_is_a_zero_balance_not_a_missing_model():
    balance = parse_credit_balance(answer(404, {"error": "No credits found for the user"}))
    assert balance.total == 0.0
    assert balance.note == "No credits found for the user"
    # Any other 404 there is a wrong host, and says so (not "check the model slug").
    with pytest.raises(exc.SegmindNotFoundError) as info:
        parse_credit_balance(answer(404, {"error": "Not Found"}))
    assert not isinstance(info.value, exc.SegmindModelNotFoundError)
    assert "host" in str(info.value)
    assert "slug" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "advice"),
    [
        ("Insufficient credits. Please add credits to your Segmind account to continue.", "Top up"),
        ("Invalid content type", "Content-Type"),
        ("Team spend limit exceeded.", "spend limit"),
        ("Parameter 'steps' is not allowed for this model", "refused before the run"),
    ],
)
def test_406_names_its_real_causes(text, advice):
    err = classify_error(answer(406, {"error": text}), Endpoint.SUBMIT)
    assert isinstance(err, exc.SegmindInsufficientCreditsError)
    message = str(err)
    assert advice in message
    assert text.rstrip(".") in message
    assert ".." not in message
    if "credit" not in text.lower():
        assert "Top up" not in message


def test_406_plain_text_body():
    raw = HttpAnswer(406, {"content-type": "text/plain"}, b"Invalid content type")
    assert "Content-Type" in str(classify_error(raw, Endpoint.SUBMIT))


def test_410_says_retired_and_points_at_the_catalogue():
    err = classify_error(answer(410, {"error": "The model 'old-model' has been retired."}), Endpoint.SUBMIT)
    assert isinstance(err, exc.SegmindModelRetiredError)
    assert "retired" in str(err)
    assert "https://www.segmind.com/models" in str(err)
    assert ".." not in str(err)


def test_result_images_seed_and_file_size_may_be_strings():
    body = {
        "status": "COMPLETED",
        "output": "https://images.segmind.com/g/x.jpeg",
        "seed": "123",
        "images": [
            {
                "url": "https://images.segmind.com/g/x.jpeg",
                "file_size": "2048",
                "seed": "123",
                "content_type": "image/jpeg",
            },
            {"url": "https://images.segmind.com/g/y.jpeg", "file_size": "n/a", "seed": 7},
        ],
    }
    result = parse_result(answer(200, body), "r1")
    assert result.seed == 123
    assert result.images[0]["file_size"] == 2048
    assert result.images[0]["seed"] == 123
    assert result.images[1]["file_size"] == "n/a"  # not numeric: kept as sent, not invented
    assert parse_int("42.0") == 42
    assert parse_int(" 5 ") == 5
    assert parse_int(True) is None
    # The seed may be only in images[].
    only_images = {**body, "seed": None}
    assert parse_result(answer(200, only_images), "r1").seed == 123


@pytest.mark.parametrize("status", ["PROCESSING", "QUEUED", "processing"])
def test_result_that_is_not_completed_yet_is_a_transient_error(status):
    """Was: a COMPLETED summary with output_url None. Now a typed transient error every path retries."""
    with pytest.raises(exc.SegmindResultNotReadyError) as info:
        parse_result(answer(200, {"status": status, "request_id": "r1", "metrics": {}}), "r1")
    err = info.value
    assert err.transient
    assert err.task_retry_helps
    assert RetryPolicy().is_retryable(err, idempotent=True)
    assert status.upper() in str(err)


def test_result_failed_body_is_the_job_failed_error():
    body = {"status": "FAILED", "error": "CUDA error: device-side assert", "metrics": {}}
    with pytest.raises(exc.SegmindJobFailedError):
        parse_result(answer(422, body), "r1")
    with pytest.raises(exc.SegmindJobFailedError):
        parse_result(answer(200, body), "r1")


@pytest.mark.parametrize(
    "reason",
    [
        "Prompt is Mandatory and must be string",  # docs.segmind.com, async inference: the FAILED example
        "Invalid image URL provided",
        "num_inference_steps must be between 1 and 50",
        "'image' is a required property",
        "Field required: prompt",
        "Input should be a valid integer, unable to parse string as an integer",
        "width must be a multiple of 8.",
        "Unsupported aspect ratio '4:3'",
        "Prompt is too long: 12000 characters exceeds the limit of 10000",
        "value is not a valid enumeration member; permitted: 'jpeg', 'png'",
    ],
)
def test_failed_for_invalid_input_is_not_retryable(reason):
    assert is_invalid_input(reason)
    err = job_failed_error("r1", reason)
    assert isinstance(err, exc.SegmindInvalidInputJobError)
    assert err.task_retry_helps is False
    assert reason.rstrip(".") in str(err)
    assert ".." not in str(err)


@pytest.mark.parametrize(
    "reason",
    [
        "CUDA out of memory. Tried to allocate 2.00 GiB",
        "GPU worker crashed",
        "Inference timed out after 300 s",
        "Request timeout",
        "Internal server error",
        "Model failed to load: connection reset by peer",
        "Service temporarily unavailable, please try again",
        "Out of memory: input too large for the GPU",
        None,
        "",
        "Something went wrong",
    ],
)
def test_failed_for_server_side_reasons_stays_retryable(reason):
    assert not is_invalid_input(reason)
    err = job_failed_error("r1", reason)
    assert type(err) is exc.SegmindJobFailedError
    assert err.task_retry_helps is True


def test_content_block_still_wins():
    assert isinstance(
        job_failed_error("r1", "Blocked by the safety filter: invalid content"), exc.SegmindContentBlockedError
    )


_SERVER_TEXTS = [
    "Unauthorized. API key is invalid or may have expired. Check the key in your Segmind console.",
    "Insufficient credits. Please add credits to your Segmind account to continue.",
    "Something failed.",
    "no full stop",
    None,
]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 406, 410, 418, 422, 429, 500, 502, 504])
@pytest.mark.parametrize("endpoint", list(Endpoint))
@pytest.mark.parametrize("text", _SERVER_TEXTS)
def test_no_error_message_has_a_doubled_full_stop(status, endpoint, text):
    """'console.. The API key', 'continue.. Top up': server texts ending in '.' joined with '. '."""
    body = {"error": text} if text is not None else {}
    err = classify_error(
        answer(status, body), endpoint, request_id="r1" if endpoint in (Endpoint.STATUS, Endpoint.RESULT) else None
    )
    assert ".." not in str(err), str(err)
    assert str(err).endswith(".")


@pytest.mark.parametrize("text", _SERVER_TEXTS)
def test_no_job_or_transport_message_has_a_doubled_full_stop(text):
    for err in (
        job_failed_error("r1", text),
        job_failed_error("r1", f"{text or ''} NSFW content blocked."),
        job_failed_error("r1", f"{text or ''} prompt is required."),
        transport_error("Read timeout", request_sent=True, url=BASE + "/v2/x", detail=text or "x."),
        transport_error("Could not connect", request_sent=False, url=BASE + "/v2/x", detail=text or "x."),
    ):
        assert ".." not in str(err), str(err)
    with pytest.raises(exc.SegmindInvalidParametersError) as info:
        validate_params(SD3_LARGE_MODEL, {"prompt": text or " "} if text is None else {"prompt": 1})
    assert ".." not in str(info.value)


def test_401_does_not_say_the_same_thing_twice():
    said = classify_error(
        answer(401, {"error": "Unauthorized. API key is invalid or may have expired."}), Endpoint.CREDITS
    )
    assert str(said).count("expired") == 1
    assert "password (API Key) field" in str(said)
    silent = classify_error(answer(401, {}), Endpoint.CREDITS)
    assert "missing, wrong or expired" in str(silent)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_with_the_history_a_5xx_submit_is_not_trusted_as_a_refusal(status):
    """Issue 13: a 500/502/503 may come after the job was queued (a late 5xx). With the request
    history on (``trust_5xx=False``) it is an unknown outcome, searched for, never resent blindly;
    429s and connections that never opened stay certain refusals."""
    late = exc.SegmindServerError(str(status), status_code=status)
    assert submit_outcome_unknown(late, trust_5xx=False)
    assert not RetryPolicy().is_retryable(late, idempotent=False, trust_5xx=False)
    assert RetryPolicy().is_retryable(late, idempotent=True, trust_5xx=False)  # reads are still retried
    for refused in (exc.SegmindRateLimitError("429"), _transport(sent=False)):
        assert not submit_outcome_unknown(refused, trust_5xx=False)
        assert RetryPolicy().is_retryable(refused, idempotent=False, trust_5xx=False)


def test_models_known_to_take_a_seed():
    assert model_takes_seed(SD3_LARGE_MODEL)
    assert model_takes_seed(" Stable-Diffusion-3-medium-txt2img ")
    assert not model_takes_seed("flux-schnell")


# ------------------------------------------------------------------ issue 23 item 4: what 422 and 500 mean


@pytest.mark.parametrize(
    ("reason", "cls", "retry_helps", "advice"),
    [
        ("Prompt is Mandatory and must be string", exc.SegmindInvalidParametersError, False, "fix the task's"),
        ("Invalid input image: could not decode", exc.SegmindInvalidParametersError, False, "fix the task's"),
        ("Blocked by the safety filter (NSFW)", exc.SegmindContentBlockedError, False, "blocked again"),
        ("CUDA out of memory", exc.SegmindJobFailedError, True, "submits the request again"),
        ("Internal inference error", exc.SegmindJobFailedError, True, "submits the request again"),
    ],
)
def test_a_422_to_a_submit_is_a_run_that_failed_classified_by_its_reason(reason, cls, retry_helps, advice):
    """Segmind's error docs: 422 is "v2 only -- the inference itself ran and failed. NOT a malformed request
    body"; the reason decides as for a FAILED job, never "rejected the parameters" for all of them."""
    body = {"status": "FAILED", "error": reason, "metrics": {"inference_time": 0.1}}
    err = classify_error(answer(422, body), Endpoint.SUBMIT)
    assert type(err) is cls
    assert err.task_retry_helps is retry_helps
    assert err.transient is False  # never resent by the hook: a retry is the task's decision
    assert not submit_certainly_refused(err)
    assert not submit_outcome_unknown(err)  # an answered failure: known, nothing queued or charged
    text = str(err)
    assert "ran and FAILED (HTTP 422)" in text
    assert reason in text
    assert advice in text
    assert "Nothing was charged" in text
    assert "rejected the parameters" not in text


def test_a_400_is_the_malformed_body_and_a_500_to_a_submit_reads_as_a_parameter_problem_first():
    bad = classify_error(answer(400, {"error": "missing field 'prompt'"}), Endpoint.SUBMIT)
    assert isinstance(bad, exc.SegmindInvalidParametersError)
    assert "rejected the parameters (HTTP 400)" in str(bad)
    five = classify_error(answer(500, {"error": "Internal Server Error"}), Endpoint.SUBMIT)
    assert isinstance(five, exc.SegmindServerError)
    assert "Nothing was charged" in str(five)
    assert "parameter problem" in str(five)
    assert "check them against the model's page" in str(five)
    # Still resendable (not billed) when the history is not searched, and reconciled when it is.
    assert submit_certainly_refused(five)
    assert RetryPolicy().is_retryable(five, idempotent=False)
    assert not submit_certainly_refused(five, trust_5xx=False)
    # A 500 while polling is not about the parameters (a v2 job that ran and failed is FAILED).
    polled = classify_error(answer(500, {"error": "oops"}), Endpoint.STATUS)
    assert "parameter problem" not in str(polled)
    assert "usually temporary" in str(polled)
    # 502/503/504 to a submit keep their own advice.
    assert "parameter problem" not in str(classify_error(answer(502, {}), Endpoint.SUBMIT))
    assert "may have been queued" in str(classify_error(answer(504, {}), Endpoint.SUBMIT))


def test_a_media_editing_body_refused_at_run_time_fails_without_task_retries():
    """ "On the media-editing endpoints, submitting ALWAYS returns 200 ... a malformed request surfaces as
    status FAILED": the FAILED reason is what tells a refused input from a server fault."""
    for reason in ("image_url is required", "target_format must be one of png, jpg", "Invalid input image"):
        err = job_failed_error("r1", reason)
        assert isinstance(err, exc.SegmindInvalidInputJobError), reason
        assert err.task_retry_helps is False
        assert "would fail again" in str(err)
        assert "billed" not in str(err)  # a FAILED job is not charged
    other = job_failed_error("r1", "worker crashed")
    assert type(other) is exc.SegmindJobFailedError
    assert other.task_retry_helps is True
    assert "was not charged" in str(other)
