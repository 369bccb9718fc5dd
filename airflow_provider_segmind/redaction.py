"""Secret masking for what leaves a task: JSON-safe, bounded, secret-free copies of request parameters.

One home for the rules the XCom summary (:mod:`airflow_provider_segmind.results`) and the S3
manifests (:mod:`airflow_provider_segmind.transfers.segmind_to_s3`) both apply to parameters a user
passed: credential-looking names are masked, key-shaped strings are redacted
(:func:`~airflow_provider_segmind.protocol.redact`), inline data (a base64 input image) is
replaced by a note with its length, nesting and collection sizes are bounded, and non-finite
numbers become ``None`` (JSON has no NaN).

The two callers bound sizes differently (an XCom row must stay small and says how many items it
dropped; a manifest keeps more items and also drops ``data:`` URLs of any length), so the bounds
are a :class:`Limits` value and each caller names its own: :data:`XCOM_LIMITS`, :data:`MANIFEST_LIMITS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final

from airflow_provider_segmind.protocol import redact

__all__ = ["MANIFEST_LIMITS", "SECRET_NAME_PARTS", "XCOM_LIMITS", "Limits", "finite_number", "masked", "plain"]

#: Parameter names that look like credentials: their values are masked whatever they hold.
SECRET_NAME_PARTS: Final = ("key", "token", "secret", "password", "passwd", "authorization", "credential", "cookie")
#: Nesting beyond this depth is replaced by a note.
MAX_DEPTH: Final = 4


@dataclass(frozen=True)
class Limits:
    """How much of a value a copy keeps.

    :param text_limit: longest string kept whole; a longer one is inline data and becomes a note.
    :param omit_data_urls: also replace every ``data:`` URL by a note, whatever its length.
    :param max_keys: mapping entries kept (``None``: all).
    :param max_items: list/tuple items kept.
    :param note_more_items: append ``<omitted: N more items>`` when items were dropped.
    """

    text_limit: int
    omit_data_urls: bool
    max_keys: int | None
    max_items: int
    note_more_items: bool


#: The XCom summary's params (SD3 prompts go up to 10,000 characters; longer strings are inline data).
XCOM_LIMITS: Final = Limits(text_limit=10_000, omit_data_urls=False, max_keys=None, max_items=64, note_more_items=True)
#: An S3 manifest's params.
MANIFEST_LIMITS: Final = Limits(
    text_limit=10_000, omit_data_urls=True, max_keys=200, max_items=100, note_more_items=False
)


def finite_number(value: Any) -> float | int | None:
    """``value`` if it is an int or a finite float (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None


def plain(value: Any, limits: Limits, *, depth: int = 0) -> Any:
    """A JSON-safe, bounded, secret-free copy of a parameter value (inline data replaced by a note)."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return finite_number(value)
    if isinstance(value, str):
        if len(value) > limits.text_limit or (limits.omit_data_urls and value.startswith("data:")):
            return f"<omitted: {len(value):,} characters of inline data>"
        return redact(value)
    if depth >= MAX_DEPTH:
        return "<omitted: nested too deep>"
    if isinstance(value, Mapping):
        entries = islice(value.items(), limits.max_keys)
        return {str(k): masked(str(k), v, limits, depth=depth + 1) for k, v in entries}
    if isinstance(value, (list, tuple)):
        items = [plain(v, limits, depth=depth + 1) for v in value[: limits.max_items]]
        if limits.note_more_items and len(value) > limits.max_items:
            items.append(f"<omitted: {len(value) - limits.max_items} more items>")
        return items
    return redact(str(value))[:200]


def masked(name: str, value: Any, limits: Limits, *, depth: int) -> Any:
    """The copy of a named value: ``"***"`` when the name looks like a credential (and a value is set)."""
    if any(part in name.lower() for part in SECRET_NAME_PARTS) and value not in (None, ""):
        return "***"
    return plain(value, limits, depth=depth)
