"""Which parameters a model takes: SD3 Large's are checked in full before any credit is spent.

Segmind hosts hundreds of models whose parameters cannot be known here; only Stable Diffusion 3
Large is validated field by field (sizes, modes, formats, seed range), every bad field reported
in one error, on both of its slugs:

- ``stable-diffusion-3-large-txt2img`` (https://segmind.com/models/stable-diffusion-3-large-txt2img/api):
  its page lists ``prompt``, ``negative_prompt``, ``aspect_ratio``, ``mode``, ``output_format`` and
  ``base64``, and no input image. An ``image`` or ``strength`` sent there may be ignored and billed as
  a text-to-image generation, so they are refused, naming the image-to-image slug.
- ``stable-diffusion-3-large-img2img`` (https://segmind.com/models/stable-diffusion-3-large-img2img/api):
  image-to-image has its own slug. Its page's request sends ``mode: "image-to-image"``, ``image`` (base64
  of a file or of a URL's bytes), ``prompt``, ``strength: 1``, ``output_format: "jpeg"``, ``base64:
  false`` and ``negative_prompt``, and no ``aspect_ratio``. The page's own parameter table was not
  readable in our sources; the family's table, on the SD3 Turbo image-to-image page
  (https://segmind.com/models/stable-diffusion-3-turbo-img2img/api), lists ``image`` required ("string
  (uri)"), ``mode`` required with the one allowed value ``"image-to-image"``, ``strength`` optional (a
  number, default 1), ``output_format`` ``"jpeg"``/``"png"`` (default ``"jpeg"``) and ``base64`` (default
  false). Those are the rules here; ``strength`` is checked to be 0..1 when given and otherwise left to
  Segmind's default.

Other slugs are checked for a safe slug and a JSON-object body only. Sources of the remaining rules
(Stability's SD3 API for the prompt length and the seed range) are next to the constants.

Why not a pydantic model (pydantic comes with Airflow): the errors name each bad field with the
values it allows *in the provider's words* (the other slug to use, the operator to use, "non-blank
string"), which pydantic's messages do not say; the checks that are not shapes (a field that belongs
to the other slug, unknown fields that warn unless ``strict``) would be custom validators, and the
emulator and both transports would import pydantic for a dozen fields. The rules stay plain
functions, every bad field reported in one error.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.protocol.image_input import IMAGE_ALLOWED, is_s3_uri, s3_uri_problem
from airflow_provider_segmind.protocol.text import quoted_list, sentences
from airflow_provider_segmind.protocol.urls import check_model_slug
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_IMG2IMG_MODEL, SD3_LARGE_MODEL

#: Stability's standard SD3 output size per aspect ratio (also what the emulator renders).
SD3_SIZES: Final[Mapping[str, tuple[int, int]]] = {
    "16:9": (1344, 768),
    "1:1": (1024, 1024),
    "21:9": (1536, 640),
    "2:3": (832, 1216),
    "3:2": (1216, 832),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
SD3_ASPECT_RATIOS: Final = tuple(SD3_SIZES)
SD3_MODES: Final = ("text-to-image", "image-to-image")
SD3_OUTPUT_FORMATS: Final = ("jpeg", "png")
SD3_PROMPT_MAX_CHARS: Final = 10_000
SD3_SEED_MAX: Final = 4_294_967_294
#: Segmind's convention for "pick a random seed" (docs.segmind.com/api-reference: ``seed: -1`` means random).
SEED_RANDOM: Final = -1
SD3_DEFAULTS: Final[Mapping[str, Any]] = {
    "negative_prompt": "",
    "aspect_ratio": "1:1",
    "mode": "text-to-image",
    "output_format": "jpeg",
    "base64": False,
}
#: Model families known to take a ``seed`` (0..SD3_SEED_MAX; SD3: the parameter table of
#: segmind.com/models/stable-diffusion-3-large-txt2img/api, and Stability's SD3 API [inf]).
#: Segmind's own default seed is random, so the operators fill one when the user gave none (issue
#: 13): bodies become unique, so a lost submit can be found again in the request history, and every
#: image has a known seed.
SEED_MODEL_PREFIXES: Final = ("stable-diffusion-3",)


def model_takes_seed(model: str) -> bool:
    """Whether ``model`` is known to take a ``seed`` parameter (see :data:`SEED_MODEL_PREFIXES`)."""
    return model.strip().lower().startswith(SEED_MODEL_PREFIXES)


#: The parameters Segmind documents for SD3 Large text-to-image (its page, see the module docstring).
SD3_DOCUMENTED_FIELDS: Final = frozenset({"prompt", *SD3_DEFAULTS})
#: Not on Segmind's pages: ``seed`` comes from Stability's SD3 API (platform.stability.ai/docs/api-reference,
#: 0 to 4294967294). Checked like the documented ones; whether Segmind forwards it is not confirmed.
SD3_STABILITY_FIELDS: Final = frozenset({"seed"})
SD3_FIELDS: Final = SD3_DOCUMENTED_FIELDS | SD3_STABILITY_FIELDS
#: Image-to-image fields that the text-to-image slug's page does not list: refused there (see the module docstring).
SD3_IMAGE_FIELDS: Final = ("image", "strength")

#: The one mode the image-to-image slug takes (the family's table: ``mode`` "Allowed values: image-to-image").
SD3_IMG2IMG_MODES: Final = ("image-to-image",)
#: What the image-to-image slug's request fills when a field is omitted: the values its page sends
#: and the family's table gives as defaults. ``strength`` is left to Segmind (default 1 on the family's table).
SD3_IMG2IMG_DEFAULTS: Final[Mapping[str, Any]] = {
    "mode": "image-to-image",
    "output_format": "jpeg",
    "base64": False,
}
#: The parameters of SD3 Large image-to-image: its page's request and the family's table.
SD3_IMG2IMG_DOCUMENTED_FIELDS: Final = frozenset(
    {"prompt", "negative_prompt", "image", "strength", *SD3_IMG2IMG_DEFAULTS}
)
SD3_IMG2IMG_FIELDS: Final = SD3_IMG2IMG_DOCUMENTED_FIELDS | SD3_STABILITY_FIELDS
#: The SD3 Large slugs validated here, and the fields each is known to take.
SD3_MODEL_FIELDS: Final[Mapping[str, frozenset[str]]] = {
    SD3_LARGE_MODEL: SD3_FIELDS,
    SD3_LARGE_IMG2IMG_MODEL: SD3_IMG2IMG_FIELDS,
}
#: Where image-to-image goes instead of the text-to-image slug (for error messages).
IMG2IMG_HINT: Final = f"for image-to-image use model={SD3_LARGE_IMG2IMG_MODEL!r} (SegmindImageToImageOperator)"

_log = logging.getLogger(__name__)


def _invalid(field_name: str, problem: str, allowed: str) -> SegmindInvalidParametersError:
    return invalid_parameters([(field_name, problem, allowed)])


def invalid_parameters(
    problems: Iterable[tuple[str, str, str]], *, model: str | None = None
) -> SegmindInvalidParametersError:
    """One error for every bad field: ``(field, problem, allowed values)`` triples.

    Reporting one field at a time made a DAG author fix, deploy and fail once per field.
    """
    found = list(problems)
    if len(found) == 1:
        ((name, problem, allowed),) = found
        message = sentences(f"Invalid parameter {name!r}: {problem}", f"Allowed: {allowed}")
    else:
        where = f" for {model}" if model else ""
        listed = "; ".join(f"{name!r}: {problem} (allowed: {allowed})" for name, problem, allowed in found)
        message = sentences(f"{len(found)} invalid parameters{where}: {listed}")
    first_field, _, first_allowed = found[0]
    return SegmindInvalidParametersError(message, field=first_field, allowed=first_allowed, problems=found)


def _check_text(params: Mapping[str, Any], name: str, *, required: bool) -> tuple[str, str, str] | None:
    value = params.get(name)
    allowed = f"a non-blank string of at most {SD3_PROMPT_MAX_CHARS:,} characters"
    if value is None:
        return (name, "it is missing", allowed) if required else None
    if not isinstance(value, str):
        return name, f"got {type(value).__name__}, not a string", allowed
    if required and not value.strip():
        return name, "it is blank", allowed
    if len(value) > SD3_PROMPT_MAX_CHARS:
        return name, f"it is {len(value):,} characters long", allowed
    return None


def _check_choice(params: Mapping[str, Any], name: str, choices: tuple[str, ...]) -> tuple[str, str, str] | None:
    if name in params and params[name] not in choices:
        return name, f"got {params[name]!r}", quoted_list(choices)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def image_problem(image: Any) -> str | None:
    """Why ``image`` cannot be an image-to-image input, or ``None``.

    An ``s3://`` URI must name one object (its type and size are checked against the object itself,
    on the worker, before the submit: ``operators/_image_input.py``); a list is the sign of an
    XComArg of URIs passed without ``.expand``.
    """
    if isinstance(image, (list, tuple)):
        return f"got a list of {len(image)} values: one image per task"
    if image is None:
        return "image-to-image needs an input image"
    if not isinstance(image, str):
        return f"got {type(image).__name__}"
    if not image.strip():
        return "it is blank"
    if is_s3_uri(image):
        return s3_uri_problem(image)
    return None


def unknown_params(model: str, params: Mapping[str, Any]) -> list[str]:
    """Parameter names ``model`` is not known to take (only SD3 Large's two slugs are known; others: none)."""
    known = SD3_MODEL_FIELDS.get(model)
    if known is None:
        return []
    return sorted(str(name) for name in set(params) - known - set(SD3_IMAGE_FIELDS))


def _unknown_problems(
    model: str, params: Mapping[str, Any], *, strict: bool, warn: Callable[[str], None] | None
) -> list[tuple[str, str, str]]:
    """Unknown fields: refused with ``strict``, else sent with a warning (see :func:`validate_sd3_params`)."""
    unknown = unknown_params(model, params)
    if not unknown:
        return []
    allowed_names = quoted_list(sorted(SD3_MODEL_FIELDS[model]))
    if strict:
        return [(name, f"unknown parameter for {model} (strict mode)", allowed_names) for name in unknown]
    note = (
        f"Parameter(s) {quoted_list(unknown)} are not known for {model} (known: {allowed_names}); "
        "sending them anyway. Pass strict_params=True to refuse unknown parameters."
    )
    (warn or _log.warning)(note)
    return []


def _common_problems(params: Mapping[str, Any], choices: Mapping[str, tuple[str, ...]]) -> list[tuple[str, str, str]]:
    """The checks both SD3 Large slugs share, in the order they are reported: prompt, negative prompt,
    the slug's ``choices`` (field -> allowed values), output format, base64, seed."""
    checks = [
        _check_text(params, "prompt", required=True),
        _check_text(params, "negative_prompt", required=False),
        *(_check_choice(params, name, allowed) for name, allowed in choices.items()),
        _check_choice(params, "output_format", SD3_OUTPUT_FORMATS),
    ]
    problems = [found for found in checks if found is not None]
    if "base64" in params and not isinstance(params["base64"], bool):
        problems.append(("base64", f"got {params['base64']!r}", "true or false"))
    if params.get("seed") is not None:
        seed = params["seed"]
        if (
            not isinstance(seed, int)
            or isinstance(seed, bool)
            or not (seed == SEED_RANDOM or 0 <= seed <= SD3_SEED_MAX)
        ):
            problems.append(
                ("seed", f"got {seed!r}", f"an integer from 0 to {SD3_SEED_MAX}, or {SEED_RANDOM} for random")
            )
    return problems


def validate_sd3_params(
    params: Mapping[str, Any], *, strict: bool = False, warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Validate Stable Diffusion 3 Large text-to-image parameters; return them with the documented defaults filled in.

    Every bad value of a known field is reported in one :class:`SegmindInvalidParametersError`,
    naming each field and its allowed values, so a bad DAG fails on the worker before any credit
    is spent. Unknown fields are passed through with a warning (``warn``, default: this module's
    logger): Segmind's table is not the whole truth (``seed`` comes from Stability's API), so
    refusing what we do not know would block valid requests. With ``strict=True`` they are refused
    too, which catches a typo (``aspect-ratio``) before it silently becomes an image nobody asked for.

    Image-to-image on this slug is refused whatever ``strict`` says: ``mode='image-to-image'``,
    ``image`` and ``strength`` name the image-to-image slug instead (see the module docstring).
    """
    problems = _unknown_problems(SD3_LARGE_MODEL, params, strict=strict, warn=warn)
    problems += _common_problems(params, {"aspect_ratio": SD3_ASPECT_RATIOS, "mode": SD3_MODES})
    if params.get("mode") == "image-to-image":
        problems.append(
            (
                "mode",
                f"image-to-image on {SD3_LARGE_MODEL}, whose page documents no input image: Segmind may ignore "
                "the image and bill a text-to-image generation",
                f"'text-to-image'; {IMG2IMG_HINT}",
            )
        )
    for name in SD3_IMAGE_FIELDS:
        if params.get(name) is not None:
            problems.append(
                (name, f"not a parameter of {SD3_LARGE_MODEL} (its page lists none)", f"omit it; {IMG2IMG_HINT}")
            )
    if problems:
        raise invalid_parameters(problems, model=SD3_LARGE_MODEL)
    return {**SD3_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}


def validate_sd3_img2img_params(
    params: Mapping[str, Any], *, strict: bool = False, warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Validate Stable Diffusion 3 Large image-to-image parameters; return them with the defaults filled in.

    Rules and sources: the module docstring. ``image`` is required (a URL, base64 image data, or an
    ``s3://`` URI the operators resolve); ``mode`` may only be ``image-to-image``; ``strength``, when
    given, is a number from 0 to 1. Unknown fields (``aspect_ratio`` among them: the page sends none,
    and Stability's SD3 API ignores it for image-to-image) and ``strict``: as in :func:`validate_sd3_params`.
    """
    problems = _unknown_problems(SD3_LARGE_IMG2IMG_MODEL, params, strict=strict, warn=warn)
    problems += _common_problems(params, {"mode": SD3_IMG2IMG_MODES})
    image = image_problem(params.get("image"))
    if image is not None:
        problems.append(("image", image, IMAGE_ALLOWED))
    strength = params.get("strength")
    if strength is not None and (not _is_number(strength) or not 0 <= strength <= 1):
        problems.append(("strength", f"got {strength!r}", "a number from 0 to 1 (omit it for Segmind's default, 1)"))
    if problems:
        raise invalid_parameters(problems, model=SD3_LARGE_IMG2IMG_MODEL)
    return {**SD3_IMG2IMG_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}


def validate_params(
    model: str, params: Mapping[str, Any], *, strict: bool = False, warn: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Validate parameters for ``model``: SD3 Large is checked in full, other slugs pass through.

    Segmind hosts hundreds of models whose parameters we cannot know; for those we only insist
    the body is a JSON object, so a generic operator still fails early on garbage. SD3 Large's
    image-to-image slug is checked by :func:`validate_sd3_img2img_params`. ``strict`` and ``warn``:
    see :func:`validate_sd3_params`.
    """
    check_model_slug(model)
    if not isinstance(params, Mapping):
        raise _invalid("params", f"got {type(params).__name__}", "a mapping of parameter names to values")
    if model == SD3_LARGE_MODEL:
        return validate_sd3_params(params, strict=strict, warn=warn)
    if model == SD3_LARGE_IMG2IMG_MODEL:
        return validate_sd3_img2img_params(params, strict=strict, warn=warn)
    try:
        json.dumps(params)
    except (TypeError, ValueError) as err:
        raise _invalid("params", f"not JSON-serializable ({err})", "JSON values only") from None
    return dict(params)
