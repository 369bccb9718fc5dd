"""Deterministic, human-readable stand-ins for generated images.

A DAG author looking at the emulator's output must be able to tell which task made which file, so
every image shows its own prompt in large type, and a footer with the model, seed and aspect ratio.
The background colours come from a hash of (prompt, seed): the same request always yields the same
bytes (tests can compare them), different prompts yield visibly different images.

Pillow is imported only when an image is rendered, so importing the emulator stays cheap and the
rest of the provider never needs Pillow.
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import random
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_segmind.protocol.params import SD3_SEED_MAX, SD3_SIZES

if TYPE_CHECKING:
    from PIL import Image, ImageDraw, ImageFont

PILLOW_MISSING: Final = (
    "The Segmind emulator renders images with Pillow, which is not installed: "
    "pip install 'airflow-provider-segmind[emulator]'"
)
#: Output formats the emulator can produce, with their media types.
CONTENT_TYPES: Final[Mapping[str, str]] = {"jpeg": "image/jpeg", "png": "image/png"}
DEFAULT_SIZE: Final = (1024, 1024)
#: Generic models may ask for any size; keep renders cheap and sane.
MIN_SIDE, MAX_SIDE = 64, 2048
#: Prompts can be 10,000 characters; drawing that many is slow and unreadable anyway.
MAX_DRAWN_CHARS: Final = 600
JPEG_QUALITY: Final = 88
#: zlib level 1: a 1024x1024 PNG encodes in a few ms instead of ~100 ms at the default level.
PNG_COMPRESS_LEVEL: Final = 1


class PillowMissingError(RuntimeError):
    """Raised when an image must be rendered but Pillow is not installed."""


@dataclass(frozen=True)
class ImageSpec:
    """Everything that determines an emulated image's bytes (hashable: it is the render cache key)."""

    model: str
    prompt: str
    negative_prompt: str
    aspect_ratio: str
    width: int
    height: int
    seed: int
    output_format: str
    details: str = ""
    #: image-to-image: the input's thumbnail (PNG bytes, see ``input_image.py``) the output is painted over.
    source: bytes = b""
    #: image-to-image: how far the output departs from ``source`` (0 = the input shows through most).
    strength: float = 0.0

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.output_format]


def derive_seed(params: Mapping[str, Any]) -> int:
    """The request's ``seed`` if it gave a valid one, else one derived from its prompt (or params).

    Derived, not random, so that the same request renders the same image across runs.
    """
    seed = params.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SD3_SEED_MAX:
        return seed
    basis = params.get("prompt")
    if not isinstance(basis, str):
        basis = json.dumps(params, sort_keys=True, default=str)
    digest = hashlib.sha256(basis.encode("utf-8", "replace")).digest()
    return int.from_bytes(digest[:8], "big") % (SD3_SEED_MAX + 1)


def _size_for(params: Mapping[str, Any]) -> tuple[str, int, int]:
    ratio = params.get("aspect_ratio")
    if isinstance(ratio, str) and ratio in SD3_SIZES:
        width, height = SD3_SIZES[ratio]
        return ratio, width, height
    asked_width, asked_height = _side(params.get("width")), _side(params.get("height"))
    if asked_width is not None and asked_height is not None:
        return f"{asked_width}x{asked_height}", asked_width, asked_height
    return "1:1", *DEFAULT_SIZE


def _side(value: Any) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and MIN_SIDE <= value <= MAX_SIDE
    return int(value) if ok else None


def _format_for(params: Mapping[str, Any]) -> str:
    fmt = str(params.get("output_format") or "jpeg").lower()
    return {"jpg": "jpeg"}.get(fmt, fmt) if fmt in ("jpeg", "jpg", "png") else "jpeg"


def image_spec(model: str, params: Mapping[str, Any], seed: int, source: bytes = b"") -> ImageSpec:
    """Describe the image a model would return for ``params``.

    SD3's parameters map directly; a generic model gets its ``prompt`` (if any), its
    ``width``/``height`` or ``aspect_ratio``, and a one-line summary of its other parameters.
    ``source``: an image-to-image input's thumbnail; the output is painted over it, ``strength``
    (default 0.8) deciding how much of it shows through.
    """
    ratio, width, height = _size_for(params)
    prompt = params.get("prompt")
    negative = params.get("negative_prompt")
    # The input image itself (a URL or megabytes of base64) is not drawn as text: its pixels are used.
    shown = {k: v for k, v in params.items() if k not in ("prompt", "negative_prompt", "base64", "image")}
    strength = params.get("strength")
    if not (isinstance(strength, (int, float)) and not isinstance(strength, bool) and 0 <= strength <= 1):
        strength = 0.8
    details = json.dumps(shown, sort_keys=True, default=str) if shown else ""
    return ImageSpec(
        model=model,
        prompt=prompt if isinstance(prompt, str) else "",
        negative_prompt=negative if isinstance(negative, str) else "",
        aspect_ratio=ratio,
        width=width,
        height=height,
        seed=seed,
        output_format=_format_for(params),
        details=details,
        source=source,
        strength=float(strength) if source else 0.0,
    )


def _printable(text: str, limit: int) -> str:
    """ASCII the bundled font can draw: accents folded, other characters as '?', length capped."""
    folded = unicodedata.normalize("NFKD", text)
    chars = (c for c in folded if not unicodedata.combining(c))
    clean = "".join(c if 32 <= ord(c) < 127 else (" " if c.isspace() else "?") for c in chars)
    clean = " ".join(clean.split())
    return clean if len(clean) <= limit else clean[: limit - 3].rstrip() + "..."


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError):  # Pillow built without FreeType: tiny bitmap font, still legible
        return ImageFont.load_default()


@lru_cache(maxsize=64)
def _char_widths(size: int) -> dict[str, float]:
    """Advance width of every printable ASCII character at ``size``.

    Summing these is ~100x faster than asking FreeType for each candidate line, and the text is
    ASCII by then (see :func:`_printable`); ignoring kerning costs a pixel or two per line.
    """
    font = _font(size)
    return {chr(code): float(font.getlength(chr(code))) for code in range(32, 127)}


def _text_width(widths: Mapping[str, float], text: str) -> float:
    fallback = widths["M"]
    return sum(widths.get(c, fallback) for c in text)


def _wrap(text: str, size: int, max_width: float) -> list[str]:
    """Greedy word wrap at font ``size``; words wider than a line are split by characters."""
    widths = _char_widths(size)
    space = widths[" "]
    lines: list[str] = []
    current, current_width = "", 0.0
    for word in text.split(" "):
        word_width = _text_width(widths, word)
        if current and current_width + space + word_width <= max_width:
            current, current_width = f"{current} {word}", current_width + space + word_width
            continue
        if not current and word_width <= max_width:
            current, current_width = word, word_width
            continue
        if current:
            lines.append(current)
        current, current_width = "", 0.0
        for char in word:  # only reached for a word longer than a whole line
            char_width = widths.get(char, widths["M"])
            if current and current_width + char_width > max_width:
                lines.append(current)
                current, current_width = "", 0.0
            current, current_width = current + char, current_width + char_width
    if current:
        lines.append(current)
    return lines or [""]


def _fit_text(
    text: str, max_width: float, max_height: float, start_size: int
) -> tuple[ImageFont.FreeTypeFont | ImageFont.ImageFont, list[str], int]:
    """The largest font size (from ``start_size`` down) at which ``text`` wraps into the box."""
    size = start_size
    while True:
        lines = _wrap(text, size, max_width)
        line_height = int(size * 1.25)
        if len(lines) * line_height <= max_height or size <= 12:
            return _font(size), lines, line_height
        size = max(12, int(size * 0.88))


def _palette(spec: ImageSpec) -> list[tuple[int, int, int]]:
    digest = hashlib.sha256(f"{spec.prompt}\0{spec.seed}".encode("utf-8", "replace")).digest()
    base_hue = digest[0] / 255
    colours = []
    for i in range(4):
        hue = (base_hue + i * (0.08 + digest[1 + i] / 255 * 0.25)) % 1.0
        saturation = 0.45 + digest[5 + i] / 255 * 0.35
        value = 0.70 + digest[9 + i] / 255 * 0.25
        red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
        colours.append((int(red * 255), int(green * 255), int(blue * 255)))
    return colours


def _background(spec: ImageSpec) -> Image.Image:
    """A soft four-corner gradient (a 2x2 image scaled up) with translucent circles on top."""
    from PIL import Image, ImageDraw

    colours = _palette(spec)
    corners = Image.new("RGB", (2, 2))
    corners.putdata(colours)
    image = corners.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image, "RGBA")
    rng = random.Random(f"{spec.prompt}\0{spec.negative_prompt}\0{spec.seed}")
    short = min(spec.width, spec.height)
    for _ in range(7):
        radius = rng.uniform(0.08, 0.30) * short
        x, y = rng.uniform(0, spec.width), rng.uniform(0, spec.height)
        red, green, blue = rng.choice(colours)
        tint = (min(255, red + 40), min(255, green + 40), min(255, blue + 40), rng.randint(50, 110))
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=tint)
    if spec.source:
        image = _over_source(image, spec)
    return image


def _over_source(generated: Image.Image, spec: ImageSpec) -> Image.Image:
    """The input's pixels (scaled to cover the output) blended with the generated background.

    At ``strength`` 0 the input shows through at 90 %, at 1 at 40 %: the output always depends on it.
    """
    from PIL import Image, ImageOps

    with Image.open(BytesIO(spec.source)) as opened:
        source = ImageOps.fit(opened.convert("RGB"), (spec.width, spec.height), Image.Resampling.BILINEAR)
    return Image.blend(source, generated, alpha=0.1 + 0.5 * spec.strength)


def _draw_panel(image: Image.Image, draw: ImageDraw.ImageDraw, spec: ImageSpec) -> None:
    """The prompt, large, on a dark translucent panel; the negative prompt and details below it."""
    width, height = image.size
    margin = int(width * 0.06)
    padding = int(min(width, height) * 0.035)
    inner_width = width - 2 * margin - 2 * padding
    prompt = _printable(spec.prompt, MAX_DRAWN_CHARS) if spec.prompt else "(no prompt)"
    font, lines, line_height = _fit_text(prompt, inner_width, height * 0.55, max(16, min(width // 10, height // 8)))
    small_size = max(12, min(width, height) // 42)
    small, small_height = _font(small_size), int(small_size * 1.3)
    extra_lines: list[str] = []
    if spec.negative_prompt:
        extra_lines += _wrap("Negative: " + _printable(spec.negative_prompt, 160), small_size, inner_width)[:2]
    if spec.details:
        extra_lines += _wrap("Params: " + _printable(spec.details, 200), small_size, inner_width)[:2]
    block_height = len(lines) * line_height + (padding // 2 + len(extra_lines) * small_height if extra_lines else 0)
    top = max(margin, (height - block_height) // 2 - padding)
    bottom = min(height - margin, top + block_height + 2 * padding)
    draw.rounded_rectangle((margin, top, width - margin, bottom), radius=padding, fill=(15, 18, 28, 175))
    y = top + padding
    for line in lines:
        draw.text((margin + padding, y), line, font=font, fill=(255, 255, 255))
        y += line_height
    y += padding // 2
    for line in extra_lines:
        draw.text((margin + padding, y), line, font=small, fill=(205, 210, 225))
        y += small_height


def _draw_footer(image: Image.Image, draw: ImageDraw.ImageDraw, spec: ImageSpec) -> None:
    width, height = image.size
    size = max(11, min(width, height) // 48)
    font, bar = _font(size), size * 2
    draw.rectangle((0, height - bar, width, height), fill=(0, 0, 0, 150))
    text = f"{spec.model}  |  seed {spec.seed}  |  {spec.aspect_ratio}  |  Segmind emulator"
    text = _wrap(_printable(text, 300), size, width - bar)[0]
    draw.text((bar // 2, height - bar + bar // 4), text, font=font, fill=(235, 235, 235))


def render_image(spec: ImageSpec) -> bytes:
    """Render ``spec`` to JPEG or PNG bytes. CPU-bound: call it from a thread, not the event loop."""
    try:
        from PIL import ImageDraw
    except ImportError as err:
        raise PillowMissingError(PILLOW_MISSING) from err
    image = _background(spec)
    draw = ImageDraw.Draw(image, "RGBA")
    _draw_panel(image, draw, spec)
    _draw_footer(image, draw, spec)
    out = BytesIO()
    if spec.output_format == "png":
        image.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
