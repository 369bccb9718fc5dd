"""Issue 17 part 3: ``image`` as ``s3://bucket/key``, checked before billing, sent as a presigned URL or base64.

Real servers only: moto's S3 server and the Segmind emulator, both on loopback. The emulator's
image-to-image fetches the presigned URL from moto (or decodes the base64) and paints its output
over the input's pixels, so "the input was used" is checked on the output image itself.
"""

from __future__ import annotations

import base64
import json
from io import BytesIO
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.operators._records import STATE_STORE_KEY
from airflow_provider_segmind.operators.segmind import SegmindImageToImageOperator, SegmindRunOperator
from airflow_provider_segmind.protocol.image_input import IMAGE_ALLOWED, MAX_INPUT_IMAGE_BYTES
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_IMG2IMG_MODEL
from tests.support.jobs import (
    FAST_SCHEDULE,
    DictTaskStateStore,
    DyingStore,
    finish_deferred,
    make_context,
    use_emulator,
)
from tests.support.media import MediaHost, photo
from tests.support.s3 import S3Env
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

RED, BLUE = (200, 30, 30), (30, 40, 210)
#: Fast history lookups for the exactly-once tests (the default history_wait is 120 s).
FAST_EXTRA: dict[str, Any] = {"read_timeout": 0.5, "retry_backoff": 0.01}


def i2i(image: Any, **kwargs: Any) -> SegmindImageToImageOperator:
    kwargs.setdefault("prompt", "the same product on a marble counter")
    kwargs.setdefault("strength", 0.3)
    kwargs.setdefault("poll_schedule", FAST_SCHEDULE)
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("history_wait", 2.0)
    return SegmindImageToImageOperator(task_id="variant", image=image, **kwargs)


def put(s3: S3Env, key: str, body: bytes, content_type: str | None = "image/png") -> str:
    extra = {"ContentType": content_type} if content_type else {}
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body, **extra)
    return f"s3://{s3.bucket}/{key}"


def top_strip_colour(url: str) -> tuple[float, float, float]:
    """The mean colour of the output's top 6 % (above the prompt panel): the input shows through there."""
    from PIL import Image, ImageStat

    with Image.open(BytesIO(requests.get(url, timeout=10).content)) as image:
        rgb = image.convert("RGB")
        strip = rgb.crop((0, 0, rgb.width, max(1, rgb.height * 6 // 100)))
        red, green, blue = ImageStat.Stat(strip).mean
    return red, green, blue


# ------------------------------------------------------------------ both transports, the input is used


@pytest.mark.parametrize("transport", ["presigned", "base64"])
def test_an_s3_photo_is_sent_and_the_output_is_made_from_it(emu: SegmindEmulator, s3: S3Env, transport: str) -> None:
    red_uri = put(s3, "photos/red.png", photo(RED))
    blue_uri = put(s3, "photos/blue.jpg", photo(BLUE, "JPEG"), "image/jpeg")

    red = i2i(red_uri, image_transport=transport).execute(make_context())
    blue = i2i(blue_uri, image_transport=transport).execute(make_context())

    assert red["status"] == blue["status"] == "COMPLETED"
    assert red["params"]["image"] == red_uri  # the summary (XCom) names the object, not its bytes or URL
    sent = emu.job(red["request_id"])["params"]["image"]
    if transport == "presigned":
        assert sent.startswith(f"{s3.endpoint}/{s3.bucket}/photos/red.png?")
        assert "X-Amz-Signature=" in sent
        assert "X-Amz-Expires=900" in sent
    else:
        assert base64.b64decode(sent) == photo(RED)
    r, _, b = top_strip_colour(red["output_url"])
    assert r > b + 60, (r, b)  # the red photo shows through its variant
    r, _, b = top_strip_colour(blue["output_url"])
    assert b > r + 60, (r, b)
    assert emu.stats()["submissions"] == 2


def test_auto_sends_base64_for_a_custom_endpoint(emu: SegmindEmulator, s3: S3Env) -> None:
    """moto is a custom endpoint (``endpoint_url`` in the connection), which Segmind could not reach: base64."""
    uri = put(s3, "photos/p.webp", photo(RED, "WEBP"), "image/webp")
    summary = i2i(uri).execute(make_context())
    assert base64.b64decode(emu.job(summary["request_id"])["params"]["image"]) == photo(RED, "WEBP")


def test_an_object_without_a_content_type_is_judged_by_its_bytes(emu: SegmindEmulator, s3: S3Env) -> None:
    uri = put(s3, "photos/untyped", photo(BLUE), "binary/octet-stream")
    summary = i2i(uri, image_transport="presigned").execute(make_context())
    assert summary["status"] == "COMPLETED"


def test_a_uri_with_surrounding_whitespace_is_still_resolved_never_sent_as_is(emu: SegmindEmulator, s3: S3Env) -> None:
    uri = put(s3, "photos/red.png", photo(RED))
    summary = i2i(f"  {uri}\n", image_transport="base64").execute(make_context())
    assert base64.b64decode(emu.job(summary["request_id"])["params"]["image"]) == photo(RED)


# ------------------------------------------------------------------ bad inputs: named, nothing billed


def _bad_inputs(s3: S3Env) -> dict[str, tuple[Any, str]]:
    """Each bad input, with a phrase its error must contain."""
    put(s3, "photos/notes.txt", b"not an image at all", "text/plain")
    put(s3, "photos/fake.png", b"this is text pretending to be a PNG", "image/png")
    put(s3, "photos/anim.gif", photo(RED, "GIF"), "binary/octet-stream")
    put(s3, "photos/lying.png", photo(RED, "JPEG"), "image/png")
    put(s3, "photos/empty.png", b"", "image/png")
    big = photo(RED) + b"\0" * (MAX_INPUT_IMAGE_BYTES + 1 - len(photo(RED)))
    put(s3, "photos/huge.png", big, "image/png")
    b = s3.bucket
    return {
        "no-key": (f"s3://{b}", "no object key"),
        "prefix": (f"s3://{b}/photos/", "that is a prefix"),
        "bad-bucket": ("s3://Not_A_Bucket/x.png", "is not an S3 bucket name"),
        "missing": (f"s3://{b}/photos/nope.png", "does not exist"),
        "missing-bucket": ("s3://no-such-bucket-here/x.png", "does not exist"),
        "wrong-content-type": (f"s3://{b}/photos/notes.txt", "Content-Type 'text/plain'"),
        "not-an-image": (f"s3://{b}/photos/fake.png", "is not an image"),
        "gif": (f"s3://{b}/photos/anim.gif", "is a image/gif file"),
        "type-mismatch": (f"s3://{b}/photos/lying.png", "its bytes are image/jpeg"),
        "empty": (f"s3://{b}/photos/empty.png", "is empty"),
        "oversized": (f"s3://{b}/photos/huge.png", "over the limit of 10,485,760"),
        "unmapped-list": ([f"s3://{b}/photos/a.png", f"s3://{b}/photos/b.png"], "got a list of 2 values"),
    }


def test_every_bad_input_is_refused_naming_the_field_before_anything_is_billed(emu: SegmindEmulator, s3: S3Env) -> None:
    for case, (image, phrase) in _bad_inputs(s3).items():
        for transport in ("presigned", "base64"):
            with pytest.raises(AirflowFailException) as info:
                i2i(image, image_transport=transport, deferrable=True).execute(make_context(DictTaskStateStore()))
            text = str(info.value)
            assert "Invalid parameter 'image'" in text, (case, text)
            assert phrase in text, (case, text)
            assert IMAGE_ALLOWED in text, (case, text)
            cause = info.value.__cause__
            assert isinstance(cause, SegmindInvalidParametersError)
            assert cause.field == "image"
    stats = emu.stats()
    assert stats["submit_attempts"] == 0
    assert stats["credits_billed"] == 0


def test_bad_transport_or_expiry_fails_at_parse_time() -> None:
    with pytest.raises(ValueError, match=r"'image_transport'.*Allowed: auto, presigned, base64"):
        i2i("s3://b/k.png", image_transport="inline")
    with pytest.raises(ValueError, match=r"'presigned_url_expiry'.*60 to 3600"):
        i2i("s3://b/k.png", presigned_url_expiry=86_400)


# ------------------------------------------------------------------ the emulator refuses unusable input


def _submit_raw(emu: SegmindEmulator, image: Any) -> requests.Response:
    body = {"prompt": "x", "mode": "image-to-image", "image": image, "strength": 0.5}
    return requests.post(
        f"{emu.base_url}/v2/{SD3_LARGE_IMG2IMG_MODEL}", json=body, headers={"x-api-key": emu.api_key}, timeout=15
    )


def test_the_emulator_refuses_an_unusable_input_with_a_400_unbilled(
    emu: SegmindEmulator, media_host: MediaHost
) -> None:
    cases = {
        "not base64 at all!": "neither an http(s) URL nor valid base64",
        base64.b64encode(b"plain text, no image").decode(): "not a readable JPEG, PNG or WebP image",
        base64.b64encode(photo(RED, "GIF")).decode(): "it is a GIF image",
        "https://images.example.com/photo.png": "loopback hosts only",
        media_host.url.replace("/photo.png", "") + ":1/x.png": "could not be fetched",
        "ftp://127.0.0.1/photo.png": "unsupported URL scheme 'ftp'",
    }
    media_host.content_type = "text/plain"
    for image, phrase in cases.items():
        answer = _submit_raw(emu, image)
        assert answer.status_code == 400, (image, answer.text)
        error = answer.json()["error"]
        assert error.startswith("Invalid input image in 'image':"), error
        assert phrase in error, (image, error)
    assert emu.stats()["submissions"] == 0
    assert emu.stats()["credits_billed"] == 0


def test_the_emulator_fetches_a_url_input_without_the_api_key(emu: SegmindEmulator, media_host: MediaHost) -> None:
    answer = _submit_raw(emu, media_host.url)
    assert answer.status_code == 200, answer.text
    assert len(media_host.requests) == 1
    headers = media_host.requests[0]
    assert "x-api-key" not in headers
    assert "authorization" not in headers
    assert emu.api_key not in json.dumps(headers)


def test_a_data_url_input_is_decoded(emu: SegmindEmulator) -> None:
    answer = _submit_raw(emu, "data:image/png;base64," + base64.b64encode(photo(RED)).decode())
    assert answer.status_code == 200, answer.text


# ------------------------------------------------------------------ no bytes in XCom, trigger kwargs, records


@pytest.mark.parametrize("transport", ["presigned", "base64"])
def test_bytes_and_signed_urls_stay_out_of_xcom_trigger_kwargs_and_the_record(
    emu: SegmindEmulator, s3: S3Env, transport: str, caplog: Any
) -> None:
    uri = put(s3, "photos/red.png", photo(RED, size=(256, 256)))
    encoded = base64.b64encode(photo(RED, size=(256, 256))).decode()
    store = DictTaskStateStore()
    context = make_context(store)
    with pytest.raises(TaskDeferred) as info:
        i2i(uri, image_transport=transport, deferrable=True, end_from_trigger=True).execute(context)
    deferred = info.value
    sent = emu.job(deferred.trigger.request_id)["params"]["image"]
    summary = finish_deferred(i2i(uri, image_transport=transport, deferrable=True), context, deferred)
    haystack = (
        json.dumps(deferred.trigger.serialize(), default=str)
        + json.dumps(deferred.kwargs or {}, default=str)
        + json.dumps(context["ti"].xcom)
        + json.dumps(summary)
        + json.dumps(store.values)
        # Our logs; moto's own access log (werkzeug) shows the URL it was fetched with, by design.
        + "\n".join(record.getMessage() for record in caplog.records if record.name != "werkzeug")
    )
    assert (sent == encoded) is (transport == "base64")
    assert encoded[:60] not in haystack
    assert sent[:120] not in haystack  # neither the base64 nor the presigned URL
    assert "X-Amz-Signature" not in haystack
    assert uri in json.dumps(deferred.trigger.serialize(), default=str)  # the summary params name the object
    assert summary["params"]["image"] == uri


# ------------------------------------------------------------------ exactly-once across tries


def request_of_try(op: SegmindImageToImageOperator, context: dict[str, Any]) -> str:
    """The request a try deferred on, or finished with (a COMPLETED earlier request is reused without deferring)."""
    try:
        summary = op.execute(context)
    except TaskDeferred as deferred:
        return str(deferred.trigger.request_id)
    return str(summary["request_id"])


def test_a_retry_after_a_lost_submit_finds_it_although_the_presigned_url_changed(
    emu: SegmindEmulator, s3: S3Env, monkeypatch: Any
) -> None:
    """Try 1's submit is accepted, its worker dies before recording the id; try 2 signs a new URL for
    the same photo (another expiry here, as another time would) and still finds try 1's request in
    the request history: one paid job."""
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    uri = put(s3, "photos/red.png", photo(RED))
    store = DyingStore()
    with pytest.raises(SystemExit):
        i2i(uri, image_transport="presigned", deferrable=True).execute(make_context(store, try_number=1, max_tries=1))
    assert store.get(STATE_STORE_KEY)["phase"] == "submitting"
    (first,) = emu.jobs()
    retry = i2i(uri, image_transport="presigned", presigned_url_expiry=600, deferrable=True)
    assert request_of_try(retry, make_context(store, try_number=2, max_tries=1)) == first["request_id"]
    assert emu.stats()["submissions"] == 1
    second_url = next(iter(retry._image_inputs._wire.values()))
    assert second_url != first["params"]["image"]  # a different string, the same object
    assert "X-Amz-Expires=600" in second_url


@pytest.mark.parametrize("transport", ["presigned", "base64"])
def test_a_retry_reattaches_to_the_recorded_request_and_a_changed_photo_submits_anew(
    emu: SegmindEmulator, s3: S3Env, transport: str
) -> None:
    uri = put(s3, "photos/red.png", photo(RED))
    store = DictTaskStateStore()

    def attempt(try_number: int) -> str:
        op = i2i(uri, image_transport=transport, deferrable=True)
        return request_of_try(op, make_context(store, try_number=try_number, max_tries=3))

    first = attempt(1)
    assert attempt(2) == first  # same photo: the recorded request is reused, whatever URL a new signing gives
    assert emu.stats()["submissions"] == 1
    put(s3, "photos/red.png", photo(BLUE))  # the photo was replaced: a new input, a new job
    assert attempt(3) != first
    assert emu.stats()["submissions"] == 2


# ------------------------------------------------------------------ other operators and bodies


def test_the_run_operator_resolves_an_s3_image_too(emu: SegmindEmulator, s3: S3Env) -> None:
    uri = put(s3, "photos/red.png", photo(RED))
    op = SegmindRunOperator(
        task_id="run",
        model=SD3_LARGE_IMG2IMG_MODEL,
        inputs={"prompt": "x", "mode": "image-to-image", "image": uri, "strength": 0.2},
        image_transport="base64",
        poll_schedule=FAST_SCHEDULE,
        deferrable=False,
    )
    summary = op.execute(make_context())
    assert base64.b64decode(emu.job(summary["request_id"])["params"]["image"]) == photo(RED)
    r, _, b = top_strip_colour(summary["output_url"])
    assert r > b + 60


def test_a_plain_url_or_base64_image_is_sent_unchanged(emu: SegmindEmulator, media_host: MediaHost) -> None:
    encoded = base64.b64encode(photo(BLUE)).decode()
    by_url = i2i(media_host.url).execute(make_context())
    inline = i2i(encoded).execute(make_context())
    assert emu.job(by_url["request_id"])["params"]["image"] == media_host.url
    assert emu.job(inline["request_id"])["params"]["image"] == encoded
    r, _, b = top_strip_colour(by_url["output_url"])
    assert r > b + 60  # the media host serves a red photo
