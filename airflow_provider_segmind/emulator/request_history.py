"""The emulator's request history routes (SDK ``segmind/generations.py``: ``Generations.history``/``get``).

Served under ``/inference-request/request-history`` on the API host. The page shape is not
documented; the emulator answers ``{"data": [rows], "page", "per_page", "total"}``, one row per
output, with ``None`` fields (or no row) while a record lags, as the SDK describes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from aiohttp import web

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
from airflow_provider_segmind.protocol import (
    SD3_LARGE_MODEL,
)

#: SDK ``Generations.history``: the window "may span at most 31 days", ``per_page`` 1-100, the
#: statuses and sort fields it names; ``from_date`` defaults to 7 days ago.
_HISTORY_MAX_DAYS: Final = 31
_HISTORY_DEFAULT_DAYS: Final = 7
_HISTORY_STATUSES: Final = frozenset({"COMPLETED", "FAILED", "PENDING"})
_HISTORY_SORTS: Final = frozenset({"model_created", "model_name", "credits_deduction"})
#: Parameters a generic model may use to ask for several outputs (the history lists one row each).
_OUTPUT_COUNT_PARAMS: Final = ("num_outputs", "num_images", "samples", "batch_size")
_MAX_OUTPUTS: Final = 8


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
        if job.model == SD3_LARGE_MODEL:
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
            "request_id": job.request_id,
            "model_name": job.model,
            "created_at": iso_utc(job.submitted_at),
        }
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
            "request_body": job.request_body if job.request_body is not None else job.params,
            "generation_url": None,
            "latency_ms": round((job.queue_time + job.inference_time) * 1000, 1) if done else None,
            "error": job.error if status == "FAILED" else None,
            "updated_at": iso_utc(job.completed_at if done else job.submitted_at),
        }
        if status != "COMPLETED" or job.image is None:
            return [row]
        url = f"{self._origin(request)}/media/{job.request_id}.{job.image.output_format}"
        return [
            {**row, "generation_url": url if n == 0 else f"{url}?output={n}"} for n in range(self._output_count(job))
        ]

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
        sort_keys: dict[str, Callable[[Job], Any]] = {
            "model_created": lambda job: job.submitted_at,
            "model_name": lambda job: job.model,
            "credits_deduction": lambda job: job.cost,
        }
        jobs.sort(key=sort_keys[sort_by], reverse=sort_order == "desc")
        rows = [row for job in jobs for row in self._history_rows(request, job)]
        if status is not None:
            rows = [row for row in rows if row["model_status"] == status]
        first = (page - 1) * per_page
        return web.json_response(
            {"data": rows[first : first + per_page], "page": page, "per_page": per_page, "total": len(rows)}
        )

    async def _history_record(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        job = self.state.history.get(request.match_info["request_id"])
        rows = self._history_rows(request, job) if job is not None and job.key_label == label else []
        if not rows:
            return not_found(request)
        return web.json_response(rows[0])
