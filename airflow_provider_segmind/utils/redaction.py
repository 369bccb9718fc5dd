"""Secret masking for what leaves a task: JSON-safe, bounded, secret-free copies of request parameters.

One home for the rules the XCom summary (:mod:`airflow_provider_segmind.utils.results`) and the S3
manifests (:mod:`airflow_provider_segmind.transfers.segmind_to_s3`) both apply to parameters a user
passed: credential-looking names are masked, key-shaped strings are redacted
(:func:`~airflow_provider_segmind.protocol.redact`), inline data (a base64 input image) is
replaced by a note with its length, nesting and collection sizes are bounded, and non-finite
numbers become ``None`` (JSON has no NaN).

The two callers bound sizes differently (an XCom row must stay small and says how many items it
dropped; a manifest keeps more items and also drops ``data:`` URLs of any length), so the bounds
are a :class:`Limits` value and each caller names its own: :data:`XCOM_LIMITS`, :data:`MANIFEST_LIMITS`.

Which names are secret (:func:`is_secret_name`) follows Airflow's own masker, so a value Airflow
hides in a log is hidden in the summary and the manifests too:

- Airflow's list, ``DEFAULT_SENSITIVE_FIELDS``, is **imported** from the Task SDK's masker
  (``airflow.sdk._shared.secrets_masker``, present from Airflow 3.1.0; the older
  ``airflow.sdk.execution_time.secrets_masker`` warns as deprecated on 3.3, and no public module
  exports the list);
- joined with a **copy** of Airflow 3.3.2's list (:data:`AIRFLOW_3_3_SENSITIVE_FIELDS`): Airflow
  3.1.0's list is shorter (no ``proxy``, ``dsn``, ``access_key``, ``bearer``,
  ``connection_string``, ``webhook_url``, ...), and what a manifest written under 3.1 masks must
  not be less than under 3.3. The copy is all there is if the import ever fails;
- and the deployment's ``[core] sensitive_var_conn_names``, as Airflow's masker adds them;
- plus the provider's own broader parts, :data:`PROVIDER_SECRET_NAME_PARTS` (``key`` for any
  ``*_key``, ``credential``, ``cookie``), kept from before the alignment so nothing masked then is
  shown now.

A name matches as in Airflow's ``should_hide_value_for_key``: lower-cased, every run of non-word
characters read as ``_``, and any listed part anywhere in it (``X-Api-Key`` -> ``x_api_key``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from itertools import islice
from typing import Any, Final

from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.version_compat import airflow_sensitive_fields

__all__ = [
    "AIRFLOW_3_3_SENSITIVE_FIELDS",
    "MANIFEST_LIMITS",
    "PROVIDER_SECRET_NAME_PARTS",
    "SECRET_NAME_PARTS",
    "XCOM_LIMITS",
    "Limits",
    "finite_number",
    "is_secret_name",
    "masked",
    "plain",
]

#: A copy of Airflow 3.3.2's ``DEFAULT_SENSITIVE_FIELDS`` (``airflow.sdk._shared.secrets_masker``):
#: joined to the imported list, which is shorter on Airflow 3.1.0 (see the module's docstring).
AIRFLOW_3_3_SENSITIVE_FIELDS: Final = frozenset(
    {
        "access_key",
        "access_token",
        "api_key",
        "apikey",
        "auth_header",
        "authorization",
        "bearer",
        "connection_string",
        "dsn",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "proxy",
        "proxy_password",
        "proxies",
        "secret",
        "service_account",
        "service_key",
        "token",
        "keyfile_dict",
        "webhook_url",
    }
)
#: The provider's own parts, broader than Airflow's (masked before the alignment; kept).
PROVIDER_SECRET_NAME_PARTS: Final = frozenset({"key", "credential", "cookie"})


#: Parameter names that look like credentials: their values are masked whatever they hold (plus the
#: deployment's ``[core] sensitive_var_conn_names``, read when first needed: :func:`is_secret_name`).
SECRET_NAME_PARTS: Final = airflow_sensitive_fields() | AIRFLOW_3_3_SENSITIVE_FIELDS | PROVIDER_SECRET_NAME_PARTS
_NON_WORD: Final = re.compile(r"\W+")


@cache
def _configured_names() -> frozenset[str]:
    """``[core] sensitive_var_conn_names`` (comma-separated), as Airflow's masker adds them."""
    try:
        from airflow.providers.common.compat.sdk import conf

        value = conf.get("core", "sensitive_var_conn_names", fallback="") or ""
    except Exception:  # no Airflow configuration to read: the lists above
        return frozenset()
    return frozenset(part.strip().lower() for part in str(value).split(",") if part.strip())


def is_secret_name(name: str) -> bool:
    """Whether a parameter's value is masked by its name (Airflow's rule: see the module's docstring)."""
    normalized = _NON_WORD.sub("_", name.strip().lower())
    return any(part in normalized for part in SECRET_NAME_PARTS | _configured_names())


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
    if is_secret_name(name) and value not in (None, ""):
        return "***"
    return plain(value, limits, depth=depth)
