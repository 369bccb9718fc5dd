"""The emulator's request-history endpoints over plain HTTP, and the official SDK against them.

The endpoints follow the SDK 1.3.0's ``segmind/generations.py`` (``Generations.history`` and
``Generations.get``): its parameters, filters, limits and row fields. The SDK has the history URL
hard-coded (module constant ``REQUEST_HISTORY_URL``, read at call time), so the conformance tests
point it at the emulator by patching that constant: nothing else in the SDK changes.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests
from segmind import SegmindClient, SegmindError

from airflow_provider_segmind.emulator.config import (
    HISTORY_PROFILES,
    OWN_USER_EMAIL,
    OWN_USER_ID,
    TEAMMATE_USER_EMAIL,
    TEAMMATE_USER_ID,
    EmulatorConfig,
)
from airflow_provider_segmind.emulator.request_history import IST, MEDIA_PLACEHOLDER
from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.protocol.answer import HttpAnswer
from airflow_provider_segmind.protocol.history import parse_history_page, parse_history_record, same_request_id
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from tests.support.jobs import ManualClock

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


# ------------------------------------------------------------------ what the real history may answer (issue 22)

DATA_URL = "data:image/png;base64," + "iVBORw0KGgo" * 10
BASE64_FILE = "A" * 2048  # base64 of an inline file, over 1 KiB
MEDIA_BODY = {
    "prompt": "a chair",
    "image": DATA_URL,
    "input_image": "https://example.com/in.png",
    "mask": BASE64_FILE,
    "reference": BASE64_FILE,  # not a media key, but a base64 file
    "images": [DATA_URL, DATA_URL],
    "steps": 4,
}
SD3_BODY = {"prompt": "fox", "seed": 42}


@pytest.fixture
def shaped(emulator_factory: Factory) -> Callable[..., tuple[SegmindEmulator, ManualClock]]:
    """An emulator on a hand-moved clock with history settings on top; jobs take 1 s."""

    def make(**history: Any) -> tuple[SegmindEmulator, ManualClock]:
        clock = ManualClock()
        emu = emulator_factory(clock=clock, queue_time=0.0, inference_time=1.0, **history)
        return emu, clock

    return make


def submit(emu: SegmindEmulator, model: str, body: dict[str, Any]) -> str:
    answer = requests.post(f"{emu.base_url}/v2/{model}", json=body, headers={"x-api-key": emu.api_key}, timeout=10)
    assert answer.status_code == 200, answer.text
    request_id: str = answer.json()["request_id"]
    return request_id


def only_row(emu: SegmindEmulator, **params: Any) -> dict[str, Any]:
    (row,) = history(emu, emu.api_key, **params).json()["data"]
    assert isinstance(row, dict)
    return row


def test_body_formats(shaped: Callable[..., tuple[SegmindEmulator, ManualClock]]) -> None:
    emu, clock = shaped()
    submit(emu, SD3_LARGE_MODEL, SD3_BODY)
    clock.advance(2)
    assert only_row(emu)["request_body"] == SD3_BODY
    emu.configure(history_body_format="json")
    assert json.loads(only_row(emu)["request_body"]) == SD3_BODY
    emu.configure(history_body_format="repr")
    assert only_row(emu)["request_body"] == "{'prompt': 'fox', 'seed': 42}"  # str(dict)


@pytest.mark.parametrize("mode", ["absent", "replaced"])
def test_strip_media(shaped: Callable[..., tuple[SegmindEmulator, ManualClock]], mode: str) -> None:
    emu, clock = shaped(history_strip_media=mode)
    submit(emu, "flux-kontext", MEDIA_BODY)
    clock.advance(2)
    body = only_row(emu)["request_body"]
    media = ("image", "input_image", "mask", "reference", "images")
    if mode == "absent":
        assert body == {"prompt": "a chair", "steps": 4}
    else:
        assert body == {"prompt": "a chair", "steps": 4, **dict.fromkeys(media, MEDIA_PLACEHOLDER)}
    emu.configure(history_strip_media="keep")
    assert only_row(emu)["request_body"] == MEDIA_BODY


def test_declared_only(shaped: Callable[..., tuple[SegmindEmulator, ManualClock]]) -> None:
    emu, clock = shaped(history_declared_only=True)
    submit(emu, SD3_LARGE_MODEL, {**SD3_BODY, "aspect_ratio": "16:9", "strength": 0.5})
    clock.advance(1)
    submit(emu, "flux-schnell", {"prompt": "fox", "seed": 42, "steps": 4})
    clock.advance(2)
    generic, sd3 = history(emu, emu.api_key).json()["data"]
    assert sd3["request_body"] == {"prompt": "fox", "aspect_ratio": "16:9"}  # the SD3 Large page lists no seed
    assert generic["request_body"] == {"prompt": "fox", "seed": 42, "steps": 4}  # other models: every key


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        ("iso_z", lambda v, t: v.endswith("Z") and datetime.fromisoformat(v).timestamp() == pytest.approx(t, abs=1e-3)),
        (
            "iso_offset",
            lambda v, t: v.endswith("+05:30") and datetime.fromisoformat(v).timestamp() == pytest.approx(t, abs=1e-3),
        ),
        (
            "iso_naive_utc",
            lambda v, t: datetime.fromisoformat(v).replace(tzinfo=UTC).timestamp() == pytest.approx(t, abs=1e-3),
        ),
        (
            "iso_naive_ist",
            lambda v, t: datetime.fromisoformat(v).replace(tzinfo=IST).timestamp() == pytest.approx(t, abs=1e-3),
        ),
        ("rfc1123", lambda v, t: v.endswith(" GMT") and parsedate_to_datetime(v).timestamp() == int(t)),
        ("epoch_s", lambda v, t: isinstance(v, float) and v == pytest.approx(t, abs=1e-3)),
        ("epoch_ms", lambda v, t: isinstance(v, int) and v == round(t * 1000)),
    ],
)
def test_time_formats(
    shaped: Callable[..., tuple[SegmindEmulator, ManualClock]], fmt: str, check: Callable[[Any, float], bool]
) -> None:
    emu, clock = shaped(history_time_format=fmt)
    submitted = clock()
    submit(emu, SD3_LARGE_MODEL, SD3_BODY)
    clock.advance(2)
    row = only_row(emu)
    assert check(row["created_at"], submitted), row["created_at"]
    assert check(row["updated_at"], submitted + 1), row["updated_at"]
    if fmt.startswith("iso_naive"):
        assert datetime.fromisoformat(row["created_at"]).tzinfo is None


@pytest.mark.parametrize("key", ["model_created", "createdAt", "timestamp"])
def test_time_key(shaped: Callable[..., tuple[SegmindEmulator, ManualClock]], key: str) -> None:
    emu, clock = shaped(history_time_key=key)
    submit(emu, SD3_LARGE_MODEL, SD3_BODY)
    clock.advance(2)
    row = only_row(emu)
    assert "created_at" not in row
    assert datetime.fromisoformat(row[key]).timestamp() == pytest.approx(clock() - 2, abs=1e-3)


def test_hex32_ids(shaped: Callable[..., tuple[SegmindEmulator, ManualClock]]) -> None:
    emu, clock = shaped(history_id_form="hex32")
    rid = submit(emu, SD3_LARGE_MODEL, SD3_BODY)
    clock.advance(2)
    listed = only_row(emu)["request_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", listed)
    assert listed == rid.replace("-", "")
    for spelling in (rid, listed, rid.upper()):  # the by-id route takes both spellings
        answer = history(emu, emu.api_key, f"/{spelling}")
        assert answer.status_code == 200
        assert answer.json()["request_id"] == listed
    assert history(emu, emu.api_key, f"/{listed[:-1]}0" if listed[-1] != "0" else f"/{listed[:-1]}1").status_code == 404


def test_team_rows(shaped: Callable[..., tuple[SegmindEmulator, ManualClock]]) -> None:
    emu, clock = shaped(history_team_rows=3)
    assert history(emu, emu.api_key).json()["data"] == []  # no own request: nothing to copy
    older = submit(emu, SD3_LARGE_MODEL, {"prompt": "older", "seed": 1})
    clock.advance(30)
    mine = submit(emu, SD3_LARGE_MODEL, SD3_BODY)
    clock.advance(2)
    rows = history(emu, emu.api_key, per_page=100).json()["data"]
    assert len(rows) == 5
    team = [row for row in rows if row["user_email"] == TEAMMATE_USER_EMAIL]
    own = [row for row in rows if row["user_email"] == OWN_USER_EMAIL]
    assert [row["request_id"] for row in own] == [mine, older]
    assert {row["user_id"] for row in own} == {OWN_USER_ID}
    assert len({row["request_id"] for row in team}) == 3
    assert not {row["request_id"] for row in team} & {mine, older}
    for row in team:
        assert (row["model_name"], row["request_body"], row["user_id"]) == (SD3_LARGE_MODEL, SD3_BODY, TEAMMATE_USER_ID)
        created = datetime.fromisoformat(row["created_at"]).timestamp()
        assert clock() - 60 <= created <= clock()  # within the last minute
        assert history(emu, emu.api_key, f"/{row['request_id']}").status_code == 404  # SDK: not-found
    assert rows[:3] == sorted(team, key=lambda row: row["created_at"], reverse=True)  # newer than mine
    assert history(emu, emu.api_key, per_page=100).json()["data"] == rows  # the same rows every call
    for name, value in (("user_id", OWN_USER_ID), ("user_email", OWN_USER_EMAIL)):
        assert [row["request_id"] for row in history(emu, emu.api_key, **{name: value}).json()["data"]] == [mine, older]
    assert [row["user_id"] for row in history(emu, emu.api_key, user_id=TEAMMATE_USER_ID).json()["data"]] == [
        TEAMMATE_USER_ID
    ] * 3
    assert history(emu, emu.api_key, user_email="someone@example.com").json()["data"] == []
    assert history(emu, emu.api_key, model_name="flux").json()["data"] == []  # the window holds no such request
    emu.configure(history_team_rows=0)
    assert "user_id" not in only_row(emu, per_page=1)


def test_the_all_profile_at_once(shaped: Callable[..., tuple[SegmindEmulator, ManualClock]]) -> None:
    emu, clock = shaped(**HISTORY_PROFILES["all"])
    rid = submit(emu, SD3_LARGE_MODEL, {**SD3_BODY, "image": DATA_URL, "mode": "image-to-image"})
    clock.advance(1)  # lagging: listed with null fields
    landing = [row for row in history(emu, emu.api_key).json()["data"] if row["user_email"] == OWN_USER_EMAIL]
    assert [row["request_body"] for row in landing] == [None]
    clock.advance(2)
    rows = history(emu, emu.api_key, per_page=100).json()["data"]
    assert len(rows) == 3  # own + 2 teammates
    (row,) = [row for row in rows if row["user_id"] == OWN_USER_ID]
    assert row["request_id"] == rid.replace("-", "")
    assert row["request_body"] == "{'prompt': 'fox', 'mode': 'image-to-image'}"  # repr, no seed, no image
    assert "created_at" not in row
    naive = datetime.fromisoformat(row["model_created"])
    assert naive.tzinfo is None
    assert naive.replace(tzinfo=IST).timestamp() == pytest.approx(clock() - 3, abs=1e-3)
    assert history(emu, emu.api_key, f"/{rid}").json()["request_id"] == row["request_id"]


@pytest.mark.parametrize("name", list(HISTORY_PROFILES))
def test_the_parser_reads_every_profile_back(
    shaped: Callable[..., tuple[SegmindEmulator, ManualClock]], name: str
) -> None:
    """Whatever the shape, the provider's parser finds the same request id, the body keys the row
    kept, and the creation instant (for a naive India time, one of its candidates)."""
    emu, clock = shaped()
    emu.configure(history_profile=name)
    submitted = clock()
    rid = submit(emu, SD3_LARGE_MODEL, {**SD3_BODY, "aspect_ratio": "16:9"})
    clock.advance(5)
    page = history(emu, emu.api_key, per_page=100)
    by_id = history(emu, emu.api_key, f"/{rid}")
    row = next(row for row in page.json()["data"] if row.get("user_id", OWN_USER_ID) == OWN_USER_ID)
    records, _ = parse_history_page(HttpAnswer(page.status_code, {}, page.content, page.url))
    (record,) = [r for r in records if same_request_id(r.request_id, rid)]
    got = parse_history_record(HttpAnswer(by_id.status_code, {}, by_id.content, by_id.url), rid)
    assert got is not None
    assert got.request_id == rid
    kept = {"prompt", "aspect_ratio"} | (
        {"seed"} if HISTORY_PROFILES[name].get("history_declared_only") is None else set()
    )
    for found in (record, got):
        assert found.request_body is not None, row
        assert set(found.request_body) == kept
        assert found.request_body["prompt"] == "fox"
        assert any(abs(t - submitted) < 1 for t in found.created_candidates), (row, found.created_candidates)
        if HISTORY_PROFILES[name].get("history_time_format") != "iso_naive_ist":
            assert found.created_at == pytest.approx(submitted, abs=1)
    # The zone given (the connection's history_timezone) leaves one, right, reading.
    records, _ = parse_history_page(
        HttpAnswer(page.status_code, {}, page.content, page.url), naive_zones=("Asia/Kolkata",)
    )
    if HISTORY_PROFILES[name].get("history_time_format") == "iso_naive_ist":
        (record,) = [r for r in records if same_request_id(r.request_id, rid)]
        assert record.created_at == pytest.approx(submitted, abs=1)
        assert len(record.created_candidates) == 1


def test_history_switches_are_checked_and_set_from_json(emulator: SegmindEmulator) -> None:
    for bad in (
        {"history_body_format": "xml"},
        {"history_strip_media": "drop"},
        {"history_time_format": "unix"},
        {"history_time_key": "when"},
        {"history_id_form": "hex"},
        {"history_team_rows": -1},
        {"history_team_rows": 101},
        {"history_declared_only": "sometimes"},
        {"history_profile": "everything"},
    ):
        answer = requests.post(f"{emulator.base_url}/_emulator/config", json=bad, timeout=10)
        assert answer.status_code == 400, bad
        assert next(iter(bad)) in answer.json()["error"] or "history profile" in answer.json()["error"]
    answer = requests.post(
        f"{emulator.base_url}/_emulator/config",
        json={"history_profile": "all", "history_team_rows": "5", "history_declared_only": "false"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    shown = answer.json()
    assert {k: shown[k] for k in HISTORY_PROFILES["all"]} == {
        **HISTORY_PROFILES["all"],
        "history_team_rows": 5,  # given next to the profile: wins
        "history_declared_only": False,
    }
    # Another profile resets what it leaves out.
    config = emulator.configure(history_profile="rfc1123")
    assert (config.history_time_format, config.history_body_format, config.history_team_rows) == (
        "rfc1123",
        "object",
        0,
    )
    assert config.history_lag_seconds == 0.0
    assert EmulatorConfig().with_changes(history_profile="hex-ids").history_id_form == "hex32"
    assert EmulatorConfig.history_profile("team")["history_team_rows"] == 2
    with pytest.raises(ValueError, match="history_time_key"):
        EmulatorConfig(history_time_key="when")  # type: ignore[arg-type]


def test_cli_history_profile() -> None:
    from airflow_provider_segmind.emulator.__main__ import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--history-profile", "all", "--history-lag", "7"]))
    assert (config.history_body_format, config.history_id_form, config.history_team_rows) == ("repr", "hex32", 2)
    assert config.history_lag_seconds == 7.0  # a flag wins over the profile
    assert config_from_args(build_parser().parse_args([])).history_body_format == "object"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--history-profile", "nope"])
