"""The Segmind page's FastAPI app, mounted by Airflow's api-server at ``/segmind``.

Routes: ``/`` (the page: recent generations with thumbnails, filterable by DAG and UTC day; cost
per day and per DAG as bar charts; failures by cause), ``/thumbnail`` (one generation's thumbnail)
and ``/api/summary`` (the page's numbers as JSON, for scripts and tests).

**Who sees what**: every route resolves the caller from Airflow's own JWT (``Authorization:
Bearer`` or the UI's ``_token`` cookie, which the page in the UI's frame carries) and asks
Airflow's configured auth manager which DAGs the user may read (``get_authorized_dag_ids``, GET).
Generations, sums and failures of other DAGs are left out before anything is counted, and a
thumbnail is served only for an object the index knows (no arbitrary S3 read) whose DAG the user
may read (``is_authorized_dag``); anything else answers 404, so the page does not reveal which
objects exist.

Server-rendered HTML (Jinja2, autoescaped: prompts are user text) with inline SVG charts: no
JavaScript bundle to build or ship, and the same page works on every Airflow 3.1+ UI.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from markupsafe import escape
from starlette.concurrency import run_in_threadpool

from airflow_provider_segmind.plugins._failures import Failure, recorded_failures
from airflow_provider_segmind.plugins._gallery import (
    Generation,
    ManifestIndex,
    Total,
    cost_per_dag,
    cost_per_day,
    parse_locations,
    select,
    visible,
)

#: Generations per page of the gallery.
PAGE_SIZE: Final = 48
#: Days of cost and failures the charts cover.
CHART_DAYS: Final = 30
#: Longest edge of a thumbnail, in pixels.
THUMBNAIL_EDGE: Final = 256
#: Largest object (bytes) the page reads to make a thumbnail.
THUMBNAIL_MAX_SOURCE: Final = 32 * 1024 * 1024
#: Thumbnails kept in memory (about 10-20 kB each).
THUMBNAIL_CACHE: Final = 2048
#: Seconds an S3 client is reused.
CLIENT_SECONDS: Final = 300.0
#: Seconds a view waits for a due refresh of the index before it shows what has been read so far.
VIEW_WAIT: Final = 3.0


class _Thumbnails:
    """A small LRU of thumbnail bytes by object, so a page view does not re-download its images."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, where: tuple[str, str]) -> tuple[bytes, str] | None:
        with self._lock:
            item = self._items.get(where)
            if item is not None:
                self._items.move_to_end(where)
            return item

    def put(self, where: tuple[str, str], item: tuple[bytes, str]) -> None:
        with self._lock:
            self._items[where] = item
            self._items.move_to_end(where)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


class _State:
    """The app's index (made at the first request, from ``[segmind]`` settings) and thumbnails."""

    def __init__(self) -> None:
        self.index: ManifestIndex | None = None
        self.aws_conn_id = "aws_default"
        self.thumbnails = _Thumbnails(THUMBNAIL_CACHE)
        self._lock = threading.Lock()
        self._client: tuple[float, Any] | None = None

    def get_index(self) -> ManifestIndex | None:
        with self._lock:
            if self.index is None:
                from airflow.configuration import conf

                locations = parse_locations(conf.get("segmind", "ui_s3_locations", fallback="") or "")
                if not locations:
                    return None
                self.aws_conn_id = conf.get("segmind", "ui_aws_conn_id", fallback="aws_default") or "aws_default"
                ttl = conf.getfloat("segmind", "ui_refresh_seconds", fallback=30.0)
                self.index = ManifestIndex(self.client, locations, ttl=ttl)
            return self.index

    def client(self) -> Any:
        """A boto3 S3 client, made again after :data:`CLIENT_SECONDS` (so a changed connection is used).

        Why kept: making one (the connection's lookup, botocore's service model) costs far more than
        the GET of a thumbnail; boto3 clients are thread-safe.
        """
        with self._lock:
            if self._client is None or time.monotonic() - self._client[0] >= CLIENT_SECONDS:
                from airflow_provider_segmind.utils.s3_client import s3_client

                self._client = (time.monotonic(), s3_client(self.aws_conn_id, "when_supported"))
            return self._client[1]


# ----------------------------------------------------------------------------------- auth


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    return request.cookies.get(COOKIE_NAME_JWT_TOKEN)


async def _user(request: Request) -> Any:
    """The caller, from Airflow's JWT; 401 without one (the page then links to Airflow's login)."""
    from airflow.api_fastapi.app import get_auth_manager

    token = _token(request)
    if not token:
        raise HTTPException(status_code=401, detail="Not authenticated: log in to Airflow first")
    try:
        return await get_auth_manager().get_user_from_token(token)
    except Exception:
        raise HTTPException(status_code=401, detail="Not authenticated: log in to Airflow again") from None


def readable_dag_ids(user: Any) -> set[str]:
    """The DAGs ``user`` may read, as the configured auth manager decides."""
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def _may_read(user: Any, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return bool(get_auth_manager().is_authorized_dag(method="GET", user=user, details=DagDetails(id=dag_id)))


# ----------------------------------------------------------------------------------- the page

_PAGE: Final = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>Segmind</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.25rem; background: #f6f6f8; color: #1a1a1a; }
h1 { margin: 0 0 .5rem; font-size: 1.4rem; } h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
.row { display: grid; grid-template-columns: 2fr 2fr 1fr; gap: 1rem; margin-bottom: 1rem; }
.card { background: white; border-radius: 8px; box-shadow: 0 1px 3px #0002; padding: .75rem 1rem; }
form { display: flex; gap: .75rem; align-items: end; flex-wrap: wrap; margin: .75rem 0; }
label { font-size: .8rem; color: #555; display: flex; flex-direction: column; gap: .2rem; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: .75rem; }
figure { margin: 0; background: white; border-radius: 8px; box-shadow: 0 1px 3px #0002; overflow: hidden; }
figure img { width: 100%; aspect-ratio: 1; object-fit: cover; display: block; background: #ddd; }
figcaption { padding: .4rem .55rem; font-size: .75rem; line-height: 1.3; overflow-wrap: anywhere; }
figcaption .prompt { font-weight: 600; display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;
  overflow: hidden; }
.muted { color: #666; } table { border-collapse: collapse; font-size: .85rem; width: 100%; }
td, th { padding: .2rem .4rem; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
svg text { font-size: 10px; fill: #444; } .bar { fill: #4f5bd5; } .bar.dag { fill: #e8743b; }
nav.pages { margin: 1rem 0; display: flex; gap: 1rem; }
</style></head><body>
<h1>Segmind generations</h1>
{% if not configured %}<p class="card">No S3 location is set: set <code>[segmind] ui_s3_locations</code>
(for example <code>s3://my-bucket/segmind/</code>) to where <code>SegmindToS3Operator</code> stores images.</p>
{% else %}
{% if progress.get('running') %}<p class="card" id="indexing">Reading the manifests: {{ progress.fetched }} of
{{ progress.to_fetch or progress.listed }} so far (reload to see more).</p>{% endif %}
{% if progress.get('error') %}<p class="card" id="index-error">The last listing failed:
{{ progress.error }}</p>{% endif %}
<p class="muted" id="summary">{{ total_count }} generation(s), {{ "%.4g" | format(total_cost) }} USD
in {{ dags | length }} DAG(s) you may read{% if dag_id or day %} (filtered){% endif %}.</p>
<div class="row">
<div class="card" id="cost-per-day"><h2>Cost per day (USD)</h2>{{ day_chart | safe }}</div>
<div class="card" id="cost-per-dag"><h2>Cost per DAG (USD)</h2>{{ dag_chart | safe }}</div>
<div class="card" id="failures"><h2>Failures by cause</h2>
{% if failures %}<table>{% for cause, count in failures %}
<tr><td>{{ cause }}</td><td class="n">{{ count }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No failed Segmind tasks in the last {{ chart_days }} days.</p>{% endif %}</div>
</div>
<form method="get" action="{{ base }}/">
<label>DAG<select name="dag_id"><option value="">All DAGs</option>
{% for name in dags %}<option value="{{ name }}"{% if name == dag_id %} selected{% endif %}>{{ name }}</option>
{% endfor %}</select></label>
<label>Day (UTC)<input type="date" name="day" value="{{ day }}"></label>
<button type="submit">Filter</button>{% if dag_id or day %} <a href="{{ base }}/">Clear</a>{% endif %}
</form>
<div class="grid" id="gallery">
{% for gen in shown %}<figure data-dag="{{ gen.dag_id }}">
<img loading="lazy" alt="{{ gen.prompt }}" src="{{ base }}/thumbnail?{{ gen.query }}">
<figcaption><div class="prompt" title="{{ gen.prompt }}">{{ gen.prompt or "(no prompt)" }}</div>
<div class="muted">{{ gen.dag_id }} &middot; {{ gen.task_id }}
{%- if gen.map_index >= 0 %}[{{ gen.map_index }}]{% endif %}</div>
<div class="muted">{{ gen.model }} &middot; {{ gen.cost_text }} &middot;
{{ gen.stored_at[:16] | replace("T", " ") }}</div>
</figcaption></figure>
{% else %}<p class="muted">No generations{% if dag_id or day %} match the filter{% endif %}.</p>{% endfor %}
</div>
<nav class="pages">{% if prev_link %}<a href="{{ prev_link }}">&larr; Newer</a>{% endif %}
<span class="muted">Page {{ page }} of {{ pages }}</span>
{% if next_link %}<a href="{{ next_link }}">Older &rarr;</a>{% endif %}</nav>
{% endif %}
</body></html>
"""
)


def _fit(label: str, width: float) -> str:
    """``label`` cut to what fits under a bar ``width`` pixels wide (about 6 px per character)."""
    room = max(3, int(width / 6))
    return label if len(label) <= room else label[: room - 1] + "\u2026"


def bar_chart(totals: list[Total], *, css: str = "", width: int = 460, height: int = 150) -> str:
    """An inline SVG bar chart of ``totals`` (cost), each bar titled with its label, count and cost.

    Day labels show as ``MM-DD``; bars are at most 48 px wide, so one day is not one wall of colour.
    ``css="dag"``: horizontal bars, one labelled row per DAG (the full id is the bar's tooltip).
    """
    if not totals:
        return '<p class="muted">Nothing yet.</p>'
    top = max(total.cost for total in totals) or 1.0
    if css == "dag":
        return _row_chart(totals, top, width)
    step = width / len(totals)
    bar = min(max(step * 0.8, 1.0), 48.0)
    parts = [f'<svg viewBox="0 0 {width} {height + 30}" width="100%" role="img">']
    for i, total in enumerate(totals):
        h = (height - 12) * total.cost / top
        x, y = i * step + (step - bar) / 2, height - h
        title = escape(f"{total.label}: {total.cost:.4g} USD, {total.count} image(s)")
        parts.append(
            f'<rect class="bar {css}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}">'
            f"<title>{title}</title></rect>"
        )
        every = 1 if len(totals) <= 12 else max(1, len(totals) // 6)
        if i % every == 0:
            label = escape(_fit(total.label, step * every) if css else total.label[5:])
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{height + 12}" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="0" y="10">max {top:.4g}</text></svg>')
    return "".join(parts)


def _row_chart(totals: list[Total], top: float, width: int) -> str:
    """The per-DAG chart: one labelled horizontal bar per DAG (DAG ids are too long to go under bars)."""
    label_width, row = 170, 18
    room = width - label_width - 60
    parts = [f'<svg viewBox="0 0 {width} {row * len(totals) + 4}" width="100%" role="img">']
    for i, total in enumerate(totals):
        y = i * row + 2
        bar = max(room * total.cost / top, 1.0)
        title = escape(f"{total.label}: {total.cost:.4g} USD, {total.count} image(s)")
        parts.append(
            f'<text x="0" y="{y + 12}">{escape(_fit(total.label, label_width - 6))}</text>'
            f'<rect class="bar dag" x="{label_width}" y="{y + 2}" width="{bar:.1f}" height="{row - 6}">'
            f"<title>{title}</title></rect>"
            f'<text x="{label_width + bar + 4:.1f}" y="{y + 12}">{total.cost:.3g}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _card(gen: Generation) -> dict[str, Any]:
    return {
        "dag_id": gen.dag_id,
        "task_id": gen.task_id,
        "map_index": gen.map_index,
        "prompt": gen.prompt,
        "model": gen.model,
        "stored_at": gen.stored_at,
        "cost_text": "cost ?" if gen.cost is None else f"{gen.cost:.4g} USD",
        "query": urlencode({"bucket": gen.bucket, "key": gen.key}),
    }


def summary(gens: list[Generation], failures: list[Failure], *, dag_id: str | None, day: str | None) -> dict[str, Any]:
    """The page's numbers for the generations and failures a user may see."""
    chosen = select(gens, dag_id=dag_id, day=day)
    return {
        "count": len(chosen),
        "cost": round(sum(gen.cost or 0.0 for gen in chosen), 6),
        "cost_per_day": [vars_of(t) for t in cost_per_day(select(gens, dag_id=dag_id), CHART_DAYS)],
        "cost_per_dag": [vars_of(t) for t in cost_per_dag(select(gens, day=day))],
        "failures_by_cause": dict(
            Counter(f.cause for f in failures if (not dag_id or f.dag_id == dag_id) and (not day or f.day == day))
        ),
        "dags": sorted({gen.dag_id for gen in gens}),
    }


def vars_of(total: Total) -> dict[str, Any]:
    return {"label": total.label, "count": total.count, "cost": total.cost}


def create_app() -> FastAPI:
    """The app the plugin registers (a new one per call: tests and the benchmark make their own)."""
    app = FastAPI(title="Segmind", docs_url=None, redoc_url=None, openapi_url=None)
    state = _State()
    app.state.segmind = state

    def _visible(user: Any) -> tuple[list[Generation], list[Failure], dict[str, Any] | None]:
        """What ``user`` may see, and the index's progress (``None``: no location is configured)."""
        index = state.get_index()
        dag_ids = readable_dag_ids(user)
        since = datetime.now(UTC) - timedelta(days=CHART_DAYS)
        failures = [f for f in recorded_failures(dag_ids, since) if f.dag_id in dag_ids]
        if index is None:
            return [], failures, None
        gens = index.generations(wait=VIEW_WAIT)
        return visible(gens, dag_ids), failures, dict(index.progress)

    @app.get("/", response_class=HTMLResponse)
    async def home(request: Request, dag_id: str = "", day: str = "", page: int = 1) -> HTMLResponse:
        user = await _user(request)
        gens, failures, progress = await run_in_threadpool(_visible, user)
        numbers = summary(gens, failures, dag_id=dag_id or None, day=day or None)
        chosen = select(gens, dag_id=dag_id or None, day=day or None)
        pages = max(1, -(-len(chosen) // PAGE_SIZE))
        page = min(max(page, 1), pages)
        base = request.scope.get("root_path", "").rstrip("/")

        def link(number: int) -> str:
            query = {k: v for k, v in {"dag_id": dag_id, "day": day, "page": str(number)}.items() if v}
            return f"{base}/?{urlencode(query)}"

        html = _PAGE.render(
            configured=progress is not None,
            progress=progress or {},
            base=base,
            dag_id=dag_id,
            day=day,
            dags=numbers["dags"],
            total_count=numbers["count"],
            total_cost=numbers["cost"],
            day_chart=bar_chart(cost_per_day(select(gens, dag_id=dag_id or None), CHART_DAYS)),
            dag_chart=bar_chart(cost_per_dag(select(gens, day=day or None), 12), css="dag"),
            failures=sorted(numbers["failures_by_cause"].items(), key=lambda item: (-item[1], item[0])),
            chart_days=CHART_DAYS,
            shown=[_card(gen) for gen in chosen[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]],
            page=page,
            pages=pages,
            prev_link=link(page - 1) if page > 1 else None,
            next_link=link(page + 1) if page < pages else None,
        )
        return HTMLResponse(html, headers={"Cache-Control": "private, no-store"})

    @app.get("/api/summary")
    async def api_summary(request: Request, dag_id: str = "", day: str = "") -> JSONResponse:
        user = await _user(request)
        gens, failures, progress = await run_in_threadpool(_visible, user)
        numbers = summary(gens, failures, dag_id=dag_id or None, day=day or None)
        return JSONResponse({**numbers, "index": progress})

    @app.get("/thumbnail")
    async def thumbnail(request: Request, bucket: str, key: str) -> Response:
        user = await _user(request)
        body, content_type = await run_in_threadpool(_thumbnail, user, bucket, key)
        return Response(body, media_type=content_type, headers={"Cache-Control": "private, max-age=3600"})

    def _thumbnail(user: Any, bucket: str, key: str) -> tuple[bytes, str]:
        index = state.get_index()
        gen = index.find(bucket, key) if index is not None else None
        if gen is None or not _may_read(user, gen.dag_id):
            raise HTTPException(status_code=404, detail="No such generation")
        cached = state.thumbnails.get((bucket, key))
        if cached is not None:
            return cached
        from airflow_provider_segmind.utils.contact_sheet import thumbnail_jpeg

        answer = state.client().get_object(Bucket=bucket, Key=key)
        content_type = str(answer.get("ContentType") or "")
        if not content_type.startswith("image/") or int(answer.get("ContentLength") or 0) > THUMBNAIL_MAX_SOURCE:
            answer["Body"].close()  # a video, or too large to resize in the api-server: no thumbnail
            raise HTTPException(status_code=404, detail="No thumbnail for this object")
        data = answer["Body"].read()
        try:
            jpeg = thumbnail_jpeg(data, THUMBNAIL_EDGE)
        except (OSError, ValueError):  # bytes Pillow cannot decode (e.g. SVG): the browser gets them as they are
            jpeg = None
        item = (jpeg, "image/jpeg") if jpeg is not None else (data, content_type)
        state.thumbnails.put((bucket, key), item)
        return item

    return app
