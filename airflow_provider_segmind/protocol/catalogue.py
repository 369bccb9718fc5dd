"""Segmind's model catalogue, as pure functions: its URL, its answer, the refusal of an unlisted slug.

Source: the official SDK ``segmind==1.3.0``, ``segmind/models.py``: ``Models.list()`` sends
``GET https://api.spotprod.segmind.com/inference-model-information/list`` (with the client's
``x-api-key``) and returns "Dictionary containing the models list response"; nothing more is
documented. The SDK's own test (segmind/segmind-python ``tests/test_models.py``) mocks it as
``{"models": [{"id": ..., "name": ...}]}``; public clients of the endpoint read the models under
``"Inference Segmind Model Information List With Details"`` as objects with ``slug``, ``title``,
``type``, ``parameters`` and ``is_depreciated`` (sic). So the answer is read defensively: a bare
list, or a list under any key of an object (one level deeper too); an entry is a slug
string or an object whose ``slug`` (else ``model_slug``, ``model``, ``id``, ``name``) is shaped
like a slug (of several lists, the one with the most slugs); an entry flagged deprecated or retired
counts as retired.

The catalogue is a convenience, never a gate the provider depends on: the hook refuses a slug only
when a readable catalogue (at least one slug) does not list it or lists it as retired, and goes on
(logged) when the catalogue cannot be reached or read. Nothing here does I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from airflow_provider_segmind.exceptions import (
    SegmindError,
    SegmindInvalidResponseError,
    SegmindModelNotFoundError,
    SegmindModelRetiredError,
)
from airflow_provider_segmind.protocol.answer import HttpAnswer
from airflow_provider_segmind.protocol.errors import MODEL_CATALOGUE_URL, classify_error
from airflow_provider_segmind.protocol.text import sentences, snippet
from airflow_provider_segmind.protocol.urls import is_loopback_host
from airflow_provider_segmind.protocol.vocabulary import Endpoint

#: SDK 1.3.0 ``segmind/models.py``, ``Models.list``.
DEFAULT_CATALOGUE_URL: Final = "https://api.spotprod.segmind.com/inference-model-information/list"
#: The path of the list under its host (the emulator serves it under its own base URL).
CATALOGUE_PATH: Final = "/inference-model-information/list"
#: The most one catalogue answer may be (decoded bytes). Hundreds of models with their parameter
#: schemas are a few MiB at most; more is refused, not buffered.
MAX_CATALOGUE_ANSWER_BYTES: Final = 16 * 1024 * 1024
#: What a model slug looks like: lower-case letters, digits, dots, dashes, underscores.
SLUG_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9._-]{0,199}")
#: Keys an entry may keep its slug under, best first ([sdk test]: ``id``; public clients: ``slug``).
_SLUG_KEYS: Final = ("slug", "model_slug", "model", "id", "name")
#: Flags that mark an entry as no longer runnable (``is_depreciated`` is how public clients read it).
_RETIRED_FLAGS: Final = ("is_depreciated", "is_deprecated", "deprecated", "is_retired", "retired")
_RETIRED_STATUSES: Final = frozenset({"retired", "deprecated", "depreciated", "inactive", "disabled", "archived"})
#: How many close matches a refusal names.
MAX_CLOSE_MATCHES: Final = 3


def default_catalogue_url(base_url: str) -> str:
    """The catalogue's URL for a base URL: the SDK's, except for a loopback base URL (the emulator
    serves the list under its own host, and a local key must not go to Segmind)."""
    if is_loopback_host(urlsplit(base_url).hostname):
        return f"{base_url.rstrip('/')}{CATALOGUE_PATH}"
    return DEFAULT_CATALOGUE_URL


@dataclass(frozen=True)
class ModelCatalogue:
    """The slugs Segmind's catalogue lists, each with whether it is retired. Empty: unreadable."""

    models: Mapping[str, bool] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.models)

    @property
    def available(self) -> list[str]:
        """The slugs that are not retired, sorted."""
        return sorted(slug for slug, retired in self.models.items() if not retired)

    def lists(self, slug: str) -> bool:
        return slug in self.models

    def is_retired(self, slug: str) -> bool:
        return self.models.get(slug, False)

    def close_matches(self, slug: str, n: int = MAX_CLOSE_MATCHES) -> list[str]:
        """The available slugs most like ``slug`` (difflib), best first."""
        return difflib.get_close_matches(slug.strip().lower(), self.available, n=n, cutoff=0.6)

    def describe(self) -> str:
        """E.g. ``412 models available (3 retired)``, for the connection test."""
        retired = len(self.models) - len(self.available)
        text = f"{len(self.available)} model{'s' if len(self.available) != 1 else ''} available"
        return f"{text} ({retired} retired)" if retired else text

    def refusal(self, slug: str) -> SegmindError | None:
        """The error for a slug this catalogue says cannot run (unknown or retired); ``None`` if it
        may run, or if the catalogue is empty (unreadable: it proves nothing)."""
        if not self.models or (slug in self.models and not self.models[slug]):
            return None
        matches = self.close_matches(slug)
        near = f"Close matches: {', '.join(repr(m) for m in matches)}" if matches else ""
        escape = (
            "If the model is private to your account (a fine-tune, a dedicated endpoint), set the connection "
            "extra check_model_catalogue to false"
        )
        if slug in self.models:
            return SegmindModelRetiredError(
                sentences(
                    f"Segmind's model catalogue lists the model {slug!r} as retired; nothing was submitted",
                    near,
                    f"Pick a current model ({MODEL_CATALOGUE_URL}) and change the task's model slug",
                )
            )
        return SegmindModelNotFoundError(
            sentences(
                f"Segmind's model catalogue ({len(self.available)} models) does not list the model {slug!r}; "
                "nothing was submitted",
                near or f"Check the slug on {MODEL_CATALOGUE_URL} (slugs are lower-case, with dashes)",
                escape,
            )
        )


def _lists(body: Any, depth: int = 0) -> list[list[Any]]:
    """Every list an answer may keep its models in: the answer, or a list under any key (one level deeper too)."""
    if isinstance(body, list):
        return [body]
    if not isinstance(body, Mapping) or depth > 1:
        return []
    return [found for value in body.values() for found in _lists(value, depth + 1)]


def _slug_of(entry: Any) -> str | None:
    if isinstance(entry, str):
        candidates: Iterable[Any] = (entry,)
    elif isinstance(entry, Mapping):
        candidates = (entry.get(key) for key in _SLUG_KEYS)
    else:
        return None
    for value in candidates:
        if isinstance(value, str) and SLUG_PATTERN.fullmatch(value.strip()):
            return value.strip()
    return None


def _is_retired(entry: Any) -> bool:
    if not isinstance(entry, Mapping):
        return False
    if any(entry.get(flag) is True for flag in _RETIRED_FLAGS):
        return True
    status = entry.get("status")
    return isinstance(status, str) and status.strip().lower() in _RETIRED_STATUSES


def catalogue_from_body(body: Any) -> ModelCatalogue:
    """The catalogue in a decoded answer (see the module docstring for the shapes read); empty if none.

    Of every list in the answer, the one with the most slugs; a slug listed twice is retired only if
    every listing says so.
    """
    best: dict[str, bool] = {}
    for entries in _lists(body):  # the list with the most slugs is the catalogue (not, say, a list of tags)
        models: dict[str, bool] = {}
        for entry in entries:
            slug = _slug_of(entry)
            if slug is not None:
                models[slug] = models.get(slug, True) and _is_retired(entry)
        if len(models) > len(best):
            best = models
    return ModelCatalogue(best)


def parse_model_catalogue(answer: HttpAnswer) -> ModelCatalogue:
    """``GET .../inference-model-information/list`` as a :class:`ModelCatalogue`.

    Errors: the usual typed error for a non-2xx (a 404 names the URL: a wrong host or a moved API;
    :func:`~.errors.classify_error`),
    :class:`SegmindInvalidResponseError` for an answer without a single slug.
    """
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.CATALOGUE)
    catalogue = catalogue_from_body(answer.json())
    if not catalogue.models:
        raise SegmindInvalidResponseError(
            f"Segmind's model catalogue answered HTTP {answer.status} without a model slug: {snippet(answer.body)!r}",
            status_code=answer.status,
        )
    return catalogue


def catalogue_answer_too_large(
    status: int, url: str, limit: int = MAX_CATALOGUE_ANSWER_BYTES
) -> SegmindInvalidResponseError:
    """The error for a catalogue answer over ``limit`` bytes (the transport stops reading there)."""
    where = urlsplit(url)
    error = SegmindInvalidResponseError(
        sentences(
            f"Segmind's model catalogue at {where.scheme}://{where.netloc}{where.path} answered HTTP {status} "
            f"with more than {limit:,} bytes; reading stopped there"
        ),
        status_code=status,
    )
    error.transient = False
    return error
