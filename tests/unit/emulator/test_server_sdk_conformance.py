"""The official SDK (``segmind==1.3.0``) works against the emulator unchanged.

The SDK is Segmind's own reading of its protocol: it follows the absolute ``status_url`` and
``response_url`` from a submit, treats a FAILED body under 422 as a terminal state, and reads
``error`` from error bodies. If it works here, the emulator's shapes are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from segmind import InferenceFailed, SegmindClient, SegmindError

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL

PROMPT = "A panda in a vintage cosmonaut suit holding a sign that reads 'I love flying to the moon!'"


def sdk(emulator: SegmindEmulator, api_key: str | None = None) -> SegmindClient:
    return SegmindClient(api_key=api_key or emulator.api_key, base_url=f"{emulator.base_url}/v1")


@pytest.fixture
def quick(emulator_factory: Callable[..., SegmindEmulator]) -> SegmindEmulator:
    """Jobs finish at once, so ``run()`` (which polls at a fixed 1 s) returns on its first poll."""
    return emulator_factory(queue_time=0.0, inference_time=0.0)


def test_run_completes_with_an_output_url(quick: SegmindEmulator) -> None:
    result = sdk(quick).run(
        SD3_LARGE_MODEL,
        prompt=PROMPT,
        mode="text-to-image",
        aspect_ratio="1:1",
        output_format="jpeg",
        base64=False,
        negative_prompt="ugly, blurry",
    )

    assert result["status"] == "COMPLETED"
    assert result["output"].startswith(f"{quick.base_url}/media/")
    assert "inference_time" in result["metrics"]
    media = requests.get(result["output"], timeout=30)
    assert media.status_code == 200
    assert media.headers["Content-Type"] == "image/jpeg"


def test_submit_async_wait_completes(emulator: SegmindEmulator) -> None:
    job = sdk(emulator).submit_async(SD3_LARGE_MODEL, prompt=PROMPT, aspect_ratio="16:9")

    result = job.wait(timeout=30, interval=0.05)

    assert result["status"] == "COMPLETED"
    assert result["request_id"] == job.request_id
    assert job.status()["status"] == "COMPLETED"


def test_run_sync_returns_image_bytes(quick: SegmindEmulator) -> None:
    response = sdk(quick).run_sync(SD3_LARGE_MODEL, prompt=PROMPT, output_format="png")

    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG")
    assert float(response.headers["x-remaining-credits"]) == pytest.approx(99.96)


def test_failed_job_raises_inference_failed_with_the_server_text(emulator: SegmindEmulator) -> None:
    job = sdk(emulator).submit_async(SD3_LARGE_MODEL, prompt="__fail__ " + PROMPT)

    with pytest.raises(InferenceFailed) as failed:
        job.wait(timeout=30, interval=0.05)

    assert failed.value.detail == "Internal inference error (emulated)"
    assert failed.value.status_body["status"] == "FAILED"


def test_bad_key_is_a_401_segmind_error(emulator: SegmindEmulator) -> None:
    with pytest.raises(SegmindError) as error:
        sdk(emulator, api_key="SG_badbadbadbadbad0").submit_async(SD3_LARGE_MODEL, prompt=PROMPT)
    assert error.value.status == 401
    assert error.value.detail is not None
    assert error.value.detail.startswith("Unauthorized")


def test_no_credits_is_a_406_segmind_error(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(credits=0.0)
    with pytest.raises(SegmindError) as error:
        sdk(emulator).submit_async(SD3_LARGE_MODEL, prompt=PROMPT)
    assert error.value.status == 406


def test_rate_limited_is_a_429_segmind_error(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emulator = emulator_factory(rate_limit=1)
    client = sdk(emulator)
    client.submit_async(SD3_LARGE_MODEL, prompt=PROMPT)

    with pytest.raises(SegmindError) as error:
        client.submit_async(SD3_LARGE_MODEL, prompt=PROMPT)

    assert error.value.status == 429
    assert error.value.detail is not None
    assert error.value.detail.startswith("Rate limit exceeded")
