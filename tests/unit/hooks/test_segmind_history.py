"""SegmindHook's request-history lookups against the emulator over loopback, sync and async.

What is under test is the hook's reading of the history (by id, and the search for a submit whose
answer was lost) and the emulator's model of it: per-account visibility, pagination, lagging
records, records that outlive the v2 record, and "late" submit faults (the job is created, the
client sees an error). Call counts come from the emulator's ``/_emulator/stats``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from airflow_provider_segmind.emulator.config import OWN_USER_EMAIL
from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.emulator.state import PURGE_GRACE_SECONDS
from airflow_provider_segmind.exceptions import (
    SegmindInvalidParametersError,
    SegmindInvalidResponseError,
    SegmindNotFoundError,
    SegmindRequestNotFoundError,
    SegmindServerError,
    SegmindTransportError,
)
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.history import (
    DEFAULT_HISTORY_URL,
    MAX_HISTORY_ANSWER_BYTES,
    NAIVE_TIMESTAMP_ZONES,
    same_request_id,
)
from airflow_provider_segmind.protocol.retry import RetryPolicy
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL, SegmindJobStatus
from tests.forward_proxy import ForwardProxy, started
from tests.support.jobs import ManualClock

KEY_A = "SG_historyaccountA01"
KEY_A2 = "SG_historyaccountA02"
KEY_B = "SG_historyaccountB01"
GENERIC = "flux-schnell"
#: Tiny waits so retry paths run in milliseconds.
FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.01, backoff_max=0.05, jitter=0.01)
#: One attempt: the client sees the first answer (a late fault) as it is.
ONE_SHOT = RetryPolicy(max_attempts=1)

Factory = Callable[..., SegmindEmulator]


def set_conn(
    monkeypatch: pytest.MonkeyPatch, emu: SegmindEmulator, *, key: str, conn_id: str = "segmind_default", **extra: Any
) -> None:
    conn: dict[str, Any] = {"conn_type": "segmind", "password": key, "host": emu.base_url}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


@pytest.fixture
def accounts(emulator_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> tuple[SegmindEmulator, ManualClock]:
    """Two accounts (A with keys A and A2, B with key B) on a hand-moved clock; jobs take 1 s.

    Connections: ``segmind_default`` = key A, ``seg_a2`` = key A2, ``seg_b`` = key B.
    """
    clock = ManualClock()
    emu = emulator_factory(clock=clock, api_keys=(KEY_A, KEY_B), queue_time=0.0, inference_time=1.0)
    added = requests.post(f"{emu.base_url}/_emulator/keys", json={"add": KEY_A2, "same_account_as": KEY_A}, timeout=10)
    assert added.status_code == 200
    set_conn(monkeypatch, emu, key=KEY_A)
    set_conn(monkeypatch, emu, key=KEY_A2, conn_id="seg_a2")
    set_conn(monkeypatch, emu, key=KEY_B, conn_id="seg_b")
    return emu, clock


def stat(emu: SegmindEmulator, name: str) -> Any:
    return emu.stats()[name]


# ------------------------------------------------------------------ settings


def test_extras_and_defaults(emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key)
    settings = SegmindHook().get_settings()
    assert settings.history_lookup is True
    assert settings.history_url == f"{emulator.base_url}/inference-request/request-history"  # loopback: its own
    monkeypatch.setenv("AIRFLOW_CONN_SEG_REAL", json.dumps({"conn_type": "segmind", "password": "SG_realkey0001"}))
    assert SegmindHook("seg_real").get_settings().history_url == DEFAULT_HISTORY_URL
    set_conn(monkeypatch, emulator, key=emulator.api_key, history_url="https://h.example/x/", history_lookup="false")
    hook = SegmindHook()
    assert hook.get_settings().history_url == "https://h.example/x"
    assert hook.history_enabled is False


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"history_lookup": "maybe"}, "history_lookup"),
        ({"history_url": "http://history.example/h"}, "history_url"),
        ({"history_url": "https://h.example/h?page=2"}, "history_url"),
    ],
)
def test_bad_history_extras_name_the_field(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], named: str
) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key, **extra)
    with pytest.raises(SegmindInvalidParametersError, match=named):
        SegmindHook().get_settings()


def test_history_extras_are_on_both_connection_forms() -> None:
    from airflow_provider_segmind.get_provider_info import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["conn-fields"]["history_url"]["schema"] == {"type": ["string", "null"]}
    # Checked by default: the extra's absence means on, so a form saved untouched keeps it on.
    assert conn_type["conn-fields"]["history_lookup"]["schema"] == {"type": ["boolean", "null"], "default": True}
    from airflow.providers_manager import ProvidersManager

    if hasattr(ProvidersManager, "_to_api_format"):  # 3.2+: Airflow builds the form from conn-fields
        form = ProvidersManager().connection_form_widgets
        assert form["extra__segmind__history_lookup"].field["value"] is True
        assert form["extra__segmind__history_url"].field["schema"]["type"] == ["string", "null"]
    widgets = SegmindHook.get_connection_form_widgets()
    if widgets:  # the 3.1 form's libraries are installed
        assert widgets["history_url"].field_class.__name__ == "StringField"
        assert widgets["history_lookup"].field_class.__name__ == "BooleanField"


# ------------------------------------------------------------------ by id


def test_by_id_own_request_also_after_the_v2_record_expired(accounts: tuple[SegmindEmulator, ManualClock]) -> None:
    _emu, clock = accounts
    hook = SegmindHook(retry_policy=FAST_RETRY)
    body = {"prompt": "a heron in the rain", "seed": 42}
    sub = hook.submit(SD3_LARGE_MODEL, body)

    running = hook.get_history_record(sub.request_id)
    assert running is not None
    assert (running.status, running.output_urls) == (SegmindJobStatus.PROCESSING, ())

    clock.advance(2)
    done = hook.get_history_record(sub.request_id)
    assert done is not None
    assert done.status is SegmindJobStatus.COMPLETED
    assert done.model_name == SD3_LARGE_MODEL
    # The hook sent SD3's defaults too (validate_params fills them): the body as sent covers ours.
    assert done.request_body is not None
    assert body.items() <= done.request_body.items()
    assert done.credits == pytest.approx(0.04)
    assert done.latency_ms == pytest.approx(1000.0)
    assert done.created_at is not None
    assert done.output_url is not None

    # Past the 1 hour retention and past the emulator's purge of expired jobs: v2 says 404, the
    # history still has the request, and its output is still served.
    clock.advance(3600 + PURGE_GRACE_SECONDS + 60)
    hook.submit(SD3_LARGE_MODEL, {"prompt": "a later job purges the old one"})
    with pytest.raises(SegmindRequestNotFoundError):
        hook.get_status(sub.request_id)
    expired = hook.get_history_record(sub.request_id)
    assert expired == done
    media = requests.get(done.output_url, timeout=30)
    assert media.status_code == 200
    assert media.headers["Content-Type"] == "image/jpeg"


def test_by_id_failed_request_has_the_error(accounts: tuple[SegmindEmulator, ManualClock]) -> None:
    _emu, clock = accounts
    hook = SegmindHook()
    sub = hook.submit(SD3_LARGE_MODEL, {"prompt": "__unsafe__ a cat"})
    clock.advance(2)
    record = hook.get_history_record(sub.request_id)
    assert record is not None
    assert record.status is SegmindJobStatus.FAILED
    assert record.error is not None
    assert "safety" in record.error
    assert record.output_urls == ()


def test_another_accounts_id_is_none_and_the_same_accounts_other_key_sees_it(
    accounts: tuple[SegmindEmulator, ManualClock],
) -> None:
    emu, clock = accounts
    sub = SegmindHook().submit(SD3_LARGE_MODEL, {"prompt": "account A's fox", "seed": 1})
    clock.advance(2)
    assert SegmindHook("seg_b").get_history_record(sub.request_id) is None
    assert SegmindHook("seg_b").get_history_record("00000000-0000-0000-0000-000000000000") is None
    other_key = SegmindHook("seg_a2").get_history_record(sub.request_id)
    assert other_key is not None
    assert other_key.status is SegmindJobStatus.COMPLETED
    assert stat(emu, "history_calls") == 3


# ------------------------------------------------------------------ find_submitted


def test_find_submitted_among_others_across_pages(accounts: tuple[SegmindEmulator, ManualClock]) -> None:
    """The wanted request is the oldest of 41 with 3 outputs each: its rows are on page 2 (of 100)."""
    emu, clock = accounts
    hook = SegmindHook()
    since = clock()
    wanted = {"prompt": "the wanted one", "seed": 7, "num_outputs": 3}
    target = hook.submit(GENERIC, wanted)
    for n in range(40):
        clock.advance(1)
        hook.submit(GENERIC, {"prompt": "the wanted one", "seed": 100 + n, "num_outputs": 3})
    SegmindHook("seg_b").submit(GENERIC, wanted)  # the same body, another account
    clock.advance(5)

    before = stat(emu, "history_calls")
    found = hook.find_submitted(GENERIC, wanted, since=since)
    assert found is not None
    assert found.request_id == target.request_id
    assert found.status is SegmindJobStatus.COMPLETED
    assert len(found.output_urls) == 3
    assert stat(emu, "history_calls") - before == 2  # page 1 had 100 rows of newer requests

    # The server's model filter is a substring: another model whose name contains ours is not ours.
    assert hook.find_submitted(GENERIC[:-1], wanted, since=since) is None
    # Not one of another account; not one from before ``since`` (minus a minute of skew).
    assert SegmindHook("seg_b").find_submitted(GENERIC, {**wanted, "seed": 8}, since=since) is None
    assert hook.find_submitted(GENERIC, wanted, since=clock() + 120) is None


def test_find_submitted_newest_match_wins(accounts: tuple[SegmindEmulator, ManualClock]) -> None:
    _emu, clock = accounts
    hook = SegmindHook()
    since = clock()
    body = {"prompt": "twice", "seed": 3}
    hook.submit(SD3_LARGE_MODEL, body)
    clock.advance(10)
    second = hook.submit(SD3_LARGE_MODEL, body)
    found = hook.find_submitted(SD3_LARGE_MODEL, body, since=since)
    assert found is not None
    assert found.request_id == second.request_id


@pytest.mark.parametrize("mode", ["null", "absent"])
def test_find_submitted_respects_lag(emulator_factory: Factory, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    clock = ManualClock()
    emu = emulator_factory(
        clock=clock, queue_time=0.0, inference_time=1.0, history_lag_seconds=30, history_lag_mode=mode
    )
    set_conn(monkeypatch, emu, key=emu.api_key)
    hook = SegmindHook()
    since = clock()
    body = {"prompt": "a late record", "seed": 9}
    sub = hook.submit(SD3_LARGE_MODEL, body)
    clock.advance(10)

    assert hook.find_submitted(SD3_LARGE_MODEL, body, since=since) is None
    landing = hook.get_history_record(sub.request_id)
    if mode == "absent":
        assert landing is None
    else:
        assert landing is not None
        assert (landing.status, landing.request_body, landing.output_urls) == (None, None, ())

    clock.advance(25)
    found = hook.find_submitted(SD3_LARGE_MODEL, body, since=since)
    assert found is not None
    assert found.request_id == sub.request_id
    assert found.status is SegmindJobStatus.COMPLETED


def test_feature_off_sends_nothing(emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key, history_lookup=False)
    hook = SegmindHook()
    body = {"prompt": "off", "seed": 1}
    since = time.time()
    sub = hook.submit(SD3_LARGE_MODEL, body)
    assert hook.history_enabled is False
    assert hook.get_history_record(sub.request_id) is None
    assert hook.find_submitted(SD3_LARGE_MODEL, body, since=since) is None
    assert stat(emulator, "history_calls") == 0


def test_history_errors_are_typed_and_retried_like_reads(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key)
    hook = SegmindHook(retry_policy=FAST_RETRY)
    sub = hook.submit(SD3_LARGE_MODEL, {"prompt": "retried", "seed": 2})
    emulator.script(
        [{"endpoint": "history", "fault": "502", "times": 1}, {"endpoint": "history", "fault": "reset_before"}]
    )
    assert hook.get_history_record(sub.request_id) is not None
    assert stat(emulator, "history_calls") == 3
    emulator.script([{"endpoint": "history", "fault": "500", "times": 3}])
    with pytest.raises(SegmindServerError, match="request history"):
        hook.find_submitted(SD3_LARGE_MODEL, {"prompt": "retried"}, since=time.time() - 60)
    # A history_url where there is no history: the whole endpoint 404s.
    set_conn(monkeypatch, emulator, key=emulator.api_key, history_url=f"{emulator.base_url}/no-history-here")
    with pytest.raises(SegmindNotFoundError, match="history_url"):
        SegmindHook(retry_policy=FAST_RETRY).find_submitted(SD3_LARGE_MODEL, {"prompt": "x"}, since=time.time())


# ------------------------------------------------------------------ late submit faults


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("late500", SegmindServerError),
        ("late502", SegmindServerError),
        ("late503", SegmindServerError),
        ("reset_after", SegmindTransportError),
    ],
)
def test_late_fault_creates_the_job_the_client_does_not_see(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch, fault: str, error: type[Exception]
) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key)
    hook = SegmindHook(retry_policy=ONE_SHOT)
    body = {"prompt": f"lost answer {fault}", "seed": 5}
    since = time.time()
    emulator.script([{"endpoint": "submit", "fault": fault}])
    with pytest.raises(error):
        hook.submit(SD3_LARGE_MODEL, body)

    stats = emulator.stats()
    assert stats["submissions"] == 1
    assert stats["faults"][fault] == 1
    found = hook.find_submitted(SD3_LARGE_MODEL, body, since=since)
    assert found is not None
    assert found.request_body is not None
    assert body.items() <= found.request_body.items()
    assert emulator.stats()["credits_billed"] == pytest.approx(0.04)


def test_slow_submit_times_out_after_the_job_was_created(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``slow`` on submit delays the answer of a job already created: the client's read times out."""
    set_conn(monkeypatch, emulator, key=emulator.api_key, read_timeout=0.3)
    hook = SegmindHook(retry_policy=ONE_SHOT)
    body = {"prompt": "read timeout", "seed": 12}
    since = time.time()
    emulator.script([{"endpoint": "submit", "fault": "slow", "seconds": 1.0}])
    with pytest.raises(SegmindTransportError, match="Read timeout"):
        hook.submit(SD3_LARGE_MODEL, body)
    assert emulator.stats()["submissions"] == 1
    assert SegmindHook().find_submitted(SD3_LARGE_MODEL, body, since=since) is not None


def test_early_500_creates_no_job(emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contrast: an early 500 answers before anything is created, so the history has nothing."""
    set_conn(monkeypatch, emulator, key=emulator.api_key)
    hook = SegmindHook(retry_policy=ONE_SHOT)
    body = {"prompt": "refused", "seed": 6}
    since = time.time()
    emulator.script([{"endpoint": "submit", "fault": "500"}])
    with pytest.raises(SegmindServerError):
        hook.submit(SD3_LARGE_MODEL, body)
    assert emulator.stats()["submissions"] == 0
    assert hook.find_submitted(SD3_LARGE_MODEL, body, since=since) is None


# ------------------------------------------------------------------ async


async def test_async_lookups_match_sync(accounts: tuple[SegmindEmulator, ManualClock]) -> None:
    emu, clock = accounts
    hook = SegmindHook(retry_policy=FAST_RETRY)
    since = clock()
    body = {"prompt": "async heron", "seed": 11}
    sub = hook.submit(SD3_LARGE_MODEL, body)
    for n in range(3):
        hook.submit(SD3_LARGE_MODEL, {"prompt": "async heron", "seed": 20 + n})
    clock.advance(2)

    async_hook = SegmindHook(retry_policy=FAST_RETRY)
    async with async_hook.shared_session() as session:
        assert await async_hook.ahistory_enabled() is True
        record = await async_hook.aget_history_record(sub.request_id, session=session)
        assert record == hook.get_history_record(sub.request_id)
        assert record is not None
        assert record.status is SegmindJobStatus.COMPLETED
        found = await async_hook.afind_submitted(SD3_LARGE_MODEL, body, since=since, session=session)
        assert found is not None
        assert found.request_id == sub.request_id
        emu.script([{"endpoint": "history", "fault": "500"}])
        assert await async_hook.aget_history_record(sub.request_id, session=session) == record  # retried

        # Past retention: v2 404s, the history still answers.
        clock.advance(3700)
        with pytest.raises(SegmindRequestNotFoundError):
            await async_hook.aget_status(sub.request_id, session=session)
        assert await async_hook.aget_history_record(sub.request_id, session=session) == record

    other = SegmindHook("seg_b")
    async with other.shared_session() as session:
        assert await other.aget_history_record(sub.request_id, session=session) is None
        assert await other.afind_submitted(SD3_LARGE_MODEL, body, since=since, session=session) is None


async def test_async_feature_off(emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key, history_lookup="off")
    hook = SegmindHook()
    async with hook.shared_session() as session:
        assert await hook.ahistory_enabled() is False
        assert await hook.aget_history_record("00000000-0000-0000-0000-000000000000", session=session) is None
        assert await hook.afind_submitted(SD3_LARGE_MODEL, {"prompt": "x"}, since=0.0, session=session) is None
    assert stat(emulator, "history_calls") == 0


# ------------------------------------------------------------------ proxies

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
PROXY_PASSWORD = "hist0ry-pr0xy-pw"
HISTORY_PATH = "/inference-request/request-history"


@pytest.fixture
def forward_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[ForwardProxy]:
    """A real forward proxy on loopback that requires credentials; no proxy variables set."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    running = started(credentials=("airflow", PROXY_PASSWORD))
    yield running
    running.stop()


async def test_history_lookups_go_through_the_proxy_extra(
    emulator: SegmindEmulator, forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key, proxy=forward_proxy.url)
    hook = SegmindHook()
    since = time.time()
    body = {"prompt": "via the proxy", "seed": 4}
    sub = hook.submit(SD3_LARGE_MODEL, body)
    assert hook.get_history_record(sub.request_id) is not None
    assert hook.find_submitted(SD3_LARGE_MODEL, body, since=since) is not None
    async_hook = SegmindHook()
    async with async_hook.shared_session() as session:
        assert await async_hook.aget_history_record(sub.request_id, session=session) is not None
        assert await async_hook.afind_submitted(SD3_LARGE_MODEL, body, since=since, session=session) is not None
    assert forward_proxy.count(lambda f: f.path.startswith(HISTORY_PATH)) == 4
    assert forward_proxy.refused == 0
    assert PROXY_PASSWORD not in caplog.text


async def test_the_history_host_gets_its_own_no_proxy_decision(
    emulator: SegmindEmulator, forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The history is on another host than the API (the SDK's ``api.spotprod.segmind.com``): NO_PROXY
    is decided for its URL, on workers and in the triggerer, not copied from the base URL's."""
    port = emulator.base_url.rsplit(":", 1)[1]
    set_conn(monkeypatch, emulator, key=emulator.api_key, history_url=f"http://localhost:{port}{HISTORY_PATH}")
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    hook = SegmindHook()
    sub = hook.submit(SD3_LARGE_MODEL, {"prompt": "direct history", "seed": 3})
    assert hook.get_history_record(sub.request_id) is not None
    async_hook = SegmindHook()
    async with async_hook.shared_session() as session:
        await async_hook.aget_status(sub.request_id, session=session)
        assert await async_hook.aget_history_record(sub.request_id, session=session) is not None
    assert forward_proxy.count(lambda f: f.path == f"/v2/{SD3_LARGE_MODEL}") == 1
    assert forward_proxy.count(lambda f: f.path.startswith("/v2/requests/")) == 1
    assert forward_proxy.count(lambda f: f.path.startswith(HISTORY_PATH)) == 0
    assert emulator.stats()["history_calls"] == 2


# ------------------------------------------------------------------ what the real history may answer (issue 22)


def test_history_timezone_extra(emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key)
    assert SegmindHook().get_settings().history_naive_zones == NAIVE_TIMESTAMP_ZONES == ("UTC", "+05:30")
    for given in ("Asia/Kolkata", " +05:30 ", "UTC", "-08"):
        set_conn(monkeypatch, emulator, key=emulator.api_key, history_timezone=given)
        settings = SegmindHook().get_settings()
        assert settings.history_timezone == given.strip()
        assert settings.history_naive_zones == (given.strip(),)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"history_timezone": "IST"}, r"history_timezone.*IANA time zone name \(e\.g\. Asia/Kolkata\).*\+05:30"),
        ({"history_timezone": "+25:00"}, "history_timezone"),
        ({"history_timezone": 5.5}, "history_timezone"),
        ({"history_user_id": "user-1", "history_user_email": "me@example.com"}, "not both"),
        ({"history_user_email": "not an email"}, "history_user_email"),
        ({"history_user_email": "no-at-sign"}, "history_user_email"),
        ({"history_user_id": "two words"}, "history_user_id"),
    ],
)
def test_bad_issue22_extras_name_the_field_and_the_allowed_forms(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], says: str
) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key, **extra)
    with pytest.raises(SegmindInvalidParametersError, match=says) as refused:
        SegmindHook().get_settings()
    assert "history_timezone: an IANA time zone name" in refused.value.allowed


@pytest.mark.parametrize(
    ("extra", "sent"), [("history_user_id", "user-0"), ("history_user_email", "owner@example.com")]
)
async def test_searches_send_the_user_filter(
    emulator: SegmindEmulator, monkeypatch: pytest.MonkeyPatch, extra: str, sent: str
) -> None:
    set_conn(monkeypatch, emulator, key=emulator.api_key, **{extra: sent})
    hook = SegmindHook()
    body = {"prompt": "mine", "seed": 5}
    since = time.time()
    hook.submit(SD3_LARGE_MODEL, body)
    hook.find_submitted(SD3_LARGE_MODEL, body, since=since)
    async_hook = SegmindHook()
    async with async_hook.shared_session() as session:
        await async_hook.afind_submitted(SD3_LARGE_MODEL, body, since=since, session=session)
    queries = [entry["query"] for entry in emulator.requests_log(HISTORY_PATH)]
    assert len(queries) == 2
    for query in queries:
        assert parse_qs(query)[extra.removeprefix("history_")] == [sent]
    set_conn(monkeypatch, emulator, key=emulator.api_key)
    SegmindHook().find_submitted(SD3_LARGE_MODEL, body, since=since)
    last = parse_qs(emulator.requests_log(HISTORY_PATH)[-1]["query"])
    assert "user_id" not in last
    assert "user_email" not in last


class _BigAnswers:
    """A loopback HTTP server whose every GET answers a JSON history page padded to ``size`` bytes
    (gzip-encoded on the wire when ``gzip`` is set); it counts the requests it got."""

    def __init__(self) -> None:
        self.size = 0
        self.gzip = False
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                head = b'{"data": [], "pad": "'
                body = head + b"x" * (outer.size - len(head) - 2) + b'"}'
                if outer.gzip:
                    body = gzip.compress(body, compresslevel=1)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if outer.gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):  # the client may stop reading at the cap
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def big_answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[_BigAnswers]:
    server = _BigAnswers()
    conn = {"conn_type": "segmind", "password": "SG_bighistory00001", "host": server.base_url}
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))
    yield server
    server.stop()


@pytest.mark.parametrize("encoded", [False, True], ids=["plain", "gzip"])
async def test_a_history_answer_is_read_up_to_the_cap(big_answers: _BigAnswers, encoded: bool) -> None:
    big_answers.gzip = encoded
    big_answers.size = MAX_HISTORY_ANSWER_BYTES  # at the cap: read
    hook = SegmindHook(retry_policy=FAST_RETRY)
    assert hook.find_submitted(GENERIC, {"prompt": "x"}, since=time.time()) is None
    assert hook.get_history_record("00000000-0000-0000-0000-000000000000") is None  # a page of no rows
    async_hook = SegmindHook(retry_policy=FAST_RETRY)
    async with async_hook.shared_session() as session:
        assert await async_hook.afind_submitted(GENERIC, {"prompt": "x"}, since=time.time(), session=session) is None
    assert big_answers.hits == 3

    big_answers.size = MAX_HISTORY_ANSWER_BYTES + 1  # over: refused, not retried (it would be as large again)
    big_answers.hits = 0
    says = f"more than {MAX_HISTORY_ANSWER_BYTES:,} bytes"
    with pytest.raises(SegmindInvalidResponseError, match=says):
        hook.find_submitted(GENERIC, {"prompt": "x"}, since=time.time())
    with pytest.raises(SegmindInvalidResponseError, match=says):
        hook.get_history_record("00000000-0000-0000-0000-000000000000")
    async with async_hook.shared_session() as session:
        with pytest.raises(SegmindInvalidResponseError, match=says):
            await async_hook.afind_submitted(GENERIC, {"prompt": "x"}, since=time.time(), session=session)
        with pytest.raises(SegmindInvalidResponseError, match=says):
            await async_hook.aget_history_record("00000000-0000-0000-0000-000000000000", session=session)
    assert big_answers.hits == 4


@pytest.mark.parametrize("profile", ["default", "sdk-repr", "naive-ist", "rfc1123", "epoch-ms", "hex-ids", "lagging"])
@pytest.mark.parametrize("timezone", [None, "Asia/Kolkata"])
async def test_a_lost_submit_is_found_in_every_history_shape(
    emulator_factory: Factory, monkeypatch: pytest.MonkeyPatch, profile: str, timezone: str | None
) -> None:
    """Whatever the history answers (the emulator's HISTORY_PROFILES), the search finds our request,
    at the time it was submitted, on workers and in the triggerer. (``no-media``/``declared-only``
    drop keys we sent, and ``team`` adds a teammate's copy: those need the body rule and the user
    filter, tested on their own.)"""
    clock = ManualClock()
    emu = emulator_factory(clock=clock, queue_time=0.0, inference_time=1.0, history_profile=profile)
    extra = {"history_timezone": timezone} if timezone else {}
    set_conn(monkeypatch, emu, key=emu.api_key, **extra)
    hook = SegmindHook()
    since = clock()
    body = {"prompt": f"shape {profile}", "seed": 77}
    sub = hook.submit(SD3_LARGE_MODEL, body)
    clock.advance(5)
    found = hook.find_submitted(SD3_LARGE_MODEL, body, since=since, until=clock())
    by_id = hook.get_history_record(sub.request_id)
    async_hook = SegmindHook()
    async with async_hook.shared_session() as session:
        afound = await async_hook.afind_submitted(SD3_LARGE_MODEL, body, since=since, until=clock(), session=session)
        aby_id = await async_hook.aget_history_record(sub.request_id, session=session)
    for record in (found, afound):
        assert record is not None
        assert same_request_id(record.request_id, sub.request_id)
        assert record.created_at == pytest.approx(since, abs=1)
        assert record.request_body is not None
        assert body.items() <= record.request_body.items()  # and the SD3 defaults the hook filled in
    for record in (by_id, aby_id):
        assert record is not None
        assert record.request_id == sub.request_id
        assert any(abs(t - since) < 1 for t in record.created_candidates)
        if timezone or profile != "naive-ist":
            assert record.created_at == pytest.approx(since, abs=1)


def test_a_teammates_copy_is_not_taken_with_the_user_filter(
    emulator_factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team account lists a teammate's request with our body, newer than ours: with the user
    filter set, the search lists only our own requests and finds ours."""
    clock = ManualClock()
    emu = emulator_factory(clock=clock, queue_time=0.0, inference_time=1.0, history_profile="team")
    set_conn(monkeypatch, emu, key=emu.api_key, history_user_email=OWN_USER_EMAIL)
    hook = SegmindHook()
    since = clock()
    body = {"prompt": "ours, copied by a teammate", "seed": 5}
    sub = hook.submit(SD3_LARGE_MODEL, body)
    clock.advance(5)
    found = hook.find_submitted(SD3_LARGE_MODEL, body, since=since, until=clock())
    assert found is not None
    assert found.request_id == sub.request_id
