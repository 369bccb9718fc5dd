"""The emulator's image-to-image input: the ``image`` of a request, fetched or decoded, checked, reduced to a thumbnail.

What the real API is assumed to do, and the sources:

- ``image`` is a URL or base64 image data (raw, as Segmind's own examples send it, or a
  ``data:image/...;base64,`` URL as Segmind Storage takes them): the image-converter and img2img API
  pages and docs.segmind.com/api-reference/segmind-storage (quoted in
  :mod:`airflow_provider_segmind.protocol.image_input`). For SD3 Large this is inferred [inf].
- An input that cannot be read is refused at submit with a 400 and a JSON ``{"error": ...}`` (the
  error body of docs.segmind.com/api-reference), and is not billed (only a 200 is billed: its
  status codes). The exact wording Segmind uses is not documented: ours names the field and the reason.
- Emulator limits, not Segmind's: URLs are fetched only from loopback hosts (the emulator must never
  become a way to reach other machines), over http(s), without any of the request's headers (the
  API key never goes to a media host), within :data:`FETCH_TIMEOUT_SECONDS`; at most
  :data:`~airflow_provider_segmind.protocol.image_input.MAX_INPUT_IMAGE_BYTES` bytes; JPEG, PNG or
  WebP only.

The image is reduced to a small RGB thumbnail (PNG bytes), which becomes part of the output's
:class:`~airflow_provider_segmind.emulator.images.ImageSpec`: the generated image is painted over the
input's pixels, so a test can tell which input an output came from.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
from io import BytesIO
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from airflow_provider_segmind.emulator.images import PILLOW_MISSING, PillowMissingError
from airflow_provider_segmind.protocol.image_input import MAX_INPUT_IMAGE_BYTES

FETCH_TIMEOUT_SECONDS: Final = 10.0
#: The thumbnail's longest side: enough to carry the input's colours and layout into the output.
THUMBNAIL_SIDE: Final = 96
_FORMATS: Final = frozenset({"JPEG", "PNG", "WEBP"})


class InputImageError(ValueError):
    """The request's ``image`` cannot be used; the message is the 400's error text."""


def _refuse(reason: str) -> InputImageError:
    return InputImageError(f"Invalid input image in 'image': {reason}")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _fetch(url: str) -> bytes:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _is_loopback(host):
        raise _refuse(f"the emulator fetches input URLs from loopback hosts only, not {host or url!r}")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    try:
        # A fresh session with no default headers: nothing of the caller's request (its key) is forwarded.
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as response:
            if response.status != 200:
                raise _refuse(f"fetching the URL answered HTTP {response.status}")
            data = await response.content.read(MAX_INPUT_IMAGE_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as err:
        raise _refuse(f"the URL could not be fetched ({type(err).__name__})") from None
    return data


def _decode(text: str) -> bytes:
    payload = text.strip()
    if payload.startswith("data:"):
        header, _, payload = payload.partition(",")
        if not header.endswith(";base64"):
            raise _refuse("a data: URL must be base64-encoded")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("it is neither an http(s) URL nor valid base64 image data") from None


def _thumbnail(data: bytes) -> bytes:
    """The image as a small RGB PNG; raises when the bytes are not a JPEG, PNG or WebP image."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise PillowMissingError(PILLOW_MISSING) from err
    try:
        with Image.open(BytesIO(data)) as image:
            if image.format not in _FORMATS:
                raise _refuse(f"it is a {image.format} image; allowed: JPEG, PNG, WebP")
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise _refuse("the data is not a readable JPEG, PNG or WebP image") from None
    rgb.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue()


async def load_input_image(value: object) -> bytes:
    """The thumbnail of the request's ``image`` (fetched or decoded); :class:`InputImageError` when unusable."""
    if not isinstance(value, str) or not value.strip():
        raise _refuse("it must be a URL or base64 image data")
    if value.startswith(("http://", "https://")):
        data = await _fetch(value)
    elif "://" in value[:16]:
        raise _refuse(f"unsupported URL scheme {value.split('://', 1)[0]!r}; allowed: http, https, or base64 data")
    else:
        data = _decode(value)
    if not data:
        raise _refuse("the image is empty")
    if len(data) > MAX_INPUT_IMAGE_BYTES:
        raise _refuse(f"the image is larger than {MAX_INPUT_IMAGE_BYTES:,} bytes")
    return await asyncio.to_thread(_thumbnail, data)
