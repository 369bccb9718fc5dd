"""SegmindToS3Operator: persist Segmind outputs to S3, streamed, verified, idempotent and safe.

This module is the operator: its arguments, their checks, the order of the steps and the manifest
document. The steps live beside it: ``_inputs`` (which outputs), ``utils/media_policy``/``_download``
(fetching them safely), ``_storing``/``_s3``/``utils/s3_keys`` (keys and writes), ``_assets`` (events).
Importing this module imports neither boto3 nor the Amazon provider: ``S3Hook`` is imported in
``execute``, so DAG files parse fast and without the ``amazon`` extra installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Final

from airflow.providers.common.compat.sdk import BaseOperator
from airflow.sdk import Asset

from airflow_provider_segmind import __version__
from airflow_provider_segmind.exceptions import (
    UnsafeS3KeyError,
)
from airflow_provider_segmind.protocol.vocabulary import DEFAULT_CONN_ID
from airflow_provider_segmind.transfers._assets import (
    AUTO_ASSET,
    DEFAULT_MAX_EVENT_OBJECTS,
    asset_event_extra,
    declare_outlet,
    declare_partial_outlet,
    emit_event,
)
from airflow_provider_segmind.transfers._download import Downloader, Fetched, image_dimensions
from airflow_provider_segmind.transfers._inputs import _iter_inputs, fetch_outputs, resolve
from airflow_provider_segmind.transfers._s3 import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_PART_SIZE,
    ConflictCheck,
    S3Writer,
    WriteResult,
    check_writer_options,
)
from airflow_provider_segmind.transfers._storing import (
    airflow_ids,
    check_plan,
    object_key,
    store_object,
    write_manifest,
)
from airflow_provider_segmind.utils.media_policy import (
    DEFAULT_ALLOWED_CONTENT_TYPES,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DOWNLOAD_RETRIES,
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_MAX_SIZE,
    DEFAULT_MEDIA_HOSTS,
    DEFAULT_READ_TIMEOUT,
    DownloadPolicy,
)
from airflow_provider_segmind.utils.redaction import MANIFEST_LIMITS, plain
from airflow_provider_segmind.utils.redaction import finite_number as _number
from airflow_provider_segmind.utils.results import CompletedResult, ResultOutput
from airflow_provider_segmind.utils.s3_client import ChecksumMode, s3_client
from airflow_provider_segmind.utils.s3_keys import parse_location, s3_uri
from airflow_provider_segmind.utils.task_failure import fail_for_good_if_no_retry_helps

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_segmind.hooks.segmind import SegmindHook
    from airflow_provider_segmind.protocol.responses import JobResult

__all__ = ["MANIFEST_VERSION", "SegmindToS3Operator", "asset_event_extra"]

#: The alias this operator emitted on by default up to 0.1.0; no longer a default (every DAG scheduled
#: on it fired on every other DAG's images). Pass ``asset_alias=DEFAULT_ASSET_ALIAS`` to keep
MANIFEST_VERSION: Final = 1


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
        segmind_conn_id: str = DEFAULT_CONN_ID,
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
        self.event_target = declare_outlet(self, asset, asset_alias, s3_bucket, s3_key)
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
        check_writer_options(
            checksum_mode=checksum_mode,
            conflict_check=conflict_check,
            replace=replace,
            multipart_threshold=multipart_threshold,
            part_size=part_size,
            max_concurrency=max_concurrency,
        )
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
        #: Each object stored or found by this try, for :meth:`get_openlineage_facets_on_complete`.
        self.stored_outputs: list[dict[str, Any]] = []
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
        declare_partial_outlet(partial.kwargs)
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
        return s3_client(self.aws_conn_id, self.checksum_mode)

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> list[str]:
        """Store every output; errors a retry cannot fix (policy, keys, conflicts) fail without retries."""
        try:
            with fail_for_good_if_no_retry_helps():
                return self._execute(context)
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
        ids = airflow_ids(context["ti"])
        results = [resolve(item, self._get_result, self.log) for item in items]
        check_plan(bucket, template, results, ids, policy=self.policy, log=self.log)
        self.stored_outputs = []
        writer: S3Writer | None = None  # made on the first write: no AWS session if nothing gets stored
        downloader = Downloader(self.policy, log=self.log)
        written: dict[str, str] = {}
        uris: list[str] = []
        stored: list[dict[str, Any]] = []
        for result in results:
            for output, fetched in fetch_outputs(result, downloader, self._get_result, self.log):
                try:
                    key = object_key(template, ids, result, output.index, fetched.content_type)
                    if key in written:
                        raise UnsafeS3KeyError(
                            f"S3 key {key!r} would hold two outputs ({written[key]} and {result.request_id} "
                            f"#{output.index}): put {{request_id}} and {{index}} in s3_key; nothing more was written"
                        )
                    written[key] = f"{result.request_id} #{output.index}"
                    if writer is None:
                        writer = self._writer()
                    manifest = self._store(writer, bucket, key, result, output, fetched, ids)
                    stored.append(
                        {"key": key, "sha256": fetched.sha256, "manifest": manifest, "request_id": result.request_id}
                    )
                    self.stored_outputs.append(
                        {
                            "bucket": bucket,
                            "key": key,
                            "request_id": result.request_id,
                            "index": output.index,
                            "source_url": output.url,
                            "sha256": fetched.sha256,
                            "manifest": manifest,
                        }
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

    def _get_result(self, request_id: str) -> JobResult:
        self.log.info("Fetching Segmind result %s through the hook.", request_id)
        return self.segmind_hook.get_result(request_id)

    def _store(
        self,
        writer: S3Writer,
        bucket: str,
        key: str,
        result: CompletedResult,
        output: ResultOutput,
        fetched: Fetched,
        ids: Mapping[str, Any],
    ) -> str | None:
        """Write one object and its manifest; returns the manifest's key (``None`` without one)."""
        outcome = store_object(writer, bucket, key, result, fetched, replace=self.replace, log=self.log)
        if not self.write_manifest:
            return None
        document = self.manifest(bucket, key, result, output, fetched, outcome, ids)
        return write_manifest(writer, bucket, key, document, result, fetched, replace=self.replace, log=self.log)

    def manifest(
        self,
        bucket: str,
        key: str,
        result: CompletedResult,
        output: ResultOutput,
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

    # ------------------------------------------------------------------ lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: one output dataset per S3 object (``s3://bucket`` + key), one input per Segmind output.

        Called by the OpenLineage provider's listener only (see docs/lineage.md); the import stays
        here so nothing of OpenLineage loads without it. After a failure: the objects stored so far.
        """
        from airflow_provider_segmind.utils.openlineage import transfer_lineage

        return transfer_lineage(self.stored_outputs)

    # ------------------------------------------------------------------ asset events

    def _emit_event(self, context: Context, bucket: str, template: str, stored: list[dict[str, Any]]) -> None:
        """The task's one asset event (see ``_assets.emit_event``)."""
        target, outlets, max_objects = self.event_target, self.outlets, self.max_event_objects
        emit_event(
            context, target, outlets, self.asset, bucket, template, stored, max_objects=max_objects, log=self.log
        )
