"""The transfer's pure rules: keys, URL and address policy, sniffing, spooling, inputs, secrets.

No network beyond resolving literal addresses, no S3: these run in milliseconds on every Airflow
version we support.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from airflow_provider_segmind.exceptions import SegmindOutputError, SegmindOutputRefusedError, UnsafeS3KeyError
from airflow_provider_segmind.transfers._assets import DEFAULT_ASSET_ALIAS
from airflow_provider_segmind.transfers._download import spool_base64
from airflow_provider_segmind.transfers._inputs import _iter_inputs
from airflow_provider_segmind.transfers._spool import Spool
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator, _clean
from airflow_provider_segmind.utils.media_policy import (
    DownloadPolicy,
    address_problem,
    check_url,
    host_allowed,
    normalize_allowed_hosts,
    public_url,
    resolve_checked,
    sniff_media_type,
)
from airflow_provider_segmind.utils.results import result_from_summary
from airflow_provider_segmind.utils.s3_keys import (
    DEFAULT_KEY_TEMPLATE,
    encode_component,
    parse_location,
    render_key,
    validate_key,
)

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["", "   ", "/a", "a/../b", "..", "a/.", "a//b", "a/", "a\\b", "a\x00b", "a\tb", "a\x85b", "k" * 1025],
)
def test_unsafe_keys(key: str) -> None:
    with pytest.raises(UnsafeS3KeyError, match="Unsafe S3 key"):
        validate_key(key)


@pytest.mark.parametrize("key", ["a", "a/b.c/d.jpeg", "x/..y/z", "run:2026-01-01T00:00:00+00:00/é.png", "k" * 1024])
def test_safe_keys(key: str) -> None:
    assert validate_key(key) == key


def test_components_are_encoded_injectively_and_never_add_segments() -> None:
    values = ["a/b", "a%2Fb", "..", ".", "", "x y", "manual__2026-01-01T00:00:00+00:00", "é", "a\nb"]
    encoded = [encode_component(v) for v in values]
    assert len(set(encoded)) == len(values)
    assert all("/" not in e and e not in ("", ".", "..") for e in encoded)
    assert encode_component("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00:00:00+00:00"


def test_default_key_layout() -> None:
    values = {
        "dag_id": "d",
        "run_id": "scheduled__2026-01-01T00:00:00+00:00",
        "task_id": "t",
        "map_index": 3,
        "request_id": "r-1",
        "index": 0,
        "ext": "png",
    }
    assert render_key(DEFAULT_KEY_TEMPLATE, values) == "segmind/d/scheduled__2026-01-01T00:00:00+00:00/t/3/r-1-0.png"


@pytest.mark.parametrize(
    ("bucket", "key", "expected"),
    [
        ("b-1", None, ("b-1", DEFAULT_KEY_TEMPLATE)),
        ("s3://b-1", "x/{request_id}.{ext}", ("b-1", "x/{request_id}.{ext}")),
        (None, "s3://b-1/x/{request_id}.{ext}", ("b-1", "x/{request_id}.{ext}")),
        ("b-1", "s3://b-1/y.{ext}", ("b-1", "y.{ext}")),
        ("b-1", "team/", ("b-1", "team/{dag_id}/{run_id}/{task_id}/{map_index}/{request_id}-{index}.{ext}")),
    ],
)
def test_locations(bucket: str | None, key: str | None, expected: tuple[str, str]) -> None:
    assert parse_location(bucket, key) == expected


@pytest.mark.parametrize(
    ("bucket", "key", "match"),
    [
        (None, None, "No S3 bucket"),
        ("a", "x", "Invalid S3 bucket"),
        ("b/c", "x", "Invalid S3 bucket"),
        ("s3://b-1/prefix", "x", "has a key part"),
        ("b-1", "s3://other/x", "names bucket"),
        ("b-1", "x/{secret}", "unknown placeholder"),
        ("b-1", "x/{request_id.__class__}", "unknown placeholder"),
        ("b-1", "x/{request_id", "Invalid S3 key template"),
        ("b-1", "../{request_id}", "Unsafe S3 key template"),
    ],
)
def test_bad_locations(bucket: str | None, key: str | None, match: str) -> None:
    with pytest.raises(UnsafeS3KeyError, match=match):
        parse_location(bucket, key)


# --------------------------------------------------------------------------------------------
# URLs and addresses
# --------------------------------------------------------------------------------------------


def test_allow_list_matching() -> None:
    patterns = normalize_allowed_hosts(["images.segmind.com", "*.cdn.example", "10.0.0.1", "[::1]"])
    assert host_allowed("images.segmind.com", patterns)
    assert host_allowed("IMAGES.SEGMIND.COM.", patterns)
    assert host_allowed("a.b.cdn.example", patterns)
    assert not host_allowed("cdn.example", patterns)  # "*." means subdomains only
    assert not host_allowed("evilcdn.example", patterns)
    assert not host_allowed("images.segmind.com.evil.io", patterns)
    assert host_allowed("::1", patterns)
    assert host_allowed("anything.example", normalize_allowed_hosts("*"))


@pytest.mark.parametrize("bad", ["https://images.segmind.com", "images.segmind.com/x", "*.*.com", "a*.com", "", " "])
def test_allow_list_entries_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        normalize_allowed_hosts([bad])


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("100.64.0.1", "non-public"),
        ("0.0.0.0", "private"),
        ("224.0.0.1", "non-public"),
        ("192.0.2.1", "private"),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_rules(address: str, problem: str | None) -> None:
    found = address_problem(address, allow_loopback=False)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_loopback_is_only_allowed_explicitly() -> None:
    assert address_problem("127.0.0.1", allow_loopback=True) is None
    assert address_problem("10.0.0.1", allow_loopback=True) is not None  # private stays refused


def test_check_url_rules() -> None:
    policy = DownloadPolicy()
    target = check_url("https://images.segmind.com/generations/a.jpeg?sig=1", policy)
    assert (target.host, target.port, target.request_path) == ("images.segmind.com", 443, "/generations/a.jpeg?sig=1")
    assert target.host_header == "images.segmind.com"
    for url, match in [
        ("https://images.segmind.com/a b.jpeg", "spaces"),
        ("https:///a.jpeg", "no host"),
        ("https://images.segmind.com:99999/a", "not a valid URL"),
        ("gopher://images.segmind.com/", "only https"),
        ("http://127.0.0.1:8787/media/a.jpeg", "allow_insecure_loopback"),
        ("https://bücher.segmind.com/", "non-ASCII"),
    ]:
        with pytest.raises(SegmindOutputRefusedError, match=match):
            check_url(url, policy)
    loopback = DownloadPolicy(allow_insecure_loopback=True)
    assert check_url("http://localhost:8787/x", loopback).host_header == "localhost:8787"
    assert check_url("http://[::1]:8787/x", loopback).host_header == "[::1]:8787"
    with pytest.raises(SegmindOutputRefusedError, match="not https"):
        check_url("http://10.0.0.1/x", DownloadPolicy(allow_insecure_loopback=True, allowed_hosts=("*",)))


def test_resolution_checks_every_address() -> None:
    policy = DownloadPolicy(allowed_hosts=("*",))
    for url in ("https://169.254.169.254/", "https://[::ffff:10.0.0.1]/", "https://localhost/"):
        with pytest.raises(SegmindOutputRefusedError, match="SSRF"):
            resolve_checked(check_url(url, policy), policy)


def test_public_url_drops_query_fragment_and_credentials() -> None:
    assert public_url("https://u:p@h.example:8443/a/b.jpeg?X-Amz-Signature=s#f") == "https://h.example:8443/a/b.jpeg?…"
    assert "SG_0123456789abcdef" not in public_url("https://h.example/SG_0123456789abcdef.jpeg")


# --------------------------------------------------------------------------------------------
# Bytes: sniffing, spool, base64
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (PNG_1PX[:16], "image/png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"\x00\x00\x00\x1cftypavif", "image/avif"),
        (b"\x00\x00\x00\x18ftypisom", "video/mp4"),
        (b"<!DOCTYPE html><html>", None),
        (b"\x00\x01\x02\x03", None),
    ],
)
def test_sniffing(head: bytes, kind: str | None) -> None:
    assert sniff_media_type(head) == kind


def test_spool_moves_to_a_temporary_file_and_reads_by_position() -> None:
    data = bytes(range(256)) * 100
    with Spool(memory_limit=1000) as spool:
        for offset in range(0, len(data), 777):
            spool.write(data[offset : offset + 777])
        spool.finish()
        assert not spool.in_memory
        assert spool.size == len(data)
        assert spool.read_range(12_345, 1000) == data[12_345:13_345]
        part = spool.open_range(5000, 3000)
        assert len(part) == 3000
        assert not hasattr(part, "fileno") or part.seekable()
        assert part.read(10) == data[5000:5010]
        part.seek(0, io.SEEK_END)
        assert part.read() == b""
        part.seek(-5, io.SEEK_END)
        assert part.read() == data[7995:8000]
    small = Spool(memory_limit=1000)
    small.write(b"abc")
    assert small.in_memory
    assert small.getvalue() == b"abc"
    small.close()


def test_spool_slice_has_no_fileno_for_botocore() -> None:
    """botocore sizes a body with a fileno from the whole file: a part must not expose one."""
    with Spool(memory_limit=1) as spool:
        spool.write(b"0123456789")
        spool.finish()
        part = spool.open_range(2, 5)
        with pytest.raises((OSError, io.UnsupportedOperation)):
            part.fileno()
        assert part.read() == b"23456"


def test_base64_outputs_are_checked_like_downloads() -> None:
    policy = DownloadPolicy()
    fetched = spool_base64("data:image/png;base64," + base64.b64encode(PNG_1PX).decode(), policy)
    assert (fetched.content_type, fetched.size, fetched.source_kind) == ("image/png", len(PNG_1PX), "base64")
    fetched.close()
    with pytest.raises(SegmindOutputError, match="not valid base64"):
        spool_base64("!!!not base64!!!", policy)
    with pytest.raises(SegmindOutputRefusedError, match="not an allowed content type"):
        spool_base64(base64.b64encode(PNG_1PX).decode(), DownloadPolicy(allowed_content_types=("video/*",)))
    with pytest.raises(SegmindOutputRefusedError, match="not media"):
        spool_base64(base64.b64encode(b"<html>oops</html>").decode(), policy)


def test_policy_validation() -> None:
    for kwargs in (
        {"max_size": 0},
        {"connect_timeout": 0},
        {"max_redirects": -1},
        {"allowed_content_types": ("jpeg",)},
    ):
        with pytest.raises(ValueError, match=r"max_size|timeout|max_redirects|allowed_content_types"):
            DownloadPolicy(**kwargs)


# --------------------------------------------------------------------------------------------
# Inputs, secrets, outlets
# --------------------------------------------------------------------------------------------


class LazyLike(Sequence[Any]):
    """Like the lazy sequence a mapped task's ``.output`` resolves to: a Sequence, not a list."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)


def test_inputs_are_flattened() -> None:
    summary = {"request_id": "r1"}
    assert list(_iter_inputs(summary)) == [summary]
    assert list(_iter_inputs(LazyLike([summary, "r2", [summary]]))) == [summary, "r2", summary]
    assert list(_iter_inputs('["r3", {"request_id": "r4"}]')) == ["r3", {"request_id": "r4"}]
    for bad in (None, b"bytes", 3.5, '{"broken'):
        with pytest.raises(SegmindOutputError):
            list(_iter_inputs(bad))


def test_summaries_are_read_tolerantly() -> None:
    result = result_from_summary(
        {
            "request_id": "r1",
            "images": [{"url": "https://images.segmind.com/a.png", "content_type": "IMAGE/PNG", "file_size": 10}],
            "output_urls": ["https://images.segmind.com/a.png", "https://images.segmind.com/b.jpeg"],
            "output": "not a url",
        }
    )
    assert [(o.index, o.url, o.content_type, o.size) for o in result.outputs] == [
        (0, "https://images.segmind.com/a.png", "image/png", 10),
        (1, "https://images.segmind.com/b.jpeg", None, None),
    ]
    assert (result.model, result.seed, result.metrics, result.params, result.inline) == (None, None, {}, {}, False)


def test_manifest_values_lose_their_secrets() -> None:
    cleaned = _clean(
        {
            "prompt": "a cat, key SG_0123456789abcdef",
            "api_key": "SG_0123456789abcdef",
            "webhook_token": "t",
            "image": "data:image/png;base64,AAAA",
            "nested": {"Authorization": "Bearer x", "ok": [1, 2.5, None, True]},
            "huge": "x" * 20_000,
        }
    )
    assert cleaned["prompt"] == "a cat, key ***"
    assert cleaned["api_key"] == "***"
    assert cleaned["webhook_token"] == "***"
    assert cleaned["image"].startswith("<omitted")
    assert cleaned["nested"] == {"Authorization": "***", "ok": [1, 2.5, None, True]}
    assert cleaned["huge"].startswith("<omitted")


def test_the_default_outlet_is_one_asset_per_destination_also_for_mapped_tasks() -> None:
    """One static asset per destination (shown in lineage), not a global alias every DAG shares."""
    from airflow.sdk import DAG, Asset, AssetAlias, task_group

    with DAG(dag_id="outlets_check", schedule=None) as dag:
        plain = SegmindToS3Operator(task_id="plain", results=[], s3_bucket="bkt")
        prefix = SegmindToS3Operator(task_id="prefix", results=[], s3_bucket="bkt", s3_key="images/")
        jinja_key = SegmindToS3Operator(
            task_id="jinja_key", results=[], s3_bucket="bkt", s3_key="out/{{ ds }}/{run_id}/{request_id}-{index}.{ext}"
        )
        templated = SegmindToS3Operator(task_id="templated", results=[], s3_bucket="{{ params.bucket }}")
        chosen = SegmindToS3Operator(
            task_id="chosen", results=[], s3_bucket="bkt", asset=Asset("images", uri="s3://x/y")
        )
        by_uri = SegmindToS3Operator(task_id="by_uri", results=[], s3_bucket="bkt", asset="s3://bkt/marketing")
        legacy = SegmindToS3Operator(task_id="legacy", results=[], s3_bucket="bkt", asset_alias=DEFAULT_ASSET_ALIAS)
        none = SegmindToS3Operator(task_id="none", results=[], s3_bucket="bkt", asset=None)
        mine = SegmindToS3Operator(task_id="mine", results=[], s3_bucket="bkt", outlets=[Asset("s3://other/x")])
        mapped = SegmindToS3Operator.partial(task_id="mapped", s3_bucket="bkt").expand(results=[["r1"], ["r2"]])
        mapped_bucket = SegmindToS3Operator.partial(task_id="mapped_bucket").expand(results=[["r1"]], s3_bucket=["b1"])

        @task_group(group_id="group")
        def group(result: str) -> None:
            SegmindToS3Operator(task_id="persist", results=result, s3_bucket="{{ params.bucket }}")

        group.expand(result=["r1", "r2"])

    destination = Asset("s3://bkt/segmind/outlets_check")
    assert plain.outlets == [destination]
    assert prefix.outlets == [Asset("s3://bkt/images/outlets_check")]
    assert jinja_key.outlets == [Asset("s3://bkt/out")]
    assert templated.outlets == [Asset("segmind-s3://outlets_check/templated")]  # known at run time only
    assert chosen.outlets == [Asset("images", uri="s3://x/y")]
    assert by_uri.outlets == [Asset("s3://bkt/marketing")]
    assert legacy.outlets == [AssetAlias(DEFAULT_ASSET_ALIAS)]
    assert none.outlets == []
    assert mine.outlets == [Asset("s3://other/x"), destination]
    assert mapped.outlets == [destination]
    assert mapped_bucket.outlets == [Asset("segmind-s3://outlets_check/mapped_bucket")]
    assert dag.get_task("group.persist").outlets == [Asset("segmind-s3://outlets_check/group.persist")]
    with pytest.raises(TypeError, match="asset_alias"):
        SegmindToS3Operator(task_id="bad", results=[], s3_bucket="bkt", asset=AssetAlias("x"))  # type: ignore[arg-type]
