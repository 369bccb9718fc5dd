"""Writes to S3 that are atomic, verified and idempotent: one object from a spool, conditionally.

Why the uploads are written by hand here rather than left to ``S3Hook.load_file`` / boto3's
``upload_fileobj`` (s3transfer): every write must be conditional (``If-None-Match: *``, below),
and neither accepts it. s3transfer validates ``ExtraArgs`` against
``TransferManager.ALLOWED_UPLOAD_ARGS``, which has no ``IfNoneMatch`` ("Invalid extra_args key
'IfNoneMatch'", checked with s3transfer 0.19.3 / boto3 1.44.5), and the Amazon provider's
``S3Hook.load_file``/``load_file_obj``/``load_bytes`` (9.39.0) pass their extra args through
s3transfer and implement ``replace=False`` as a ``HeadObject`` before the upload, which is not
atomic and needs read access. So ``PutObject`` and the multipart calls are made on the hook's
client directly; the hook still provides the client, credentials and endpoint.

Nothing here imports boto3 or botocore: the client comes from the Amazon provider's ``S3Hook``
in ``execute`` and errors are recognised by their S3 error code, so importing the operator's
module stays cheap (and works without the Amazon provider installed).

Writes
------
A write starts only after the whole output was downloaded and verified (see ``_download``), from a
spool that holds it. Objects up to ``multipart_threshold`` go in one ``PutObject``; larger ones in
a multipart upload whose parts are read lazily from the spool (``max_concurrency`` at a time) and
which is aborted on any error; afterwards any other upload still in progress at the same key (one
started by a retried ``CreateMultipartUpload`` whose first answer was lost) is aborted too, so no
partial object or orphaned upload is left behind.

Every write is conditional (``If-None-Match: *``, on ``PutObject`` and on
``CompleteMultipartUpload``): it succeeds only if nothing is at the key yet, atomically, and needs
no prior ``HeadObject`` (which write-only roles may not do). When the store answers 412 there is
an object already; only then is it read (``HeadObject``) and its recorded SHA-256 (user metadata
``sha256``) compared with ours: equal -> the retry succeeds without rewriting; different ->
``S3ObjectConflictError`` (``replace=False``) or an unconditional overwrite (``replace=True``).

Integrity: the object's SHA-256 goes in its metadata. With ``checksum_mode="when_supported"``
(boto3's default) a ``PutObject`` carries ``x-amz-checksum-sha256`` and multipart parts a CRC32,
which S3 verifies before storing; with ``"when_required"`` (stores that reject the newer checksum
headers) they carry ``Content-MD5`` instead, which every S3 implementation verifies.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Final, Literal

from airflow_provider_segmind.exceptions import S3ObjectConflictError, S3WriteError
from airflow_provider_segmind.transfers._spool import Spool
from airflow_provider_segmind.utils.s3_client import ChecksumMode
from airflow_provider_segmind.utils.s3_keys import (
    SHA256_METADATA,
    s3_uri,
)

ConflictCheck = Literal["conditional", "head", "none"]

CHECKSUM_MODES: Final = ("when_supported", "when_required")
CONFLICT_CHECKS: Final = ("conditional", "head", "none")
#: User metadata names (S3 returns them lower-cased, without the ``x-amz-meta-`` prefix).
OBJECT_SHA256_METADATA: Final = "object-sha256"
DEFAULT_MULTIPART_THRESHOLD: Final = 8 * 1024 * 1024
DEFAULT_PART_SIZE: Final = 8 * 1024 * 1024
MIN_PART_SIZE: Final = 5 * 1024 * 1024
MAX_PARTS: Final = 10_000
DEFAULT_MAX_CONCURRENCY: Final = 8


# --------------------------------------------------------------------------------------------
# Writes
# --------------------------------------------------------------------------------------------


def _error_code(err: BaseException) -> tuple[str, int | None]:
    """An S3 error's code and HTTP status (botocore ``ClientError``), or ``("", None)``."""
    response = getattr(err, "response", None)
    if not isinstance(response, Mapping):
        return "", None
    code = str((response.get("Error") or {}).get("Code") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, int(status) if isinstance(status, int) else None


def _is_precondition_failed(err: BaseException) -> bool:
    code, status = _error_code(err)
    return code == "PreconditionFailed" or status == 412


def _is_conditional_conflict(err: BaseException) -> bool:
    code, status = _error_code(err)
    return code == "ConditionalRequestConflict" or (status == 409 and code != "BucketAlreadyExists")


def _is_not_found(err: BaseException) -> bool:
    code, status = _error_code(err)
    return code in ("404", "NoSuchKey", "NotFound") or status == 404


def _is_unsupported(err: BaseException) -> bool:
    code, status = _error_code(err)
    return code in ("NotImplemented", "NotImplementedError") or status == 501


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _hash_range(spool: Spool, offset: int, length: int, algorithm: str) -> bytes:
    """Digest of a range of the spool, read in 1 MiB pieces (no part-sized buffer)."""
    digest = hashlib.new(algorithm)
    end = offset + length
    while offset < end:
        piece = spool.read_range(offset, min(1024 * 1024, end - offset))
        if not piece:
            break
        digest.update(piece)
        offset += len(piece)
    return digest.digest()


@dataclass(frozen=True)
class WriteResult:
    """How a write ended: ``created``, ``unchanged`` (same object already there) or ``replaced``."""

    outcome: str
    etag: str | None = None
    version_id: str | None = None
    multipart: bool = False


@dataclass(frozen=True)
class StoredObject:
    """What to write: the bytes (in a spool), their identity and their S3 attributes."""

    spool: Spool
    size: int
    sha256: str
    content_type: str
    metadata: Mapping[str, str]
    #: The metadata entry that says whether an object found at the key is "the same" as this one.
    identity_key: str = SHA256_METADATA


class S3Writer:
    """Writes spooled objects with the guarantees in the module docstring.

    :param client: a boto3 S3 client (from ``S3Hook``).
    :param checksum_mode: ``when_supported`` (SHA-256/CRC32 checksum headers, boto3's default) or
        ``when_required`` (``Content-MD5`` only, for S3-compatible stores that reject the others).
    :param conflict_check: ``conditional`` (``If-None-Match: *``, atomic, no read needed unless an
        object exists), ``head`` (``HeadObject`` first: for stores without conditional writes;
        needs read access and is not atomic), or ``none`` (blind overwrite; only with ``replace``).
    """

    def __init__(
        self,
        client: Any,
        *,
        checksum_mode: ChecksumMode = "when_supported",
        conflict_check: ConflictCheck = "conditional",
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        log: Any = None,
    ) -> None:
        self.client = client
        self.checksum_mode = checksum_mode
        self.conflict_check = conflict_check
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.log = log

    # ---------------------------------------------------------------- public

    def write(self, bucket: str, key: str, obj: StoredObject, *, replace: bool) -> WriteResult:
        """Write ``obj`` at ``key`` unless the same object is already there; see the module docstring."""
        uri = s3_uri(bucket, key)
        if self.conflict_check == "none":
            return self._put(bucket, key, obj, conditional=False, outcome="replaced" if replace else "created")
        if self.conflict_check == "head":
            existing = self._head(bucket, key, obj, after_412=False)
            if existing is None:
                return self._put(bucket, key, obj, conditional=False, outcome="created")
            return self._resolve_existing(bucket, key, obj, existing, replace=replace)
        for _ in range(3):
            try:
                return self._put(bucket, key, obj, conditional=True, outcome="created")
            except Exception as err:
                if _is_precondition_failed(err):
                    existing = self._head(bucket, key, obj, after_412=True)
                    if existing is None:
                        continue  # deleted between the write and the read: try again
                    return self._resolve_existing(bucket, key, obj, existing, replace=replace)
                if _is_conditional_conflict(err):
                    self._log("warning", "Concurrent conditional write to %s (409); trying again.", uri)
                    continue
                if _is_unsupported(err):
                    raise S3WriteError(
                        f"The S3 store rejected the conditional write to {uri} ({_error_code(err)[0] or 'HTTP 501'}): "
                        "it does not support If-None-Match. Set conflict_check='head' (reads the key first; needs "
                        "s3:GetObject, not atomic) or, to overwrite blindly, conflict_check='none' with replace=True."
                    ) from err
                raise
        raise S3WriteError(f"Could not write {uri}: it kept changing under concurrent writers; try again")

    # ---------------------------------------------------------------- existing objects

    def _head(self, bucket: str, key: str, obj: StoredObject, *, after_412: bool) -> dict[str, Any] | None:
        uri = s3_uri(bucket, key)
        try:
            answer: dict[str, Any] = self.client.head_object(Bucket=bucket, Key=key)
        except Exception as err:
            if _is_not_found(err):
                return None
            code, status = _error_code(err)
            why = (
                "the conditional write found an object there (412)"
                if after_412
                else "conflict_check='head' reads the key before writing"
            )
            if status == 403 or code in ("AccessDenied", "403", "Forbidden"):
                raise S3ObjectConflictError(
                    f"{uri}: {why}, and this role may not read it (HeadObject: 403), so it cannot be compared with "
                    f"the new object (sha256 {obj.sha256}). Grant s3:GetObject on the prefix, or write to a new key."
                ) from err
            raise
        return answer

    def _resolve_existing(
        self, bucket: str, key: str, obj: StoredObject, existing: Mapping[str, Any], *, replace: bool
    ) -> WriteResult:
        uri = s3_uri(bucket, key)
        metadata = {str(k).lower(): str(v) for k, v in (existing.get("Metadata") or {}).items()}
        recorded = metadata.get(obj.identity_key)
        expected = obj.metadata.get(obj.identity_key, obj.sha256)
        same = recorded is not None and recorded == expected
        if same and obj.identity_key == SHA256_METADATA:
            same = existing.get("ContentLength") in (None, obj.size)
        if same:
            self._log("info", "%s already holds this object (sha256 %s): not rewritten.", uri, expected)
            return WriteResult("unchanged", existing.get("ETag"), existing.get("VersionId"))
        if not replace:
            found = f"sha256 {recorded}" if recorded else "no recorded sha256 (not written by this provider?)"
            raise S3ObjectConflictError(
                f"A different object is already at {uri} ({found}; the new one has {obj.identity_key} {expected}), "
                "and replace=False: nothing was written. Use another key (the default key layout never collides), "
                "delete the object, or set replace=True."
            )
        self._log("warning", "Replacing the different object at %s (replace=True).", uri)
        return self._put(bucket, key, obj, conditional=False, outcome="replaced")

    # ---------------------------------------------------------------- uploads

    def _put(self, bucket: str, key: str, obj: StoredObject, *, conditional: bool, outcome: str) -> WriteResult:
        if obj.size <= self.multipart_threshold:
            return self._put_single(bucket, key, obj, conditional=conditional, outcome=outcome)
        return self._put_multipart(bucket, key, obj, conditional=conditional, outcome=outcome)

    def _metadata(self, obj: StoredObject) -> dict[str, str]:
        return {**obj.metadata, SHA256_METADATA: obj.sha256}

    def _put_single(self, bucket: str, key: str, obj: StoredObject, *, conditional: bool, outcome: str) -> WriteResult:
        body = obj.spool.getvalue()
        digest = hashlib.sha256(body)
        if len(body) != obj.size or digest.hexdigest() != obj.sha256:
            raise S3WriteError(
                f"The spooled bytes for {s3_uri(bucket, key)} changed after download (local disk problem?); "
                "nothing was written"
            )
        kwargs: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Body": body,
            "ContentType": obj.content_type,
            "Metadata": self._metadata(obj),
        }
        if self.checksum_mode == "when_supported":
            kwargs["ChecksumSHA256"] = _b64(digest.digest())
        else:
            kwargs["ContentMD5"] = _b64(hashlib.md5(body, usedforsecurity=False).digest())
        if conditional:
            kwargs["IfNoneMatch"] = "*"
        answer = self.client.put_object(**kwargs)
        return WriteResult(outcome, answer.get("ETag"), answer.get("VersionId"))

    def _part_ranges(self, size: int) -> list[tuple[int, int, int]]:
        part_size = max(self.part_size, MIN_PART_SIZE, -(-size // MAX_PARTS))
        return [(n + 1, offset, min(part_size, size - offset)) for n, offset in enumerate(range(0, size, part_size))]

    def _put_multipart(
        self, bucket: str, key: str, obj: StoredObject, *, conditional: bool, outcome: str
    ) -> WriteResult:
        create: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "ContentType": obj.content_type,
            "Metadata": self._metadata(obj),
        }
        if self.checksum_mode == "when_supported":
            create["ChecksumAlgorithm"] = "CRC32"
        try:
            upload_id = self.client.create_multipart_upload(**create)["UploadId"]
            try:
                parts = self._upload_parts(bucket, key, upload_id, obj)
                complete: dict[str, Any] = {
                    "Bucket": bucket,
                    "Key": key,
                    "UploadId": upload_id,
                    "MultipartUpload": {"Parts": parts},
                }
                if conditional:
                    complete["IfNoneMatch"] = "*"
                answer = self.client.complete_multipart_upload(**complete)
            except BaseException:
                self._abort(bucket, key, upload_id)
                raise
        finally:
            self._abort_strays(bucket, key)
        return WriteResult(outcome, answer.get("ETag"), answer.get("VersionId"), multipart=True)

    def _abort_strays(self, bucket: str, key: str) -> None:
        """Abort multipart uploads left in progress at ``key`` by this writer's own retried requests.

        A ``CreateMultipartUpload`` that S3 applied but whose answer was lost (a reset connection)
        is retried by boto3 and starts a second upload: the first one's id never reaches us, and it
        would stay (and be billed) forever. Once our own upload is completed or aborted, any upload
        still in progress at exactly this key is such a stray: keys are unique per task, output
        and request. Best effort: listing needs ``s3:ListBucketMultipartUploads``.
        """
        try:
            answer = self.client.list_multipart_uploads(Bucket=bucket, Prefix=key)
        except Exception as err:
            self._log(
                "warning",
                "Could not list multipart uploads at %s to abort strays (%s); a bucket lifecycle rule "
                "AbortIncompleteMultipartUpload reclaims any left behind.",
                s3_uri(bucket, key),
                err,
            )
            return
        for upload in answer.get("Uploads") or []:
            if upload.get("Key") == key and upload.get("UploadId"):
                uri = s3_uri(bucket, key)
                self._log("warning", "Aborting stray multipart upload %s of %s.", upload["UploadId"], uri)
                self._abort(bucket, key, upload["UploadId"])

    def _upload_parts(self, bucket: str, key: str, upload_id: str, obj: StoredObject) -> list[dict[str, Any]]:
        ranges = self._part_ranges(obj.size)
        if sum(length for _, _, length in ranges) != obj.size:  # pragma: no cover - arithmetic guard
            raise S3WriteError(f"Internal error splitting {obj.size} bytes into parts")

        def upload(number: int, offset: int, length: int) -> dict[str, Any]:
            kwargs: dict[str, Any] = {
                "Bucket": bucket,
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
                "ContentLength": length,
            }
            if self.checksum_mode == "when_supported":
                kwargs["ChecksumAlgorithm"] = "CRC32"
            else:
                kwargs["ContentMD5"] = _b64(_hash_range(obj.spool, offset, length, "md5"))
            kwargs["Body"] = obj.spool.open_range(offset, length)
            answer = self.client.upload_part(**kwargs)
            part = {"PartNumber": number, "ETag": answer["ETag"]}
            if answer.get("ChecksumCRC32"):
                part["ChecksumCRC32"] = answer["ChecksumCRC32"]
            return part

        workers = max(1, min(self.max_concurrency, len(ranges)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segmind-s3-part") as pool:
            futures: list[Future[dict[str, Any]]] = [pool.submit(upload, *r) for r in ranges]
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            wait(futures)
            for future in futures:
                if not future.cancelled() and future.exception() is not None:
                    raise future.exception()  # type: ignore[misc]
            return [future.result() for future in futures]

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as err:
            self._log(
                "error",
                "Could not abort multipart upload %s of %s (%s): add a lifecycle rule "
                "AbortIncompleteMultipartUpload to the bucket to reclaim it.",
                upload_id,
                s3_uri(bucket, key),
                err,
            )

    def _log(self, level: str, message: str, *args: Any) -> None:
        if self.log is not None:
            method: Callable[..., None] = getattr(self.log, level)
            method(message, *args)


# --------------------------------------------------------------------------------------------
# The client and the writer's options
# --------------------------------------------------------------------------------------------


def check_writer_options(
    *,
    checksum_mode: str,
    conflict_check: str,
    replace: bool,
    multipart_threshold: Any,
    part_size: Any,
    max_concurrency: Any,
) -> None:
    """Refuse options S3 or :class:`S3Writer` cannot honour (the operator checks them when the DAG is parsed)."""
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
