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
``presigned`` when the client's real endpoint is AWS S3 itself for its region and ``base64``
otherwise (see :meth:`S3ImageInputs._auto_transport`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.protocol.image_input import (
    GENERIC_CONTENT_TYPES,
    IMAGE_ALLOWED,
    IMAGE_TRANSPORTS,
    INPUT_IMAGE_TYPES,
    MAX_INPUT_IMAGE_BYTES,
    is_aws_s3_endpoint,
    is_s3_uri,
    parse_s3_uri,
    s3_uri_problem,
)
from airflow_provider_segmind.protocol.params import invalid_parameters
from airflow_provider_segmind.utils.media_policy import sniff_media_type

if TYPE_CHECKING:
    import logging

#: What an ``s3://`` input under another name than ``image`` accepts, for error messages.
MEDIA_INPUT_ALLOWED: Final = (
    "s3://bucket/key of a JPEG, PNG or WebP object of at most 10 MiB, or a value the model takes as it is "
    "(a URL, base64 data)"
)
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


def allowed_for(field: str) -> str:
    """The allowed values an error about the input ``field`` (``image``, ``images[1]``...) names."""
    return IMAGE_ALLOWED if field == "image" else MEDIA_INPUT_ALLOWED


def _bad(problem: str, field: str = "image") -> SegmindInvalidParametersError:
    return invalid_parameters([(field, problem, allowed_for(field))])


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
        from airflow_provider_segmind.utils.presigning import sigv4_client

        return sigv4_client(self.hook)

    def _aws_reference_endpoint(self) -> str | None:
        """AWS's own S3 endpoint for the client's region and settings: the one botocore resolves when every
        configured endpoint (connection, ``service_config``, ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``,
        the shared config file) is ignored. A throwaway client with placeholder keys: no network call,
        no credential lookup; ``None`` if it cannot be built."""
        try:
            import boto3
            from botocore.config import Config

            meta = self.client.meta
            config = meta.config.merge(Config(ignore_configured_endpoint_urls=True))
            reference = boto3.session.Session().client(
                "s3",
                region_name=meta.region_name,
                config=config,
                aws_access_key_id="unused",
                aws_secret_access_key="unused",  # noqa: S106 (never used to sign: no call is made)
            )
            return str(reference.meta.endpoint_url)
        except Exception as err:  # a botocore without that option, an odd config: the patterns decide
            self.log.debug("Cannot resolve AWS's own S3 endpoint for comparison: %s", err)
            return None

    @cached_property
    def _auto_transport(self) -> str:
        """``auto``: ``presigned`` when the client's real endpoint is AWS S3 itself for its region, else ``base64``.

        Decided from ``client.meta.endpoint_url``, the endpoint the client really calls, however it was
        set (the connection's ``endpoint_url``, ``service_config.s3.endpoint_url``, ``AWS_ENDPOINT_URL_S3``
        or ``AWS_ENDPOINT_URL``): a presigned URL carrying a private host name (MinIO, a VPC endpoint,
        an internal proxy) would be sent to Segmind, which cannot fetch it, and would name that host.
        """
        meta = self.client.meta
        endpoint, region = meta.endpoint_url, meta.region_name
        aws = is_aws_s3_endpoint(endpoint, region, reference=self._aws_reference_endpoint())
        chosen = "presigned" if aws else "base64"
        host = urlsplit(str(endpoint or "")).netloc.rpartition("@")[2] or "?"
        self.log.info(
            "image_transport='auto': the S3 endpoint %s is %s, so inputs are sent as %s.",
            host,
            f"AWS S3 for {region}" if aws else "not AWS S3 itself (Segmind may not reach it)",
            "presigned URLs" if aws else "base64",
        )
        return chosen

    def _chosen_transport(self) -> str:
        return self.transport if self.transport != "auto" else self._auto_transport

    def _call(self, what: str, uri: str, call: Any, *, field: str = "image", **kwargs: Any) -> Any:
        """One S3 call; a missing or forbidden object is the input ``field``'s fault, the rest retryable."""
        try:
            return call(**kwargs)
        except Exception as err:
            code = _error_code(err)
            if code in _MISSING_CODES:
                raise _bad(f"{uri} does not exist (S3 {what}: {code})", field) from None
            if code in _DENIED_CODES:
                raise _bad(
                    f"{uri} cannot be read with connection {self.aws_conn_id!r} (S3 {what}: {code})", field
                ) from None
            if code in ("412", "PreconditionFailed"):
                raise AirflowException(f"{uri} changed while it was being read (S3 {what}: {code}); retry") from None
            raise AirflowException(f"Cannot read input image {uri} (S3 {what}): {err}") from err

    def inspect(self, uri: str, field: str = "image") -> S3ImageInput:
        """Check the object behind ``uri`` (exists, size, type) without downloading it; raise naming ``field``."""
        problem = s3_uri_problem(uri)
        if problem is not None:
            raise _bad(problem, field)
        bucket, key = parse_s3_uri(uri)
        head = self._call("HeadObject", uri, self.client.head_object, field=field, Bucket=bucket, Key=key)
        size = int(head.get("ContentLength") or 0)
        declared = _media_type(head.get("ContentType"))
        etag = str(head.get("ETag") or "")
        version = head.get("VersionId")
        version_id = str(version) if version and version != "null" else None
        if size <= 0:
            raise _bad(f"{uri} is empty (0 bytes)", field)
        if size > MAX_INPUT_IMAGE_BYTES:
            raise _bad(f"{uri} is {size:,} bytes, over the limit of {MAX_INPUT_IMAGE_BYTES:,}", field)
        if declared not in GENERIC_CONTENT_TYPES and declared not in INPUT_IMAGE_TYPES:
            raise _bad(f"{uri} has Content-Type {declared!r}, not one of {', '.join(INPUT_IMAGE_TYPES)}", field)
        first = self._call(
            "GetObject",
            uri,
            self.client.get_object,
            field=field,
            **self._get_args(bucket, key, etag, version_id),
            Range=f"bytes=0-{SNIFF_BYTES - 1}",
        )
        sniffed = sniff_media_type(first["Body"].read(SNIFF_BYTES))
        if sniffed not in INPUT_IMAGE_TYPES:
            what = f"a {sniffed} file" if sniffed else "not an image"
            raise _bad(
                f"{uri} is {what} (declared {declared or 'no Content-Type'}); allowed: {', '.join(INPUT_IMAGE_TYPES)}",
                field,
            )
        if declared not in GENERIC_CONTENT_TYPES and declared != sniffed:
            raise _bad(f"{uri} declares Content-Type {declared!r} but its bytes are {sniffed}", field)
        found = S3ImageInput(uri.strip(), bucket, key, etag, version_id, size, sniffed, self._chosen_transport())
        self.log.info(
            "Input %s %s: %s, %d bytes, sent as %s.",
            field,
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


def s3_inputs_of(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every ``s3://`` input of a body, ``(field, URI)``: a top-level value, or an item of a top-level
    list (field ``name[i]``). Any name counts (``image``, ``input_image``, ``mask``...)."""
    found: list[tuple[str, str]] = []
    for name, value in params.items():
        if is_s3_uri(value):
            found.append((str(name), value))
        elif isinstance(value, (list, tuple)):
            found += [(f"{name}[{index}]", item) for index, item in enumerate(value) if is_s3_uri(item)]
    return found


def replace_s3_values(params: Mapping[str, Any], replace: Callable[[str, str], str]) -> dict[str, Any]:
    """The body with each ``s3://`` input (as :func:`s3_inputs_of` finds them) replaced by
    ``replace(field, uri)``; everything else, and the order of keys and items, as it was."""
    out: dict[str, Any] = {}
    for name, value in params.items():
        if is_s3_uri(value):
            out[name] = replace(str(name), value)
        elif isinstance(value, (list, tuple)) and any(is_s3_uri(item) for item in value):
            out[name] = [
                replace(f"{name}[{index}]", item) if is_s3_uri(item) else item for index, item in enumerate(value)
            ]
        else:
            out[name] = value
    return out
