"""The S3 writer against the soak's fault-injecting proxy, one scripted fault at a time.

Each case is a fault the soak hits at random, made deterministic: the write must end with the
object stored once (or a clear error) and nothing left behind, in particular no multipart upload.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from airflow_provider_segmind.transfers._s3 import S3Writer, StoredObject
from airflow_provider_segmind.transfers._spool import Spool
from tests.soak.s3_proxy import FaultyS3Proxy

CREDENTIALS = {"aws_access_key_id": "soak", "aws_secret_access_key": "soak", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def _object(size: int) -> StoredObject:
    data = bytes(range(256)) * (size // 256)
    spool = Spool()
    spool.write(data)
    spool.finish()
    return StoredObject(spool, len(data), hashlib.sha256(data).hexdigest(), "image/jpeg", {})


def _write(moto_url: str, script: list[tuple[str, str]], size: int) -> tuple[Any, str, Any]:
    """Write one object through a proxy running ``script``; return (result, bucket, direct client)."""
    direct = boto3.client("s3", endpoint_url=moto_url, **CREDENTIALS)
    bucket = f"soak-s3-{uuid.uuid4().hex[:10]}"
    direct.create_bucket(Bucket=bucket)
    with FaultyS3Proxy(moto_url, rates={}, script=script) as proxy:
        # boto3's default retry policy (standard mode, 3 attempts), pinned so the scripts stay exact.
        config = Config(retries={"mode": "standard", "total_max_attempts": 3})
        client = boto3.client("s3", endpoint_url=proxy.url, config=config, **CREDENTIALS)
        writer = S3Writer(client, multipart_threshold=50_000, log=logging.getLogger("soak.s3"))
        try:
            result = writer.write(bucket, "images/a.jpeg", _object(size), replace=False)
        finally:
            client.close()
        assert not proxy.script, f"scripted faults not consumed: {proxy.script}"
    return result, bucket, direct


@pytest.mark.parametrize(
    "script",
    [
        [("CreateMultipartUpload", "lost_after")],
        [("CreateMultipartUpload", "lost_after"), ("CreateMultipartUpload", "503")],
        [("UploadPart", "reset_before")],
        [("CompleteMultipartUpload", "lost_after")],
    ],
    ids=["create-answer-lost", "create-answer-lost-then-503", "part-reset", "complete-answer-lost"],
)
def test_multipart_write_under_faults_leaves_no_upload_behind(moto_url: str, script: list[tuple[str, str]]) -> None:
    try:
        result, bucket, direct = _write(moto_url, script, 100_000)
    except Exception as err:  # a fault boto3's retries could not absorb: the task would be retried
        pytest.fail(f"the write should have absorbed {script}: {err!r}")
    assert result.outcome in ("created", "unchanged")
    assert direct.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    versions = direct.list_object_versions(Bucket=bucket).get("Versions", [])
    assert [v["Key"] for v in versions] == ["images/a.jpeg"]


def test_an_unabsorbed_create_failure_still_leaves_no_upload_behind(moto_url: str) -> None:
    """The create was applied but every answer failed: the write fails, and the stray is aborted."""
    script = [("CreateMultipartUpload", "lost_after")] + [("CreateMultipartUpload", "503")] * 2
    with pytest.raises(Exception, match="SlowDown"):
        _write(moto_url, script, 100_000)
    direct = boto3.client("s3", endpoint_url=moto_url, **CREDENTIALS)
    for bucket in direct.list_buckets()["Buckets"]:  # the module's buckets: every one must be clean
        assert direct.list_multipart_uploads(Bucket=bucket["Name"]).get("Uploads", []) == []


def test_a_lost_put_answer_is_recognised_as_our_own_object(moto_url: str) -> None:
    result, bucket, direct = _write(moto_url, [("PutObject", "lost_after")], 10_000)
    assert result.outcome == "unchanged"  # the retried conditional put met the object it had stored
    assert len(direct.list_object_versions(Bucket=bucket).get("Versions", [])) == 1
