"""Benchmark 6: the Segmind page (``/segmind/``) with 10,000 generations in S3.

Set-up: moto's S3 server (its own process) holds 10,000 manifests in the shape ``SegmindToS3Operator``
writes (20 DAGs, 30 days, one key per output under ``segmind/<dag>/<run>/<task>/<map>/``) and, for
the newest page of them, a 1024x1024 JPEG each (only the first page's thumbnails are ever asked for).
The 20 DAGs exist in Airflow's metadata database (a throw-away SQLite, one file of trivial DAGs
synced as the DAG processor would), because the auth manager only ever grants DAGs Airflow knows.

Measured, in this process, through Airflow's own api-server app (``create_app("core")``: the plugin
mounted as Airflow mounts it, SimpleAuthManager, a real JWT) over HTTP/ASGI:

- first view: the first page view after start, which answers within ``VIEW_WAIT`` (3 s) with what
  the background refresh has read so far; then the time that refresh takes to list 10,000 keys
  (10 list calls) and GET every manifest once;
- warm: a page view within ``[segmind] ui_refresh_seconds`` (memory only), median of several;
- stale: a page view after the listing expired (answered from the snapshot while a background
  refresh lists again and fetches nothing, since nothing changed);
- filtered: one DAG, one day, a later page of the gallery; and the JSON summary;
- thumbnails: the first page's 48 thumbnails, first (S3 GET + resize) and again (memory);
- if Chromium is installed: the page in a real headless browser served by uvicorn on loopback,
  from navigation until every thumbnail has loaded (``make bench`` machines have it; else skipped).

No target is asserted: the figures show where the time goes. "Stays fast" here means a warm view
in tens of milliseconds whatever the bucket holds, and a cold one bounded by one GET per manifest
(10 at a time), paid once per api-server process and then only for new manifests.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._common import BenchResult, MotoProcess, Row, fmt

TITLE = "Segmind page"
GENERATIONS = 10_000
DAGS = 20
DAYS = 30
BUCKET = "segmind-page-bench"
WARM_REPEATS = 7


def _jpeg() -> bytes:
    from PIL import Image

    image = Image.radial_gradient("L").resize((1024, 1024)).convert("RGB")
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


def _manifests(count: int) -> list[dict[str, Any]]:
    """``count`` manifests like the transfer's, newest first, spread over DAGS DAGs and DAYS days."""
    rng = random.Random(6)
    now = datetime.now(UTC)
    docs = []
    for i in range(count):
        dag = f"bench_dag_{i % DAGS:02d}"
        stored = now - timedelta(seconds=i * DAYS * 86400 / count)
        run = f"scheduled__{stored.date().isoformat()}"
        request_id = f"{i:08d}-bench"
        key = f"segmind/{dag}/{run}/generate/{i % 50}/{request_id}-0.jpeg"
        docs.append(
            {
                "manifest_version": 1,
                "uri": f"s3://{BUCKET}/{key}",
                "bucket": BUCKET,
                "key": key,
                "sha256": f"{i:064x}",
                "size": 150_000,
                "content_type": "image/jpeg",
                "width": 1024,
                "height": 1024,
                "write": "created",
                "request_id": request_id,
                "model": "sd3.5-large",
                "output_index": 0,
                "prompt": f"product photo {i}: a ceramic mug on a desk, soft light",
                "negative_prompt": None,
                "seed": i,
                "params": {"prompt": "...", "seed": i},
                "metrics": {"cost": round(rng.uniform(0.01, 0.08), 4)},
                "cost": None,
                "timestamps": {"stored_at": stored.isoformat(timespec="milliseconds")},
                "airflow": {"dag_id": dag, "run_id": run, "task_id": "generate", "map_index": i % 50},
                "producer": {"package": "airflow-provider-segmind", "operator": "SegmindToS3Operator"},
            }
        )
        docs[-1]["cost"] = docs[-1]["metrics"]["cost"]
    return docs


def _fill_bucket(client: Any, docs: list[dict[str, Any]], first_page: int) -> float:
    client.create_bucket(Bucket=BUCKET)
    image = _jpeg()
    started = time.perf_counter()

    def put(item: tuple[int, dict[str, Any]]) -> None:
        i, doc = item
        body = json.dumps(doc).encode()
        client.put_object(Bucket=BUCKET, Key=doc["key"] + ".manifest.json", Body=body)
        if i < first_page:
            client.put_object(Bucket=BUCKET, Key=doc["key"], Body=image, ContentType="image/jpeg")

    with ThreadPoolExecutor(10) as pool:  # botocore's connection pool
        list(pool.map(put, enumerate(docs)))
    return time.perf_counter() - started


def _register_dags(home: Path) -> None:
    """The DAGs the manifests name, in the metadata DB (the auth manager grants only DAGs Airflow knows)."""
    import subprocess
    import sys

    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (dags / "bench_dags.py").write_text(
        "from datetime import datetime\nfrom airflow.sdk import DAG\nfrom airflow.providers.standard.operators.empty "
        "import EmptyOperator\n"
        f"for i in range({DAGS}):\n"
        "    with DAG(dag_id=f'bench_dag_{i:02d}', schedule=None, start_date=datetime(2026, 1, 1)) as dag:\n"
        "        EmptyOperator(task_id='generate')\n"
        "    globals()[dag.dag_id] = dag\n"
    )
    for command in (["db", "migrate"], ["dags", "reserialize"]):
        subprocess.run([sys.executable, "-m", "airflow", *command], check=True, capture_output=True, timeout=600)


def _timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def _browser_load(app: Any, token: str) -> dict[str, Any] | None:
    """Seconds from navigation until every thumbnail loaded, in headless Chromium (``None`` without it)."""
    try:
        from tests.integration.browser import Chromium, chromium_path
    except ImportError:
        return None
    if chromium_path() is None:
        return None
    import socket

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"

        async def scenario(page: Any) -> dict[str, Any]:
            await page.send("Network.enable")
            await page.send("Network.setCookie", name="_token", value=token, url=base, path="/")
            await page.send("Page.enable")
            loads = {}
            for label in ("first", "again"):
                if label == "again":
                    await page.send("Network.clearBrowserCache")
                started = time.perf_counter()
                await page.send("Page.navigate", url=f"{base}/segmind/")
                # The thumbnails in the window (the others are loading="lazy": they load when scrolled to).
                done = (
                    "(() => { const s = Array.from(document.querySelectorAll('#gallery img'))"
                    ".filter(i => i.getBoundingClientRect().top < window.innerHeight);"
                    " return s.length > 0 && s.every(i => i.complete && i.naturalWidth > 0); })()"
                )
                ok = await page.wait_for(done, 120)
                loads[label] = time.perf_counter() - started if ok else None
                if not ok:  # say what the browser showed instead
                    loads[f"{label}_seen"] = await page.evaluate(
                        "JSON.stringify({url: location.href,"
                        " text: document.body ? document.body.innerText.slice(0, 300) : null,"
                        " images: Array.from(document.querySelectorAll('img')).slice(0, 3)"
                        ".map(i => [i.src, i.complete, i.naturalWidth])})"
                    )
                await asyncio.sleep(0.2)
            return loads

        with Chromium(width=1400, height=1000) as browser:
            result: dict[str, Any] = browser.run(scenario, timeout=300)
            return result
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run(quick: bool) -> BenchResult:
    result = BenchResult(6, TITLE)
    count = int(os.environ.get("SEGMIND_B6_GENERATIONS") or (2_000 if quick else GENERATIONS))
    home = Path(os.environ.get("AIRFLOW_HOME") or tempfile.mkdtemp(prefix="segmind-bench-home-"))
    import boto3

    with MotoProcess() as moto:
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
        client = boto3.client("s3", endpoint_url=moto.endpoint, **creds)
        docs = _manifests(count)
        fill_s = _fill_bucket(client, docs, first_page=48)
        conn = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": moto.endpoint, "region_name": "us-east-1"},
        }
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(conn)
        os.environ["AIRFLOW__SEGMIND__UI_S3_LOCATIONS"] = f"s3://{BUCKET}/segmind/"
        os.environ["AIRFLOW__SEGMIND__UI_REFRESH_SECONDS"] = "3600"
        os.environ["AIRFLOW__CORE__AUTH_MANAGER"] = (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        )
        os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"
        os.environ["AIRFLOW__API_AUTH__JWT_ISSUER"] = "segmind-bench"
        _register_dags(home)

        from airflow.api_fastapi import app as api_app
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from starlette.testclient import TestClient

        app = api_app.create_app("core")
        token = api_app.get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
        http = TestClient(app)
        headers = {"Authorization": f"Bearer {token}"}

        def view(path: str = "/segmind/", **params: str) -> Any:
            answer = http.get(path, params=params or None, headers=headers)  # None keeps a query in path
            answer.raise_for_status()
            return answer

        first_s, _ = _timed(view)  # answers within VIEW_WAIT with what has been read so far
        index = next(r for r in app.routes if getattr(r, "path", "") == "/segmind").app  # the mounted LazyApp
        state = index._app.state.segmind
        first_progress = dict(state.index.progress)
        state.index.wait(1800)
        cold_s = state.index.last_refresh["seconds"]
        cold_refresh = dict(state.index.last_refresh)
        _, page = _timed(view)
        warm = [_timed(view)[0] for _ in range(WARM_REPEATS)]
        state.index.ttl = 0.0
        stale_s, _ = _timed(view)  # starts a refresh in the background and answers from the snapshot
        state.index.wait(600)
        relist_refresh = dict(state.index.last_refresh)
        state.index.ttl = 3600.0
        day = docs[len(docs) // 2]["timestamps"]["stored_at"][:10]
        filtered_dag = statistics.median(_timed(lambda: view(dag_id="bench_dag_07"))[0] for _ in range(5))
        filtered_day = statistics.median(_timed(lambda: view(day=day))[0] for _ in range(5))
        later_page = statistics.median(_timed(lambda: view(page="50"))[0] for _ in range(5))
        summary_s = statistics.median(_timed(lambda: view("/segmind/api/summary"))[0] for _ in range(5))
        import re

        thumbs = [src.replace("&amp;", "&") for src in re.findall(r'src="(/segmind/thumbnail\?[^"]+)"', page.text)]
        first_thumbs_s, _ = _timed(lambda: [view(src) for src in thumbs])
        again_thumbs_s, _ = _timed(lambda: [view(src) for src in thumbs])
        browser = _browser_load(app, str(token))

    warm_ms = statistics.median(warm) * 1000
    result.figures = {
        "generations": count,
        "fill_bucket_s": fill_s,
        "first_view_s": first_s,
        "first_view_progress": first_progress,
        "cold_s": cold_s,
        "cold_refresh": cold_refresh,
        "warm_ms": [w * 1000 for w in warm],
        "stale_view_s": stale_s,
        "relist_refresh": relist_refresh,
        "filtered_dag_ms": filtered_dag * 1000,
        "filtered_day_ms": filtered_day * 1000,
        "later_page_ms": later_page * 1000,
        "summary_ms": summary_s * 1000,
        "page_bytes": len(page.content),
        "thumbnails": len(thumbs),
        "thumbnails_first_s": first_thumbs_s,
        "thumbnails_again_s": again_thumbs_s,
        "browser": browser,
    }
    n = f"{count:,}"
    read = first_progress.get("fetched", 0)
    result.rows += [
        Row(
            "6",
            f"first page view after start ({n} manifests not read yet)",
            fmt(first_s, 2, " s"),
            note=f"answers within VIEW_WAIT with what is read so far ({read} then; the page says so)",
        ),
        Row(
            "6",
            f"index complete in the background (lists {n}, GETs each once)",
            fmt(cold_s, 1, " s"),
            note=f"{cold_refresh.get('listed', 0):.0f} listed, {cold_refresh.get('fetched', 0):.0f} fetched",
        ),
        Row("6", f"page view, warm (median of {WARM_REPEATS})", fmt(warm_ms, 0, " ms")),
        Row(
            "6",
            "page view when the listing expired (answered from the snapshot)",
            fmt(stale_s * 1000, 0, " ms"),
            note=f"the background relisting took {relist_refresh.get('seconds', 0):.1f} s and fetched "
            f"{relist_refresh.get('fetched', 0):.0f} manifests",
        ),
        Row(
            "6",
            "page view filtered by DAG / by day / page 50 (medians)",
            f"{filtered_dag * 1000:.0f} / {filtered_day * 1000:.0f} / {later_page * 1000:.0f} ms",
        ),
        Row("6", "JSON summary (median)", fmt(summary_s * 1000, 0, " ms")),
        Row(
            "6",
            f"{len(thumbs)} thumbnails one after the other: first (S3 GET + resize) / again (memory)",
            f"{first_thumbs_s:.2f} / {again_thumbs_s:.2f} s",
        ),
    ]
    if browser is not None:

        def seconds(value: Any) -> str:
            return "not loaded" if value is None else f"{value:.2f}"

        result.rows.append(
            Row(
                "6",
                "Chromium: navigation until the thumbnails in the window loaded, first / again (warm index)",
                f"{seconds(browser['first'])} / {seconds(browser['again'])} s",
                note=str(browser.get("first_seen") or "")[:300],
            )
        )
    result.notes.append(
        f"6: {n} manifests in moto (filled in {fill_s:.0f} s, 10 threads); page {len(page.content) / 1024:.0f} kB "
        f"of HTML with {len(thumbs)} thumbnails; Airflow's api-server app in this process (ASGI, no network)."
    )
    return result
