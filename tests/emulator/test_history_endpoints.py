"""The emulator's request-history endpoints over plain HTTP, and the official SDK against them.

The endpoints follow the SDK 1.3.0's ``segmind/generations.py`` (``Generations.history`` and
``Generations.get``): its parameters, filters, limits and row fields. The SDK has the history URL
hard-coded (module constant ``REQUEST_HISTORY_URL``, read at call time), so the conformance tests
point it at the emulator by patching that constant: nothing else in the SDK changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from segmind import SegmindClient, SegmindError

from airflow_provider_segmind.emulator import EmulatorConfig, SegmindEmulator
from airflow_provider_segmind.protocol import SD3_LARGE_MODEL
from tests.generation.helpers import ManualClock

KEY_A = "SG_emuhistoryA00001"
KEY_B = "SG_emuhistoryB00001"
PATH = "/inference-request/request-history"

Factory = Callable[..., SegmindEmulator]


@pytest.fixture
def world(emulator_factory: Factory) -> tuple[SegmindEmulator, ManualClock, dict[str, str]]:
    """Two accounts on a hand-moved clock, with four requests of A and one of B:

    ``done`` (SD3, COMPLETED), ``multi`` (generic, 3 outputs, COMPLETED), ``failed`` (FAILED),
    ``running`` (submitted last, still PENDING), and B's ``other``.
    """
    clock = ManualClock()
    emu = emulator_factory(clock=clock, api_keys=(KEY_A, KEY_B), queue_time=0.0, inference_time=5.0, cost=0.04)
    ids: dict[str, str] = {}

    def submit(name: str, model: str, body: dict[str, Any], key: str = KEY_A) -> None:
        answer = requests.post(f"{emu.base_url}/v2/{model}", json=body, headers={"x-api-key": key}, timeout=10)
        assert answer.status_code == 200
        ids[name] = answer.json()["request_id"]

    submit("done", SD3_LARGE_MODEL, {"prompt": "done", "seed": 1})
    clock.advance(1)
    submit("multi", "flux-schnell", {"prompt": "multi", "num_outputs": 3})
    clock.advance(1)
    submit("failed", "flux-schnell", {"prompt": "__fail__ failed"})
    clock.advance(1)
    submit("other", SD3_LARGE_MODEL, {"prompt": "B's"}, key=KEY_B)
    clock.advance(10)
    submit("running", SD3_LARGE_MODEL, {"prompt": "running"})
    return emu, clock, ids


def history(emu: SegmindEmulator, key: str = KEY_A, suffix: str = "", **params: Any) -> requests.Response:
    return requests.get(f"{emu.base_url}{PATH}{suffix}", params=params, headers={"x-api-key": key}, timeout=10)


def test_list_shape_rows_per_output_and_fields(world: tuple[SegmindEmulator, ManualClock, dict[str, str]]) -> None:
    emu, _, ids = world
    answer = history(emu, per_page=100)
    assert answer.status_code == 200
    page = answer.json()
    assert (page["page"], page["per_page"], page["total"]) == (1, 100, 6)  # 4 requests, 3 rows for ``multi``
    rows = page["data"]
    assert [row["request_id"] for row in rows] == [ids["running"], ids["failed"], *[ids["multi"]] * 3, ids["done"]]
    running, failed, multi, done = rows[0], rows[1], rows[2:5], rows[5]
    assert running["model_status"] == "PENDING"
    assert (running["generation_url"], running["latency_ms"]) == (None, None)
    assert failed["model_status"] == "FAILED"
    assert failed["error"] == "Internal inference error (emulated)"
    assert failed["generation_url"] is None
    assert len({row["generation_url"] for row in multi}) == 3
    assert {row["credits_deduction"] for row in multi} == {0.04}  # the request's cost on every row (SDK)
    assert done == {
        "request_id": ids["done"],
        "model_name": SD3_LARGE_MODEL,
        "model_status": "COMPLETED",
        "credits_deduction": 0.04,
        "request_body": {"prompt": "done", "seed": 1},
        "generation_url": f"{emu.base_url}/media/{ids['done']}.jpeg",
        "latency_ms": 5000.0,
        "error": None,
        "created_at": done["created_at"],
        "updated_at": done["updated_at"],
    }
    assert datetime.fromisoformat(done["created_at"]) < datetime.fromisoformat(done["updated_at"])


def test_filters_sorting_and_pagination(world: tuple[SegmindEmulator, ManualClock, dict[str, str]]) -> None:
    emu, clock, ids = world

    def listed(**params: Any) -> list[str]:
        answer = history(emu, per_page=100, **params)
        assert answer.status_code == 200, answer.text
        return [row["request_id"] for row in answer.json()["data"]]

    assert listed(model_name="flux") == [ids["failed"], *[ids["multi"]] * 3]  # a substring
    assert listed(model_name="DIFFUSION-3-LARGE") == [ids["running"], ids["done"]]
    assert listed(status="FAILED") == [ids["failed"]]
    assert listed(status="PENDING") == [ids["running"]]
    assert listed(status="COMPLETED") == [*[ids["multi"]] * 3, ids["done"]]
    assert listed(sort_order="asc")[0] == ids["done"]
    by_name = listed(sort_by="model_name", sort_order="asc")
    assert set(by_name[:4]) == {ids["multi"], ids["failed"]}  # flux-schnell < stable-diffusion-...
    assert set(by_name[4:]) == {ids["done"], ids["running"]}
    today = datetime.fromtimestamp(clock(), UTC).date()
    assert listed(from_date=str(today + timedelta(days=1)), to_date=str(today + timedelta(days=2))) == []
    assert listed(from_date=str(today - timedelta(days=30)), to_date=str(today))[0] == ids["running"]

    pages = [history(emu, per_page=2, page=n).json() for n in (1, 2, 3, 4)]
    assert [len(p["data"]) for p in pages] == [2, 2, 2, 0]
    assert {p["total"] for p in pages} == {6}
    assert [row["request_id"] for p in pages for row in p["data"]] == listed()


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"from_date": "2026-01-01", "to_date": "2026-02-01"}, "31 days"),  # 32 days, inclusive
        ({"from_date": "2026-02-01", "to_date": "2026-01-01"}, "before"),
        ({"from_date": "01/02/2026"}, "YYYY-MM-DD"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": 101}, "per_page"),
        ({"page": 0}, "page"),
        ({"status": "DONE"}, "status"),
        ({"sort_by": "prompt"}, "sort_by"),
        ({"sort_order": "up"}, "sort_order"),
    ],
)
def test_bad_queries_answer_400_naming_the_problem(
    world: tuple[SegmindEmulator, ManualClock, dict[str, str]], params: dict[str, Any], says: str
) -> None:
    answer = history(world[0], **params)
    assert answer.status_code == 400
    assert says in answer.json()["error"]


def test_a_31_day_window_is_accepted(world: tuple[SegmindEmulator, ManualClock, dict[str, str]]) -> None:
    assert history(world[0], from_date="2026-01-01", to_date="2026-01-31").status_code == 200


def test_per_account_visibility_and_auth(world: tuple[SegmindEmulator, ManualClock, dict[str, str]]) -> None:
    emu, _, ids = world
    assert [row["request_id"] for row in history(emu, KEY_B).json()["data"]] == [ids["other"]]
    assert history(emu, KEY_B, f"/{ids['done']}").status_code == 404
    assert history(emu, KEY_A, f"/{ids['other']}").status_code == 404
    assert history(emu, KEY_A, "/no-such-request").status_code == 404
    assert history(emu, KEY_A, f"/{ids['done']}").json()["request_id"] == ids["done"]
    assert history(emu, "SG_notakey000000").status_code == 401
    assert requests.get(f"{emu.base_url}{PATH}", timeout=10).status_code == 401
    stats = emu.stats()
    assert stats["history_calls"] == 7
    assert sum(counts.get("history_calls", 0) for counts in stats["per_key"].values()) == 5  # authenticated ones


def test_history_outlives_the_v2_record(world: tuple[SegmindEmulator, ManualClock, dict[str, str]]) -> None:
    emu, clock, ids = world
    clock.advance(2 * 86400)  # past retention and purge
    headers = {"x-api-key": KEY_A}
    assert requests.get(f"{emu.base_url}/v2/requests/{ids['done']}", headers=headers, timeout=10).status_code == 404
    row = history(emu, suffix=f"/{ids['done']}").json()
    assert row["model_status"] == "COMPLETED"
    assert requests.get(row["generation_url"], timeout=30).status_code == 200
    today = datetime.fromtimestamp(clock(), UTC).date()
    assert ids["done"] in [
        r["request_id"] for r in history(emu, from_date=str(today - timedelta(days=3))).json()["data"]
    ]


def test_history_size_bounds_memory(emulator_factory: Factory) -> None:
    emu = emulator_factory(history_size=2)
    made = [
        requests.post(
            f"{emu.base_url}/v2/flux-schnell", json={"prompt": str(n)}, headers={"x-api-key": emu.api_key}, timeout=10
        ).json()["request_id"]
        for n in range(3)
    ]
    rows = history(emu, emu.api_key).json()["data"]
    assert {row["request_id"] for row in rows} == set(made[1:])


def test_history_faults_and_config_checks(emulator: SegmindEmulator) -> None:
    emulator.script([{"endpoint": "history", "fault": "bad_json"}, {"endpoint": "history", "fault": "502"}])
    first = history(emulator, emulator.api_key)
    assert first.status_code == 200
    with pytest.raises(ValueError):  # noqa: PT011 - any JSON error: the body is cut
        first.json()
    assert history(emulator, emulator.api_key).status_code == 502
    with pytest.raises(ValueError, match="history_lag_mode"):
        EmulatorConfig(history_lag_mode="late")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not apply"):
        emulator.script([{"endpoint": "status", "fault": "late500"}])


# ------------------------------------------------------------------ the official SDK


@pytest.fixture
def sdk_client(
    world: tuple[SegmindEmulator, ManualClock, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> SegmindClient:
    """The SDK, with its hard-coded ``REQUEST_HISTORY_URL`` pointed at the emulator."""
    emu = world[0]
    monkeypatch.setattr(importlib.import_module("segmind.generations"), "REQUEST_HISTORY_URL", f"{emu.base_url}{PATH}")
    return SegmindClient(api_key=KEY_A, base_url=f"{emu.base_url}/v1")


def test_sdk_history_lists_and_filters(
    world: tuple[SegmindEmulator, ManualClock, dict[str, str]], sdk_client: SegmindClient
) -> None:
    _, _, ids = world
    page = sdk_client.generations.history(per_page=100)
    assert page["total"] == 6
    failed = sdk_client.generations.history(status="FAILED", model_name="flux")
    assert [row["request_id"] for row in failed["data"]] == [ids["failed"]]
    assert failed["data"][0]["error"]
    second = sdk_client.generations.history(page=2, per_page=4, sort_by="model_created", sort_order="desc")
    assert [row["request_id"] for row in second["data"]] == [ids["multi"], ids["done"]]
    with pytest.raises(SegmindError) as refused:
        sdk_client.generations.history(from_date="2026-01-01", to_date="2026-03-01")
    assert refused.value.status == 400


def test_sdk_get_own_and_foreign(
    world: tuple[SegmindEmulator, ManualClock, dict[str, str]], sdk_client: SegmindClient
) -> None:
    _, _, ids = world
    row = sdk_client.generations.get(ids["multi"])
    assert (row["request_id"], row["model_status"]) == (ids["multi"], "COMPLETED")
    assert row["request_body"] == {"prompt": "multi", "num_outputs": 3}
    # SDK: "passing one of their ids here raises a not-found error".
    with pytest.raises(SegmindError) as missing:
        sdk_client.generations.get(ids["other"])
    assert missing.value.status == 404


def test_cli_flags_set_the_history_lag() -> None:
    from airflow_provider_segmind.emulator.__main__ import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--history-lag", "20", "--history-lag-mode", "absent"]))
    assert (config.history_lag_seconds, config.history_lag_mode) == (20.0, "absent")
    assert config_from_args(build_parser().parse_args([])).history_lag_seconds == 0.0
