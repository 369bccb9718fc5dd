"""Fixtures for the S3 tests: a real S3 endpoint (moto in server mode) and the emulator.

``tests/unit/conftest.py`` registers ``moto_endpoint`` and ``s3`` for every unit test; a module whose
tests want this module's emulator (near-instant jobs) imports ``s3_emu``, which is the fixture ``emu``
there (the default ``emu`` is ``tests.support.jobs``').

Nothing here mocks HTTP or S3: downloads go to the Segmind emulator over loopback, writes go to
moto's S3 server over loopback through the Amazon provider's ``S3Hook`` and the ``aws_default``
connection (defined by environment variable, with ``endpoint_url`` pointing at moto).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from airflow_provider_segmind.emulator.server import SegmindEmulator
from tests.support.s3 import DUMMY_CREDENTIALS, REGION, S3Env

EmulatorFactory = Callable[..., SegmindEmulator]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, for the whole session."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Env:
    """A new, versioned bucket, and ``aws_default`` pointing at moto (dummy credentials)."""
    conn = {
        "conn_type": "aws",
        "login": DUMMY_CREDENTIALS["aws_access_key_id"],
        "password": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "extra": {"endpoint_url": moto_endpoint, "region_name": REGION},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION, **DUMMY_CREDENTIALS)
    bucket = f"segmind-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return S3Env(moto_endpoint, bucket, client)


@pytest.fixture(name="emu")
def s3_emu(emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch) -> SegmindEmulator:
    """An emulator with near-instant jobs, and ``segmind_default`` pointing at it."""
    emulator = emulator_factory(queue_time=0.0, inference_time=0.02)
    conn = {"conn_type": "segmind", "password": emulator.api_key, "host": emulator.base_url}
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    return emulator
