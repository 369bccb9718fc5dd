"""SegmindToS3Operator end to end: the emulator's media over loopback -> moto's S3 server, via execute().

No mocks of HTTP or S3 and no timing assertions. "Nothing written" always means: no object, no
version, no delete marker and no multipart upload left in the bucket.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
from typing import Any
from urllib.parse import quote

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import Asset
from PIL import Image

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.exceptions import (
    S3ObjectConflictError,
    SegmindOutputDownloadError,
    SegmindOutputRefusedError,
    UnsafeS3KeyError,
)
from airflow_provider_segmind.protocol.params import SD3_SIZES
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.transfers._assets import emit_event
from airflow_provider_segmind.transfers._download import Downloader
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator
from airflow_provider_segmind.utils.media_policy import DownloadPolicy
from tests.support.s3 import S3Env, asset_extra, generate, make_context
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

RUN_ID = "manual__2026-01-01T00:00:00+00:00"
MIB = 1024 * 1024


def make_op(s3: S3Env, results: Any, **kwargs: Any) -> SegmindToS3Operator:
    options: dict[str, Any] = {"task_id": "persist", "s3_bucket": s3.bucket, "allow_insecure_loopback": True}
    return SegmindToS3Operator(results=results, **{**options, **kwargs})


def default_key(request_id: str, ext: str = "jpeg", *, index: int = 0, map_index: int = -1) -> str:
    return f"segmind/segmind_dag/{RUN_ID}/persist/{map_index}/{request_id}-{index}.{ext}"


def fails(op: SegmindToS3Operator, context: dict[str, Any], cause: type[Exception], match: str) -> Exception:
    """Run the task and return the typed error (unwrapped from AirflowFailException when it was final)."""
    with pytest.raises((AirflowFailException, cause)) as info:
        op.execute(context)
    error = info.value
    if isinstance(error, AirflowFailException):
        assert isinstance(error.__cause__, cause), repr(error.__cause__)
        error = error.__cause__
    assert isinstance(error, cause)
    assert match in str(error), str(error)
    return error


def blob_result(
    emu: SegmindEmulator, nbytes: int, *, request_id: str = "req-blob-1", query: str = ""
) -> dict[str, Any]:
    """A result whose output is the emulator's deterministic blob (for large and streamed bodies)."""
    url = f"{emu.base_url}/_emulator/blob/{nbytes}?content_type=image/jpeg{query}"
    return {"request_id": request_id, "model": "some-video-model", "status": "COMPLETED", "output_urls": [url]}


def with_urls(summary: dict[str, Any], urls: list[str]) -> dict[str, Any]:
    """The same result, with its output URLs replaced."""
    return dict(summary, images=[], output_urls=urls, output_url=urls[0] if urls else None)


def blob_bytes(nbytes: int) -> bytes:
    return (bytes(range(256)) * (nbytes // 256 + 1))[:nbytes]


# --------------------------------------------------------------------------------------------
# Success paths
# --------------------------------------------------------------------------------------------


def test_stores_a_valid_image_with_its_manifest_and_emits_an_asset_event(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu, aspect_ratio="16:9", output_format="png", negative_prompt="blurry", seed=42)
    context = make_context()
    op = make_op(s3, summary)
    uris = op.execute(context)

    key = default_key(summary["request_id"], "png")
    assert uris == [f"s3://{s3.bucket}/{key}"]
    assert s3.keys() == [key, key + ".manifest.json"]
    data, obj = s3.get(key)
    assert obj["ContentType"] == "image/png"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == SD3_SIZES["16:9"]
    sha256 = hashlib.sha256(data).hexdigest()
    assert obj["Metadata"]["sha256"] == sha256
    assert obj["Metadata"]["segmind-request-id"] == summary["request_id"]

    raw_manifest, manifest_obj = s3.get(key + ".manifest.json")
    assert manifest_obj["ContentType"] == "application/json"
    manifest = json.loads(raw_manifest)
    assert manifest["manifest_version"] == 1
    assert manifest["uri"] == uris[0]
    assert (manifest["bucket"], manifest["key"]) == (s3.bucket, key)
    assert (manifest["sha256"], manifest["size"], manifest["content_type"]) == (sha256, len(data), "image/png")
    assert (manifest["width"], manifest["height"]) == SD3_SIZES["16:9"]
    assert manifest["write"] == "created"
    assert manifest["etag"] == obj["ETag"]
    assert manifest["request_id"] == summary["request_id"]
    assert manifest["model"] == SD3_LARGE_MODEL
    assert manifest["prompt"] == "a lighthouse at dawn"
    assert manifest["negative_prompt"] == "blurry"
    assert manifest["params"]["aspect_ratio"] == "16:9"
    assert manifest["seed"] == 42
    assert manifest["metrics"]["inference_time"] > 0
    assert manifest["cost"] == summary["metrics"]["cost"]
    assert manifest["source"]["kind"] == "url"
    assert manifest["source"]["url"] == summary["output_url"]
    assert manifest["source"]["redirects"] == 0
    stamps = manifest["timestamps"]
    assert stamps["download_started_at"] <= stamps["download_finished_at"] <= stamps["stored_at"]
    assert manifest["airflow"] == {
        "dag_id": "segmind_dag",
        "run_id": RUN_ID,
        "task_id": "persist",
        "map_index": -1,
        "try_number": 1,
    }
    assert emu.api_key not in raw_manifest.decode()

    assert op.event_target == Asset(f"s3://{s3.bucket}/segmind")  # no DAG here: the prefix stops at {dag_id}
    assert asset_extra(context, op.event_target) == {
        "bucket": s3.bucket,
        "prefix": key.rsplit("/", 1)[0] + "/",
        "count": 1,
        "truncated": False,
        "objects": [
            {"key": key, "sha256": sha256, "manifest": key + ".manifest.json", "request_id": summary["request_id"]}
        ],
    }

    media = emu.requests_log("/media")
    assert len(media) == 1
    assert media[0]["has_api_key"] is False
    assert not any(name.lower() in ("x-api-key", "authorization", "cookie") for name in media[0]["headers"])


def test_several_results_and_several_images_per_result_get_distinct_keys(emu: SegmindEmulator, s3: S3Env) -> None:
    first, second, third = (generate(emu, prompt=f"picture {n}") for n in range(3))
    two_images = dict(first, images=first["images"] + third["images"], output_urls=[], output_url=None)
    uris = make_op(s3, [two_images, second]).execute(make_context())
    expected = [
        default_key(first["request_id"], index=0),
        default_key(first["request_id"], index=1),
        default_key(second["request_id"], index=0),
    ]
    assert uris == [f"s3://{s3.bucket}/{key}" for key in expected]
    stored = [s3.get(key)[0] for key in expected]
    assert len({hashlib.sha256(data).digest() for data in stored}) == 3


def test_mapped_task_instances_write_distinct_keys(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    uris = [make_op(s3, summary).execute(make_context(map_index=index))[0] for index in (0, 1)]
    assert uris[0] != uris[1]
    assert uris[0].endswith(default_key(summary["request_id"], map_index=0))
    assert uris[1].endswith(default_key(summary["request_id"], map_index=1))
    assert len(s3.keys()) == 4


def test_request_ids_are_fetched_through_the_hook(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu, prompt="fetched by id", aspect_ratio="9:16")
    fetches = emu.stats()["result_fetches"]
    uris = make_op(s3, [summary["request_id"]]).execute(make_context())
    assert emu.stats()["result_fetches"] == fetches + 1
    data, _ = s3.get(default_key(summary["request_id"]))
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == SD3_SIZES["9:16"]
    manifest = json.loads(s3.get(default_key(summary["request_id"]) + ".manifest.json")[0])
    assert manifest["prompt"] == "fetched by id"
    assert manifest["uri"] == uris[0]


def test_base64_results_are_refetched_by_request_id_and_stored(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu, base64=True, aspect_ratio="3:2")
    inline_summary = {k: v for k, v in summary.items() if k not in ("images", "output_urls", "output_url")}
    inline_summary["output_inline"] = True
    fetches = emu.stats()["result_fetches"]
    (uri,) = make_op(s3, inline_summary).execute(make_context())
    assert emu.stats()["result_fetches"] == fetches + 1  # one re-fetch, through the hook (with the key)
    key = default_key(summary["request_id"])
    assert uri.endswith(key)
    data, obj = s3.get(key)
    assert obj["ContentType"] == "image/jpeg"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.size == SD3_SIZES["3:2"]
    manifest = json.loads(s3.get(key + ".manifest.json")[0])
    assert manifest["source"] == {
        "kind": "base64",
        "url": None,
        "final_url": None,
        "redirects": 0,
        "declared_content_type": None,
    }
    assert emu.requests_log("/media") == []


def test_inputs_may_be_json_text_and_nested_lists(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    uris = make_op(s3, json.dumps([[summary]])).execute(make_context())
    assert uris == [f"s3://{s3.bucket}/{default_key(summary['request_id'])}"]


def test_custom_templates_prefixes_and_s3_urls(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    rid = summary["request_id"]
    uri = make_op(s3, summary, s3_bucket=None, s3_key=f"s3://{s3.bucket}/renders/{{model}}/{{request_id}}.{{ext}}")
    assert uri.execute(make_context()) == [f"s3://{s3.bucket}/renders/{SD3_LARGE_MODEL}/{rid}.jpeg"]
    prefixed = make_op(s3, summary, s3_bucket=f"s3://{s3.bucket}", s3_key="team-a/")
    assert prefixed.execute(make_context(run_id="scheduled__x y/z")) == [
        f"s3://{s3.bucket}/team-a/segmind_dag/scheduled__x%20y%2Fz/persist/-1/{rid}-0.jpeg"
    ]


def test_a_followed_redirect_is_recorded(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    hop = f"{emu.base_url}/_emulator/redirect?to={quote(summary['output_url'], safe='')}&status=307"
    (uri,) = make_op(s3, with_urls(summary, [hop])).execute(make_context())
    manifest = json.loads(s3.get(uri.split("/", 3)[3] + ".manifest.json")[0])
    assert manifest["source"]["redirects"] == 1
    assert manifest["source"]["url"] == f"{emu.base_url}/_emulator/redirect?…"  # no query: it could be a secret
    assert manifest["source"]["final_url"] == summary["output_url"]
    hops = emu.requests_log("/_emulator/redirect") + emu.requests_log("/media")
    assert len(hops) == 2
    assert all(entry["has_api_key"] is False for entry in hops)


def test_large_outputs_stream_through_multipart_and_verify(emu: SegmindEmulator, s3: S3Env) -> None:
    size = 11 * MIB + 12345
    op = make_op(s3, blob_result(emu, size), multipart_threshold=5 * MIB, part_size=5 * MIB, max_concurrency=3)
    (uri,) = op.execute(make_context())
    key = uri.split("/", 3)[3]
    data, obj = s3.get(key)
    assert data == blob_bytes(size)
    assert obj["ETag"].endswith('-3"')  # three parts
    assert obj["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert s3.uploads() == []


def test_chunked_body_without_content_length(emu: SegmindEmulator, s3: S3Env) -> None:
    (uri,) = make_op(s3, blob_result(emu, 300_001, query="&chunked=1")).execute(make_context())
    assert s3.get(uri.split("/", 3)[3])[0] == blob_bytes(300_001)


def test_nothing_to_store_gives_the_asset_event_a_count_of_zero(s3: S3Env) -> None:
    """Airflow emits an Asset outlet's event on success anyway: its extra says nothing was stored."""
    context = make_context()
    op = make_op(s3, [])
    assert op.execute(context) == []
    assert asset_extra(context, op.event_target) == {
        "bucket": s3.bucket,
        "prefix": "",
        "count": 0,
        "truncated": False,
        "objects": [],
    }
    s3.assert_empty()


def test_a_context_without_outlet_events_stores_and_skips_the_event(
    emu: SegmindEmulator, s3: S3Env, caplog: pytest.LogCaptureFixture
) -> None:
    """A hand-made context (no Airflow task runner, e.g. benchmark 4's) stores the image and warns.

    The event would have nobody to record it; failing here would fail a transfer already stored.
    """
    summary = generate(emu)
    context = make_context()
    del context["outlet_events"]
    op = make_op(s3, summary)
    (uri,) = op.execute(context)
    key = uri.split("/", 3)[3]
    assert s3.keys() == [key, key + ".manifest.json"]

    log = logging.getLogger("tests.assets")
    stored = [{"key": key, "sha256": "0" * 64, "manifest": None, "request_id": summary["request_id"]}]
    with caplog.at_level(logging.WARNING, logger=log.name):
        emit_event(context, op.event_target, op.outlets, "auto", s3.bucket, key, stored, max_objects=5, log=log)
    assert [record.getMessage() for record in caplog.records if record.name == log.name] == [
        f"The context has no outlet_events (not run by Airflow): no asset event on {op.event_target!r}."
    ]


def test_one_capped_asset_event_for_many_images(emu: SegmindEmulator, s3: S3Env) -> None:
    """Three images, one event: the extra lists the first max_event_objects and says it is truncated."""
    results = [generate(emu, prompt=f"a lighthouse, take {n}") for n in range(3)]
    context = make_context()
    op = make_op(s3, results, max_event_objects=2)
    uris = op.execute(context)

    extra = asset_extra(context, op.event_target)
    assert (extra["count"], extra["truncated"], len(extra["objects"])) == (3, True, 2)
    assert [f"s3://{s3.bucket}/{item['key']}" for item in extra["objects"]] == uris[:2]
    assert all(uri.startswith(f"s3://{s3.bucket}/{extra['prefix']}") for uri in uris)
    assert extra["prefix"] == f"segmind/segmind_dag/{quote(RUN_ID, safe='-_.=+:@,~')}/persist/-1/"
    json.dumps(extra)  # JSON-plain


# --------------------------------------------------------------------------------------------
# Idempotency and conflicts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("large", [False, True], ids=["single-put", "multipart"])
def test_a_retry_neither_duplicates_nor_rewrites(emu: SegmindEmulator, s3: S3Env, large: bool) -> None:
    result = blob_result(emu, 6 * MIB + 1) if large else generate(emu)
    options = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB} if large else {}
    first = make_op(s3, result, **options).execute(make_context(try_number=1))
    keys = s3.keys()
    before = {key: s3.head(key) for key in keys}

    context = make_context(try_number=2)
    op = make_op(s3, result, **options)
    second = op.execute(context)
    assert second == first
    assert s3.keys() == keys
    for key in keys:
        after = s3.head(key)
        assert (after["ETag"], after["LastModified"], after["VersionId"]) == (
            before[key]["ETag"],
            before[key]["LastModified"],
            before[key]["VersionId"],
        )
        assert len(s3.versions(key)) == 1
    assert s3.uploads() == []
    manifest = json.loads(s3.get(keys[-1])[0])
    assert manifest["airflow"]["try_number"] == 1  # the first manifest is kept
    extra = asset_extra(context, op.event_target)  # the event again for this try, listing the found objects
    assert [f"s3://{s3.bucket}/{item['key']}" for item in extra["objects"]] == second


@pytest.mark.parametrize("large", [False, True], ids=["single-put", "multipart"])
def test_a_different_object_at_the_key_fails_cleanly_without_replace(
    emu: SegmindEmulator, s3: S3Env, large: bool
) -> None:
    result = blob_result(emu, 6 * MIB) if large else generate(emu)
    options = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB} if large else {}
    key = default_key(result["request_id"])
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"someone else's picture", ContentType="image/jpeg")
    before = s3.head(key)

    error = fails(make_op(s3, result, **options), make_context(), S3ObjectConflictError, "replace=False")
    assert key in str(error)
    assert s3.keys() == [key]  # no manifest either
    assert s3.head(key)["ETag"] == before["ETag"]
    assert len(s3.versions(key)) == 1
    assert s3.uploads() == []  # the multipart upload was aborted

    (uri,) = make_op(s3, result, replace=True, **options).execute(make_context())
    assert s3.get(key)[0] != b"someone else's picture"
    manifest = json.loads(s3.get(key + ".manifest.json")[0])
    assert manifest["write"] == "replaced"
    assert uri.endswith(key)


def test_no_head_before_a_first_write(emu: SegmindEmulator, s3: S3Env) -> None:
    """Write-only roles: the conditional put needs no HeadObject unless the key is taken."""
    calls: list[str] = []

    class Observed(SegmindToS3Operator):
        def s3_client(self) -> Any:
            client = super().s3_client()
            client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
            return client

    summary = generate(emu)
    Observed(task_id="persist", results=summary, s3_bucket=s3.bucket, allow_insecure_loopback=True).execute(
        make_context()
    )
    assert calls == ["PutObject", "PutObject"]  # the image, then its manifest
    calls.clear()
    Observed(task_id="persist", results=summary, s3_bucket=s3.bucket, allow_insecure_loopback=True).execute(
        make_context()
    )
    assert calls == ["PutObject", "HeadObject", "PutObject", "HeadObject"]  # 412 -> compare, twice


def test_conflict_check_head_fallback(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    uris = make_op(s3, summary, conflict_check="head").execute(make_context())
    assert make_op(s3, summary, conflict_check="head").execute(make_context()) == uris
    assert all(len(s3.versions(key)) == 1 for key in s3.keys())  # noqa: SIM118 - S3Env.keys() lists the bucket


# --------------------------------------------------------------------------------------------
# Refusals: each fails clearly and writes nothing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("s3_key", "reason"),
    [
        ("../{request_id}.{ext}", "'..' segment"),
        ("a/../b/{request_id}.{ext}", "'..' segment"),
        ("a/./{request_id}.{ext}", "'.' segment"),
        ("/absolute/{request_id}.{ext}", "starts with '/'"),
        ("a//b/{request_id}.{ext}", "empty segment"),
        ("bad\nkey/{request_id}.{ext}", "control characters"),
        ("bad\x00key/{request_id}.{ext}", "control characters"),
        ("win\\dows/{request_id}.{ext}", "backslash"),
        ("{prompt}.{ext}", "unknown placeholder"),
    ],
)
def test_unsafe_keys_are_refused(emu: SegmindEmulator, s3: S3Env, s3_key: str, reason: str) -> None:
    summary = generate(emu)
    error = fails(make_op(s3, summary, s3_key=s3_key), make_context(), UnsafeS3KeyError, reason)
    assert repr(s3_key) in str(error)
    s3.assert_empty()
    assert emu.requests_log("/media") == []  # refused before downloading anything


def test_values_cannot_inject_segments_into_keys(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    (uri,) = make_op(s3, summary).execute(make_context(dag_id="..", run_id="../../etc", task_id="."))
    assert "/%2E%2E/..%2F..%2Fetc/%2E/" in uri


def test_two_outputs_for_one_key_are_refused_before_writing(emu: SegmindEmulator, s3: S3Env) -> None:
    results = [generate(emu), generate(emu)]
    fails(make_op(s3, results, s3_key="flat/latest.{ext}"), make_context(), UnsafeS3KeyError, "would hold two")
    s3.assert_empty()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("http://images.segmind.com/generations/x.jpeg", "not https"),
        ("ftp://images.segmind.com/x.jpeg", "only https"),
        ("file:///etc/passwd", "only https"),
        ("https://user:pw@images.segmind.com/x.jpeg", "credentials"),
        ("https://evil.example.com/x.jpeg", "not in allowed_hosts"),
        ("https://images.segmind.com.evil.example/x.jpeg", "not in allowed_hosts"),
    ],
)
def test_urls_off_policy_are_refused_without_a_request(s3: S3Env, url: str, match: str) -> None:
    result = {"request_id": "req-1", "status": "COMPLETED", "output_urls": [url]}
    op = make_op(s3, result, allow_insecure_loopback=False)
    fails(op, make_context(), SegmindOutputRefusedError, match)
    s3.assert_empty()


def test_plain_http_to_loopback_needs_the_explicit_flag(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    fails(make_op(s3, summary, allow_insecure_loopback=False), make_context(), SegmindOutputRefusedError, "not https")
    s3.assert_empty()
    assert emu.requests_log("/media") == []


@pytest.mark.parametrize(
    ("target", "allowed_hosts", "match"),
    [
        ("https://169.254.169.254/latest/meta-data/", ["*"], "instance-metadata"),
        ("https://[::ffff:169.254.169.254]/latest/", ["*"], "instance-metadata"),
        ("https://169.254.10.1/x.jpeg", ["*"], "link-local"),
        ("https://10.1.2.3/x.jpeg", ["*"], "private-network"),
        ("https://172.16.5.4/x.jpeg", ["*"], "private-network"),
        ("https://192.168.1.20/x.jpeg", ["*"], "private-network"),
        ("https://[fd12::1]/x.jpeg", ["*"], "private-network"),
        ("https://100.64.0.1/x.jpeg", ["*"], "non-public"),
        ("http://169.254.169.254/latest/meta-data/", ["*"], "not https"),
        ("https://evil.example.com/x.jpeg", ["images.segmind.com"], "not in allowed_hosts"),
    ],
)
def test_redirects_to_private_metadata_or_unlisted_targets_are_refused(
    emu: SegmindEmulator, s3: S3Env, target: str, allowed_hosts: list[str], match: str
) -> None:
    hop = f"{emu.base_url}/_emulator/redirect?to={quote(target, safe='')}"
    result = {"request_id": "req-redirect", "status": "COMPLETED", "output_urls": [hop]}
    error = fails(make_op(s3, result, allowed_hosts=allowed_hosts), make_context(), SegmindOutputRefusedError, match)
    assert "redirect target" in str(error)
    s3.assert_empty()
    assert len(emu.requests_log("/_emulator/redirect")) == 1  # the hop was asked, the target never


def test_loopback_addresses_are_refused_without_the_flag(s3: S3Env) -> None:
    result = {"request_id": "req-1", "status": "COMPLETED", "output_urls": ["https://localhost:1/x.jpeg"]}
    fails(make_op(s3, result, allowed_hosts=["localhost"], allow_insecure_loopback=False), make_context(),
          SegmindOutputRefusedError, "loopback address")  # fmt: skip
    s3.assert_empty()


def test_too_many_redirects(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    url = summary["output_url"]
    for _ in range(3):
        url = f"{emu.base_url}/_emulator/redirect?to={quote(url, safe='')}"
    op = make_op(s3, with_urls(summary, [url]), max_redirects=2)
    fails(op, make_context(), SegmindOutputRefusedError, "max_redirects=2")
    s3.assert_empty()


def test_wrong_content_type_is_refused(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    emu.script([{"endpoint": "media", "fault": "wrong_type"}])
    fails(make_op(s3, summary), make_context(), SegmindOutputRefusedError, "text/html")
    s3.assert_empty()
    fails(make_op(s3, summary, allowed_content_types=["video/*"]), make_context(), SegmindOutputRefusedError,
          "not an allowed content type")  # fmt: skip
    s3.assert_empty()


def test_a_body_that_is_not_an_image_is_refused(emu: SegmindEmulator, s3: S3Env) -> None:
    """An error page served as image/jpeg is caught by sniffing the bytes."""
    summary = generate(emu)
    hop = f"{emu.base_url}/_emulator/redirect?to={quote(emu.base_url + '/_emulator/health', safe='')}"
    result = with_urls(summary, [hop])
    fails(make_op(s3, result, allowed_content_types=["image/*", "application/json"]), make_context(),
          SegmindOutputRefusedError, "not media")  # fmt: skip
    s3.assert_empty()


def test_oversize_bodies_are_refused(emu: SegmindEmulator, s3: S3Env) -> None:
    summary = generate(emu)
    fails(make_op(s3, summary, max_size=1000), make_context(), SegmindOutputRefusedError, "max_size=1,000")
    chunked = blob_result(emu, 200_000, query="&chunked=1")  # no Content-Length: caught while streaming
    fails(make_op(s3, chunked, max_size=100_000), make_context(), SegmindOutputRefusedError, "larger than max_size")
    inline = dict(generate(emu, base64=True), output_inline=True, images=[], output_urls=[], output_url=None)
    fails(make_op(s3, inline, max_size=1000), make_context(), SegmindOutputRefusedError, "max_size")
    s3.assert_empty()


@pytest.mark.parametrize("large", [False, True], ids=["image", "multipart-size"])
def test_truncated_bodies_write_nothing_and_can_be_retried(emu: SegmindEmulator, s3: S3Env, large: bool) -> None:
    result = blob_result(emu, 12 * MIB) if large else generate(emu)
    options = {"multipart_threshold": 5 * MIB, "part_size": 5 * MIB} if large else {}
    emu.script([{"endpoint": "media", "fault": "truncate"}])
    with pytest.raises(SegmindOutputDownloadError, match="nothing was written") as info:
        make_op(s3, result, download_retries=0, **options).execute(make_context())
    assert info.value.transient  # a task retry may succeed: not an AirflowFailException
    s3.assert_empty()
    assert len(make_op(s3, result, **options).execute(make_context(try_number=2))) == 1  # the retry stores it


@pytest.mark.parametrize("fault", ["truncate", "reset_before", "500"])
def test_a_download_that_breaks_off_is_tried_again_within_the_task(emu: SegmindEmulator, s3: S3Env, fault: str) -> None:
    result = generate(emu)
    emu.script([{"endpoint": "media", "fault": fault, "times": 2}])
    uris = make_op(s3, result).execute(make_context())  # default: 2 more attempts
    assert len(uris) == 1
    assert len(emu.requests_log("/media")) == 3
    key = uris[0].removeprefix(f"s3://{s3.bucket}/")
    data, _ = s3.get(key)
    assert hashlib.sha256(data).hexdigest() == json.loads(s3.get(key + ".manifest.json")[0])["sha256"]
    # When every attempt breaks off, the task fails (its own retries apply) and nothing is written.
    emu.script([{"endpoint": "media", "fault": fault, "times": 2}])
    with pytest.raises(SegmindOutputDownloadError):
        make_op(s3, result, download_retries=1, s3_key="again/{request_id}.{ext}").execute(make_context())
    assert not [stored for stored in s3.keys() if stored.startswith("again/")]  # noqa: SIM118


def test_each_download_retry_is_logged_and_the_last_error_is_raised(
    emu: SegmindEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    url = generate(emu)["output_urls"][0]
    log = logging.getLogger("tests.download")
    downloader = Downloader(DownloadPolicy(allow_insecure_loopback=True, retry_backoff=0.0), log=log)
    emu.script([{"endpoint": "media", "fault": "500", "times": 3}])  # the default 2 retries: 3 attempts, all fail
    with caplog.at_level(logging.WARNING, logger=log.name), pytest.raises(SegmindOutputDownloadError, match="HTTP 500"):
        downloader.fetch(url)
    messages = [record.getMessage() for record in caplog.records if record.name == log.name]
    assert [message.split(",")[0] for message in messages] == [
        "Download attempt 1 of 3 failed",
        "Download attempt 2 of 3 failed",
    ]
    assert all(" trying again in 0.0 s: " in message and "HTTP 500" in message for message in messages)
    assert len(emu.requests_log("/media")) == 3


def test_a_refused_output_is_not_downloaded_again(emu: SegmindEmulator, s3: S3Env) -> None:
    url = f"{emu.base_url}/_emulator/blob/5000?content_type=text/html"
    result = {"request_id": "req-html", "images": [{"url": url}]}
    fails(make_op(s3, result), make_context(), SegmindOutputRefusedError, "content type")
    assert len(emu.requests_log("/_emulator/blob")) == 1
    s3.assert_empty()


def test_download_retries_are_validated(s3: S3Env) -> None:
    with pytest.raises(ValueError, match="download_retries must be an integer from 0 to 10"):
        make_op(s3, {"request_id": "r"}, download_retries=-1).policy  # noqa: B018


def test_size_mismatch_with_the_result_is_refused_without_content_length(emu: SegmindEmulator, s3: S3Env) -> None:
    url = f"{emu.base_url}/_emulator/blob/50000?content_type=image/jpeg&chunked=1"
    result = {"request_id": "req-size", "images": [{"url": url, "content_type": "image/jpeg", "file_size": 50001}]}
    with pytest.raises(SegmindOutputDownloadError, match="the Segmind result said 50,001"):
        make_op(s3, result).execute(make_context())
    s3.assert_empty()
    # With a Content-Length that was honoured, the body is known complete: a differing file_size
    # (whose unit Segmind does not document) only warns.
    summary = generate(emu)
    summary["images"][0]["file_size"] += 1
    assert len(make_op(s3, summary).execute(make_context())) == 1


def test_results_that_are_not_completed_or_malformed_are_refused(s3: S3Env) -> None:
    from airflow_provider_segmind.exceptions import SegmindOutputError

    with pytest.raises(SegmindOutputError, match="not COMPLETED"):
        make_op(s3, {"request_id": "r1", "status": "FAILED"}).execute(make_context())
    with pytest.raises(SegmindOutputError, match="no valid request_id"):
        make_op(s3, {"output_urls": ["https://images.segmind.com/x.jpeg"]}).execute(make_context())
    with pytest.raises(SegmindOutputError, match="not a request id"):
        make_op(s3, ["https://images.segmind.com/x.jpeg"]).execute(make_context())
    s3.assert_empty()


# --------------------------------------------------------------------------------------------
# Checksums and the client
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["when_supported", "when_required"])
def test_checksum_modes_send_the_right_integrity_headers(emu: SegmindEmulator, s3: S3Env, mode: str) -> None:
    sent: list[tuple[str, set[str]]] = []

    class Observed(SegmindToS3Operator):
        def s3_client(self) -> Any:
            client = super().s3_client()

            def record(request: Any, event_name: str, **_: Any) -> None:
                sent.append((event_name.split(".")[-1], {name.lower() for name in request.headers}))

            client.meta.events.register("before-send.s3.*", record)
            return client

    result = blob_result(emu, 6 * MIB)
    op = Observed(
        task_id="persist",
        results=result,
        s3_bucket=s3.bucket,
        allow_insecure_loopback=True,
        checksum_mode=mode,
        multipart_threshold=5 * MIB,
        part_size=5 * MIB,
        write_manifest=True,
    )
    assert op.s3_client().meta.config.request_checksum_calculation == mode
    op.execute(make_context())
    by_operation: dict[str, set[str]] = {}
    for operation, headers in sent:
        by_operation.setdefault(operation, set()).update(headers)
    checksum_headers = {h for h in set().union(*by_operation.values()) if h.startswith("x-amz-checksum-")}
    if mode == "when_supported":
        assert "x-amz-checksum-sha256" in by_operation["PutObject"]  # the manifest
        assert "x-amz-checksum-crc32" in by_operation["UploadPart"]
    else:
        assert checksum_headers == set()
        assert "content-md5" in by_operation["PutObject"]
        assert "content-md5" in by_operation["UploadPart"]
    assert s3.get(default_key(result["request_id"]))[0] == blob_bytes(6 * MIB)


def test_invalid_options_fail_at_parse_time(s3: S3Env) -> None:
    with pytest.raises(ValueError, match="checksum_mode"):
        make_op(s3, [], checksum_mode="always")
    with pytest.raises(ValueError, match="replace=True"):
        make_op(s3, [], conflict_check="none")
    with pytest.raises(ValueError, match="allowed_hosts"):
        make_op(s3, [], allowed_hosts=["https://images.segmind.com/"])
    with pytest.raises(ValueError, match="part_size"):
        make_op(s3, [], part_size=1024)


def test_empty_input_writes_nothing(s3: S3Env) -> None:
    assert make_op(s3, []).execute(make_context()) == []
    s3.assert_empty()


def test_importing_the_module_does_not_import_boto3() -> None:
    code = (
        "import sys, airflow_provider_segmind.transfers.segmind_to_s3\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]"
