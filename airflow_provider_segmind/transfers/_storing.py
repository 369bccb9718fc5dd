"""Where each output goes and how it is written: its S3 key, the whole plan checked first, then the writes.

Every key of a task is rendered and checked (safe, no two outputs on one key) and every URL checked
against the download policy before anything is downloaded or written. Each output is then written
as one object (:class:`~._s3.S3Writer`: conditional, verified) with its manifest beside it; the
manifest's content is the operator's (``SegmindToS3Operator.manifest``).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from collections.abc import Mapping
from typing import Any, Final

from airflow_provider_segmind.exceptions import UnsafeS3KeyError
from airflow_provider_segmind.transfers._download import Fetched
from airflow_provider_segmind.transfers._s3 import OBJECT_SHA256_METADATA, S3Writer, StoredObject, WriteResult
from airflow_provider_segmind.transfers._spool import Spool
from airflow_provider_segmind.utils.media_policy import DownloadPolicy, check_url
from airflow_provider_segmind.utils.results import CompletedResult, ResultOutput
from airflow_provider_segmind.utils.s3_keys import manifest_key, render_key, s3_uri, template_fields

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
_VERBS: Final = {"created": "Wrote", "unchanged": "Found (unchanged)", "replaced": "Replaced"}


def airflow_ids(ti: Any) -> dict[str, Any]:
    """What names a write in Airflow (key templates, manifests): dag, run, task, map index and try."""
    map_index = getattr(ti, "map_index", -1)
    return {
        "dag_id": ti.dag_id,
        "run_id": ti.run_id,
        "task_id": ti.task_id,
        "map_index": map_index if isinstance(map_index, int) else -1,
        "try_number": getattr(ti, "try_number", None),
    }


def _ext_for(content_type: str | None, url: str | None = None) -> str:
    """The file extension for ``{ext}``: from the content type, else the URL's, else ``bin``."""
    if content_type:
        ext = _EXTENSIONS.get(content_type) or (mimetypes.guess_extension(content_type) or "").lstrip(".")
        if ext:
            return ext
    if url:
        match = re.search(r"\.([A-Za-z0-9]{2,5})$", url.split("?", 1)[0])
        if match:
            return "jpeg" if match.group(1).lower() == "jpg" else match.group(1).lower()
    return "bin"


def check_plan(
    bucket: str,
    template: str,
    results: list[CompletedResult],
    ids: Mapping[str, Any],
    *,
    policy: DownloadPolicy,
    log: Any,
) -> None:
    """Refuse unsafe keys, bad URLs and key collisions before anything is downloaded or written."""
    planned: dict[str, str] = {}
    count = 0
    for result in results:
        outputs = result.outputs or [ResultOutput(0)]
        for output in outputs:
            count += 1
            if output.url is not None:
                check_url(output.url, policy)
            guess = output.content_type or result.inline_content_type
            if guess is None and result.inline:
                guess = f"image/{result.params.get('output_format', 'jpeg')}"
            key = object_key(template, ids, result, output.index, guess, url=output.url)
            if key in planned:
                raise UnsafeS3KeyError(
                    f"S3 key {key!r} would hold two outputs ({planned[key]} and {result.request_id} "
                    f"#{output.index}) of this task: put {{request_id}} and {{index}} in s3_key "
                    "(the default layout has them); nothing was written"
                )
            planned[key] = f"{result.request_id} #{output.index}"
    fields = template_fields(template)
    if count > 1 and not {"request_id", "index"} <= fields:
        log.warning("s3_key %r lacks {request_id} or {index}; outputs are told apart by other fields.", template)
    log.info("Storing %d output(s) of %d Segmind result(s) in s3://%s.", count, len(results), bucket)


def object_key(
    template: str,
    ids: Mapping[str, Any],
    result: CompletedResult,
    index: int,
    content_type: str | None,
    *,
    url: str | None = None,
) -> str:
    """The S3 key of one output: the template filled with Airflow's ids and the output's own."""
    values = {
        **ids,
        "request_id": result.request_id,
        "index": index,
        "ext": _ext_for(content_type, url),
        "model": result.model or "unknown-model",
    }
    return render_key(template, values)


def store_object(
    writer: S3Writer, bucket: str, key: str, result: CompletedResult, fetched: Fetched, *, replace: bool, log: Any
) -> WriteResult:
    """Write one verified output at ``key`` (or find it already there) and say so in the log."""
    metadata = {"segmind-request-id": result.request_id}
    obj = StoredObject(fetched.spool, fetched.size, fetched.sha256, fetched.content_type, metadata)
    outcome = writer.write(bucket, key, obj, replace=replace)
    uri = s3_uri(bucket, key)
    log.info(
        "%s %s (%s, %d bytes, sha256 %s)",
        _VERBS.get(outcome.outcome, "Wrote"),
        uri,
        fetched.content_type,
        fetched.size,
        fetched.sha256,
    )
    return outcome


def write_manifest(
    writer: S3Writer,
    bucket: str,
    key: str,
    document: Mapping[str, Any],
    result: CompletedResult,
    fetched: Fetched,
    *,
    replace: bool,
    log: Any,
) -> str:
    """Write ``document`` beside the object at ``key``; returns the manifest's key.

    Its identity is the object's SHA-256 (``object-sha256``), not its own bytes: a retry that finds
    a manifest of the same object keeps it (the first ``stored_at`` stays), a different one conflicts.
    """
    return write_manifest_document(
        writer, bucket, key, document, fetched.sha256, result.request_id, replace=replace, log=log
    )


def write_manifest_document(
    writer: S3Writer,
    bucket: str,
    key: str,
    document: Mapping[str, Any],
    object_sha256: str,
    request_id: str,
    *,
    replace: bool,
    log: Any,
) -> str:
    """:func:`write_manifest` for an object described by its SHA-256 and request id (the publish step's copies)."""
    body = json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False).encode("utf-8")
    target = manifest_key(key)
    with Spool(len(body) + 1) as spool:
        spool.write(body)
        obj = StoredObject(
            spool,
            len(body),
            hashlib.sha256(body).hexdigest(),
            "application/json",
            {OBJECT_SHA256_METADATA: object_sha256, "segmind-request-id": request_id},
            identity_key=OBJECT_SHA256_METADATA,
        )
        manifest_outcome = writer.write(bucket, target, obj, replace=replace)
    if manifest_outcome.outcome == "unchanged":
        log.info("Manifest %s already describes this object: kept.", s3_uri(bucket, target))
    return target
