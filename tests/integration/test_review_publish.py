"""example_segmind_review_and_publish on a real Airflow: a human answers the review through the REST API.

Real scheduler, triggerer, dag-processor and api-server (``tests/integration/cluster.py``), the Segmind
emulator and a moto S3 server on loopback. The run generates 2 prompts x 2 seeds, stores 4 candidates,
and waits on the review screen; a real headless Chromium logs in and opens that screen (its screenshot
is docs/images/review.png: set SEGMIND_REVIEW_SCREENSHOT=<path> to write it there), and reads whether
the Markdown images really loaded; then the reviewer's answer goes through
``PATCH .../taskInstances/review/-1/hitlDetails`` with a real user's token. Checked: exactly the two
chosen images are published (same bytes, a manifest naming the reviewer), one asset event on the
published prefix lists them, and nothing else was copied or removed.

The same Airflow serves the Segmind page (issue 27, docs/operating.md): a second DAG's job FAILs
(``__fail__``), and the page, opened in Chromium inside the Airflow UI (``/plugin/segmind``), shows
the candidates' thumbnails, their cost and that failure by cause (recorded by the plugin's listener
in the real worker). Its screenshot is docs/images/segmind-page.png (set
SEGMIND_PAGE_SCREENSHOT=<path> to write it there). ``airflow standalone`` forces SimpleAuthManager,
which lets every role read every DAG: the per-DAG filter is tested in tests/unit/plugins/test_segmind_page.py.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from moto.server import ThreadedMotoServer

from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.server import SegmindEmulator
from tests.integration.browser import Chromium, Page, chromium_path
from tests.integration.cluster import AirflowCluster

# Without Chromium the browser tests skip, except where a browser is required (CI sets
# SEGMIND_REQUIRE_BROWSER=1 after installing Debian's `chromium`): there a missing browser fails.
NEEDS_CHROMIUM = pytest.mark.skipif(
    chromium_path() is None and os.environ.get("SEGMIND_REQUIRE_BROWSER") != "1",
    reason="no Chromium installed (Debian package `chromium`)",
)

# The module fixture runs the whole scenario (Airflow start-up included) inside the first test's time limit.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "segmind-review"
DAG_ID = "example_segmind_review_and_publish"
PROMPTS = ["A ceramic mug on a desk", "A running shoe on asphalt"]
VARIANTS = 2
REVIEWER, PASSWORD = "reviewer", "review-pw-1"
WAITING = ("awaiting_input", "deferred")  # Airflow 3.3+ parks HITL tasks; 3.1/3.2 defer them
FAIL_DAG_ID = "segmind_page_failure"
FAIL_DAG = f"""
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator

with DAG(dag_id="{FAIL_DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    SegmindTextToImageOperator(task_id="generate", prompt="__fail__ a lighthouse at night", retries=0)
"""


def _s3(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="rv", aws_secret_access_key="rv"
    )


def _api(cluster: AirflowCluster, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{cluster.port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return json.load(response)
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"{method} {path}: HTTP {err.code}: {err.read()[:2000]!r}") from None


async def _show_review(page: Page, url: str, token: str, base: str) -> dict[str, Any]:
    """Log in (the UI's JWT cookie), open the review screen, wait for it, read what rendered, screenshot it."""
    await page.send("Network.enable")
    await page.send("Network.setCookie", name="_token", value=token, url=base, path="/")
    await page.send("Page.enable")
    await page.send("Page.navigate", url=url)
    await page.wait_for("document.body && document.body.innerText.includes('Publish none')", 90)
    # Give the presigned images their chance to load, then record how each one ended.
    images_js = (
        "Array.from(document.querySelectorAll('img')).filter(i => i.src.includes('candidates'))"
        ".map(i => ({src: i.src.split('?')[0], complete: i.complete, width: i.naturalWidth}))"
    )
    await page.wait_for(f"(() => {{ const s = {images_js}; return s.length && s.every(i => i.complete); }})()", 30)
    images = await page.evaluate(images_js)
    await page.wait_for("document.body.innerText.length", 5)
    text = await page.evaluate("document.body.innerText")
    return {"images": images, "text": text, "png": await page.screenshot()}


async def _answer_in_browser(page: Page, url: str, token: str, base: str, option: str) -> dict[str, Any]:
    """As a reviewer would: remove the preselected "Publish none", pick ``option`` in the field, Respond."""
    await page.send("Network.enable")
    await page.send("Network.setCookie", name="_token", value=token, url=base, path="/")
    await page.send("Page.enable")
    await page.send("Page.navigate", url=url)
    respond = "Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === 'Respond')"
    await page.wait_for(f"!!({respond})", 90)
    form: dict[str, Any] = {"html": await page.evaluate("document.querySelector('form')?.outerHTML?.slice(0, 6000)")}
    # The options field is a react-select multi-select: its chips have "Remove <label>" buttons.
    removed = await page.evaluate(
        "(() => { const x = document.querySelector('[aria-label=\"Remove Publish none\"]');"
        " if (!x) return false; x.dispatchEvent(new MouseEvent('mousedown', {bubbles: true}));"
        " x.click(); return true; })()"
    )
    await page.evaluate("document.querySelector('input[role=combobox]').focus()")
    await page.send("Input.insertText", text=option)
    await page.wait_for(
        f"Array.from(document.querySelectorAll('[role=option]')).some(o => o.innerText.includes({json.dumps(option)}))",
        10,
    )
    for kind in ("keyDown", "keyUp"):
        await page.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
    form["chips"] = await page.evaluate(
        "Array.from(document.querySelectorAll('[aria-label^=\"Remove \"]')).map(x => x.getAttribute('aria-label'))"
    )
    form["removed_default"] = removed
    await page.evaluate(f"{respond}.click()")
    form["after"] = await page.wait_for(f"!({respond}) && document.body.innerText", 30)
    return form


async def _show_segmind_page(page: Page, base: str, token: str) -> dict[str, Any]:
    """Log in, open the Segmind page in the Airflow UI (its frame), wait for the thumbnails, read it, screenshot."""
    await page.send("Network.enable")
    await page.send("Network.setCookie", name="_token", value=token, url=base, path="/")
    await page.send("Page.enable")
    await page.send("Page.navigate", url=f"{base}/plugin/segmind")
    frame = "document.querySelector('iframe')?.contentDocument"
    await page.wait_for(f"{frame}?.querySelector('#failures')", 90)
    images_js = (
        f"Array.from({frame}.querySelectorAll('#gallery img'))"
        ".map(i => ({complete: i.complete, width: i.naturalWidth, alt: i.alt}))"
    )
    await page.wait_for(f"(() => {{ const s = {images_js}; return s.every(i => i.complete); }})()", 30)
    return {
        "images": await page.evaluate(images_js),
        "text": await page.evaluate(f"{frame}.body.innerText"),
        "frame_src": await page.evaluate("document.querySelector('iframe').getAttribute('src')"),
        "png": await page.screenshot(),
    }


def _events(cluster: AirflowCluster, run_id: str) -> list[tuple[str, Any]]:
    """``(asset uri, extra)`` of the asset events the run emitted."""
    return [
        (uri, json.loads(extra) if extra else None)
        for uri, extra in cluster.query(
            "SELECT asset.uri, asset_event.extra FROM asset_event JOIN asset ON asset.id = asset_event.asset_id "
            "WHERE asset_event.source_run_id = ?",
            (run_id,),
        )
    ]


def _xcom(cluster: AirflowCluster, run_id: str) -> dict[str, Any]:
    return {
        task: json.loads(value)
        for task, value in cluster.query(
            "SELECT task_id, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
            (DAG_ID, run_id),
        )
    }


def _wait_for_review(cluster: AirflowCluster, run_id: str) -> str:
    """The review task's state once it waits for an answer (or the run failed first).

    Also waits until the scheduler has processed the executor event of the process that parked the
    task (its "TaskInstance Finished ... state=awaiting_input" line): on Airflow 3.3.2 an answer that
    arrives before that fails the review ("finished with state success, but the task instance's state
    attribute is queued"), which a browser answering within seconds hit here (see docs/review.md).
    """
    deadline = time.monotonic() + 300
    state = "missing"
    while time.monotonic() < deadline:
        states = {ti[0]: ti[2] for ti in cluster.task_instances(DAG_ID, run_id)}
        state = states.get("review", "missing")
        if state in WAITING or "failed" in states.values() or "upstream_failed" in states.values():
            break
        time.sleep(2)
    parked = f"task_id=review, run_id={run_id}, "
    while state in WAITING and time.monotonic() < deadline:
        log = cluster.log_path.read_text(errors="replace")
        if any(
            parked in line and f"state={state}" in line for line in log.splitlines() if "TaskInstance Finished" in line
        ):
            break
        time.sleep(1)
    return state


@pytest.fixture(scope="module")
def reviewed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the DAG to its review, show it in Chromium (if installed), answer it, let it finish; collect."""
    home = tmp_path_factory.mktemp("airflow-review")
    dags = home / "dags"
    dags.mkdir()
    shutil.copy(REPO / "example_dags" / f"{DAG_ID}.py", dags)
    passwords = home / "passwords.json"
    (dags / f"{FAIL_DAG_ID}.py").write_text(FAIL_DAG)
    passwords.write_text(json.dumps({REVIEWER: PASSWORD}))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    _s3(endpoint).create_bucket(Bucket=BUCKET)
    config = EmulatorConfig.for_profile("realistic", queue_time=(0.2, 0.5), inference_time=(1.0, 2.0))
    emulator = SegmindEmulator(config).start()
    aws = {
        "conn_type": "aws",
        "login": "rv",
        "password": "rv",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    env = {
        "AIRFLOW_CONN_SEGMIND_DEFAULT": json.dumps(
            {"conn_type": "segmind", "password": emulator.api_key, "host": emulator.base_url}
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
        "SEGMIND_EXAMPLE_BUCKET": BUCKET,
        "SEGMIND_ALLOW_INSECURE_LOOPBACK": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{REVIEWER}:admin",
        "AIRFLOW__SEGMIND__UI_S3_LOCATIONS": f"s3://{BUCKET}/",
        "AIRFLOW__SEGMIND__UI_RECORD_FAILURES": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        # Airflow 3.1.0 signs tokens with iss=None unless an issuer is set, which the PyJWT its
        # constraints allow refuses ("Issuer (iss) must be a string": /auth/token answers 500).
        "AIRFLOW__API_AUTH__JWT_ISSUER": "segmind-review-test",
    }
    cluster = AirflowCluster(home=home, dags_folder=dags, env=env)
    run_id = f"review_{int(time.time())}"
    found: dict[str, Any] = {"cluster": cluster, "run_id": run_id, "endpoint": endpoint, "browser": None}
    try:
        cluster.start()
        cluster.wait_for_dag(DAG_ID)
        cluster.wait_for_dag(FAIL_DAG_ID)
        cluster.trigger(DAG_ID, run_id, {"prompts": PROMPTS, "variants": VARIANTS})
        cluster.trigger(FAIL_DAG_ID, f"{run_id}_fail", {})
        token = _api(cluster, "POST", "/auth/token", body={"username": REVIEWER, "password": PASSWORD})["access_token"]
        detail_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id)}/taskInstances/review/-1/hitlDetails"
        review_state = _wait_for_review(cluster, run_id)
        found["review_state"] = review_state
        found["states_before_answer"] = cluster.task_instances(DAG_ID, run_id)
        if review_state in WAITING:
            detail = _api(cluster, "GET", detail_path, token)
            found["detail"] = detail
            if chromium_path() is not None:
                shot = Path(os.environ.get("SEGMIND_REVIEW_SCREENSHOT") or home / "review.png")
                url = (
                    f"http://127.0.0.1:{cluster.port}/dags/{DAG_ID}/runs/{quote(run_id)}/tasks/review/required_actions"
                )
                with Chromium(width=1280, height=2600) as browser:
                    found["browser"] = browser.run(
                        lambda page: _show_review(page, url, token, f"http://127.0.0.1:{cluster.port}")
                    )
                shot.write_bytes(found["browser"]["png"])
                found["screenshot"] = shot
            options = detail["options"]
            found["chosen"] = [options[0], options[3]]  # the first variant of prompt 1, the second of prompt 2
            found["answer"] = _api(
                cluster, "PATCH", detail_path, token, {"chosen_options": found["chosen"], "params_input": {}}
            )
        found["state"] = cluster.wait_for_run(DAG_ID, run_id, timeout=180)
        found["task_instances"] = cluster.task_instances(DAG_ID, run_id)
        found["events"] = _events(cluster, run_id)
        found["xcom"] = _xcom(cluster, run_id)
        if chromium_path() is not None and found["state"] == "success":
            # A second run, one prompt, answered in the browser: candidate 2 of 2.
            ui_run = f"{run_id}_ui"
            cluster.trigger(DAG_ID, ui_run, {"prompts": PROMPTS[:1], "variants": 2})
            found["ui_run"] = {"run_id": ui_run, "review_state": _wait_for_review(cluster, ui_run)}
            if found["ui_run"]["review_state"] in WAITING:
                ui_detail = _api(cluster, "GET", detail_path.replace(quote(run_id), quote(ui_run)), token)
                option = ui_detail["options"][1]
                url = (
                    f"http://127.0.0.1:{cluster.port}/dags/{DAG_ID}/runs/{quote(ui_run)}/tasks/review/required_actions"
                )
                with Chromium(width=1280, height=1400) as browser:
                    found["ui_run"]["form"] = browser.run(
                        lambda page: _answer_in_browser(page, url, token, f"http://127.0.0.1:{cluster.port}", option)
                    )
                found["ui_run"]["option"] = option
                found["ui_run"]["state"] = cluster.wait_for_run(DAG_ID, ui_run, timeout=180)
                found["ui_run"]["xcom"] = _xcom(cluster, ui_run)
                found["ui_run"]["events"] = _events(cluster, ui_run)
        found["page"] = _segmind_page(cluster, token, f"{run_id}_fail")
        found["log_tail"] = cluster.log_tail(80)
        yield found
    finally:
        cluster.stop()
        emulator.stop()
        server.stop()


def _segmind_page(cluster: AirflowCluster, token: str, fail_run: str) -> dict[str, Any]:
    """The Segmind page once the failing DAG ended: its numbers per user, and in Chromium (if installed)."""
    seen: dict[str, Any] = {"fail_state": cluster.wait_for_run(FAIL_DAG_ID, fail_run, timeout=180)}
    deadline = time.monotonic() + 120  # the page reads the manifests in the background
    while True:
        seen["admin"] = _api(cluster, "GET", "/segmind/api/summary", token)
        if not seen["admin"]["index"]["running"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    try:
        _api(cluster, "GET", "/segmind/api/summary")
        seen["anonymous"] = "answered"
    except RuntimeError as err:
        seen["anonymous"] = str(err)
    if chromium_path() is not None:
        base = f"http://127.0.0.1:{cluster.port}"
        with Chromium(width=1400, height=1100) as browser:
            seen["browser"] = browser.run(lambda page: _show_segmind_page(page, base, token))
        shot = os.environ.get("SEGMIND_PAGE_SCREENSHOT")
        if shot and seen["admin"]["count"]:  # never replace the docs' picture with an empty page
            Path(shot).write_bytes(seen["browser"]["png"])
    return seen


def test_the_segmind_page_shows_what_each_user_may_read(reviewed_run: dict[str, Any]) -> None:
    """Issue 27 item 3 on a real api-server: generations, their cost, and the failure by its cause."""
    seen = reviewed_run["page"]
    assert seen["fail_state"] == "failed", reviewed_run["log_tail"]
    admin = seen["admin"]
    candidates = len(reviewed_run["xcom"]["store_candidates"]) + len(
        (reviewed_run.get("ui_run") or {}).get("xcom", {}).get("store_candidates", [])
    )
    assert admin["count"] == candidates  # the published copies are the same generations: not counted again
    assert admin["dags"] == [DAG_ID]
    assert admin["cost"] > 0
    assert [row["label"] for row in admin["cost_per_dag"]] == [DAG_ID]
    # The worker's listener recorded the FAILED job's cause; the page counts it.
    assert admin["failures_by_cause"] == {"job_failed": 1}
    assert "HTTP 401" in seen["anonymous"]  # no token, nothing


@NEEDS_CHROMIUM
def test_the_segmind_page_in_a_real_browser(reviewed_run: dict[str, Any]) -> None:
    """In the Airflow UI's frame: every thumbnail loaded, the charts and the failure shown."""
    seen = reviewed_run["page"].get("browser")
    assert seen is not None, reviewed_run["log_tail"]
    assert seen["frame_src"].endswith("/segmind/")
    assert len(seen["images"]) == reviewed_run["page"]["admin"]["count"]
    assert all(image["complete"] and image["width"] > 0 for image in seen["images"]), seen["images"]
    for text in ("Cost per day", "Cost per DAG", "Failures by cause", "job_failed", DAG_ID, PROMPTS[0]):
        assert text in seen["text"], seen["text"]


def test_the_review_waits_with_one_option_per_candidate(reviewed_run: dict[str, Any]) -> None:
    assert reviewed_run["review_state"] in WAITING, (reviewed_run["states_before_answer"], reviewed_run["log_tail"])
    detail = reviewed_run["detail"]
    assert len(detail["options"]) == len(PROMPTS) * VARIANTS + 1
    assert detail["options"][-1] == "Publish none"
    assert detail["defaults"] == ["Publish none"]
    assert detail["multiple"] is True
    assert "![" in detail["body"]
    assert "Seed:" in detail["body"]


def test_the_answer_publishes_exactly_the_chosen_images(reviewed_run: dict[str, Any]) -> None:
    assert reviewed_run["state"] == "success", (reviewed_run["task_instances"], reviewed_run["log_tail"])
    s3 = _s3(reviewed_run["endpoint"])
    run = f"/{reviewed_run['run_id']}/"  # this run's objects (a second run is answered in the browser)
    keys = sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if run in obj["Key"])
    candidates = reviewed_run["xcom"]["store_candidates"]
    published = reviewed_run["xcom"]["publish"]
    assert len(candidates) == len(PROMPTS) * VARIANTS
    assert len(published) == 2
    # Nothing else copied, nothing removed: the candidates (and manifests) plus the two published images.
    candidate_keys = [uri.split("/", 3)[3] for uri in candidates]
    published_keys = [uri.split("/", 3)[3] for uri in published]
    assert keys == sorted(
        [
            *candidate_keys,
            *(k + ".manifest.json" for k in candidate_keys),
            *published_keys,
            *(k + ".manifest.json" for k in published_keys),
        ]
    )
    assert all(key.startswith(f"published/{DAG_ID}/") for key in published_keys)
    # Issue 24 item 5: the pins survived the wait (XCom segmind_review_pins) and came back with the answer.
    pins = reviewed_run["xcom"]["review"]["pinned_candidates"]
    assert [pin["uri"] for pin in pins] == candidates
    assert [pin["option"] for pin in pins] == reviewed_run["detail"]["options"][:-1]
    for source, target in zip([candidates[0], candidates[3]], published_keys, strict=True):
        source_key = source.split("/", 3)[3]
        assert s3.get_object(Bucket=BUCKET, Key=target)["Body"].read() == (
            s3.get_object(Bucket=BUCKET, Key=source_key)["Body"].read()
        )
        manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=target + ".manifest.json")["Body"].read())
        assert manifest["approval"]["approved_by"]["name"] == REVIEWER
        assert manifest["approval"]["timed_out"] is False
        assert manifest["approval"]["chosen_options"] == reviewed_run["chosen"]
        assert manifest["approval"]["approved_at"]
        assert manifest["approval"]["review_task_id"] == "review"
        assert manifest["source"]["candidate_uri"] == source
        assert manifest["sha256"] == next(pin["sha256"] for pin in pins if pin["uri"] == source)


def test_one_asset_event_for_the_published_images_only(reviewed_run: dict[str, Any]) -> None:
    events = reviewed_run["events"]
    assert [uri for uri, _ in events] == [f"s3://{BUCKET}/published/{DAG_ID}"]
    extra = events[0][1]
    assert extra["count"] == 2
    assert [obj["key"] for obj in extra["objects"]] == [uri.split("/", 3)[3] for uri in reviewed_run["xcom"]["publish"]]


@NEEDS_CHROMIUM
def test_the_review_screen_in_a_real_browser(reviewed_run: dict[str, Any]) -> None:
    """The screen shows every candidate's option and facts, and the Markdown images load (presigned URLs)."""
    seen = reviewed_run["browser"]
    assert seen is not None, reviewed_run["log_tail"]
    for option in reviewed_run["detail"]["options"]:
        assert option in seen["text"]
    assert "Seed" in seen["text"]
    images = seen["images"]
    assert len(images) == len(PROMPTS) * VARIANTS
    assert all(image["complete"] and image["width"] > 0 for image in images), images
    assert reviewed_run["screenshot"].stat().st_size > 10_000


@NEEDS_CHROMIUM
def test_a_review_answered_in_a_real_browser(reviewed_run: dict[str, Any]) -> None:
    """Another run, answered on the review screen itself: the one image chosen there is published."""
    ui = reviewed_run.get("ui_run")
    assert ui is not None, reviewed_run["log_tail"]
    assert ui["review_state"] in WAITING
    form = ui["form"]
    assert form["removed_default"] is True, form["html"]
    assert form["chips"] == [f"Remove {ui['option']}"], form["html"]
    assert ui["state"] == "success", (ui, reviewed_run["log_tail"])
    published = ui["xcom"]["publish"]
    assert len(published) == 1
    assert published[0].endswith(ui["xcom"]["store_candidates"][1].rsplit("/", 1)[-1])
    s3 = _s3(reviewed_run["endpoint"])
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=published[0].split("/", 3)[3] + ".manifest.json")["Body"].read()
    )
    assert manifest["approval"]["approved_by"]["name"] == REVIEWER
    assert manifest["approval"]["chosen_options"] == [ui["option"]]
    assert [uri for uri, _ in ui["events"]] == [f"s3://{BUCKET}/published/{DAG_ID}"]
