"""Input images given as ``s3://bucket/key``: the URI, the allowed types and size, and a presigned URL's identity.

Pure (no I/O): the operators' validation (:mod:`.params`), the S3 resolver
(``operators/_image_input.py``) and the request-history match (:mod:`.history_search`) share these
rules, so "which object", "which types" and "the same presigned object" are decided in one place.

Sources:

- Segmind's image inputs take either a URL or base64 image data: the image-converter API page
  ("``image_url``: Base64 encoded image data or URL of the image", segmind.com/models/image-converter/api)
  and the img2img API pages, whose own examples send ``"image": image_url_to_base64(...)`` (raw
  base64, no ``data:`` prefix) while the newer page of the same model documents ``image`` as a
  URL (segmind.com/models/sd1.5-img2img/api). SD3 Large's image-to-image page does the same: its
  request sends ``"image": image_url_to_base64(...)`` ("Or use image_file_to_base64"), and the family's
  table (segmind.com/models/stable-diffusion-3-turbo-img2img/api) documents ``image`` as "string
  (uri)" (segmind.com/models/stable-diffusion-3-large-img2img/api).
- Types: JPEG, PNG and WebP are the image types Segmind Storage takes as inputs for its models
  (docs.segmind.com/api-reference/segmind-storage, "Supported formats") and the ones Stability's
  SD3 API takes [inf].
- Size: Segmind publishes no input size limit (segmind.com/models/stable-diffusion-3-large-img2img/api). The limit
  below is **ours**: an input photo larger than 10 MiB (13.4 MB as base64 in a JSON body) is far
  beyond what a 1024-pixel model needs and is refused before anything is billed.
"""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: How the operator hands an S3 object to Segmind (see the operator's ``image_transport``).
IMAGE_TRANSPORTS: Final = ("auto", "presigned", "base64")
#: Media types an input image may have (see the module docstring for the sources).
INPUT_IMAGE_TYPES: Final = ("image/jpeg", "image/png", "image/webp")
#: Our limit on an input image's size (not Segmind's: see the module docstring).
MAX_INPUT_IMAGE_BYTES: Final = 10 * 1024 * 1024
#: Declared content types that say nothing (S3's default for uploads without one): the bytes decide.
GENERIC_CONTENT_TYPES: Final = frozenset({"", "binary/octet-stream", "application/octet-stream"})
#: What the ``image`` field accepts, for error messages.
IMAGE_ALLOWED: Final = (
    "an image URL or base64 string, or s3://bucket/key of a JPEG, PNG or WebP object of at most 10 MiB "
    "(map over several with .expand(image=uris))"
)

_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
#: Query parameters that only sign a presigned URL (SigV4 ``X-Amz-*``, SigV2 ``AWSAccessKeyId``/
#: ``Signature``/``Expires``); everything else (``versionId``...) names the object and is kept.
_SIGNING_PARAMS: Final = frozenset({"awsaccesskeyid", "signature", "expires"})


def is_s3_uri(value: object) -> bool:
    """Whether ``value`` is meant as an S3 object (a string starting with ``s3://``, any case)."""
    return isinstance(value, str) and value.strip().lower().startswith("s3://")


def s3_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not a usable ``s3://bucket/key`` of one object, or ``None`` when it is."""
    text = uri.strip()
    if not text.startswith("s3://"):
        return f"got {uri!r}: the scheme must be lower-case 's3://'"
    bucket, _, key = text[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        return f"got {uri!r}: {bucket!r} is not an S3 bucket name"
    if not key:
        return f"got {uri!r}: no object key after the bucket"
    if key.endswith("/"):
        return f"got {uri!r}: that is a prefix, not an object (map over its objects with .expand(image=uris))"
    if any(ord(c) < 32 for c in key):
        return f"got {uri!r}: the key has control characters"
    return None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of a valid ``s3://bucket/key`` (check it with :func:`s3_uri_problem` first)."""
    problem = s3_uri_problem(uri)
    if problem is not None:
        raise ValueError(problem)
    bucket, _, key = uri.strip()[len("s3://") :].partition("/")
    return bucket, key


def is_presigned_url(value: object) -> bool:
    """Whether ``value`` is a presigned URL (SigV4 ``X-Amz-Signature`` or SigV2 ``Signature`` in its query)."""
    if not isinstance(value, str) or not value.startswith(("https://", "http://")) or "?" not in value:
        return False
    names = {name.lower() for name, _ in parse_qsl(urlsplit(value).query, keep_blank_values=True)}
    return "x-amz-signature" in names or ("signature" in names and "awsaccesskeyid" in names)


def unsigned_url(url: str) -> str:
    """A presigned URL without its signing parameters: the object it names, the same on every signing.

    A presigned URL changes each time it is generated (date, expiry, signature), so two tries that
    sent the same S3 object sent different strings; compared by this form, they are the same input.
    """
    parts = urlsplit(url)
    kept = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if not name.lower().startswith("x-amz-") and name.lower() not in _SIGNING_PARAMS
    ]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(sorted(kept)), ""))


def same_presigned_object(sent: str, recorded: str) -> bool:
    """Whether two presigned URLs name the same object (same host, path and non-signing parameters)."""
    return is_presigned_url(sent) and is_presigned_url(recorded) and unsigned_url(sent) == unsigned_url(recorded)


#: AWS's own S3 endpoints for a region (docs.aws.amazon.com/general/latest/gr/s3.html, "Amazon S3
#: endpoints"): ``s3.<region>.amazonaws.com``, the legacy ``s3-<region>.amazonaws.com``, the dual-stack
#: and FIPS forms, and ``.amazonaws.com.cn`` in the China regions. A VPC interface endpoint
#: (``bucket.vpce-....s3.<region>.vpce.amazonaws.com``) is private and matches none of them.
_AWS_S3_REGIONAL: Final = r"s3(?:-fips)?(?:\.dualstack)?[.-]{region}\.amazonaws\.com(?:\.cn)?"
#: The global endpoint, which serves us-east-1 (and is what botocore picks there).
_AWS_S3_GLOBAL: Final = re.compile(r"s3(?:\.dualstack)?\.amazonaws\.com")
_REGION: Final = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return (parts.hostname or "").lower().rstrip(".") if parts.scheme == "https" else None


def is_aws_s3_endpoint(endpoint_url: str | None, region: str | None, *, reference: str | None = None) -> bool:
    """Whether a client's real S3 endpoint is AWS S3 itself for ``region`` (so Segmind can fetch a
    presigned URL from it), not a private one (MinIO, a VPC endpoint, an internal proxy, moto).

    ``endpoint_url`` is the client's own (``client.meta.endpoint_url``: it reflects the connection's
    ``endpoint_url``, ``service_config.s3.endpoint_url``, ``AWS_ENDPOINT_URL_S3`` and
    ``AWS_ENDPOINT_URL`` alike); ``reference`` is the endpoint botocore resolves for the same region and
    settings when every configured endpoint is ignored, i.e. AWS's own. https only.
    """
    host = _host(endpoint_url)
    if not host:
        return False
    if reference is not None and host == _host(reference):
        return True
    region = (region or "us-east-1").lower()
    if region == "us-east-1" and _AWS_S3_GLOBAL.fullmatch(host):
        return True
    if not _REGION.fullmatch(region):
        return False
    return re.fullmatch(_AWS_S3_REGIONAL.format(region=re.escape(region)), host) is not None
