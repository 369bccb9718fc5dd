"""SegmindToS3Operator: persist Segmind outputs to S3, streamed, verified, idempotent and safe.

Importing this module imports neither boto3 nor the Amazon provider: ``S3Hook`` is imported in
``execute``, so DAG files parse fast and without the ``amazon`` extra installed.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache, cached_property
from os.path import commonprefix
from typing import TYPE_CHECKING, Any, ClassVar, Final

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator
from airflow.sdk import Asset, AssetAlias

from airflow_provider_segmind import __version__
from airflow_provider_segmind.exceptions import SegmindError
from airflow_provider_segmind.protocol import SegmindJobStatus, parse_int
from airflow_provider_segmind.redaction import MANIFEST_LIMITS, plain
from airflow_provider_segmind.redaction import finite_number as _number
from airflow_provider_segmind.transfers._download import (
    DEFAULT_ALLOWED_CONTENT_TYPES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DOWNLOAD_RETRIES,
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_MAX_SIZE,
    DEFAULT_MEDIA_HOSTS,
    DEFAULT_READ_TIMEOUT,
    Downloader,
    DownloadPolicy,
    Fetched,
    SegmindOutputDownloadError,
    SegmindOutputError,
    SegmindOutputRefusedError,
    Spool,
    check_url,
    image_dimensions,
    public_url,
    spool_base64,
)
from airflow_provider_segmind.transfers._s3 import (
    CHECKSUM_MODES,
    CONFLICT_CHECKS,
    DEFAULT_KEY_TEMPLATE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    OBJECT_SHA256_METADATA,
    ChecksumMode,
    ConflictCheck,
    S3ObjectConflictError,
    S3WriteError,
    S3Writer,
    StoredObject,
    UnsafeS3KeyError,
    WriteResult,
    destination_prefix,
    manifest_key,
    parse_location,
    render_key,
    s3_uri,
    template_fields,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_segmind.hooks.segmind import SegmindHook
    from airflow_provider_segmind.protocol import JobResult

__all__ = [
    "AUTO_ASSET",
    "DEFAULT_ASSET_ALIAS",
    "DEFAULT_KEY_TEMPLATE",
    "DEFAULT_MEDIA_HOSTS",
    "MANIFEST_VERSION",
    "S3ObjectConflictError",
    "S3WriteError",
    "SegmindOutputDownloadError",
    "SegmindOutputError",
    "SegmindOutputRefusedError",
    "SegmindToS3Operator",
    "UnsafeS3KeyError",
    "asset_event_extra",
]

#: The alias this operator emitted on by default up to 0.1.0; no longer a default (every DAG scheduled
#: on it fired on every other DAG's images). Pass ``asset_alias=DEFAULT_ASSET_ALIAS`` to keep
#: consumers scheduled on it firing (one event per task, see ``SegmindToS3Operator``).
DEFAULT_ASSET_ALIAS: Final = "segmind-s3-outputs"
#: ``asset="auto"``: one asset per destination (see ``SegmindToS3Operator``).
AUTO_ASSET: Final = "auto"
#: Scheme of the per-task asset ``asset="auto"`` falls back to when the bucket is templated or mapped.
TASK_ASSET_SCHEME: Final = "segmind-s3"
#: Objects listed in one asset event's ``extra`` (the rest: the manifests under ``extra["prefix"]``).
DEFAULT_MAX_EVENT_OBJECTS: Final = 50


@cache
def _alias_extras_must_be_flat() -> bool:
    """Airflow 3.1 hashes an alias event's extra (``frozenset(extra.items())``): no list values.

    3.2 and later compare the extra as JSON instead (``TaskInstance.register_asset_changes_in_db``).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("apache-airflow-core").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) < (3, 2)


MANIFEST_VERSION: Final = 1
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_EXTENSIONS: Final = {
    "image/jpeg": "jpeg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
    "image/heic": "heic",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
    "image/svg+xml": "svg",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
}
_MAX_INPUT_DEPTH: Final = 3
_VERBS: Final = {"created": "Wrote", "unchanged": "Found (unchanged)", "replaced": "Replaced"}


# --------------------------------------------------------------------------------------------
# Inputs: what the upstream handed over, normalised
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Output:
    """One output of one result: a URL to download, or the result's inline (base64) image."""

    index: int
    url: str | None = None
    content_type: str | None = None
    size: int | None = None


@dataclass
class _Result:
    """A COMPLETED Segmind result, from an XCom summary or fetched by request id."""

    request_id: str
    model: str | None
    seed: int | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    outputs: list[_Output]
    inline: bool = False
    base64_image: str | None = None
    inline_content_type: str | None = None
    retrievable_until: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _ext_for(content_type: str | None, url: str | None = None) -> str:
    if content_type:
        ext = _EXTENSIONS.get(content_type) or (mimetypes.guess_extension(content_type) or "").lstrip(".")
        if ext:
            return ext
    if url:
        match = re.search(r"\.([A-Za-z0-9]{2,5})$", url.split("?", 1)[0])
        if match:
            return "jpeg" if match.group(1).lower() == "jpg" else match.group(1).lower()
    return "bin"


def _int_or_none(value: Any) -> int | None:
    """``seed`` / ``file_size`` may be numeric strings in Segmind's answers: parsed, not dropped."""
    return parse_int(value)


def _outputs_from(images: Any, urls: Iterable[Any]) -> list[_Output]:
    """Every distinct output URL, ``images`` entries first (they carry type and size)."""
    found: dict[str, _Output] = {}
    for entry in images if isinstance(images, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("url"), str) and entry["url"] not in found:
            content_type = entry.get("content_type")
            found[entry["url"]] = _Output(
                len(found),
                entry["url"],
                content_type.lower() if isinstance(content_type, str) else None,
                _int_or_none(entry.get("file_size")),
            )
    for url in urls:
        if isinstance(url, str) and url.strip() and url not in found:
            found[url] = _Output(len(found), url)
    return list(found.values())


def _summary_urls(summary: Mapping[str, Any]) -> list[Any]:
    """Output URLs of a summary; any string counts (the download policy refuses bad ones loudly)."""
    urls: list[Any] = []
    for name in ("output_urls", "output_url", "output"):
        value = summary.get(name)
        for item in value if isinstance(value, list) else [value]:
            # ``output`` of a raw result may be text (LLMs) or base64: only URL-shaped entries count.
            if isinstance(item, str) and (name != "output" or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", item)):
                urls.append(item)
    return urls


def _result_from_summary(summary: Mapping[str, Any]) -> _Result:
    request_id = summary.get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        raise SegmindOutputError(
            f"A result handed to SegmindToS3Operator has no valid request_id ({request_id!r}); pass the return "
            "value of a Segmind operator, a list of them, or request ids"
        )
    status = summary.get("status")
    if status is not None and str(status).upper() != SegmindJobStatus.COMPLETED.value:
        raise SegmindOutputError(f"Segmind request {request_id} is {status}, not COMPLETED: it has no output to store")
    params = summary.get("params") if isinstance(summary.get("params"), Mapping) else {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), Mapping) else {}
    model = summary.get("model")
    return _Result(
        request_id=request_id,
        model=model if isinstance(model, str) else None,
        seed=_int_or_none(summary.get("seed")),
        metrics=dict(metrics or {}),
        params=dict(params or {}),
        outputs=_outputs_from(summary.get("images"), _summary_urls(summary)),
        inline=summary.get("output_inline") is True,
        retrievable_until=until if isinstance(until := summary.get("retrievable_until"), str) else None,
    )


def _result_from_job(job: JobResult, *, model: str | None = None, params: Mapping[str, Any] | None = None) -> _Result:
    if job.status is not SegmindJobStatus.COMPLETED:
        raise SegmindOutputError(
            f"Segmind request {job.request_id} is {job.status.value}, not COMPLETED: wait for it (SegmindJobSensor) "
            "before storing its output"
        )
    raw = job.raw
    merged = dict(params or {})
    for name in ("prompt", "negative_prompt", "aspect_ratio", "output_format"):
        if name not in merged and isinstance(raw.get(name), str):
            merged[name] = raw[name]
    raw_model = raw.get("model")
    content_type = raw.get("content_type")
    return _Result(
        request_id=job.request_id,
        model=model or (raw_model if isinstance(raw_model, str) else None),
        seed=job.seed,
        metrics=dict(job.metrics),
        params=merged,
        outputs=[] if job.base64_image else _outputs_from(list(job.images), job.output_urls),
        inline=job.base64_image is not None,
        base64_image=job.base64_image,
        inline_content_type=content_type if isinstance(content_type, str) else None,
    )


def _iter_inputs(value: Any, depth: int = 0) -> Iterator[Mapping[str, Any] | str]:
    """Flatten what ``results`` rendered to: a dict, a request id, or (nested) sequences of them."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                yield from _iter_inputs(json.loads(text), depth + 1)
            except ValueError:
                raise SegmindOutputError(f"results is a string that is not valid JSON: {text[:80]!r}") from None
            return
        yield text
    elif isinstance(value, Mapping):
        yield value
    elif value is None:
        raise SegmindOutputError("results is None: pass a Segmind operator's output (XComArg), a result dict or ids")
    elif isinstance(value, (bytes, bytearray)):
        raise SegmindOutputError("results is bytes: pass result dicts or request ids, not image data")
    elif isinstance(value, Iterable) and depth < _MAX_INPUT_DEPTH:
        for item in value:
            yield from _iter_inputs(item, depth + 1)
    else:
        raise SegmindOutputError(
            f"results has an unsupported item of type {type(value).__name__}: expected a result dict, a request id, "
            "or a list of them (a mapped task's output)"
        )


# --------------------------------------------------------------------------------------------
# Manifest helpers
# --------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """A JSON-safe, secret-free copy of a parameter value, bounded for a manifest."""
    return plain(value, MANIFEST_LIMITS)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------------------------
# The operator
# --------------------------------------------------------------------------------------------


class SegmindToS3Operator(BaseOperator):
    """Copy the outputs of Segmind jobs into S3, with a JSON manifest beside each object.

    **Inputs** (``results``, templated): a Segmind operator's return value (a result dict), a list
    of them (a mapped task's ``.output``), an ``XComArg`` of either, or request ids (strings), whose
    results are fetched through :class:`~airflow_provider_segmind.hooks.segmind.SegmindHook` (they
    stay retrievable for 1 hour). Every output of a result is stored: each image URL (``images``,
    ``output_urls``, ``output``) and inline base64 images (``output_inline: true`` summaries are
    re-fetched by request id, since the bytes are never in XCom).

    **Downloads** are https only (plain http only to loopback with ``allow_insecure_loopback``, for
    the emulator), from ``allowed_hosts`` (default ``images.segmind.com`` and ``*.segmind.com``),
    to public addresses only (private, link-local, metadata and, unless allowed, loopback addresses
    are refused, redirects included, re-checked per hop), with no API key or other credential,
    bounded by connect/read/whole-download timeouts and ``max_size``. The HTTP status, content type
    (``allowed_content_types``, ``image/*`` by default; sniffed from the bytes too) and length
    are checked, and the SHA-256 computed, while the body streams into a spool: memory up to
    ``multipart_threshold``, then an anonymous temporary file in ``tmp_dir``, so memory does not
    grow with the output's size. Nothing is written to S3 until an output is completely received
    and verified: a refused, failed or truncated download writes nothing. Outputs are stored one
    after the other; if one fails, the ones before it stay stored and a retry finds them in place.
    Downloads go directly to the media host: proxy settings from the environment are not used.

    **Writes** (Amazon provider's ``S3Hook`` on ``aws_conn_id``; ``endpoint_url`` in the
    connection's extras for S3-compatible stores): one ``PutObject`` up to ``multipart_threshold``,
    else a multipart upload (``part_size`` parts, ``max_concurrency`` at a time, read lazily from
    the spool; aborted on any error). ``ContentType`` is the image's type; the SHA-256 is stored in
    the object's metadata (``x-amz-meta-sha256``) and S3 verifies the bytes it stores against a
    checksum we send (SHA-256/CRC32 with ``checksum_mode="when_supported"``, boto3's default;
    ``Content-MD5`` with ``"when_required"``, for stores that reject the newer checksum headers).

    **Idempotency and conflicts**: writes are conditional (``If-None-Match: *``), so no ``HeadObject``
    is needed beforehand (write-only roles work). If the key is taken (412), the object there is read
    once: the same SHA-256 means a retry already stored it, and it is left untouched; a different one
    fails the task with ``replace=False`` (nothing written) or is overwritten with ``replace=True``.
    Stores without conditional writes: those that reject ``If-None-Match`` fail with a message saying
    so; those that silently ignore it would overwrite. For both, ``conflict_check="head"`` reads the
    key first (needs ``s3:GetObject``; not atomic against a concurrent writer), or
    ``conflict_check="none"`` with ``replace=True`` overwrites blindly. AWS S3 (since 2024) and moto
    honour ``If-None-Match: *`` on ``PutObject`` and ``CompleteMultipartUpload``.

    **Keys**: ``s3_key`` (templated) is a template whose placeholders ``{dag_id}``, ``{run_id}``,
    ``{task_id}``, ``{map_index}``, ``{request_id}``, ``{index}`` (the output's position in its
    result), ``{ext}`` and ``{model}`` are filled per output (each value percent-encoded into one
    path segment). Default: ``segmind/{dag_id}/{run_id}/{task_id}/{map_index}/{request_id}-{index}.{ext}``,
    so mapped tasks, several results and reruns never collide and a retry finds its own objects. An
    ``s3_key`` ending in ``/`` is a prefix for that layout; ``s3://bucket/key`` is accepted in
    ``s3_key`` (and ``s3://bucket`` in ``s3_bucket``). Keys with ``..``/``.`` segments, a leading
    ``/``, empty segments, backslashes or control characters are refused before anything is written.

    **Manifest**: one JSON object per stored output, at ``<key>.manifest.json`` (so each object's
    description travels with it and a consumer of one asset needs nothing else)::

        {"manifest_version": 1, "uri", "bucket", "key", "sha256", "size", "content_type", "width",
         "height", "etag", "version_id", "write": "created" | "unchanged" | "replaced",
         "request_id", "model", "output_index", "prompt", "negative_prompt", "seed", "params",
         "metrics", "cost", "source": {"kind": "url" | "base64", "url", "final_url", "redirects",
         "declared_content_type"}, "timestamps": {"download_started_at", "download_finished_at",
         "stored_at", "result_retrievable_until"}, "airflow": {"dag_id", "run_id", "task_id",
         "map_index", "try_number"}, "producer": {"package", "version", "operator"}}

    Source URLs are recorded without their query string, parameters pass a secret filter (names
    like ``*key*``/``*token*`` masked, ``SG_`` keys redacted, inline data omitted); the Segmind API
    key is never read by this operator except inside the hook for a re-fetch. A retry keeps the
    first manifest of an unchanged object.

    **Return value** (XCom): the list of ``s3://bucket/key`` URIs written or found, in input order.

    **Asset events**: one event per task instance on one asset per destination, not one asset per
    object (that grew the asset table by every image). ``asset="auto"`` (default) declares
    ``Asset("s3://<bucket>/<prefix>")`` as an outlet when the DAG is parsed, where the prefix is
    ``s3_key`` up to its first run-specific part (the default layout gives
    ``s3://<bucket>/segmind/<dag_id>``), so it shows in the lineage view and consumers schedule
    on it. If ``s3_bucket`` is templated or mapped the destination is only known at run time: the
    outlet is then one static asset per task, ``Asset("segmind-s3://<dag_id>/<task_id>")``. Pass
    ``asset=Asset(...)`` (or a URI) to choose the asset, ``asset_alias="name"`` to emit through a
    named alias instead (the events then land on ``asset``, or the rendered destination's asset,
    created at the first event), and ``asset=None`` for no events. The event's ``extra`` (JSON)::

        {"bucket", "prefix", "count", "truncated",
         "objects": [{"key", "sha256", "manifest", "request_id"}, ...]}

    ``count`` is the number of objects stored or found by the task; ``objects`` lists the first
    ``max_event_objects`` (default 50; ``truncated`` says when there were more), ``prefix`` is the
    keys' common prefix, under which each object's manifest holds its full description. A task
    with an ``Asset`` outlet and nothing to store still emits its (Airflow's) event, with
    ``count`` 0. Through an alias on Airflow 3.1, ``objects`` is a JSON string (3.1 hashes alias
    event extras, so their values must be flat).

    :param results: see above. Templated.
    :param s3_bucket: the bucket (or ``s3://bucket``). Templated.
    :param s3_key: the key template or prefix (or ``s3://bucket/key``). Templated.
    :param aws_conn_id: the AWS connection.
    :param segmind_conn_id: the Segmind connection, for request ids and inline outputs.
    :param replace: overwrite a different object found at a key (default: fail).
    :param allowed_hosts: host names (``*.example.com`` for subdomains, ``*`` for any public host).
    :param allow_insecure_loopback: allow plain-http downloads from loopback (the local emulator).
    :param allowed_content_types: media type patterns, default ``("image/*",)``.
    :param max_size: largest output in bytes (default 100 MiB).
    :param connect_timeout: seconds to connect to the media host.
    :param read_timeout: seconds without data before a download fails.
    :param download_timeout: seconds for a whole download, redirects included.
    :param max_redirects: redirects followed (each checked like the first URL).
    :param download_retries: extra attempts, with backoff, after a download broke off (reset,
        timeout, 5xx, truncated body), before the task fails; refused outputs are never retried.
    :param download_proxy: opt-in forward proxy for the downloads, ``http://[user:password@]host:port``
        (default ``None``: direct, and ``HTTP(S)_PROXY`` is ignored). Every download rule still holds
        (https, allow-list, public addresses: see :mod:`._download`); no key is sent.
    :param checksum_mode: ``"when_supported"`` (default) or ``"when_required"``.
    :param conflict_check: ``"conditional"`` (default), ``"head"`` or ``"none"`` (see above).
    :param multipart_threshold: outputs up to this many bytes stay in memory and go in one PutObject.
    :param part_size: multipart part size (at least 5 MiB).
    :param max_concurrency: parts uploaded at once.
    :param write_manifest: write ``<key>.manifest.json`` beside each object (default True).
    :param asset: ``"auto"`` (default), an ``Asset``, a URI, or ``None`` (see **Asset events**).
    :param asset_alias: emit through ``AssetAlias(asset_alias)`` instead of an ``Asset`` outlet.
    :param max_event_objects: objects listed in an asset event's ``extra`` (default 50).
    :param tmp_dir: where large outputs are spooled (default: the system temp dir).
    """

    template_fields: Sequence[str] = ("results", "s3_bucket", "s3_key", "aws_conn_id", "segmind_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"results": "json"}
    ui_color = "#d8f0e4"

    def __init__(
        self,
        *,
        results: Any,
        s3_bucket: str | None = None,
        s3_key: str | None = None,
        aws_conn_id: str = "aws_default",
        segmind_conn_id: str = "segmind_default",
        replace: bool = False,
        allowed_hosts: Sequence[str] = DEFAULT_MEDIA_HOSTS,
        allow_insecure_loopback: bool = False,
        allowed_content_types: Sequence[str] = DEFAULT_ALLOWED_CONTENT_TYPES,
        max_size: int = DEFAULT_MAX_SIZE,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        download_retries: int = DEFAULT_DOWNLOAD_RETRIES,
        download_proxy: str | None = None,
        checksum_mode: ChecksumMode = "when_supported",
        conflict_check: ConflictCheck = "conditional",
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        write_manifest: bool = True,
        asset: Asset | str | None = AUTO_ASSET,
        asset_alias: str | None = None,
        max_event_objects: int = DEFAULT_MAX_EVENT_OBJECTS,
        tmp_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        #: Where this task's asset event goes, decided from the unrendered arguments (see _event_target).
        self.event_target = _event_target(
            asset, asset_alias, s3_bucket, s3_key, dag.dag_id if (dag := self.get_dag()) else None, self.task_id
        )
        if self.event_target is not None and self.event_target not in self.outlets:
            self.outlets.append(self.event_target)
        self.results = results
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.aws_conn_id = aws_conn_id
        self.segmind_conn_id = segmind_conn_id
        self.replace = replace
        self.allowed_hosts = tuple(allowed_hosts) if not isinstance(allowed_hosts, str) else (allowed_hosts,)
        self.allow_insecure_loopback = allow_insecure_loopback
        self.allowed_content_types = (
            tuple(allowed_content_types) if not isinstance(allowed_content_types, str) else (allowed_content_types,)
        )
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.download_timeout = download_timeout
        self.max_redirects = max_redirects
        self.download_retries = download_retries
        self.download_proxy = download_proxy
        if checksum_mode not in CHECKSUM_MODES:
            raise ValueError(f"checksum_mode must be one of {CHECKSUM_MODES}, got {checksum_mode!r}")
        if conflict_check not in CONFLICT_CHECKS:
            raise ValueError(f"conflict_check must be one of {CONFLICT_CHECKS}, got {conflict_check!r}")
        if conflict_check == "none" and not replace:
            raise ValueError("conflict_check='none' overwrites blindly: it needs replace=True")
        if not isinstance(part_size, int) or part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (5 MiB, S3's minimum)")
        if not isinstance(multipart_threshold, int) or multipart_threshold < 1:
            raise ValueError("multipart_threshold must be a positive number of bytes")
        if not isinstance(max_concurrency, int) or not 1 <= max_concurrency <= 64:
            raise ValueError("max_concurrency must be an integer from 1 to 64")
        self.checksum_mode: ChecksumMode = checksum_mode
        self.conflict_check: ConflictCheck = conflict_check
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.write_manifest = write_manifest
        self.asset = asset
        self.asset_alias = asset_alias
        if not isinstance(max_event_objects, int) or max_event_objects < 0:
            raise ValueError("max_event_objects must be a number of objects (0 or more)")
        self.max_event_objects = max_event_objects
        self.tmp_dir = tmp_dir
        self.policy  # noqa: B018 - validate the download policy at DAG parse time

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``partial()`` with the same asset outlet as ``__init__``.

        A mapped task's outlets are read from its partial arguments when the DAG is parsed (the
        operator's ``__init__`` only runs later, per mapped instance), so the asset (or alias) must
        be put there too, or the scheduler would not know it. A mapped ``s3_bucket`` or ``s3_key``
        is known only per instance: the per-task asset then.
        """
        partial = super().partial(**kwargs)
        args = partial.kwargs
        dag = args.get("dag")
        target = _event_target(
            args.get("asset", AUTO_ASSET),
            args.get("asset_alias"),
            args.get("s3_bucket"),
            args.get("s3_key"),
            dag.dag_id if dag is not None else None,
            args["task_id"],
        )
        if target is None:
            return partial
        if isinstance(target, Asset):  # fixed for every mapped instance: their __init__ sees mapped values
            args["asset"] = target
        outlets = list(args.get("outlets") or [])
        if target not in outlets:
            args["outlets"] = [*outlets, target]
        return partial

    # ------------------------------------------------------------------ building blocks

    @cached_property
    def policy(self) -> DownloadPolicy:
        return DownloadPolicy(
            allowed_hosts=self.allowed_hosts,
            allow_insecure_loopback=self.allow_insecure_loopback,
            allowed_content_types=self.allowed_content_types,
            max_size=self.max_size,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            download_timeout=self.download_timeout,
            max_redirects=self.max_redirects,
            retries=self.download_retries,
            proxy=self.download_proxy,
            spool_memory=self.multipart_threshold,
            tmp_dir=self.tmp_dir,
        )

    @cached_property
    def segmind_hook(self) -> SegmindHook:
        from airflow_provider_segmind.hooks.segmind import SegmindHook

        return SegmindHook(self.segmind_conn_id)

    def s3_client(self) -> Any:
        """A boto3 S3 client from the AWS connection, with the checksum mode applied."""
        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        except ImportError as err:
            raise AirflowException(
                "SegmindToS3Operator needs the Amazon provider: pip install 'airflow-provider-segmind[amazon]'"
            ) from err
        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        if self.checksum_mode == "when_supported":
            return hook.get_conn()
        from botocore.config import Config

        try:
            extra = Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
        except TypeError:  # botocore < 1.36 sends no default checksums: nothing to turn off
            return hook.get_conn()
        return hook.get_client_type(config=hook.config.merge(extra))

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> list[str]:
        """Store every output; errors a retry cannot fix (policy, keys, conflicts) fail without retries."""
        try:
            return self._execute(context)
        except SegmindError as err:
            if not err.task_retry_helps:
                raise AirflowFailException(str(err)) from err
            raise
        finally:
            if "segmind_hook" in self.__dict__:
                self.segmind_hook.close()

    def _execute(self, context: Context) -> list[str]:
        bucket, template = parse_location(self.s3_bucket, self.s3_key)
        items = list(_iter_inputs(self.results))
        if not items:
            self.log.warning("No Segmind results to store (results is empty).")
            self._emit_event(context, bucket, template, [])
            return []
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        airflow_ids: dict[str, Any] = {
            "dag_id": ti.dag_id,
            "run_id": ti.run_id,
            "task_id": ti.task_id,
            "map_index": map_index if isinstance(map_index, int) else -1,
            "try_number": getattr(ti, "try_number", None),
        }
        results = [self._resolve(item) for item in items]
        self._check_plan(bucket, template, results, airflow_ids)
        writer: S3Writer | None = None  # made on the first write: no AWS session if nothing gets stored
        downloader = Downloader(self.policy, log=self.log)
        written: dict[str, str] = {}
        uris: list[str] = []
        stored: list[dict[str, Any]] = []
        for result in results:
            for output, fetched in self._fetch_all(result, downloader):
                try:
                    key = self._key(template, airflow_ids, result, output.index, fetched.content_type)
                    if key in written:
                        raise UnsafeS3KeyError(
                            f"S3 key {key!r} would hold two outputs ({written[key]} and {result.request_id} "
                            f"#{output.index}): put {{request_id}} and {{index}} in s3_key; nothing more was written"
                        )
                    written[key] = f"{result.request_id} #{output.index}"
                    if writer is None:
                        writer = self._writer()
                    manifest = self._store(writer, bucket, key, result, output, fetched, airflow_ids)
                    stored.append(
                        {"key": key, "sha256": fetched.sha256, "manifest": manifest, "request_id": result.request_id}
                    )
                finally:
                    fetched.close()
                uris.append(s3_uri(bucket, key))
        self.log.info("Stored %d Segmind output(s) in s3://%s: %s", len(uris), bucket, ", ".join(uris))
        self._emit_event(context, bucket, template, stored)
        return uris

    def _writer(self) -> S3Writer:
        return S3Writer(
            self.s3_client(),
            checksum_mode=self.checksum_mode,
            conflict_check=self.conflict_check,
            multipart_threshold=self.multipart_threshold,
            part_size=self.part_size,
            max_concurrency=self.max_concurrency,
            log=self.log,
        )

    def _resolve(self, item: Mapping[str, Any] | str) -> _Result:
        """A result dict as is (re-fetched only if it holds no output URL); a request id via the hook."""
        if isinstance(item, str):
            if item.startswith(("http://", "https://", "s3://")):
                raise SegmindOutputError(
                    f"results contains a URL ({public_url(item)}), not a request id: pass the Segmind operator's "
                    "result dict (it carries the request id, prompt and metrics the manifest records)"
                )
            if not _REQUEST_ID.fullmatch(item):
                raise SegmindOutputError(f"{item[:80]!r} is not a Segmind request id")
            return _result_from_job(self._get_result(item))
        result = _result_from_summary(item)
        if not result.outputs and not result.inline:
            self.log.info("Result %s lists no output URL: fetching it by request id.", result.request_id)
            result = self._refetch(result)
        return result

    def _get_result(self, request_id: str) -> JobResult:
        self.log.info("Fetching Segmind result %s through the hook.", request_id)
        return self.segmind_hook.get_result(request_id)

    def _refetch(self, result: _Result) -> _Result:
        fetched = _result_from_job(self._get_result(result.request_id), model=result.model, params=result.params)
        fetched.metrics = {**fetched.metrics, **result.metrics}
        fetched.seed = result.seed if result.seed is not None else fetched.seed
        fetched.retrievable_until = result.retrievable_until
        if not fetched.outputs and not fetched.inline:
            raise SegmindOutputError(f"Segmind result {result.request_id} has no output URL and no inline image")
        return fetched

    def _check_plan(self, bucket: str, template: str, results: list[_Result], ids: Mapping[str, Any]) -> None:
        """Refuse unsafe keys, bad URLs and key collisions before anything is downloaded or written."""
        planned: dict[str, str] = {}
        count = 0
        for result in results:
            outputs = result.outputs or [_Output(0)]
            for output in outputs:
                count += 1
                if output.url is not None:
                    check_url(output.url, self.policy)
                guess = output.content_type or result.inline_content_type
                if guess is None and result.inline:
                    guess = f"image/{result.params.get('output_format', 'jpeg')}"
                key = self._key(template, ids, result, output.index, guess, url=output.url)
                if key in planned:
                    raise UnsafeS3KeyError(
                        f"S3 key {key!r} would hold two outputs ({planned[key]} and {result.request_id} "
                        f"#{output.index}) of this task: put {{request_id}} and {{index}} in s3_key "
                        "(the default layout has them); nothing was written"
                    )
                planned[key] = f"{result.request_id} #{output.index}"
        fields = template_fields(template)
        if count > 1 and not {"request_id", "index"} <= fields:
            self.log.warning(
                "s3_key %r lacks {request_id} or {index}; outputs are told apart by other fields.", template
            )
        self.log.info("Storing %d output(s) of %d Segmind result(s) in s3://%s.", count, len(results), bucket)

    def _key(
        self,
        template: str,
        ids: Mapping[str, Any],
        result: _Result,
        index: int,
        content_type: str | None,
        *,
        url: str | None = None,
    ) -> str:
        values = {
            **ids,
            "request_id": result.request_id,
            "index": index,
            "ext": _ext_for(content_type, url),
            "model": result.model or "unknown-model",
        }
        return render_key(template, values)

    def _fetch_all(self, result: _Result, downloader: Downloader) -> Iterator[tuple[_Output, Fetched]]:
        if result.inline:
            if result.base64_image is None:
                result = self._refetch(result)
            if result.base64_image is not None:
                what = f"inline output of Segmind request {result.request_id}"
                yield (
                    _Output(0),
                    spool_base64(result.base64_image, self.policy, declared_type=result.inline_content_type, what=what),
                )
                return
        for output in result.outputs:
            assert output.url is not None
            self.log.info(
                "Downloading output %d of %s from %s", output.index, result.request_id, public_url(output.url)
            )
            yield output, downloader.fetch(output.url, expected_size=output.size)

    def _store(
        self,
        writer: S3Writer,
        bucket: str,
        key: str,
        result: _Result,
        output: _Output,
        fetched: Fetched,
        ids: Mapping[str, Any],
    ) -> str | None:
        """Write one object and its manifest; returns the manifest's key (``None`` without one)."""
        metadata = {"segmind-request-id": result.request_id}
        obj = StoredObject(fetched.spool, fetched.size, fetched.sha256, fetched.content_type, metadata)
        outcome = writer.write(bucket, key, obj, replace=self.replace)
        uri = s3_uri(bucket, key)
        self.log.info(
            "%s %s (%s, %d bytes, sha256 %s)",
            _VERBS.get(outcome.outcome, "Wrote"),
            uri,
            fetched.content_type,
            fetched.size,
            fetched.sha256,
        )
        if not self.write_manifest:
            return None
        self._write_manifest(writer, bucket, key, result, output, fetched, outcome, ids)
        return manifest_key(key)

    def manifest(
        self,
        bucket: str,
        key: str,
        result: _Result,
        output: _Output,
        fetched: Fetched,
        outcome: WriteResult,
        ids: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The manifest document of one stored output (see the class docstring)."""
        params = _clean(result.params) if result.params else {}
        width_height = image_dimensions(fetched)
        metrics = {str(k): _number(v) for k, v in result.metrics.items() if _number(v) is not None}
        return {
            "manifest_version": MANIFEST_VERSION,
            "uri": s3_uri(bucket, key),
            "bucket": bucket,
            "key": key,
            "sha256": fetched.sha256,
            "size": fetched.size,
            "content_type": fetched.content_type,
            "width": width_height[0] if width_height else None,
            "height": width_height[1] if width_height else None,
            "etag": outcome.etag,
            "version_id": outcome.version_id,
            "write": outcome.outcome,
            "request_id": result.request_id,
            "model": result.model,
            "output_index": output.index,
            "prompt": params.get("prompt"),
            "negative_prompt": params.get("negative_prompt"),
            "seed": result.seed,
            "params": params,
            "metrics": metrics,
            "cost": metrics.get("cost"),
            "source": {
                "kind": fetched.source_kind,
                "url": fetched.source_url,
                "final_url": fetched.final_url,
                "redirects": fetched.redirects,
                "declared_content_type": fetched.declared_content_type,
            },
            "timestamps": {
                "download_started_at": fetched.started_at,
                "download_finished_at": fetched.finished_at,
                "stored_at": _now(),
                "result_retrievable_until": result.retrievable_until,
            },
            "airflow": dict(ids),
            "producer": {
                "package": "airflow-provider-segmind",
                "version": __version__,
                "operator": type(self).__name__,
            },
        }

    def _write_manifest(
        self,
        writer: S3Writer,
        bucket: str,
        key: str,
        result: _Result,
        output: _Output,
        fetched: Fetched,
        outcome: WriteResult,
        ids: Mapping[str, Any],
    ) -> str:
        import hashlib

        document = self.manifest(bucket, key, result, output, fetched, outcome, ids)
        body = json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8")
        target = manifest_key(key)
        with Spool(len(body) + 1) as spool:
            spool.write(body)
            obj = StoredObject(
                spool,
                len(body),
                hashlib.sha256(body).hexdigest(),
                "application/json",
                {OBJECT_SHA256_METADATA: fetched.sha256, "segmind-request-id": result.request_id},
                identity_key=OBJECT_SHA256_METADATA,
            )
            manifest_outcome = writer.write(bucket, target, obj, replace=self.replace)
        if manifest_outcome.outcome == "unchanged":
            self.log.info("Manifest %s already describes this object: kept.", s3_uri(bucket, target))
        return s3_uri(bucket, target)

    # ------------------------------------------------------------------ asset events

    def _emit_event(self, context: Context, bucket: str, template: str, stored: list[dict[str, Any]]) -> None:
        """One asset event for the whole task: the objects' keys and hashes in ``extra``, capped.

        On an ``Asset`` outlet Airflow emits the event itself when the task succeeds; we only give
        it the ``extra``. Through an alias the event is added here, on one asset per destination.
        """
        target = self.event_target
        if target is None:
            return
        if target not in (self.outlets or []):
            self.log.warning("%r is not among this task's outlets: no asset event is emitted.", target)
            return
        extra = asset_event_extra(bucket, stored, max_objects=self.max_event_objects)
        if isinstance(target, AssetAlias):
            if not stored:
                return
            asset = self._destination_asset(bucket, template, context)
            if _alias_extras_must_be_flat():
                extra["objects"] = json.dumps(extra["objects"], separators=(",", ":"))
            context["outlet_events"][target].add(asset, extra=extra)
        else:
            asset = target
            context["outlet_events"][target].extra = extra
        self.log.info(
            "Asset event on %s: %d object(s)%s.",
            asset.uri,
            len(stored),
            f", the first {self.max_event_objects} listed in its extra" if extra["truncated"] else "",
        )

    def _destination_asset(self, bucket: str, template: str, context: Context) -> Asset:
        """The asset an alias event lands on: ``asset`` if given, else the rendered destination's."""
        if isinstance(self.asset, Asset):
            return self.asset
        if isinstance(self.asset, str) and self.asset != AUTO_ASSET:
            return Asset(self.asset)
        return Asset(_destination_uri(bucket, template, context["ti"].dag_id))


def asset_event_extra(
    bucket: str, objects: Sequence[Mapping[str, Any]], *, max_objects: int = DEFAULT_MAX_EVENT_OBJECTS
) -> dict[str, Any]:
    """The ``extra`` of an asset event for stored objects (``{"key", "sha256", "manifest", "request_id"}``).

    JSON-plain and capped: the first ``max_objects`` objects, their count, whether some were left
    out, and the keys' common prefix (whole segments), under which every object and its manifest is.
    """
    listed = [dict(item) for item in objects]
    keys = [str(item["key"]) for item in listed]
    common = commonprefix(keys) if keys else ""  # noqa: RUF071 - cut back to a whole segment below
    return {
        "bucket": bucket,
        "prefix": common[: common.rfind("/") + 1],
        "count": len(listed),
        "truncated": len(listed) > max_objects,
        "objects": listed[:max_objects],
    }


def _event_target(
    asset: Asset | str | None,
    asset_alias: str | None,
    s3_bucket: Any,
    s3_key: Any,
    dag_id: str | None,
    task_id: str,
) -> Asset | AssetAlias | None:
    """The outlet a task's asset event goes to, decided when the DAG is parsed (see the class docstring)."""
    if asset_alias:
        return AssetAlias(asset_alias)
    if asset is None:
        return None
    if isinstance(asset, Asset):
        return asset
    if not isinstance(asset, str) or not asset.strip():
        raise TypeError(
            f"asset must be 'auto', an Asset, a URI string or None, got {asset!r}; for an alias pass asset_alias"
        )
    if asset != AUTO_ASSET:
        return Asset(asset)
    uri = _static_destination(s3_bucket, s3_key, dag_id)
    # A destination known only at run time: one static asset for the task (a dynamic asset per
    # rendered destination would need an alias, whose extras Airflow 3.1 cannot hold as lists).
    return Asset(uri if uri is not None else f"{TASK_ASSET_SCHEME}://{dag_id or '_'}/{task_id}")


def _static_destination(s3_bucket: Any, s3_key: Any, dag_id: str | None) -> str | None:
    """``s3://bucket/<prefix>`` if the unrendered arguments fix it, else ``None`` (templated or mapped).

    Jinja in ``s3_key`` ends the prefix where it starts; Jinja in the bucket (or a non-string such
    as an ``XComArg``) leaves the destination to run time.
    """
    if not all(value is None or isinstance(value, str) for value in (s3_bucket, s3_key)):
        return None
    key = s3_key
    if key is not None:
        marks = [at for at in (key.find(mark) for mark in ("{{", "{%", "{#")) if at >= 0]
        if marks:
            key = key[: min(marks)] + "{run_id}"  # a run-specific placeholder: the prefix stops here
    try:
        bucket, template = parse_location(s3_bucket, key)
    except UnsafeS3KeyError:
        return None
    return _destination_uri(bucket, template, dag_id)


def _destination_uri(bucket: str, template: str, dag_id: str | None) -> str:
    """``s3://bucket/prefix`` without the trailing ``/`` (Airflow strips it from an asset's URI but
    not from its name: with it, ``Asset("s3://b/p/")`` and ``Asset("s3://b/p")`` would clash)."""
    return s3_uri(bucket, destination_prefix(template, dag_id)).rstrip("/")
