"""The contract check's rules, as pure functions: what each answer says about an assumption.

They add up to the account profile the emulator loads.

The provider assumes things about Segmind's live API that Segmind does not document, or documents
thinly (sources in ``docs/contract.md``): the request history's row shape (SDK 1.3.0
``segmind/generations.py`` names fields, not formats), how long a new request takes to appear
there, whether status polls count against the rate limit (docs.segmind.com/api-reference/rate-limits
is silent). :mod:`airflow_provider_segmind.contract` sends the cheapest calls that answer those
questions for one account; this module reads the answers. Each classifier returns the emulator
setting (:class:`~airflow_provider_segmind.emulator.config.EmulatorConfig`) that answers the same
way, or ``None`` when the answer fits none of them (then the profile leaves the setting out).

The profile is a JSON document (:func:`profile_document`) whose ``emulator`` object holds those
settings; the emulator loads it (``--profile FILE``, ``EmulatorConfig.from_account_profile``) so a
team can run its tests against what its own account does. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Final

from airflow_provider_segmind.protocol.history import _CREATED_KEYS, _rows_of, request_id_key
from airflow_provider_segmind.protocol.text import redact

#: What a profile file says it is, so the emulator never applies some other JSON by mistake.
ACCOUNT_PROFILE_KIND: Final = "airflow-provider-segmind account profile"
ACCOUNT_PROFILE_VERSION: Final = 1
#: The emulator settings a profile may carry (every other key of its ``emulator`` object is refused).
PROFILE_SETTINGS: Final = (
    "history_body_format",
    "history_strip_media",
    "history_declared_only",
    "history_time_format",
    "history_time_key",
    "history_id_form",
    "history_lag_seconds",
    "history_lag_mode",
    "history_team_rows",
    "rate_limit",
    "rate_limit_scope",
)
#: The timestamp keys the emulator can write (``history_time_key``).
EMULATOR_TIME_KEYS: Final = ("created_at", "model_created", "createdAt", "timestamp")
#: How far a naive creation time may be from the moment the check sent its request, read in the
#: right zone (the two candidate zones, UTC and +05:30, are 5.5 hours apart).
NAIVE_ZONE_TOLERANCE_SECONDS: Final = 1800.0
#: India's offset (Segmind is based in India: the zone a naive history time may be in).
IST: Final = timezone(timedelta(hours=5, minutes=30))
_ISO_ZONE: Final = re.compile(r"(Z|[+-]\d{2}:?\d{2})$", re.IGNORECASE)
_HEX32: Final = re.compile(r"[0-9a-f]{32}")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Rate-limit counter headers, as gateways spell them (lower-case).
_REMAINING_HEADERS: Final = ("x-ratelimit-remaining", "x-rate-limit-remaining", "ratelimit-remaining")
_LIMIT_HEADERS: Final = ("x-ratelimit-limit", "x-rate-limit-limit", "ratelimit-limit")


# --------------------------------------------------------------------------------------------
# One finding per assumption
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One row of the check's table: an assumption, what the account answered, what the provider does.

    ``holds``: ``True`` the account behaves as the provider assumes (or in a way it handles),
    ``False`` it does not (the provider would misread it: the exit code says so), ``None`` not checked.
    ``settings``: the emulator settings this finding determined (they go into the profile).
    """

    assumption: str
    answered: str
    provider: str
    holds: bool | None = True
    settings: Mapping[str, Any] = field(default_factory=dict)


def not_checked(assumption: str, why: str, provider: str) -> Finding:
    return Finding(assumption, f"not checked: {why}", provider, holds=None)


# --------------------------------------------------------------------------------------------
# History rows
# --------------------------------------------------------------------------------------------


def history_rows(body: Any) -> list[Mapping[str, Any]]:
    """The rows of a history answer (a row, a list of rows, or rows under a page key), as mappings."""
    if isinstance(body, Mapping) and (body.get("request_id") or body.get("id")):
        return [body]
    found = _rows_of(body)
    return [row for row in found[0] if isinstance(row, Mapping)] if found else []


def row_landed(row: Mapping[str, Any]) -> bool:
    """Whether a row has landed: a status or a body (SDK ``Generations.list``: fields "are None for a
    generation whose request record has not landed yet")."""
    return row.get("request_body") is not None or row.get("model_status") not in (None, "")


def body_format(value: Any) -> str | None:
    """How a row holds ``request_body``: ``object``, ``json`` (a JSON string), ``repr`` (a Python repr string)."""
    if isinstance(value, Mapping):
        return "object"
    if not isinstance(value, str):
        return None
    try:
        if isinstance(json.loads(value), Mapping):
            return "json"
    except ValueError:
        pass
    try:
        return "repr" if isinstance(ast.literal_eval(value.strip()), dict) else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def decoded_body(value: Any) -> dict[str, Any] | None:
    """A row's ``request_body`` as a dict, whatever its :func:`body_format`."""
    if isinstance(value, Mapping):
        return dict(value)
    fmt = body_format(value)
    if fmt == "json":
        return dict(json.loads(value))
    if fmt == "repr":
        return dict(ast.literal_eval(value.strip()))
    return None


def media_handling(sent: Mapping[str, Any], shown: Mapping[str, Any], media_keys: Iterable[str]) -> str | None:
    """What a row did with the media inputs sent: ``keep``, ``absent`` (removed), ``replaced``; ``None``
    if none was sent or they fared differently."""
    fates = set()
    for key in media_keys:
        if key not in sent:
            continue
        if key not in shown:
            fates.add("absent")
        elif shown[key] == sent[key]:
            fates.add("keep")
        else:
            fates.add("replaced")
    return fates.pop() if len(fates) == 1 else None


def dropped_keys(sent: Mapping[str, Any], shown: Mapping[str, Any], media_keys: Iterable[str] = ()) -> list[str]:
    """The keys sent (media aside) that a row's body lacks."""
    media = set(media_keys)
    return sorted(key for key in sent if key not in shown and key not in media)


def declared_only(sent: Mapping[str, Any], shown: Mapping[str, Any], declared: Iterable[str]) -> bool | None:
    """Whether a row keeps only the model page's declared keys: every declared key sent is kept and
    every undeclared one is dropped (``True``), all are kept (``False``), anything else ``None``."""
    declared_set = set(declared)
    kept_declared = all(key in shown for key in sent if key in declared_set)
    undeclared = [key for key in sent if key not in declared_set]
    if not kept_declared or not undeclared:
        return None if not kept_declared else False
    if all(key not in shown for key in undeclared):
        return True
    if all(key in shown for key in undeclared):
        return False
    return None


def time_key(row: Mapping[str, Any]) -> str | None:
    """The key of a row's creation time: the first of the provider's candidates the row fills."""
    return next((key for key in _CREATED_KEYS if row.get(key) not in (None, "")), None)


def time_format(value: Any, sent_at: float | None) -> tuple[str | None, str]:
    """How a row writes a timestamp, as ``(history_time_format, description)``.

    ``sent_at`` (epoch seconds, when the request was sent) tells the zone of a naive time: the
    reading within :data:`NAIVE_ZONE_TOLERANCE_SECONDS` of it. Without it (or with neither reading
    near) a naive time is ``(None, ...)``.
    """
    if isinstance(value, bool):
        return None, f"{type(value).__name__} {value!r}"
    if isinstance(value, (int, float)):
        return ("epoch_ms", "epoch milliseconds") if value > 1e11 else ("epoch_s", "epoch seconds")
    if not isinstance(value, str) or not value.strip():
        return None, f"unreadable ({type(value).__name__})"
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return time_format(float(text), sent_at)[0], "epoch time as a string"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        try:
            parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None, f"unreadable ({text[:40]!r})"
        return "rfc1123", f"an HTTP date ({text})"
    zone = _ISO_ZONE.search(text)
    if moment.tzinfo is not None and zone is not None:
        if zone.group(1).upper() == "Z":
            return "iso_z", f"ISO 8601 in UTC with Z ({text})"
        offset = moment.utcoffset()
        # The emulator's iso_offset writes +05:30; another offset is read correctly all the same.
        return (
            "iso_offset" if offset == IST.utcoffset(None) else None
        ), f"ISO 8601 with offset {zone.group(1)} ({text})"
    if sent_at is None:
        return None, f"ISO 8601 without a zone ({text}); zone not known"
    as_utc = moment.replace(tzinfo=UTC).timestamp()
    as_ist = moment.replace(tzinfo=IST).timestamp()
    if abs(as_utc - sent_at) <= NAIVE_ZONE_TOLERANCE_SECONDS:
        return "iso_naive_utc", f"ISO 8601 without a zone, in UTC ({text})"
    if abs(as_ist - sent_at) <= NAIVE_ZONE_TOLERANCE_SECONDS:
        return "iso_naive_ist", f"ISO 8601 without a zone, in India time, +05:30 ({text})"
    return None, f"ISO 8601 without a zone ({text}), neither UTC nor +05:30 near the request's time"


def id_form(listed: Any, v2_id: str) -> str | None:
    """How a row spells the request id: ``v2`` (as the submit returned it), ``hex32`` (32 lower-case
    hex digits, no dashes), ``None`` for anything else (upper case, another id altogether)."""
    if not isinstance(listed, str):
        return None
    if listed == v2_id:
        return "v2"
    if _HEX32.fullmatch(listed) and request_id_key(listed) == request_id_key(v2_id):
        return "hex32"
    return None


def describe_id(listed: Any) -> str:
    """An id's spelling in words, for the table."""
    if not isinstance(listed, str):
        return f"no id ({type(listed).__name__})"
    if _UUID.fullmatch(listed):
        return "a dashed UUID"
    if _HEX32.fullmatch(listed):
        return "32 hex digits without dashes"
    return f"another form ({len(listed)} characters)"


def user_of(row: Mapping[str, Any]) -> str | None:
    """Who a row belongs to (``user_id``, else ``user_email``), if it says."""
    for key in ("user_id", "user_email"):
        value = row.get(key)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return None


def teammate_rows(rows: Sequence[Mapping[str, Any]], own_user: str | None) -> int:
    """How many rows belong to another user than ``own_user`` (0 when the rows name no users)."""
    if own_user is None:
        return 0
    return sum(1 for row in rows if user_of(row) not in (None, own_user))


# --------------------------------------------------------------------------------------------
# Rate limits
# --------------------------------------------------------------------------------------------


def _header_int(headers: Mapping[str, str], names: Iterable[str]) -> int | None:
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return int(float(raw.strip()))
        except ValueError:
            continue
    return None


def rate_limit_counters(headers: Mapping[str, str]) -> tuple[int | None, int | None]:
    """``(limit, remaining)`` from an answer's lower-cased headers (``None`` where absent)."""
    return _header_int(headers, _LIMIT_HEADERS), _header_int(headers, _REMAINING_HEADERS)


def status_polls_count(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[str | None, str]:
    """Whether a status poll counted against the rate limit, from two consecutive status answers'
    headers: ``("all", ...)`` it did, ``("submit", ...)`` it did not, ``(None, ...)`` unknown.

    Only counters tell: the remaining count falls by one per counted call. A reset time alone
    (``x-rate-limit-reset-at-utc``, what Segmind reportedly sends) cannot say, nor can a window that
    moved between the two answers (the count went up).
    """
    _, first = rate_limit_counters(before)
    limit, second = rate_limit_counters(after)
    if first is None or second is None:
        reset = "x-rate-limit-reset-at-utc" in before or "x-rate-limit-reset-at-utc" in after
        why = "only a reset time, no counters" if reset else "no rate-limit headers"
        return None, f"unknown: status answers carry {why}"
    of = f" of {limit}" if limit is not None else ""
    if second < first:
        return "all", f"yes: the remaining count fell from {first} to {second}{of} over one status poll"
    if second == first:
        return "submit", f"no: the remaining count stayed at {first}{of} over a status poll"
    return None, f"unknown: the remaining count rose from {first} to {second} (the window moved)"


# --------------------------------------------------------------------------------------------
# The profile
# --------------------------------------------------------------------------------------------


def profile_settings_of(findings: Iterable[Finding]) -> dict[str, Any]:
    """Every emulator setting the findings determined, in :data:`PROFILE_SETTINGS` order."""
    merged: dict[str, Any] = {}
    for finding in findings:
        merged.update(finding.settings)
    return {name: merged[name] for name in PROFILE_SETTINGS if name in merged}


def profile_document(
    findings: Sequence[Finding], *, base_url: str, checked_at: float, spent_usd: float | None
) -> dict[str, Any]:
    """The JSON profile: what the emulator loads (``emulator``), and the table as data (``findings``)."""
    return {
        "kind": ACCOUNT_PROFILE_KIND,
        "version": ACCOUNT_PROFILE_VERSION,
        "checked_at": datetime.fromtimestamp(checked_at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "base_url": base_url,
        "spent_usd": None if spent_usd is None else round(spent_usd, 6),
        "emulator": profile_settings_of(findings),
        "findings": [
            {
                "assumption": f.assumption,
                "answered": f.answered,
                "provider": f.provider,
                "holds": f.holds,
            }
            for f in findings
        ],
    }


def account_profile_settings(document: Any) -> dict[str, Any]:
    """The emulator settings of a profile document, checked: its kind and version, and only
    :data:`PROFILE_SETTINGS` (values are checked by the emulator's config). ``ValueError`` otherwise."""
    if not isinstance(document, Mapping) or document.get("kind") != ACCOUNT_PROFILE_KIND:
        raise ValueError(f"not an account profile (its 'kind' must be {ACCOUNT_PROFILE_KIND!r})")
    if document.get("version") != ACCOUNT_PROFILE_VERSION:
        raise ValueError(f"account profile version {document.get('version')!r} is not {ACCOUNT_PROFILE_VERSION}")
    settings = document.get("emulator")
    if not isinstance(settings, Mapping):
        raise ValueError("the account profile has no 'emulator' object")
    unknown = sorted(set(settings) - set(PROFILE_SETTINGS))
    if unknown:
        raise ValueError(
            f"the account profile sets {unknown}, which a profile may not (allowed: {list(PROFILE_SETTINGS)})"
        )
    return dict(settings)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def _cell(text: str, secrets: Iterable[str]) -> str:
    return redact(text, secrets).replace("|", "\\|").replace("\n", " ")


def render_table(findings: Sequence[Finding], secrets: Iterable[str] = ()) -> str:
    """The findings as a Markdown table (it reads in a terminal and pastes into docs), keys redacted."""
    secrets = list(secrets)
    mark = {True: "ok", False: "DIFFERS", None: "not checked"}
    lines = [
        "| assumption | what the account answered | what the provider does about it | |",
        "| --- | --- | --- | --- |",
    ]
    for f in findings:
        cells = (_cell(f.assumption, secrets), _cell(f.answered, secrets), _cell(f.provider, secrets), mark[f.holds])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
