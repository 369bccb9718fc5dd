"""SegmindHook against the emulator over loopback: issue 12's "answers as they really are" and messages.

Credits with free credits and the credits 404, the connection test (one attempt, a message for the
UI), URL hygiene before any request, and the strict/lenient handling of unknown SD3 parameters.
What was sent is observed on the server (``/_emulator/stats`` and its request log).
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any

import pytest

from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from tests.support.jobs import captured_logs

#: An id like the one Airflow's "Test" button gives its transient connection: never shown to the user.
TRANSIENT_CONN_ID = "tmpconnQ7x2ZkR9"


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "segmind_default", **fields: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "segmind", **fields}))


def ui_test(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> tuple[bool, str]:
    """What Airflow's connection "Test" does: a transient connection, then ``Connection.test_connection()``."""
    from airflow.models.connection import Connection

    extra = fields.pop("extra", None)
    conn = Connection(
        conn_id=TRANSIENT_CONN_ID, conn_type="segmind", extra=json.dumps(extra) if extra else None, **fields
    )
    monkeypatch.setenv(f"AIRFLOW_CONN_{TRANSIENT_CONN_ID.upper()}", conn.get_uri())
    ok, message = conn.test_connection()
    return ok, message


def assert_plain(message: str, emulator: Any | None = None) -> None:
    """A message for the UI: no retry talk, no billing talk, no transient id, no key, no doubled stops."""
    for fragment in ("retried", "bill twice", "a submit is not", TRANSIENT_CONN_ID, ".."):
        assert fragment not in message, message
    if emulator is not None:
        assert emulator.api_key not in message


# ------------------------------------------------------------------ item 7: free credits


def test_free_credits_count_and_are_shown(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    emulator = emulator_factory(credits=0.0, free_credits=0.0184921035)
    set_conn(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    hook = SegmindHook()
    balance = hook.get_credit_balance()
    assert balance.credits == 0.0
    assert balance.free_credits == pytest.approx(0.0184921035)
    assert hook.get_credits() == pytest.approx(0.0184921035)

    ok, message = ui_test(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    assert ok, message
    assert emulator.base_url in message
    assert "0 paid" in message
    assert "0.0184921 free" in message
    assert_plain(message, emulator)


def test_credits_404_no_record_reads_as_a_zero_balance(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    emulator.script([{"endpoint": "credits", "fault": "no_credits_record", "times": 2}])
    balance = SegmindHook().get_credit_balance()
    assert balance.total == 0.0
    assert balance.note == "No credits found for the user"
    ok, message = ui_test(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    assert ok, message  # the key was accepted: the connection works, the account is empty
    assert "No credits found for the user" in message
    assert "slug" not in message
    assert_plain(message, emulator)


# ------------------------------------------------------------------ item 13: the connection test


def test_connection_test_makes_one_attempt_and_says_what_it_reached(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.script([{"endpoint": "credits", "fault": "502", "times": 5}])
    ok, message = ui_test(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    assert not ok
    assert emulator.stats()["credit_checks"] == 1  # no retry loop behind the button
    assert emulator.base_url in message
    assert "502" in message
    assert_plain(message, emulator)


def test_connection_test_reports_a_bad_key_once(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "SG_ffffffffffffffff"
    ok, message = ui_test(monkeypatch, password=wrong, host=emulator.base_url)
    assert not ok
    assert "401" in message
    assert "API Key" in message
    assert wrong not in message
    assert emulator.stats()["credit_checks"] == 1
    assert_plain(message)


def test_connection_test_on_a_closed_port_names_the_url_and_does_not_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ok, message = ui_test(monkeypatch, password="SG_0123456789abcdef", host=f"http://127.0.0.1:{port}")
    assert not ok
    assert f"Could not reach http://127.0.0.1:{port}" in message
    assert_plain(message)


def test_connection_test_says_a_host_without_scheme_was_taken_as_https(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = emulator.base_url.removeprefix("http://")
    ok, message = ui_test(monkeypatch, password=emulator.api_key, host=bare)
    assert not ok  # the emulator speaks plain http; https to it fails, and the message says why
    assert "no scheme" in message
    assert f"https://{bare}" in message
    assert_plain(message, emulator)


def test_connection_test_without_a_key_or_with_a_bad_host(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, message = ui_test(monkeypatch, host="https://api.segmind.com")
    assert not ok
    assert "API Key" in message
    assert_plain(message)
    ok, message = ui_test(monkeypatch, password="SG_0123456789abcdef", host="http://api.segmind.com")
    assert not ok
    assert "allow_insecure_http" in message
    assert_plain(message)


# ------------------------------------------------------------------ item 10: URL hygiene


@pytest.mark.parametrize("model", ["a/../../v1/get-user-credits", "../v1/get-user-credits", "a/%2e%2e/%2E%2e/v1/x"])
def test_a_model_slug_with_dot_segments_sends_nothing(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    set_conn(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    hook = SegmindHook()
    with pytest.raises(SegmindInvalidParametersError) as info:
        hook.submit(model, {"prompt": "x"}, validate=False)
    assert info.value.field == "model"
    with pytest.raises(SegmindInvalidParametersError):
        hook.run_sync(model, {"prompt": "x"}, validate=False)
    stats = emulator.stats()
    assert (stats["submit_attempts"], stats["v1_attempts"], stats["credit_checks"]) == (0, 0, 0)
    assert emulator.requests_log("/v") == []


@pytest.mark.parametrize("request_id", ["..", ".", "%2e%2e"])
def test_a_request_id_that_is_a_dot_segment_sends_nothing(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, request_id: str
) -> None:
    set_conn(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    hook = SegmindHook()
    with pytest.raises(SegmindInvalidParametersError):
        hook.get_status(request_id)
    with pytest.raises(SegmindInvalidParametersError):
        hook.get_result(request_id)
    assert emulator.requests_log("/v") == []


def test_plain_http_is_refused_off_loopback_unless_opted_in(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    set_conn(monkeypatch, password="SG_0123456789abcdef", host="http://api.segmind.com")
    with pytest.raises(SegmindInvalidParametersError, match="clear text"):
        SegmindHook().get_settings()
    set_conn(
        monkeypatch, password="SG_0123456789abcdef", host="http://api.segmind.com", extra={"allow_insecure_http": True}
    )
    assert SegmindHook().get_settings().base_url == "http://api.segmind.com"
    # Loopback http stays allowed (the emulator), by IP and by name.
    port = emulator.base_url.rsplit(":", 1)[1]
    set_conn(monkeypatch, password=emulator.api_key, host=f"http://localhost:{port}")
    assert SegmindHook().get_credits() > 0


# ------------------------------------------------------------------ item 11: unknown SD3 parameters


def test_unknown_sd3_parameters_warn_and_are_sent_unless_strict(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    set_conn(monkeypatch, password=emulator.api_key, host=emulator.base_url)
    hook = SegmindHook()
    with caplog.at_level(logging.WARNING):
        sub = hook.submit(SD3_LARGE_MODEL, {"prompt": "a fox", "seed": -1, "style_preset": "photographic"})
    assert "'style_preset'" in captured_logs(caplog, capsys)
    job = emulator.job(sub.request_id)
    assert job["params"]["style_preset"] == "photographic"
    assert job["params"]["seed"] == -1
    with pytest.raises(SegmindInvalidParametersError) as info:
        hook.submit(SD3_LARGE_MODEL, {"prompt": "a fox", "style_preset": "x", "aspect_ratio": "4:3"}, strict=True)
    assert [problem[0] for problem in info.value.problems] == ["style_preset", "aspect_ratio"]
    assert emulator.stats()["submit_attempts"] == 1
