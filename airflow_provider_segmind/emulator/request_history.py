"""The emulator's request history routes (SDK ``segmind/generations.py``: ``Generations.history``/``get``).

Served under ``/inference-request/request-history`` on the API host. The page shape is not
documented; the emulator answers ``{"data": [rows], "page", "per_page", "total"}``, one row per
output, with ``None`` fields (or no row) while a record lags, as the SDK describes.

What a row looks like beyond that is not documented either, so the config's ``history_*``
switches shape it (:data:`~.config.HISTORY_PROFILES` bundles them): the form of ``request_body``
(object, JSON string, Python repr), media inputs left out or replaced, only the model page's
declared keys, the timestamp format and key, the id's spelling, and a teammate's rows in a team
account's list.

Teammate rows (``history_team_rows`` = N) are derived, not stored: every list answer adds N rows
of a teammate (``user_id`` :data:`~.config.TEAMMATE_USER_ID`, ``user_email``
:data:`~.config.TEAMMATE_USER_EMAIL`) that copy the newest of the account's own requests in the
answer's window and model filter (same model, same ``request_body``), created 1..N seconds after it
(never after "now"), still PENDING, each with its own id (a UUID derived from the copied request's
id and the row's number, so a test can predict it and every call answers the same rows). That is
the case that matters for a lost submit: a teammate sent the same inputs at about the same time.
They cost nothing to keep, are sorted and paged with the own rows, and are left out when the list is
filtered to the account's own user (``user_id`` :data:`~.config.OWN_USER_ID` or ``user_email``
:data:`~.config.OWN_USER_EMAIL`), as the SDK's filters promise; the by-id route never knows them
(SDK ``Generations.get``: a teammate's id "raises a not-found error"). With teams on, the own rows
carry ``user_id``/``user_email`` too.
"""

from __future__ import annotations

import email.utils
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final

from aiohttp import web

from airflow_provider_segmind.emulator.config import (
    OWN_USER_EMAIL,
    OWN_USER_ID,
    TEAMMATE_USER_EMAIL,
    TEAMMATE_USER_ID,
    EmulatorConfig,
)
from airflow_provider_segmind.emulator.faults import Fault
from airflow_provider_segmind.emulator.gateway import Gateway
from airflow_provider_segmind.emulator.responses import (
    iso_utc,
    json_error,
    not_found,
)
from airflow_provider_segmind.emulator.state import (
    Job,
)
from airflow_provider_segmind.protocol.params import SD3_DOCUMENTED_FIELDS, SD3_IMG2IMG_DOCUMENTED_FIELDS
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_IMG2IMG_MODEL, SD3_LARGE_MODEL

#: SDK ``Generations.history``: the window "may span at most 31 days", ``per_page`` 1-100, the
#: statuses and sort fields it names; ``from_date`` defaults to 7 days ago.
_HISTORY_MAX_DAYS: Final = 31
_HISTORY_DEFAULT_DAYS: Final = 7
_HISTORY_STATUSES: Final = frozenset({"COMPLETED", "FAILED", "PENDING"})
_HISTORY_SORTS: Final = frozenset({"model_created", "model_name", "credits_deduction"})
#: Parameters a generic model may use to ask for several outputs (the history lists one row each).
_OUTPUT_COUNT_PARAMS: Final = ("num_outputs", "num_images", "samples", "batch_size")
_MAX_OUTPUTS: Final = 8

#: India's offset, for ``history_time_format`` ``iso_offset`` and ``iso_naive_ist``.
IST: Final = timezone(timedelta(hours=5, minutes=30), "IST")
#: Keys of media inputs that ``history_strip_media`` removes or replaces. docs.segmind.com
#: (https://docs.segmind.com/api-reference/logging): "Segmind does not store any input images,
#: videos, or audio files associated with any run for model inferencing."
MEDIA_KEYS: Final = frozenset(
    {"image", "input_image", "input_image_1", "input_image_2", "image_url", "mask", "mask_image"}
)
#: What a replaced media input reads (``history_strip_media="replaced"``).
MEDIA_PLACEHOLDER: Final = "<not stored>"
#: A value this long made only of base64 characters is taken for an inline file.
_BASE64_MIN_CHARS: Final = 1024
_BASE64: Final = re.compile(r"[A-Za-z0-9+/=_\-\s]+")
#: The keys a model's page declares (``history_declared_only``). SD3 Large: the provider's own table
#: of Segmind's documented fields (``protocol.params.SD3_DOCUMENTED_FIELDS``). Its page
#: (https://segmind.com/models/stable-diffusion-3-large-txt2img/api) lists no ``seed``, so a seed the
#: client sent (the operators fill one) is not in the row; nor are ``image``/``strength``, which that
#: page does not list. SD3 Large image-to-image: its page's fields (``SD3_IMG2IMG_DOCUMENTED_FIELDS``,
#: https://segmind.com/models/stable-diffusion-3-large-img2img/api), no ``seed`` either. Other models:
#: every key (their pages are not modelled).
DECLARED_KEYS: Final[Mapping[str, frozenset[str]]] = {
    SD3_LARGE_MODEL: SD3_DOCUMENTED_FIELDS,
    SD3_LARGE_IMG2IMG_MODEL: SD3_IMG2IMG_DOCUMENTED_FIELDS,
}
#: Teammate row ids are UUIDs derived from this namespace, the copied request's id and the row number.
_TEAMMATE_NAMESPACE: Final = uuid.UUID("6d1c5f2e-3a4b-4c7d-8e9f-0a1b2c3d4e5f")


def _is_media(key: str, value: Any) -> bool:
    if key in MEDIA_KEYS:
        return True
    if isinstance(value, str):
        return value.startswith("data:") or (len(value) > _BASE64_MIN_CHARS and bool(_BASE64.fullmatch(value)))
    if isinstance(value, list) and value:
        return all(_is_media("", item) for item in value)
    return False


def history_body(config: EmulatorConfig, model: str, body: Mapping[str, Any] | None) -> Any:
    """``request_body`` as the config's history shows it (``None`` stays ``None``)."""
    if body is None:
        return None
    shown = dict(body)
    declared = DECLARED_KEYS.get(model)
    if config.history_declared_only and declared is not None:
        shown = {key: value for key, value in shown.items() if key in declared}
    if config.history_strip_media != "keep":
        media = [key for key, value in shown.items() if _is_media(key, value)]
        for key in media:
            if config.history_strip_media == "absent":
                del shown[key]
            else:
                shown[key] = MEDIA_PLACEHOLDER
    if config.history_body_format == "json":
        return json.dumps(shown)
    if config.history_body_format == "repr":
        return repr(shown)
    return shown


def history_time(config: EmulatorConfig, epoch: float) -> str | int | float:
    """A timestamp in the config's ``history_time_format``."""
    fmt = config.history_time_format
    if fmt == "epoch_s":
        return round(epoch, 3)
    if fmt == "epoch_ms":
        return round(epoch * 1000)
    if fmt == "rfc1123":
        return email.utils.formatdate(epoch, usegmt=True)
    if fmt == "iso_z":
        return iso_utc(epoch)
    moment = datetime.fromtimestamp(epoch, IST if fmt in ("iso_offset", "iso_naive_ist") else UTC)
    if fmt in ("iso_naive_utc", "iso_naive_ist"):
        moment = moment.replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds")


def history_id(config: EmulatorConfig, request_id: str) -> str:
    """The id a row shows: the v2 id, or (``hex32``) its 32 hex digits without dashes."""
    return request_id.replace("-", "").lower() if config.history_id_form == "hex32" else request_id


def v2_request_id(listed: str) -> str:
    """The v2 id of an id as the history may list it (32 hex digits -> the dashed UUID)."""
    if len(listed) == 32:
        try:
            return str(uuid.UUID(hex=listed))
        except ValueError:
            pass
    return listed


@dataclass(frozen=True)
class _Entry:
    """One request in a list answer (own or a teammate's), with what the list sorts by."""

    created: float
    model: str
    cost: float
    rows: list[dict[str, Any]]


class HistoryRoutes(Gateway):
    """Handlers for the request history list and the by-id lookup."""

    async def history_list(self, request: web.Request) -> web.StreamResponse:
        """``GET /inference-request/request-history``: this account's requests, one row per output."""
        return await self._serve(request, "history", self._history_list)

    async def history_record(self, request: web.Request) -> web.StreamResponse:
        """``GET /inference-request/request-history/{request_id}``: one of this account's requests."""
        return await self._serve(request, "history", self._history_record)

    @staticmethod
    def _output_count(job: Job) -> int:
        if job.model in DECLARED_KEYS:  # SD3 Large: one image
            return 1
        for name in _OUTPUT_COUNT_PARAMS:
            value = job.params.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                return min(value, _MAX_OUTPUTS)
        return 1

    def _history_rows(self, request: web.Request, job: Job) -> list[dict[str, Any]]:
        """The job's history rows as of now: none or ``None`` fields while it lags, then one per output."""
        config, now = self.state.config, self.state.clock()
        base: dict[str, Any] = {
            "request_id": history_id(config, job.request_id),
            "model_name": job.model,
            config.history_time_key: history_time(config, job.submitted_at),
        }
        if config.history_team_rows:
            base.update(user_id=OWN_USER_ID, user_email=OWN_USER_EMAIL)
        if now < job.submitted_at + config.history_lag_seconds:
            if config.history_lag_mode == "absent":
                return []
            # SDK ``Generations.list``: fields "are None for a generation whose request record has
            # not landed yet".
            empty = dict.fromkeys(
                ("model_status", "credits_deduction", "request_body", "generation_url", "latency_ms", "error")
            )
            return [{**base, **empty, "updated_at": None}]
        status = job.history_status_at(now)
        done = status != "PENDING"
        row = {
            **base,
            "model_status": status,
            "credits_deduction": job.cost,
            "request_body": history_body(
                config, job.model, job.request_body if job.request_body is not None else job.params
            ),
            "generation_url": None,
            "latency_ms": round((job.queue_time + job.inference_time) * 1000, 1) if done else None,
            "error": job.error if status == "FAILED" else None,
            "updated_at": history_time(config, job.completed_at if done else job.submitted_at),
        }
        if status != "COMPLETED" or job.image is None:
            return [row]
        url = f"{self._origin(request)}/media/{job.request_id}.{job.image.output_format}"
        return [
            {**row, "generation_url": url if n == 0 else f"{url}?output={n}"} for n in range(self._output_count(job))
        ]

    def _teammate_entries(self, newest: Job) -> list[_Entry]:
        """``history_team_rows`` requests of a teammate copying ``newest`` (see the module's docstring)."""
        config, now = self.state.config, self.state.clock()
        body = newest.request_body if newest.request_body is not None else newest.params
        entries = []
        for n in range(config.history_team_rows):
            created = min(newest.submitted_at + n + 1, now)
            rid = str(uuid.uuid5(_TEAMMATE_NAMESPACE, f"{newest.request_id}/{n}"))
            row = {
                "request_id": history_id(config, rid),
                "model_name": newest.model,
                config.history_time_key: history_time(config, created),
                "user_id": TEAMMATE_USER_ID,
                "user_email": TEAMMATE_USER_EMAIL,
                "model_status": "PENDING",
                "credits_deduction": newest.cost,
                "request_body": history_body(config, newest.model, body),
                "generation_url": None,
                "latency_ms": None,
                "error": None,
                "updated_at": history_time(config, created),
            }
            entries.append(_Entry(created, newest.model, newest.cost, [row]))
        return entries

    @staticmethod
    def _history_date(request: web.Request, name: str, default: date) -> date | web.Response:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            return datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC).date()
        except ValueError:
            return json_error(400, f"{name} must be a date as YYYY-MM-DD, got {raw!r}")

    @staticmethod
    def _history_int(request: web.Request, name: str, default: int, low: int, high: int) -> int | web.Response:
        raw = request.query.get(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            return json_error(400, f"{name} must be an integer within {low}..{high}, got {raw!r}")
        return value

    async def _history_list(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        query = request.query
        today = datetime.fromtimestamp(self.state.clock(), UTC).date()
        start = self._history_date(request, "from_date", today - timedelta(days=_HISTORY_DEFAULT_DAYS))
        end = self._history_date(request, "to_date", today)
        page = self._history_int(request, "page", 1, 1, 1_000_000)
        per_page = self._history_int(request, "per_page", 20, 1, 100)
        if isinstance(start, web.Response):
            return start
        if isinstance(end, web.Response):
            return end
        if isinstance(page, web.Response):
            return page
        if isinstance(per_page, web.Response):
            return per_page
        if end < start:
            return json_error(400, "to_date must not be before from_date")
        if (end - start).days + 1 > _HISTORY_MAX_DAYS:
            return json_error(400, f"The date window may span at most {_HISTORY_MAX_DAYS} days")
        status = query.get("status") or None
        if status is not None and status not in _HISTORY_STATUSES:
            return json_error(400, f"status must be one of {', '.join(sorted(_HISTORY_STATUSES))}")
        sort_by = query.get("sort_by") or "model_created"
        sort_order = query.get("sort_order") or "desc"
        if sort_by not in _HISTORY_SORTS or sort_order not in ("asc", "desc"):
            return json_error(
                400, f"sort_by must be one of {', '.join(sorted(_HISTORY_SORTS))}; sort_order asc or desc"
            )
        model = (query.get("model_name") or "").casefold()
        jobs = [
            job
            for job in self.state.history.values()
            if job.key_label == label
            and start <= datetime.fromtimestamp(job.submitted_at, UTC).date() <= end
            and model in job.model.casefold()
        ]
        # SDK ``Generations.history``: ``user_id``/``user_email`` pick one member of a team.
        users = {"user_id": (OWN_USER_ID, TEAMMATE_USER_ID), "user_email": (OWN_USER_EMAIL, TEAMMATE_USER_EMAIL)}
        own = teammate = True
        for name, (own_user, teammate_user) in users.items():
            wanted = query.get(name)
            if wanted:
                own, teammate = own and wanted == own_user, teammate and wanted == teammate_user
        entries = [_Entry(job.submitted_at, job.model, job.cost, self._history_rows(request, job)) for job in jobs]
        if not own:
            entries = []
        if teammate and jobs and self.state.config.history_team_rows:
            entries += self._teammate_entries(max(jobs, key=lambda job: job.submitted_at))
        sort_keys: dict[str, Callable[[_Entry], Any]] = {
            "model_created": lambda entry: entry.created,
            "model_name": lambda entry: entry.model,
            "credits_deduction": lambda entry: entry.cost,
        }
        entries.sort(key=sort_keys[sort_by], reverse=sort_order == "desc")
        rows = [row for entry in entries for row in entry.rows]
        if status is not None:
            rows = [row for row in rows if row["model_status"] == status]
        first = (page - 1) * per_page
        return web.json_response(
            {"data": rows[first : first + per_page], "page": page, "per_page": per_page, "total": len(rows)}
        )

    async def _history_record(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        # The id as the v2 API returned it, or as the history lists it (``hex32``): both are this request.
        job = self.state.history.get(v2_request_id(request.match_info["request_id"].lower()))
        rows = self._history_rows(request, job) if job is not None and job.key_label == label else []
        if not rows:
            return not_found(request)
        return web.json_response(rows[0])
