"""Issue 23 item 1: SD3 Large image-to-image has its own slug, ``stable-diffusion-3-large-img2img``.

segmind.com/models/stable-diffusion-3-large-img2img/api sends ``mode: "image-to-image"``, ``image`` and
``strength`` to that slug; the text-to-image slug's page documents no input image, so an image sent
there may be ignored and billed as a text-to-image. The operators send image-to-image to its slug,
refuse an image on the text-to-image slug, and name every bad field before anything is billed; the
emulator serves the image-to-image slug and requires its ``image``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import requests
from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.operators.segmind import (
    SegmindImageToImageOperator,
    SegmindRunOperator,
    SegmindTextToImageOperator,
)
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_IMG2IMG_MODEL, SD3_LARGE_MODEL
from tests.support.jobs import FAST_SCHEDULE, make_context
from tests.support.media import MediaHost
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

FAST: dict[str, Any] = {"poll_schedule": FAST_SCHEDULE, "deferrable": False}


def test_the_image_to_image_operator_sends_to_the_img2img_slug(emu: SegmindEmulator, media_host: MediaHost) -> None:
    op = SegmindImageToImageOperator(
        task_id="i2i", prompt="a mug on marble", image=media_host.url, strength=0.4, **FAST
    )
    summary = op.execute(make_context())
    assert summary["status"] == "COMPLETED"
    assert summary["model"] == SD3_LARGE_IMG2IMG_MODEL
    job = emu.job(summary["request_id"])
    assert job is not None
    assert job["model"] == SD3_LARGE_IMG2IMG_MODEL
    assert {k: job["params"][k] for k in ("mode", "image", "strength", "output_format")} == {
        "mode": "image-to-image",
        "image": media_host.url,
        "strength": 0.4,
        "output_format": "jpeg",
    }
    assert "aspect_ratio" not in job["params"]
    assert len(media_host.requests) == 1  # the emulator read the input image


def test_every_bad_field_is_named_before_anything_is_billed(emu: SegmindEmulator) -> None:
    op = SegmindImageToImageOperator(
        task_id="i2i", prompt=" ", image="", strength=1.7, output_format="webp", seed="x", **FAST
    )
    with pytest.raises(AirflowFailException) as info:
        op.execute(make_context())
    text = str(info.value)
    assert "5 invalid parameters for stable-diffusion-3-large-img2img" in text
    for field, allowed in [
        ("prompt", "non-blank string"),
        ("image", "an image URL or base64 string"),
        ("strength", "a number from 0 to 1"),
        ("output_format", "'jpeg', 'png'"),
        ("seed", "-1 for random"),
    ]:
        assert f"{field!r}" in text
        assert allowed in text
    assert emu.stats()["submit_attempts"] == 0


def test_the_run_operator_refuses_an_image_on_the_txt2img_slug_unbilled(emu: SegmindEmulator) -> None:
    op = SegmindRunOperator(
        task_id="run",
        model=SD3_LARGE_MODEL,
        inputs={"prompt": "x", "mode": "image-to-image", "image": "https://x/y.png", "strength": 0.5},
        **FAST,
    )
    with pytest.raises(AirflowFailException) as info:
        op.execute(make_context())
    text = str(info.value)
    assert "3 invalid parameters for stable-diffusion-3-large-txt2img" in text
    assert "model='stable-diffusion-3-large-img2img'" in text
    assert "bill a text-to-image generation" in text
    assert emu.stats()["submit_attempts"] == 0


def test_the_deprecated_text_to_image_mode_is_routed_to_the_img2img_slug(
    emu: SegmindEmulator, media_host: MediaHost
) -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match="SegmindImageToImageOperator"):
        op = SegmindTextToImageOperator(
            task_id="t2i", prompt="a mug", mode="image-to-image", image=media_host.url, strength=0.5, **FAST
        )
    summary = op.execute(make_context())
    job = emu.job(summary["request_id"])
    assert job is not None
    assert job["model"] == summary["model"] == SD3_LARGE_IMG2IMG_MODEL
    assert "aspect_ratio" not in job["params"]  # the operator's default 1:1 is not sent to the img2img slug
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SegmindTextToImageOperator(task_id="plain", prompt="a mug", **FAST)  # text-to-image: no warning


def test_a_templated_image_to_image_mode_is_routed_at_run_time(emu: SegmindEmulator, media_host: MediaHost) -> None:
    op = SegmindTextToImageOperator(
        task_id="t2i", prompt="a mug", mode="{{ params.mode }}", image=media_host.url, strength=0.5, **FAST
    )
    op.mode = "image-to-image"  # what rendering "{{ params.mode }}" gives
    summary = op.execute(make_context())
    assert emu.job(summary["request_id"])["model"] == SD3_LARGE_IMG2IMG_MODEL  # type: ignore[index]


def _post(emu: SegmindEmulator, slug: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{emu.base_url}/v2/{slug}", json=body, headers={"x-api-key": emu.api_key}, timeout=15)


def test_the_emulator_requires_the_img2img_image(emulator_factory: Any) -> None:
    """On v2 an invalid body is accepted and FAILs (as on Segmind); with v2_validation=submit it is a 400."""
    emu = emulator_factory(queue_time=0.0, inference_time=0.01)
    answer = _post(emu, SD3_LARGE_IMG2IMG_MODEL, {"prompt": "x", "strength": 0.5})
    assert answer.status_code == 200, answer.text
    job = emu.job(answer.json()["request_id"])
    assert job is not None
    assert "'image'" in (job["error"] or "")
    strict = emulator_factory(v2_validation="submit")
    refused = _post(strict, SD3_LARGE_IMG2IMG_MODEL, {"prompt": "x", "mode": "text-to-image", "image": "aGk="})
    assert refused.status_code == 400
    assert "'mode'" in refused.json()["error"]
    assert strict.stats()["submissions"] == 0


def test_the_emulator_ignores_an_image_sent_to_the_txt2img_slug(emulator_factory: Any, media_host: MediaHost) -> None:
    """What the issue fears Segmind does: the image is not read, the job is a billed text-to-image."""
    emu = emulator_factory(queue_time=0.0, inference_time=0.01, strict_models=True)
    body = {"prompt": "x", "mode": "image-to-image", "image": media_host.url, "strength": 0.5}
    answer = _post(emu, SD3_LARGE_MODEL, body)
    assert answer.status_code == 200, answer.text
    job = emu.job(answer.json()["request_id"])
    assert job is not None
    assert job["error"] is None
    assert job["params"]["image"] == media_host.url  # kept as received
    assert media_host.requests == []  # never fetched
    assert emu.stats()["credits_billed"] > 0
    assert _post(emu, SD3_LARGE_IMG2IMG_MODEL, {**body, "image": media_host.url}).status_code == 200
    assert _post(emu, "flux-schnell", {"prompt": "x"}).status_code == 404  # strict_models: the two SD3 slugs only
