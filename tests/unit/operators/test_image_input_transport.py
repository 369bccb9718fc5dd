"""Issue 24 item 6: ``image_transport="auto"`` decides from the client's real endpoint, however it was set.

Before, ``auto`` read only the connection's ``endpoint_url``: an endpoint set through
``service_config.s3.endpoint_url``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` was taken for AWS,
and a presigned URL carrying a private host name was sent to Segmind. Now the client's
``meta.endpoint_url`` is compared with AWS's own endpoints for its region.

End to end against moto's S3 server (a private endpoint, set each way) and the emulator: ``auto``
must send base64. The AWS cases build the client only (no network: nothing is fetched from AWS).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.operators._image_input import S3ImageInputs
from airflow_provider_segmind.protocol.image_input import is_aws_s3_endpoint
from tests.support.jobs import make_context
from tests.support.media import photo
from tests.support.s3 import DUMMY_CREDENTIALS, REGION, S3Env
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)
from tests.unit.operators.test_image_input import i2i, put

RED = (200, 30, 30)
_ENV_ENDPOINTS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


def _aws_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "aws_default", **extra: Any) -> None:
    conn = {
        "conn_type": "aws",
        "login": DUMMY_CREDENTIALS["aws_access_key_id"],
        "password": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "extra": {"region_name": REGION, **extra},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.fixture(autouse=True)
def _no_endpoint_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_ENV_ENDPOINTS, "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")  # no endpoint from a shared config file


@pytest.mark.parametrize("how", ["service_config", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "endpoint_url"])
def test_a_private_endpoint_set_any_way_gets_base64(
    emu: SegmindEmulator, s3: S3Env, monkeypatch: pytest.MonkeyPatch, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    uri = put(s3, "photos/red.png", photo(RED))  # written directly to moto by the fixture's client
    if how == "endpoint_url":
        _aws_conn(monkeypatch, endpoint_url=s3.endpoint)
    elif how == "service_config":
        _aws_conn(monkeypatch, service_config={"s3": {"endpoint_url": s3.endpoint}})
    else:
        _aws_conn(monkeypatch)
        monkeypatch.setenv(how, s3.endpoint)
    caplog.set_level(logging.INFO)

    summary = i2i(uri).execute(make_context())  # image_transport="auto" (the default)

    sent = emu.job(summary["request_id"])["params"]["image"]
    assert base64.b64decode(sent) == photo(RED)  # read from moto through that endpoint, sent inline
    assert "127.0.0.1" not in sent
    assert emu.stats()["submissions"] == 1


def _transport(monkeypatch: pytest.MonkeyPatch, conn_id: str = "aws_test", **extra: Any) -> tuple[str, str]:
    """What ``auto`` picks for a connection, and the client's endpoint: builds the client, calls nothing."""
    _aws_conn(monkeypatch, conn_id, **extra)
    inputs = S3ImageInputs(conn_id, "auto", 900, logging.getLogger("test"))
    return inputs._chosen_transport(), str(inputs.client.meta.endpoint_url)


def test_aws_s3_itself_gets_presigned_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _transport(monkeypatch) == ("presigned", "https://s3.amazonaws.com")  # us-east-1: the global endpoint
    assert _transport(monkeypatch, region_name="eu-west-1") == ("presigned", "https://s3.eu-west-1.amazonaws.com")
    # An AWS endpoint named explicitly is still AWS.
    explicit = "https://s3.eu-west-1.amazonaws.com"
    assert _transport(monkeypatch, region_name="eu-west-1", endpoint_url=explicit)[0] == "presigned"
    assert _transport(monkeypatch, region_name="eu-west-1", service_config={"s3": {"endpoint_url": explicit}})[0] == (
        "presigned"
    )


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://minio.internal.example:9000",
        "https://bucket.vpce-0a1b2c3d-4e5f6a7b.s3.eu-west-1.vpce.amazonaws.com",  # a VPC interface endpoint
        "https://s3.eu-west-1.amazonaws.com.evil.example",
        "http://s3.eu-west-1.amazonaws.com",  # not https
        "https://s3.us-west-2.amazonaws.com",  # AWS, but not this connection's region
    ],
)
@pytest.mark.parametrize("how", ["endpoint_url", "service_config", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_anything_else_gets_base64_however_it_is_set(monkeypatch: pytest.MonkeyPatch, endpoint: str, how: str) -> None:
    if how == "endpoint_url":
        extra: dict[str, Any] = {"region_name": "eu-west-1", "endpoint_url": endpoint}
    elif how == "service_config":
        extra = {"region_name": "eu-west-1", "service_config": {"s3": {"endpoint_url": endpoint}}}
    else:
        extra = {"region_name": "eu-west-1"}
        monkeypatch.setenv(how, endpoint)
    chosen, real = _transport(monkeypatch, **extra)
    assert real.rstrip("/") == endpoint  # the client really calls it
    assert chosen == "base64"


@pytest.mark.parametrize(
    ("endpoint", "region", "aws"),
    [
        ("https://s3.amazonaws.com", "us-east-1", True),
        ("https://s3.amazonaws.com", None, True),
        ("https://s3.amazonaws.com", "eu-west-1", False),  # the global endpoint serves us-east-1
        ("https://s3.eu-west-1.amazonaws.com", "eu-west-1", True),
        ("https://s3-eu-west-1.amazonaws.com", "eu-west-1", True),  # legacy dash form
        ("https://s3.dualstack.eu-west-1.amazonaws.com", "eu-west-1", True),
        ("https://s3-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1", True),
        ("https://s3.cn-north-1.amazonaws.com.cn", "cn-north-1", True),
        ("https://S3.EU-WEST-1.AMAZONAWS.COM.", "eu-west-1", True),
        ("https://s3.eu-west-1.amazonaws.com", "eu-west-2", False),
        ("https://my-bucket.s3.eu-west-1.amazonaws.com.internal", "eu-west-1", False),
        ("https://127.0.0.1:9000", "eu-west-1", False),
        ("https://s3.eu-west-1.amazonaws.com", "not a region", False),
        (None, "eu-west-1", False),
        ("", "eu-west-1", False),
    ],
)
def test_the_pure_rule(endpoint: str | None, region: str | None, aws: bool) -> None:
    assert is_aws_s3_endpoint(endpoint, region) is aws


def test_the_reference_endpoint_counts_too() -> None:
    """A new AWS partition's endpoint, as botocore resolves it, is AWS though no pattern names it."""
    assert is_aws_s3_endpoint("https://s3.eusc-de-east-1.amazonaws.eu", "eusc-de-east-1") is False
    assert is_aws_s3_endpoint(
        "https://s3.eusc-de-east-1.amazonaws.eu", "eusc-de-east-1", reference="https://s3.eusc-de-east-1.amazonaws.eu"
    )
    assert not is_aws_s3_endpoint("https://minio.internal", "eu-west-1", reference="https://s3.eu-west-1.amazonaws.com")
