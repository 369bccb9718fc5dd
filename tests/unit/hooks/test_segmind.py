"""SegmindHook against the emulator over loopback: every status code, fault and retry path.

Call counts come from the emulator's ``/_emulator/stats``, so "retried" and "not retried" are
observed on the server, not inferred from the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import warnings
from typing import Any

import pytest

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindForbiddenError,
    SegmindInsufficientCreditsError,
    SegmindInvalidParametersError,
    SegmindInvalidResponseError,
    SegmindJobFailedError,
    SegmindModelNotFoundError,
    SegmindRateLimitError,
    SegmindRequestNotFoundError,
    SegmindServerError,
    SegmindTransportError,
)

# The loop caches and the session pool (the fixture below swaps the settings cache where it is read).
from airflow_provider_segmind.hooks import _cache as hook_module
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.retry import RetryPolicy
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL, SegmindJobStatus

PROMPT = {"prompt": "a lighthouse at dawn, watercolour", "seed": 11}
#: Tiny waits so retry paths run in milliseconds; the decisions are what is under test.
FAST_RETRY = RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.05, rate_limit_max_wait=0.3, jitter=0.01)


def set_conn(monkeypatch: pytest.MonkeyPatch, emu: Any, *, key: str | None = None, **extra: Any) -> None:
    conn = {"conn_type": "segmind", "password": key if key is not None else emu.api_key, "host": emu.base_url}
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps(conn))


@pytest.fixture
def hook(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> SegmindHook:
    set_conn(monkeypatch, emulator)
    return SegmindHook(retry_policy=FAST_RETRY)


def wait_completed(hook: SegmindHook, request_id: str) -> None:
    import time

    for _ in range(200):
        if hook.get_status(request_id).status.is_terminal:
            return
        time.sleep(0.05)
    raise AssertionError("job did not finish")


# ------------------------------------------------------------------ connection


def test_connection_from_env_json_and_uri(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, read_timeout=12, max_retries=1)
    settings = SegmindHook().get_settings()
    assert settings.base_url == emulator.base_url
    assert settings.read_timeout == 12
    assert settings.retry_policy.max_attempts == 2
    assert emulator.api_key not in repr(settings)

    # URI form: the host/port become the base URL, http as the schema.
    host, port = emulator.base_url.removeprefix("http://").split(":")
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", f"segmind://:{emulator.api_key}@{host}:{port}/?__extra__=%7B%7D")
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_URI", f"segmind://:{emulator.api_key}@{host}:{port}?schema=http")
    hook = SegmindHook("segmind_uri")
    conn_base = hook.get_settings().base_url
    assert conn_base.endswith(f"{host}:{port}")


def test_default_base_url_is_segmind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps({"conn_type": "segmind", "password": "SG_x"}))
    assert SegmindHook().get_settings().base_url == "https://api.segmind.com"


def test_missing_key_fails_before_any_request(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, key="")
    with pytest.raises(SegmindAuthenticationError, match="no API key"):
        SegmindHook().submit(SD3_LARGE_MODEL, PROMPT)
    assert emulator.stats()["submit_attempts"] == 0


def test_misconfigured_extras_name_the_problem(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, read_timeout=-5)
    with pytest.raises(SegmindInvalidParametersError, match="read_timeout"):
        SegmindHook().get_settings()


def test_ui_metadata_is_consistent() -> None:
    from airflow_provider_segmind.get_provider_info import get_provider_info

    info = get_provider_info()
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == SegmindHook.conn_type == "segmind"
    behaviour = SegmindHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["password"] == "API Key"
    assert conn_type["ui-field-behaviour"]["relabeling"] == behaviour["relabeling"]
    assert set(conn_type["conn-fields"]) >= {"connect_timeout", "read_timeout", "max_retries"}


def test_provider_is_discovered_by_airflow() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-segmind" in manager.providers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3.3 points hook look-ups at the task SDK's manager
        hook_info = manager.hooks["segmind"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_segmind.hooks.segmind.SegmindHook"


# ------------------------------------------------------------------ happy paths


def test_submit_poll_result(hook: SegmindHook, emulator: Any) -> None:
    sub = hook.submit(SD3_LARGE_MODEL, PROMPT)
    assert sub.status is SegmindJobStatus.QUEUED
    assert sub.status_url.startswith(emulator.base_url)
    wait_completed(hook, sub.request_id)
    result = hook.get_result(sub.request_id)
    assert result.status is SegmindJobStatus.COMPLETED
    assert result.output_urls
    assert result.output_urls[0].startswith(emulator.base_url)
    assert result.seed == 11
    assert "inference_time" in result.metrics
    stats = emulator.stats()
    assert stats["submissions"] == 1
    assert stats["result_fetches"] == 1


def test_run_sync_returns_image_bytes_and_headers(hook: SegmindHook) -> None:
    out = hook.run_sync(SD3_LARGE_MODEL, {**PROMPT, "output_format": "png"})
    assert out.content_type == "image/png"
    assert out.content.startswith(b"\x89PNG")
    assert out.remaining_credits is not None
    assert "x-seed-value" in out.headers


def test_credits_and_test_connection(hook: SegmindHook, emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before = hook.get_credits()
    assert before > 0
    ok, message = hook.test_connection()
    assert ok
    assert "credits remaining" in message
    assert emulator.stats()["submissions"] == 0  # the Test button spends nothing

    set_conn(monkeypatch, emulator, key="SG_ffffffffffffffff")
    ok, message = SegmindHook(retry_policy=FAST_RETRY).test_connection()
    assert not ok
    assert "401" in message
    assert "API key" in message
    assert "SG_ffffffffffffffff" not in message


def test_generic_model_params_pass_through(hook: SegmindHook, emulator: Any) -> None:
    sub = hook.submit("flux-schnell", {"prompt": "a cat", "steps": 4, "custom": {"a": 1}})
    job = emulator.job(sub.request_id)
    assert job["model"] == "flux-schnell"
    assert job["params"]["custom"] == {"a": 1}


# ------------------------------------------------------------------ errors, one per status code


def test_401_wrong_key(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, key="SG_deadbeefdeadbeef")
    with pytest.raises(SegmindAuthenticationError) as info:
        SegmindHook(retry_policy=FAST_RETRY).submit(SD3_LARGE_MODEL, PROMPT)
    assert info.value.status_code == 401
    assert "SG_deadbeefdeadbeef" not in str(info.value)
    assert emulator.stats()["submit_attempts"] == 1  # never retried


def test_403_forbidden_model(hook: SegmindHook, emulator: Any) -> None:
    emulator.configure(forbidden_models=["pro-only-model"])
    with pytest.raises(SegmindForbiddenError):
        hook.submit("pro-only-model", {"prompt": "x"})
    assert emulator.stats()["submissions"] == 0


def test_404_model_vs_404_request(hook: SegmindHook, emulator: Any) -> None:
    emulator.configure(missing_models=["no-such-model"])
    with pytest.raises(SegmindModelNotFoundError, match="model slug"):
        hook.submit("no-such-model", {"prompt": "x"})
    with pytest.raises(SegmindRequestNotFoundError, match="retention"):
        hook.get_status("00000000-0000-0000-0000-000000000000")
    assert emulator.stats()["status_polls"] == 1  # 404 is final: not retried


def test_expired_request_is_request_not_found(hook: SegmindHook, emulator: Any) -> None:
    sub = hook.submit(SD3_LARGE_MODEL, PROMPT)
    emulator.expire(sub.request_id)
    with pytest.raises(SegmindRequestNotFoundError) as info:
        hook.get_result(sub.request_id)
    assert info.value.request_id == sub.request_id


def test_406_insufficient_credits(hook: SegmindHook, emulator: Any) -> None:
    emulator.configure(credits=0.0)
    emulator.reset()
    with pytest.raises(SegmindInsufficientCreditsError, match="Top up"):
        hook.submit(SD3_LARGE_MODEL, PROMPT)
    assert emulator.stats()["submit_attempts"] == 1


def test_400_at_submit_when_server_validates(hook: SegmindHook, emulator: Any) -> None:
    """Refused before running: Segmind's 400 (a malformed body); its 422 is a job that ran and FAILED."""
    emulator.configure(v2_validation="submit")
    with pytest.raises(SegmindInvalidParametersError) as info:
        hook.submit(SD3_LARGE_MODEL, {"prompt": "x", "aspect_ratio": "7:5"}, validate=False)
    assert info.value.status_code == 400
    assert emulator.stats()["submissions"] == 0


def test_client_side_validation_sends_nothing(hook: SegmindHook, emulator: Any) -> None:
    with pytest.raises(SegmindInvalidParametersError, match="aspect_ratio"):
        hook.submit(SD3_LARGE_MODEL, {"prompt": "x", "aspect_ratio": "7:5"})
    assert emulator.stats()["submit_attempts"] == 0


def test_failed_job_status_and_result(hook: SegmindHook) -> None:
    sub = hook.submit(SD3_LARGE_MODEL, {"prompt": "a scene __unsafe__"})
    wait_completed(hook, sub.request_id)
    status = hook.get_status(sub.request_id)
    assert status.status is SegmindJobStatus.FAILED
    assert status.error
    assert "safety" in status.error
    with pytest.raises(SegmindJobFailedError, match="safety"):
        hook.get_result(sub.request_id)


def test_failed_job_from_server_side_validation(hook: SegmindHook) -> None:
    # Like the real v2 API, the emulator accepts the job and FAILs it with the validation text.
    sub = hook.submit(SD3_LARGE_MODEL, {"prompt": "x", "aspect_ratio": "7:5"}, validate=False)
    wait_completed(hook, sub.request_id)
    status = hook.get_status(sub.request_id)
    assert status.status is SegmindJobStatus.FAILED
    assert status.error


# ------------------------------------------------------------------ retries


@pytest.mark.parametrize("fault", ["429", "500", "502", "504", "html502", "bad_json", "reset_before", "reset_after"])
def test_reads_are_retried_through_transient_faults(hook: SegmindHook, emulator: Any, fault: str) -> None:
    sub = hook.submit(SD3_LARGE_MODEL, PROMPT)
    emulator.script([{"endpoint": "status", "fault": fault, "times": 2}])
    status = hook.get_status(sub.request_id)
    assert status.request_id == sub.request_id
    assert emulator.stats()["status_polls"] == 3


def test_retries_are_bounded_and_the_last_error_is_raised(hook: SegmindHook, emulator: Any) -> None:
    sub = hook.submit(SD3_LARGE_MODEL, PROMPT)
    emulator.script([{"endpoint": "status", "fault": "502", "times": 10}])
    with pytest.raises(SegmindServerError, match="502"):
        hook.get_status(sub.request_id)
    assert emulator.stats()["status_polls"] == FAST_RETRY.max_attempts


@pytest.mark.parametrize("fault", ["429", "500", "502"])
def test_submit_is_retried_when_the_server_answered_that_it_did_not_accept_it(
    hook: SegmindHook, emulator: Any, fault: str
) -> None:
    emulator.script([{"endpoint": "submit", "fault": fault}])
    sub = hook.submit(SD3_LARGE_MODEL, PROMPT)
    assert sub.request_id
    stats = emulator.stats()
    assert stats["submit_attempts"] == 2
    assert stats["submissions"] == 1  # billed once


@pytest.mark.parametrize(
    ("fault", "error", "server_kept_the_job"),
    [
        # A reset after the request left the client looks the same whether or not the server had
        # queued the job: reset_before did not, reset_after did. The client cannot tell them apart,
        # so it never resubmits; one of the two would be billed twice.
        ("reset_before", SegmindTransportError, 0),
        ("reset_after", SegmindTransportError, 1),
        # The emulator's 504 is a gateway that gave up after the upstream queued the job.
        ("504", SegmindServerError, 1),
        # A 200 (billed) whose body was cut: the job exists, its request id was lost.
        ("bad_json", SegmindTransportError, 1),
    ],
)
def test_submit_is_never_repeated_when_it_may_have_been_accepted(
    hook: SegmindHook, emulator: Any, fault: str, error: type[Exception], server_kept_the_job: int
) -> None:
    emulator.script([{"endpoint": "submit", "fault": fault}])
    with pytest.raises(error):
        hook.submit(SD3_LARGE_MODEL, PROMPT)
    stats = emulator.stats()
    assert stats["submit_attempts"] == 1
    assert stats["submissions"] == server_kept_the_job


def test_submit_read_timeout_is_not_retried(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator, read_timeout=0.3)
    emulator.configure(slow_seconds=2.0)
    emulator.script([{"endpoint": "submit", "fault": "slow"}])
    with pytest.raises(SegmindTransportError, match="Read timeout") as info:
        SegmindHook(retry_policy=FAST_RETRY).submit(SD3_LARGE_MODEL, PROMPT)
    assert info.value.request_sent
    assert "bill twice" in str(info.value)
    assert emulator.stats()["submit_attempts"] == 1


def test_connection_refused_is_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_DEFAULT",
        json.dumps({"conn_type": "segmind", "password": "SG_0123456789abcdef", "host": f"http://127.0.0.1:{port}"}),
    )
    with pytest.raises(SegmindTransportError, match="Could not connect") as info:
        SegmindHook(retry_policy=FAST_RETRY).submit(SD3_LARGE_MODEL, PROMPT)
    assert info.value.request_sent is False


def test_rate_limit_wait_comes_from_the_server(
    hook: SegmindHook, emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.configure(rate_limit=1, rate_limit_scope="all")
    hook.get_credits()  # uses the one slot of the window
    with pytest.raises(SegmindRateLimitError) as info:
        SegmindHook(retry_policy=RetryPolicy(max_attempts=1)).get_credits()
    # The server said how long to wait (the reset header), and the error carries it.
    assert info.value.retry_after is not None
    assert 0 < info.value.retry_after <= 61


def test_no_api_key_in_logs_or_errors(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    set_conn(monkeypatch, emulator)
    hook = SegmindHook(retry_policy=FAST_RETRY)
    errors: list[BaseException] = []
    emulator.script(
        [{"endpoint": "status", "fault": "500", "times": 10}, {"endpoint": "submit", "fault": "reset_after"}]
    )
    for call in (
        lambda: hook.submit(SD3_LARGE_MODEL, PROMPT),
        lambda: hook.get_status("abc"),
        lambda: hook.get_result("missing-id"),
        lambda: hook.submit(SD3_LARGE_MODEL, {"prompt": ""}),
    ):
        try:
            call()
        except Exception as err:
            errors.append(err)
    assert len(errors) == 4
    out, err = capfd.readouterr()  # Airflow's structlog writes to the process's streams
    logs = caplog.text + out + err
    assert "retrying in" in logs  # the retries were logged...
    text = logs + "".join(f"{e}{e!r}" for e in errors) + repr(hook)
    assert emulator.api_key not in text  # ...and nothing anywhere carries the key


# ------------------------------------------------------------------ async path


async def test_async_status_and_result_share_one_session(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator)
    hook = SegmindHook(retry_policy=FAST_RETRY)
    sub = await asyncio.to_thread(hook.submit, SD3_LARGE_MODEL, PROMPT)
    async_hook = SegmindHook(retry_policy=FAST_RETRY)
    async with async_hook.shared_session() as session:
        async with async_hook.shared_session() as same:
            assert same is session  # shared by everything on this loop
        for _ in range(200):
            status = await async_hook.aget_status(sub.request_id, session=session)
            if status.status.is_terminal:
                break
            await asyncio.sleep(0.05)
        assert status.status is SegmindJobStatus.COMPLETED
        result = await async_hook.aget_result(sub.request_id, session=session)
        assert result.output_urls
        assert await async_hook.aget_credits(session=session) > 0
    assert hook_module._SHARED_SESSIONS.open_sessions() == 0
    assert session.closed


async def test_async_retries_and_errors_match_sync(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator)
    hook = SegmindHook(retry_policy=FAST_RETRY)
    sub = await asyncio.to_thread(hook.submit, SD3_LARGE_MODEL, PROMPT)
    emulator.script([{"endpoint": "status", "fault": "reset_before"}, {"endpoint": "status", "fault": "500"}])
    async with hook.shared_session() as session:
        status = await hook.aget_status(sub.request_id, session=session)
        assert status.request_id == sub.request_id
        assert emulator.stats()["status_polls"] == 3
        emulator.script([{"endpoint": "status", "fault": "500"}])
        with pytest.raises(SegmindServerError):
            await hook.aget_status(sub.request_id, session=session, retry=False)
        with pytest.raises(SegmindRequestNotFoundError):
            await hook.aget_result("nope", session=session)


async def test_async_session_closed_on_cancellation(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator)
    hook = SegmindHook(retry_policy=FAST_RETRY)
    emulator.configure(slow_seconds=5.0)
    emulator.script([{"endpoint": "credits", "fault": "slow"}])

    async def poll() -> None:
        async with hook.shared_session() as session:
            await hook.aget_credits(session=session)

    task = asyncio.create_task(poll())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hook_module._SHARED_SESSIONS.open_sessions() == 0


async def test_async_invalid_response(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, emulator)
    hook = SegmindHook(retry_policy=RetryPolicy(max_attempts=1))
    emulator.script([{"endpoint": "credits", "fault": "html502"}])
    async with hook.shared_session() as session:
        with pytest.raises((SegmindServerError, SegmindInvalidResponseError)):
            await hook.aget_credits(session=session)


# ------------------------------------------------------------------ triggerer settings cache


class FakeClock:
    """A monotonic clock the test moves by hand (the cache's TTL, without sleeping a minute)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def settings_cache(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, FakeClock]:
    """A fresh connection-settings cache with a hand-driven clock, in place of the process-wide one."""
    clock = FakeClock()
    cache = hook_module._LoopSettingsCache(ttl=60.0, clock=clock)
    monkeypatch.setattr(hook_module, "_SETTINGS_CACHE", cache)
    return cache, clock


def set_named_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, emu: Any, key: str) -> None:
    conn = {"conn_type": "segmind", "password": key, "host": emu.base_url}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


async def test_settings_cache_reuses_lookup_until_ttl(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, settings_cache: tuple[Any, FakeClock]
) -> None:
    _cache, clock = settings_cache
    set_conn(monkeypatch, emulator, key="SG_firstkey0001")
    first = await SegmindHook().aget_settings()
    set_conn(monkeypatch, emulator, key="SG_secondkey002")  # the connection is edited...
    clock.now += 59.0
    assert (await SegmindHook().aget_settings()).api_key == "SG_firstkey0001"  # ...reused within the TTL
    assert await SegmindHook().aget_settings() is first  # one shared object
    single = RetryPolicy(max_attempts=1)
    overridden = await SegmindHook(retry_policy=single).aget_settings()
    assert overridden.retry_policy == single
    assert overridden.api_key == first.api_key
    assert await SegmindHook(retry_policy=single).aget_settings() is overridden  # variants shared too
    clock.now += 1.0  # TTL over: read again
    assert (await SegmindHook().aget_settings()).api_key == "SG_secondkey002"
    assert (await SegmindHook(retry_policy=single).aget_settings()).api_key == "SG_secondkey002"


async def test_settings_cache_dropped_on_401_so_a_rotated_key_is_read_at_once(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, settings_cache: tuple[Any, FakeClock]
) -> None:
    cache, _ = settings_cache
    set_conn(monkeypatch, emulator, key="SG_revokedkey01")  # a key the server no longer accepts
    stale = SegmindHook(retry_policy=RetryPolicy(max_attempts=1))
    async with stale.shared_session() as session:
        set_conn(monkeypatch, emulator)  # the key is rotated in the connection...
        assert (await SegmindHook().aget_settings()).api_key == "SG_revokedkey01"  # ...still cached
        with pytest.raises(SegmindAuthenticationError):
            await stale.aget_credits(session=session)  # 401: the cached entry is dropped
        fresh = SegmindHook(retry_policy=RetryPolicy(max_attempts=1))
        assert (await fresh.aget_settings()).api_key == emulator.api_key
        assert await fresh.aget_credits(session=session) > 0
    assert emulator.api_key not in repr(cache)
    assert "SG_revokedkey01" not in repr(cache)


async def test_settings_cache_is_per_conn_id(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, settings_cache: tuple[Any, FakeClock]
) -> None:
    cache, _ = settings_cache
    set_named_conn(monkeypatch, "segmind_a", emulator, "SG_keyforaaaa01")
    set_named_conn(monkeypatch, "segmind_b", emulator, "SG_keyforbbbb02")
    assert (await SegmindHook("segmind_a").aget_settings()).api_key == "SG_keyforaaaa01"
    assert (await SegmindHook("segmind_b").aget_settings()).api_key == "SG_keyforbbbb02"
    assert (await SegmindHook("segmind_a").aget_settings()).api_key == "SG_keyforaaaa01"
    cache.invalidate("segmind_a")  # dropping one connection leaves the other
    assert cache.get("segmind_a") is None
    assert cache.get("segmind_b") is not None
    text = repr(cache)
    assert "segmind_b" in text
    assert "SG_keyfor" not in text
    assert "SG_keyfor" not in repr(cache.get("segmind_b"))


async def test_settings_cache_skips_missing_and_broken_connections(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, settings_cache: tuple[Any, FakeClock]
) -> None:
    cache, _ = settings_cache
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps({"conn_type": "segmind", "host": emulator.base_url}))
    with pytest.raises(SegmindAuthenticationError):
        await SegmindHook().aget_settings()  # no key: an error, and nothing stored
    assert cache.get("segmind_default") is None
    set_conn(monkeypatch, emulator)  # fixing the connection takes effect at once
    assert (await SegmindHook().aget_settings()).api_key == emulator.api_key
    # Retry extras that only a hook's own override makes usable: that hook works as before (the
    # extras are not read), the hook without one fails as before, and nothing is shared.
    odd = {
        "conn_type": "segmind",
        "password": emulator.api_key,
        "host": emulator.base_url,
        "extra": {"max_retries": "x"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SEGMIND_ODD", json.dumps(odd))
    single = RetryPolicy(max_attempts=1)
    assert (await SegmindHook("segmind_odd", retry_policy=single).aget_settings()).retry_policy == single
    assert cache.get("segmind_odd") is None
    with pytest.raises(SegmindInvalidParametersError):
        await SegmindHook("segmind_odd").aget_settings()


def test_settings_cache_is_per_event_loop(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hook_module._SETTINGS_CACHE.clear()
    set_conn(monkeypatch, emulator, key="SG_loopkeyone001")
    assert asyncio.run(SegmindHook().aget_settings()).api_key == "SG_loopkeyone001"
    set_conn(monkeypatch, emulator, key="SG_loopkeytwo002")
    # A new loop (a restarted triggerer, the next test) never sees another loop's entries.
    assert asyncio.run(SegmindHook().aget_settings()).api_key == "SG_loopkeytwo002"
