"""Issue 23 item 6: both readings of Segmind's rate limits are configurable, and named with their sources.

docs.segmind.com/api-reference/rate-limits: Free 5, Pro 50 requests a minute. Segmind's pricing
page, as issue 23 reports it: 60 to 1000 a minute, pooled. Whether status polls count is not
documented: ``rate_limit_scope`` plays both, and ``rate_limit_headers`` lets a client (the contract
check) see which from the counters.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import requests

from airflow_provider_segmind.emulator.__main__ import build_parser, config_from_args
from airflow_provider_segmind.emulator.config import RATE_LIMIT_PLANS, EmulatorConfig
from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.exceptions import SegmindRateLimitError
from airflow_provider_segmind.protocol.answer import HttpAnswer
from airflow_provider_segmind.protocol.errors import classify_error
from airflow_provider_segmind.protocol.vocabulary import RATE_LIMIT_RESET_HEADER, SD3_LARGE_MODEL, Endpoint


def _get(emu: SegmindEmulator, path: str) -> requests.Response:
    return requests.get(emu.base_url + path, headers={"x-api-key": emu.api_key}, timeout=10)


def _submit(emu: SegmindEmulator) -> str:
    answer = requests.post(
        f"{emu.base_url}/v2/{SD3_LARGE_MODEL}",
        json={"prompt": "a lighthouse"},
        headers={"x-api-key": emu.api_key},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["request_id"])


@pytest.mark.parametrize(("plan", "limit"), [("free", 5), ("pro", 50), ("pooled-60", 60), ("pooled-1000", 1000)])
def test_the_plans_carry_the_documented_and_the_reported_numbers(plan: str, limit: int) -> None:
    config = EmulatorConfig().with_changes(rate_limit_plan=plan)
    assert (config.rate_limit, config.rate_limit_window) == (limit, 60.0)
    assert EmulatorConfig().with_changes(rate_limit_plan=plan, rate_limit=7).rate_limit == 7  # an explicit number wins
    with pytest.raises(ValueError, match="Unknown rate limit plan"):
        EmulatorConfig().with_changes(rate_limit_plan="gold")
    assert RATE_LIMIT_PLANS["none"] == {"rate_limit": None}


def test_the_sources_are_named_where_a_user_reads_them() -> None:
    source = inspect.getsource(EmulatorConfig)
    assert "docs.segmind.com/api-reference/rate-limits" in source
    assert "pricing page" in source
    answer = HttpAnswer(429, {RATE_LIMIT_RESET_HEADER: "2030-01-01T00:00:00Z"}, b'{"error": "Too many requests"}', "u")
    err = classify_error(answer, Endpoint.STATUS, request_id="r1")
    assert isinstance(err, SegmindRateLimitError)
    message = str(err)
    assert "Free 5 and Pro 50 requests a minute (docs.segmind.com/api-reference/rate-limits" in message
    assert "pricing page reportedly 60 to 1000, pooled" in message
    assert "whether status polls count is not documented" in message
    assert "python -m airflow_provider_segmind.contract" in message
    assert ".." not in message
    flags = build_parser().format_help()
    assert "docs.segmind.com/api-reference/rate-limits" in flags


@pytest.mark.parametrize(("scope", "polls_count"), [("submit", False), ("all", True)])
def test_counters_show_whether_status_polls_count(
    emulator_factory: Callable[..., SegmindEmulator], scope: str, polls_count: bool
) -> None:
    emu = emulator_factory(rate_limit_plan="pro", rate_limit_scope=scope, rate_limit_headers=True)
    request_id = _submit(emu)
    first = _get(emu, f"/v2/requests/{request_id}/status")
    second = _get(emu, f"/v2/requests/{request_id}/status")
    assert first.headers["x-ratelimit-limit"] == "50"
    assert RATE_LIMIT_RESET_HEADER in first.headers
    left = int(first.headers["x-ratelimit-remaining"])
    assert int(second.headers["x-ratelimit-remaining"]) == (left - 1 if polls_count else left)


def test_without_the_switch_only_a_429_carries_the_reset_time(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    emu = emulator_factory(rate_limit_plan="free", rate_limit_scope="all")
    answers = [_get(emu, "/v1/get-user-credits") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert all("x-ratelimit-remaining" not in a.headers for a in answers)
    assert RATE_LIMIT_RESET_HEADER not in answers[0].headers
    assert RATE_LIMIT_RESET_HEADER in answers[-1].headers
    assert "for this account" in answers[-1].json()["error"]


def test_keys_of_one_account_share_the_limit(emulator_factory: Callable[..., SegmindEmulator]) -> None:
    """The emulator's limit is per account, every key of it together: the "pooled" reading."""
    emu = emulator_factory(rate_limit=2)
    second_key = "SG_00000000000000aa"
    requests.post(
        f"{emu.base_url}/_emulator/keys", json={"add": second_key, "same_account_as": emu.api_key}, timeout=10
    ).raise_for_status()
    _submit(emu)
    _submit(emu)
    other = requests.post(
        f"{emu.base_url}/v2/{SD3_LARGE_MODEL}", json={"prompt": "x"}, headers={"x-api-key": second_key}, timeout=10
    )
    assert other.status_code == 429


def test_the_cli_takes_both_readings() -> None:
    args: Any = build_parser().parse_args(
        ["--rate-limit-plan", "pro", "--rate-limit-scope", "all", "--rate-limit-headers", "--profile", "fast"]
    )
    config = config_from_args(args)
    assert (config.rate_limit, config.rate_limit_scope, config.rate_limit_headers) == (50, "all", True)
    args = build_parser().parse_args(["--rate-limit-plan", "free", "--rate-limit", "9"])
    assert config_from_args(args).rate_limit == 9
