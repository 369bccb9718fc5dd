"""An ``s3://bucket/key`` input image, checked and turned into what Segmind is sent (a presigned URL or base64).

Why this exists: marketing pipelines start from product photos already in S3, and an
image-to-image request needs the image where Segmind can read it. The object is read through the
Amazon provider's ``S3Hook`` (its connection, credentials and endpoint; the boto3 client it
builds), in two steps:

1. :meth:`S3ImageInputs.inspect`, before anything is billed: ``HeadObject`` (it exists, its size,
   its declared Content-Type, its ETag and version) and a ranged ``GetObject`` of its first bytes
   (what it really is). A bad object raises :class:`SegmindInvalidParametersError` naming the
   ``image`` field and the allowed values, so the task fails without retries and without a submit.
2. :meth:`S3ImageInputs.wire_value`, only when a body is sent (or searched for in the request
   history): a presigned ``GetObject`` URL valid for ``url_expiry`` seconds, or the object's bytes
   as base64 (read with ``If-Match`` on the inspected ETag, so what was checked is what is sent).

Where the value goes: into the request body sent to Segmind and nowhere else. The operator's
summary (XCom), its trigger's kwargs, its request record and its logs keep the ``s3://`` URI; the
record's fingerprint uses :meth:`S3ImageInput.identity` (the URI, ETag, version and transport),
which is the same on every try although a presigned URL is signed anew each time (the request
history match compares presigned URLs without their signature:
:func:`~airflow_provider_segmind.protocol.image_input.same_presigned_object`).

Transport (``image_transport``; Segmind takes a URL or base64, sources in
:mod:`airflow_provider_segmind.protocol.image_input`): ``presigned`` keeps the request small but
needs Segmind to reach the bucket's endpoint; ``base64`` works with any endpoint (MinIO, a VPC
endpoint, moto) at the cost of a body about 4/3 of the image; ``auto`` (default) picks
``presigned`` for AWS S3 itself (the connection sets no ``endpoint_url``) and ``base64`` otherwise.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.protocol.image_input import (
    GENERIC_CONTENT_TYPES,
    IMAGE_ALLOWED,
    IMAGE_TRANSPORTS,
    INPUT_IMAGE_TYPES,
    MAX_INPUT_IMAGE_BYTES,
    is_s3_uri,
    parse_s3_uri,
    s3_uri_problem,
)
from airflow_provider_segmind.protocol.params import invalid_parameters
from airflow_provider_segmind.transfers._media_policy import sniff_media_type

if TYPE_CHECKING:
    import logging

#: Bytes read to tell what an object really is (the longest magic number checked is 12 bytes).
SNIFF_BYTES: Final = 32
#: A presigned URL's default lifetime: long enough for a queued job to start, short enough to be useless later.
DEFAULT_URL_EXPIRY: Final = 900
#: The longest lifetime we allow (SigV4 presigned URLs may live 7 days; an input needs minutes).
MAX_URL_EXPIRY: Final = 3600
#: S3 error codes meaning "no such object" (``HeadObject`` has no body, so only the status says it).
_MISSING_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
_DENIED_CODES: Final = frozenset({"403", "AccessDenied", "Forbidden"})
_ALIASES: Final = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


@dataclass(frozen=True)
class S3ImageInput:
    """One inspected S3 object: what was checked, and how it will be sent."""

    uri: str
    bucket: str
    key: str
    etag: str
    version_id: str | None
    size: int
    content_type: str
    transport: str

    @property
    def identity(self) -> str:
        """What the request record's fingerprint holds for this input: stable across tries, changed by a new object."""
        return f"{self.uri}#etag={self.etag};version={self.version_id or ''};transport={self.transport}"


def check_transport(transport: str, url_expiry: float) -> None:
    """Refuse an unknown ``image_transport`` or a bad ``presigned_url_expiry`` when the DAG is parsed."""
    if transport not in IMAGE_TRANSPORTS:
        raise ValueError(
            f"Invalid parameter 'image_transport': got {transport!r}. Allowed: {', '.join(IMAGE_TRANSPORTS)}."
        )
    if isinstance(url_expiry, bool) or not 60 <= url_expiry <= MAX_URL_EXPIRY:
        raise ValueError(
            f"Invalid parameter 'presigned_url_expiry': got {url_expiry!r}. Allowed: 60 to {MAX_URL_EXPIRY} seconds."
        )


def _bad(problem: str) -> SegmindInvalidParametersError:
    return invalid_parameters([("image", problem, IMAGE_ALLOWED)])


def _error_code(err: BaseException) -> str:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return str(code or status or "")
    return ""


def _media_type(value: Any) -> str:
    text = str(value or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(text, text)


class S3ImageInputs:
    """Inspects ``s3://`` inputs and produces their wire value, through one ``S3Hook`` (one per task try)."""

    def __init__(self, aws_conn_id: str, transport: str, url_expiry: float, log: logging.Logger | Any) -> None:
        self.aws_conn_id = aws_conn_id
        self.transport = transport
        self.url_expiry = url_expiry
        self.log = log
        self._wire: dict[str, str] = {}

    @cached_property
    def hook(self) -> Any:
        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        except ImportError as err:
            raise AirflowException(
                "An s3:// image needs the Amazon provider: pip install 'airflow-provider-segmind[amazon]'"
            ) from err
        return S3Hook(aws_conn_id=self.aws_conn_id)

    @cached_property
    def client(self) -> Any:
        """The hook's client (its credentials, region, endpoint and config), signing with SigV4: for
        presigned URLs botocore may otherwise use SigV2 (``AWSAccessKeyId``/``Signature``, seen with
        boto3 1.44 on a custom endpoint), which S3 no longer accepts for buckets created since 2020."""
        from airflow_provider_segmind.transfers._s3 import sigv4_client

        return sigv4_client(self.hook)

    def _chosen_transport(self) -> str:
        if self.transport != "auto":
            return self.transport
        endpoint = getattr(self.hook.conn_config, "endpoint_url", None)
        # AWS S3 itself is reachable by Segmind; a custom endpoint (MinIO, VPC, moto) may not be.
        return "base64" if endpoint else "presigned"

    def _call(self, what: str, uri: str, call: Any, **kwargs: Any) -> Any:
        """One S3 call; a missing or forbidden object is the ``image`` field's fault, the rest retryable."""
        try:
            return call(**kwargs)
        except Exception as err:
            code = _error_code(err)
            if code in _MISSING_CODES:
                raise _bad(f"{uri} does not exist (S3 {what}: {code})") from None
            if code in _DENIED_CODES:
                raise _bad(f"{uri} cannot be read with connection {self.aws_conn_id!r} (S3 {what}: {code})") from None
            if code in ("412", "PreconditionFailed"):
                raise AirflowException(f"{uri} changed while it was being read (S3 {what}: {code}); retry") from None
            raise AirflowException(f"Cannot read input image {uri} (S3 {what}): {err}") from err

    def inspect(self, uri: str) -> S3ImageInput:
        """Check the object behind ``uri`` (exists, size, type) without downloading it; raise naming ``image``."""
        problem = s3_uri_problem(uri)
        if problem is not None:
            raise _bad(problem)
        bucket, key = parse_s3_uri(uri)
        head = self._call("HeadObject", uri, self.client.head_object, Bucket=bucket, Key=key)
        size = int(head.get("ContentLength") or 0)
        declared = _media_type(head.get("ContentType"))
        etag = str(head.get("ETag") or "")
        version = head.get("VersionId")
        version_id = str(version) if version and version != "null" else None
        if size <= 0:
            raise _bad(f"{uri} is empty (0 bytes)")
        if size > MAX_INPUT_IMAGE_BYTES:
            raise _bad(f"{uri} is {size:,} bytes, over the limit of {MAX_INPUT_IMAGE_BYTES:,}")
        if declared not in GENERIC_CONTENT_TYPES and declared not in INPUT_IMAGE_TYPES:
            raise _bad(f"{uri} has Content-Type {declared!r}, not one of {', '.join(INPUT_IMAGE_TYPES)}")
        first = self._call(
            "GetObject",
            uri,
            self.client.get_object,
            **self._get_args(bucket, key, etag, version_id),
            Range=f"bytes=0-{SNIFF_BYTES - 1}",
        )
        sniffed = sniff_media_type(first["Body"].read(SNIFF_BYTES))
        if sniffed not in INPUT_IMAGE_TYPES:
            what = f"a {sniffed} file" if sniffed else "not an image"
            raise _bad(
                f"{uri} is {what} (declared {declared or 'no Content-Type'}); allowed: {', '.join(INPUT_IMAGE_TYPES)}"
            )
        if declared not in GENERIC_CONTENT_TYPES and declared != sniffed:
            raise _bad(f"{uri} declares Content-Type {declared!r} but its bytes are {sniffed}")
        found = S3ImageInput(uri.strip(), bucket, key, etag, version_id, size, sniffed, self._chosen_transport())
        self.log.info(
            "Input image %s: %s, %d bytes, sent as %s.",
            found.uri,
            found.content_type,
            found.size,
            "a presigned URL" if found.transport == "presigned" else "base64",
        )
        return found

    @staticmethod
    def _get_args(bucket: str, key: str, etag: str, version_id: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if etag:
            args["IfMatch"] = etag
        if version_id:
            args["VersionId"] = version_id
        return args

    def wire_value(self, image: S3ImageInput) -> str:
        """The ``image`` value sent to Segmind: made once per try, then reused by its resends and history searches."""
        cached = self._wire.get(image.identity)
        if cached is not None:
            return cached
        if image.transport == "presigned":
            params: dict[str, Any] = {"Bucket": image.bucket, "Key": image.key}
            if image.version_id:
                params["VersionId"] = image.version_id  # the inspected version, not whatever is there later
            value = self._call(
                "presign",
                image.uri,
                self.client.generate_presigned_url,
                ClientMethod="get_object",
                Params=params,
                ExpiresIn=int(self.url_expiry),
            )
        else:
            answer = self._call(
                "GetObject",
                image.uri,
                self.client.get_object,
                **self._get_args(image.bucket, image.key, image.etag, image.version_id),
            )
            data = answer["Body"].read(MAX_INPUT_IMAGE_BYTES + 1)
            if len(data) > MAX_INPUT_IMAGE_BYTES or sniff_media_type(data[:SNIFF_BYTES]) != image.content_type:
                raise AirflowException(f"{image.uri} changed after it was checked; retry")
            value = base64.b64encode(data).decode("ascii")
        self._wire[image.identity] = str(value)
        return str(value)


def s3_image_of(params: dict[str, Any]) -> str | None:
    """The body's ``image`` when it is an ``s3://`` URI (the only field resolved from S3), else ``None``."""
    image = params.get("image")
    return image if is_s3_uri(image) else None
