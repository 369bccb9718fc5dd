"""Safe S3 keys: the bucket, the key template and its placeholders, each value encoded as one segment.

A key template (``s3_key``) is checked before anything is written, whatever its values will be:
no ``..``/``.`` segments, leading ``/``, empty segments, backslashes or control characters, and
only the placeholders in :data:`KEY_FIELDS`. Each value is percent-encoded into exactly one path
segment, so no run id or request id can add a ``/`` or climb out of the prefix, and distinct
values never map to one key. :func:`destination_prefix` names the part every run of a DAG
writes under (the asset's path).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from airflow_provider_segmind.exceptions import UnsafeS3KeyError

#: The default key: everything that makes a write unique in Airflow, then the output itself.
DEFAULT_KEY_TAIL: Final = "{dag_id}/{run_id}/{task_id}/{map_index}/{request_id}-{index}.{ext}"
DEFAULT_KEY_PREFIX: Final = "segmind/"
DEFAULT_KEY_TEMPLATE: Final = DEFAULT_KEY_PREFIX + DEFAULT_KEY_TAIL
#: Placeholders a key template may use. No try number on purpose: a retry must find its own objects.
KEY_FIELDS: Final = frozenset({"dag_id", "run_id", "task_id", "map_index", "request_id", "index", "ext", "model"})
MANIFEST_SUFFIX: Final = ".manifest.json"
#: The user-metadata name of an object's SHA-256 (hex), written with every object and read back to compare.
SHA256_METADATA: Final = "sha256"
#: Characters kept as they are in a key component; everything else is percent-encoded, so the
#: encoding is injective (distinct run ids can never map to one key) and no value adds a '/'.
_SAFE_COMPONENT_CHARS: Final = "-_.=+:@,~"
_BUCKET: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{1,253}[A-Za-z0-9]")
_MAX_KEY_BYTES: Final = 1024


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def manifest_key(key: str) -> str:
    """Where the manifest of the object at ``key`` goes: right beside it."""
    return key + MANIFEST_SUFFIX


def encode_component(value: Any) -> str:
    """A value as one key segment: percent-encode all but letters, digits and ``-_.=+:@,~``."""
    text = quote(str(value), safe=_SAFE_COMPONENT_CHARS)
    if text in ("", ".", ".."):
        text = text.replace(".", "%2E") or "%00"
    return text


def _unsafe(key: str, reason: str) -> UnsafeS3KeyError:
    return UnsafeS3KeyError(
        f"Unsafe S3 key {key!r}: {reason}. Keys must be relative paths without '.'/'..' segments, a leading '/', "
        "empty segments, backslashes or control characters; nothing was written."
    )


def validate_key(key: Any) -> str:
    """Return ``key`` if it is a safe S3 key, else raise :class:`UnsafeS3KeyError` naming it."""
    if not isinstance(key, str) or not key.strip():
        raise _unsafe(str(key), "it is empty")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in key):
        raise _unsafe(key, "it contains control characters")
    if key.startswith("/"):
        raise _unsafe(key, "it starts with '/'")
    if "\\" in key:
        raise _unsafe(key, "it contains a backslash")
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        raise _unsafe(key, f"it is longer than {_MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in (".", ".."):
            raise _unsafe(key, f"it has a {segment!r} segment")
        if segment == "":
            raise _unsafe(key, "it has an empty segment ('//' or a trailing '/')")
    return key


def validate_bucket(bucket: Any) -> str:
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise UnsafeS3KeyError(
            f"Invalid S3 bucket name {bucket!r}: use the bare bucket name (or s3://bucket), 3-255 letters, digits, "
            "'.', '-' or '_'"
        )
    return bucket


def parse_location(s3_bucket: str | None, s3_key: str | None) -> tuple[str, str]:
    """``(bucket, key template)`` from the operator's ``s3_bucket``/``s3_key`` (``s3://`` URLs accepted).

    ``s3_key`` may be ``None`` (the default layout), a prefix ending in ``/`` (the default layout
    under it), or a full template with ``{placeholders}``.
    """
    bucket = (s3_bucket or "").strip() or None
    template = s3_key if s3_key is None else str(s3_key)
    if bucket is not None and bucket.startswith("s3://"):
        name, _, rest = bucket[5:].partition("/")
        if rest.strip("/"):
            raise UnsafeS3KeyError(
                f"s3_bucket {s3_bucket!r} has a key part; pass the bucket in s3_bucket and the key in s3_key"
            )
        bucket = name
    if template is not None and template.startswith("s3://"):
        name, _, template = template[5:].partition("/")
        if bucket is not None and bucket != name:
            raise UnsafeS3KeyError(f"s3_key {s3_key!r} names bucket {name!r} but s3_bucket is {bucket!r}")
        bucket = name
    if bucket is None:
        raise UnsafeS3KeyError("No S3 bucket: set s3_bucket, or pass s3_key as s3://bucket/key")
    if template is None or template == "":
        template = DEFAULT_KEY_TEMPLATE
    elif template.endswith("/"):
        template = template + DEFAULT_KEY_TAIL
    check_template(template)
    return validate_bucket(bucket), template


def template_fields(template: str) -> set[str]:
    """The placeholders a key template uses (validated: plain names from :data:`KEY_FIELDS`)."""
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise UnsafeS3KeyError(
            f"Invalid S3 key template {template!r}: {err} (write a literal brace as '{{{{')"
        ) from None
    for _, name, _, conversion in parsed:
        if name is None:
            continue
        if name not in KEY_FIELDS or conversion is not None:
            raise UnsafeS3KeyError(
                f"Invalid S3 key template {template!r}: unknown placeholder {{{name}}}. Allowed: "
                + ", ".join(f"{{{f}}}" for f in sorted(KEY_FIELDS))
            )
        names.add(name)
    return names


def check_template(template: str) -> None:
    """Refuse a template that is unsafe whatever its values (``..``, leading ``/``, control chars)."""
    template_fields(template)
    sample = render_key(template, dict.fromkeys(KEY_FIELDS, "x"), validate=False)
    try:
        validate_key(sample)
    except UnsafeS3KeyError as err:
        reason = str(err).split(": ", 1)[1] if ": " in str(err) else str(err)
        raise UnsafeS3KeyError(f"Unsafe S3 key template {template!r} (renders like {sample!r}): {reason}") from None


def destination_prefix(template: str, dag_id: str | None) -> str:
    """The part of a key template that every run of a DAG writes under: the asset's path.

    Literal text and ``{dag_id}`` (when known) up to the last ``/`` before the first run-specific
    placeholder (``{run_id}``, ``{request_id}``, ...): the default layout
    ``segmind/{dag_id}/{run_id}/...`` gives ``segmind/<dag_id>/``. Never raises: a template the
    key rules refuse fails later, at run time, with their message.
    """
    text: list[str] = []
    try:
        for literal, name, _, _ in string.Formatter().parse(template):
            text.append(literal)
            if name is None:
                continue
            if name != "dag_id" or dag_id is None:
                break
            text.append(encode_component(dag_id))
    except ValueError:  # a lone brace: keep the literal text parsed so far
        pass
    joined = "".join(text)
    return joined[: joined.rfind("/") + 1]


def render_key(template: str, values: Mapping[str, Any], *, validate: bool = True) -> str:
    """Fill a template; every value is encoded as one segment (it cannot add ``/`` or ``..``)."""
    template_fields(template)
    encoded = {name: encode_component(values.get(name, "")) for name in KEY_FIELDS}
    try:
        key = template.format_map(encoded)
    except (ValueError, IndexError, KeyError) as err:
        raise UnsafeS3KeyError(f"Invalid S3 key template {template!r}: {err}") from None
    return validate_key(key) if validate else key
