"""The pure request-history rules (``airflow_provider_segmind.history``): URLs, query, parsing, matching.

The page shape, the timestamp names and formats of Segmind's request history are not documented
(SDK ``segmind/generations.py`` says "Paginated dictionary" and "timestamps"), so the parser is
tested here on every shape it accepts, most of which the emulator never produces.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindInvalidParametersError,
    SegmindInvalidResponseError,
    SegmindNotFoundError,
    SegmindRateLimitError,
    SegmindServerError,
)
from airflow_provider_segmind.protocol.answer import HttpAnswer
from airflow_provider_segmind.protocol.history import (
    DEFAULT_HISTORY_URL,
    MAX_REPR_BODY_CHARS,
    NAIVE_TIMESTAMP_ZONES,
    HistoryRecord,
    default_history_url,
    history_list_url,
    history_query,
    history_record_url,
    history_zone,
    normalize_history_url,
    parse_history_page,
    parse_history_record,
    parse_request_body,
    parse_timestamp,
    record_from_row,
    same_request_id,
    timestamp_candidates,
)
from airflow_provider_segmind.protocol.history_search import HistorySearch, body_matches
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus

URL = "https://api.spotprod.segmind.com/inference-request/request-history"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()

FULL_ROW: dict[str, Any] = {
    "request_id": "req-1",
    "model_name": "sd3-large-txt2img",
    "model_status": "COMPLETED",
    "credits_deduction": 0.04,
    "request_body": {"prompt": "a fox", "seed": 7},
    "generation_url": "https://images.segmind.com/outputs/req-1-0.jpeg",
    "latency_ms": 9600.5,
    "created_at": "2026-11-30T12:00:00.000Z",
    "error": None,
}


def answer(body: Any, status: int = 200, *, raw: bytes | None = None) -> HttpAnswer:
    data = raw if raw is not None else json.dumps(body).encode()
    return HttpAnswer(status, {"content-type": "application/json"}, data, URL)


# ------------------------------------------------------------------ URLs and query


def test_default_url_is_the_sdks() -> None:
    import importlib

    # ``segmind.generations`` the attribute is a facade object; the module is the SDK's source.
    assert DEFAULT_HISTORY_URL == importlib.import_module("segmind.generations").REQUEST_HISTORY_URL
    assert default_history_url("https://api.segmind.com") == DEFAULT_HISTORY_URL
    # The emulator (loopback) serves its own history: a local key never goes to Segmind's host.
    assert default_history_url("http://127.0.0.1:8787") == "http://127.0.0.1:8787/inference-request/request-history"


def test_record_url_quotes_like_the_sdk_and_checks_the_id() -> None:
    assert history_record_url(URL + "/", "abc-1.2_3") == f"{URL}/abc-1.2_3"
    assert history_list_url(URL + "/") == URL
    for bad in ("..", "a/b", "a?b", ""):
        with pytest.raises(SegmindInvalidParametersError, match="request_id"):
            history_record_url(URL, bad)


def test_history_url_rules() -> None:
    assert normalize_history_url(" https://h.example/x/ ") == "https://h.example/x"
    assert normalize_history_url("http://127.0.0.1:9/h") == "http://127.0.0.1:9/h"
    assert normalize_history_url("http://h.example/h", allow_insecure_http=True) == "http://h.example/h"
    for bad in ("http://h.example/h", "ftp://h.example", "https://h.example/h?x=1", "https://h.example/../v1", "nope"):
        with pytest.raises(ValueError, match="history_url"):
            normalize_history_url(bad)


def test_query_has_the_sdk_parameters_and_clamps_the_window() -> None:
    query = history_query(model="sd3-large-txt2img", since=T0 - 3600, until=T0, page=2, per_page=50)
    assert query == {
        "from_date": "2026-11-30",
        "to_date": "2026-11-30",
        "model_name": "sd3-large-txt2img",
        "page": "2",
        "per_page": "50",
        "sort_by": "model_created",
        "sort_order": "desc",
    }
    old = history_query(model="m", since=T0 - 90 * 86400, until=T0, status="FAILED")
    # 2026-10-31..2026-11-30: 31 days, inclusive.
    assert (old["from_date"], old["to_date"], old["status"]) == ("2026-10-31", "2026-11-30", "FAILED")
    # Days are UTC: 23:30 UTC is still the 30th whatever the local zone.
    late = history_query(model="m", since=T0 + 11.5 * 3600, until=T0 + 11.5 * 3600)
    assert late["from_date"] == late["to_date"] == "2026-11-30"
    assert "to_date" not in history_query(model="m", since=T0)
    with pytest.raises(ValueError, match="per_page"):
        history_query(model="m", since=T0, per_page=101)
    with pytest.raises(ValueError, match="status"):
        history_query(model="m", since=T0, status="DONE")


# ------------------------------------------------------------------ one record


def test_every_documented_field_is_read() -> None:
    record = parse_history_record(answer(FULL_ROW), "req-1")
    assert record == HistoryRecord(
        request_id="req-1",
        model_name="sd3-large-txt2img",
        status=SegmindJobStatus.COMPLETED,
        output_urls=("https://images.segmind.com/outputs/req-1-0.jpeg",),
        request_body={"prompt": "a fox", "seed": 7},
        error=None,
        credits=0.04,
        created_at=T0,
        latency_ms=9600.5,
        created_candidates=(T0,),
    )
    assert record.output_url == "https://images.segmind.com/outputs/req-1-0.jpeg"


def test_failed_and_in_flight_statuses() -> None:
    failed_row = {**FULL_ROW, "model_status": "FAILED", "error": "NSFW", "generation_url": None}
    failed = parse_history_record(answer(failed_row))
    assert failed is not None
    assert (failed.status, failed.error, failed.output_urls) == (SegmindJobStatus.FAILED, "NSFW", ())
    for word in ("PENDING", "pending", "QUEUED", "RUNNING"):
        pending = parse_history_record(answer({**FULL_ROW, "model_status": word}))
        assert pending is not None
        assert pending.status is SegmindJobStatus.PROCESSING
    structured = parse_history_record(answer({**FULL_ROW, "model_status": "FAILED", "error": {"code": 7}}))
    assert structured is not None
    assert structured.error == '{"code": 7}'


def test_missing_and_none_fields_mean_unknown() -> None:
    """Older servers omit fields; a record that has not landed yet has them as None (SDK)."""
    bare = parse_history_record(answer({"request_id": "req-1"}))
    landing = parse_history_record(answer({**dict.fromkeys(FULL_ROW), "request_id": "req-1"}))
    for record in (bare, landing):
        assert record == HistoryRecord(request_id="req-1")
        assert record.output_url is None


def test_odd_values_are_tolerated() -> None:
    record = parse_history_record(
        answer(
            {
                "request_id": "req-1",
                "model_status": "",
                "credits_deduction": "0.04",
                "latency_ms": "NaN",
                "request_body": json.dumps({"prompt": "x"}),
                "generation_url": ["https://a/1.png", "not a url", "https://a/1.png"],
                "created_at": 1796040000000,  # epoch milliseconds
            }
        )
    )
    assert record is not None
    assert record.status is None
    assert record.credits == 0.04
    assert record.latency_ms is None
    assert record.request_body == {"prompt": "x"}
    assert record.output_urls == ("https://a/1.png",)
    assert record.created_at == 1796040000.0
    garbled = parse_history_record(answer({"request_id": "req-1", "request_body": "{not json", "latency_ms": True}))
    assert garbled == HistoryRecord(request_id="req-1")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-30T12:00:00Z", T0),
        ("2026-11-30T12:00:00.000+00:00", T0),
        ("2026-11-30T13:00:00+01:00", T0),
        ("2026-11-30T12:00:00", T0),  # naive: UTC
        ("2026-11-30 12:00:00", T0),
        (T0, T0),
        (str(int(T0)), T0),
        (T0 * 1000, T0),
        ("yesterday", None),
        ("", None),
        (None, None),
        (True, None),
    ],
)
def test_timestamps(raw: Any, expected: float | None) -> None:
    assert parse_timestamp(raw) == expected


@pytest.mark.parametrize("key", ["model_created", "created_at", "createdAt", "created", "timestamp"])
def test_timestamp_field_names(key: str) -> None:
    record = parse_history_record(answer({"request_id": "r", key: "2026-11-30T12:00:00Z"}))
    assert record is not None
    assert record.created_at == T0


def test_record_answer_shapes() -> None:
    """By id: a row (documented: "the same fields as a history row"), or rows (one per output),
    possibly under a page key, possibly with rows of other requests."""
    second = {**FULL_ROW, "generation_url": "https://images.segmind.com/outputs/req-1-1.jpeg"}
    other = {**FULL_ROW, "request_id": "req-2", "generation_url": "https://x/2.jpeg"}
    both = ("https://images.segmind.com/outputs/req-1-0.jpeg", "https://images.segmind.com/outputs/req-1-1.jpeg")
    shapes = ([FULL_ROW, second], {"data": [FULL_ROW, second, other]}, {"data": {"items": [other, FULL_ROW, second]}})
    for body in shapes:
        record = parse_history_record(answer(body), "req-1")
        assert record is not None
        assert record.request_id == "req-1"
        assert record.output_urls == both
        assert record.credits == 0.04  # once per request, not summed
    # A row without its id takes the one asked for; an empty list is "not found".
    nameless = {k: v for k, v in FULL_ROW.items() if k != "request_id"}
    assert parse_history_record(answer({"data": [nameless]}), "req-9") is not None
    assert parse_history_record(answer({"data": []}), "req-1") is None
    assert parse_history_record(answer([other]), "req-1") is None


def test_record_errors() -> None:
    assert parse_history_record(answer({"error": "Request not found"}, 404), "req-1") is None
    with pytest.raises(SegmindAuthenticationError):
        parse_history_record(answer({"error": "Unauthorized"}, 401))
    with pytest.raises(SegmindServerError):
        parse_history_record(answer({"error": "boom"}, 502))
    with pytest.raises(SegmindRateLimitError):
        parse_history_record(answer({"error": "slow down"}, 429))
    with pytest.raises(SegmindInvalidResponseError):
        parse_history_record(answer(None, raw=b"<html>Service Unavailable</html>"))
    with pytest.raises(SegmindInvalidResponseError):
        parse_history_record(answer({"ok": True}))


# ------------------------------------------------------------------ pages


def rows(count: int, *, start: int = 0) -> list[dict[str, Any]]:
    return [
        {**FULL_ROW, "request_id": f"req-{n}", "generation_url": f"https://x/{n}.jpeg"} for n in range(start, count)
    ]


@pytest.mark.parametrize("key", ["data", "results", "items", "rows", "records", "requests", "history"])
def test_page_row_keys(key: str) -> None:
    records, more = parse_history_page(answer({key: rows(3)}), per_page=20)
    assert [r.request_id for r in records] == ["req-0", "req-1", "req-2"]
    assert more is False


@pytest.mark.parametrize(
    ("paging", "more"),
    [
        ({"has_more": True}, True),
        ({"has_more": False}, False),
        ({"next": "https://h/history?page=3"}, True),
        ({"next": None}, False),
        ({"page": 1, "total_pages": 2}, True),
        ({"page": 2, "total_pages": 2}, False),
        ({"page": 1, "per_page": 3, "total": 4}, True),
        ({"page": 2, "per_page": 3, "total": 4}, False),
        ({"pagination": {"page": 1, "total_pages": 5}}, True),
        ({"meta": {"has_more": False}}, False),
        ({"per_page": 3}, True),  # no total: a full page may have a next one
        ({"per_page": 4}, False),
    ],
)
def test_page_has_more(paging: dict[str, Any], more: bool) -> None:
    assert parse_history_page(answer({"data": rows(3), **paging}), per_page=100)[1] is more


def test_bare_list_page_uses_the_page_size_asked_for() -> None:
    assert parse_history_page(answer(rows(3)), per_page=3)[1] is True
    assert parse_history_page(answer(rows(2)), per_page=3)[1] is False
    nested = {"data": {"items": rows(2), "has_more": True}}
    assert parse_history_page(answer(nested))[1] is True


def test_page_merges_rows_per_request_and_skips_bad_rows() -> None:
    page = [
        {**FULL_ROW, "generation_url": "https://x/a.jpeg"},
        "not a row",
        {"model_name": "no id"},
        {**FULL_ROW, "request_id": "req-2"},
        {**FULL_ROW, "generation_url": "https://x/b.jpeg", "created_at": "2026-11-30T11:59:59Z"},
        {**FULL_ROW, "generation_url": "https://x/a.jpeg"},
    ]
    records, _ = parse_history_page(answer({"data": page}))
    assert [r.request_id for r in records] == ["req-1", "req-2"]
    assert records[0].output_urls == ("https://x/a.jpeg", "https://x/b.jpeg")
    assert records[0].created_at == T0 - 1
    # The more final status wins over a lagging row of the same request.
    landing = {"request_id": "req-1", "model_status": None}
    records, _ = parse_history_page(answer([landing, FULL_ROW]))
    assert records[0].status is SegmindJobStatus.COMPLETED


def test_page_errors() -> None:
    with pytest.raises(SegmindNotFoundError, match="history_url"):
        parse_history_page(answer({"error": "Not Found"}, 404))
    with pytest.raises(SegmindInvalidParametersError, match="31 days"):
        parse_history_page(answer({"error": "The date window may span at most 31 days"}, 400))
    with pytest.raises(SegmindInvalidResponseError):
        parse_history_page(answer({"total": 3}))
    with pytest.raises(SegmindInvalidResponseError):
        parse_history_page(answer(None, raw=b'{"data": ['))


# ------------------------------------------------------------------ matching


def test_body_matches_tolerates_defaults_and_number_forms() -> None:
    sent = {"prompt": "a fox", "seed": 7, "guidance": 3.5, "base64": False, "nested": {"a": [1, 2]}}
    assert body_matches(sent, {**sent, "negative_prompt": "", "steps": 28})
    assert body_matches(sent, {**sent, "seed": 7.0, "guidance": "3.5"})  # seeds may be strings
    assert body_matches({"seed": None, "prompt": "x"}, {"prompt": "x"})
    assert body_matches(sent, {**sent, "nested": {"a": [1, 2], "b": 0}})


@pytest.mark.parametrize(
    "recorded",
    [
        None,
        {},
        {"prompt": "a fox", "seed": 8, "guidance": 3.5, "base64": False, "nested": {"a": [1, 2]}},
        {"prompt": "a fox ", "seed": 7, "guidance": 3.5, "base64": False, "nested": {"a": [1, 2]}},
        {"prompt": "a fox", "seed": 7, "guidance": 3.5, "base64": 0, "nested": {"a": [1, 2]}},
        {"prompt": "a fox", "seed": 7, "guidance": 3.5, "base64": False, "nested": {"a": [1]}},
        {"prompt": "a fox", "seed": "seven", "guidance": 3.5, "base64": False, "nested": {"a": [1, 2]}},
        {"prompt": "a fox", "guidance": 3.5, "base64": False, "nested": {"a": [1, 2]}},
    ],
)
def test_body_mismatches(recorded: dict[str, Any] | None) -> None:
    sent = {"prompt": "a fox", "seed": 7, "guidance": 3.5, "base64": False, "nested": {"a": [1, 2]}}
    assert not body_matches(sent, recorded)


def test_search_picks_the_newest_match_in_the_window_across_pages() -> None:
    body = {"prompt": "a fox", "seed": 7}
    search = HistorySearch("sd3-large-txt2img", body, since=T0, until=T0 + 600)

    def row(rid: str, minutes: float, **extra: Any) -> dict[str, Any]:
        return {**FULL_ROW, "request_id": rid, "created_at": T0 + minutes * 60, **extra}

    page1 = [
        row("other-body", 5, request_body={"prompt": "a fox", "seed": 8}),
        row("other-model", 4, model_name="sd3-large-txt2img-turbo"),  # the server's filter is a substring
        row("newest", 3),
        row("split", 2, generation_url="https://x/split-0.jpeg"),
    ]
    assert search.query()["page"] == "1"
    assert search.take(parse_history_page(answer(page1), per_page=4)[0], True) is True
    page2 = [row("split", 2, generation_url="https://x/split-1.jpeg"), row("too-old", -5)]
    assert search.query()["page"] == "2"
    assert search.take(parse_history_page(answer(page2), per_page=4)[0], True) is True  # one dated row is recent
    best = search.best()
    assert best is not None
    assert best.request_id == "newest"
    assert search.seen is not None
    assert search.seen["split"].output_urls == ("https://x/split-0.jpeg", "https://x/split-1.jpeg")
    # A page of only older requests ends the search (the list is newest first).
    assert search.take(parse_history_page(answer([row("older", -30)]))[0], True) is False


def test_search_skew_bounds_and_undated_rows() -> None:
    """Issue 22 defect 5: a match must be dated and within the send window widened by a small skew;
    a row whose time cannot be read never matches (it could be a request of hours ago)."""
    body = {"prompt": "a fox", "seed": 7}
    search = HistorySearch("sd3-large-txt2img", body, since=T0, until=T0 + 60, max_pages=2)
    within_skew = {**FULL_ROW, "request_id": "skewed", "created_at": T0 - 5}
    outside_skew = {**FULL_ROW, "request_id": "twin-before", "created_at": T0 - 30}
    after_window = {**FULL_ROW, "request_id": "twin-after", "created_at": T0 + 90}
    undated = {k: v for k, v in {**FULL_ROW, "request_id": "undated"}.items() if k != "created_at"}
    rows = [after_window, undated, within_skew, outside_skew]
    assert search.take(parse_history_page(answer(rows))[0], True) is True
    assert [r.request_id for r in search.candidates()] == ["skewed"]
    search.query()
    assert search.take([], True) is True
    search.query()
    assert search.take([], True) is False  # max_pages
    shouted = HistorySearch("SD3-Large-Txt2img", body, since=T0, until=T0)
    shouted.take(parse_history_page(answer([within_skew]))[0], False)
    assert shouted.best() is not None  # model names compare ignoring case
    lone = HistorySearch("sd3-large-txt2img", body, since=T0, until=T0)
    lone.take(parse_history_page(answer([undated]))[0], False)
    assert lone.best() is None
    # The dates carry no zone [sdk]: the filter is padded a day each side, the window applied here.
    assert lone.query()["from_date"] == "2026-11-29"
    assert lone.query()["to_date"] == "2026-12-01"


# ------------------------------------------------------------------ what the real history may answer (issue 22)

#: T0 as naive local India time (+05:30), and as naive UTC.
IST_NAIVE = "2026-11-30T17:30:00"
UTC_NAIVE = "2026-11-30T12:00:00"
IST_SHIFT = 5.5 * 3600


@pytest.mark.parametrize(
    "stored",
    [
        {"prompt": "fox", "seed": 42},
        '{"prompt": "fox", "seed": 42}',  # a JSON string
        "{'prompt': 'fox', 'seed': 42}",  # a Python repr (str(dict))
        "  {'prompt': 'fox', 'seed': 42}\n",
    ],
    ids=["object", "json", "repr", "repr-padded"],
)
def test_request_body_formats(stored: Any) -> None:
    record = parse_history_record(answer({**FULL_ROW, "request_body": stored}), "req-1")
    assert record is not None
    assert record.request_body == {"prompt": "fox", "seed": 42}


def test_repr_bodies_hold_json_data_only() -> None:
    assert parse_request_body("{'on': True, 'off': False, 'none': None, 'xy': (1, 2.5), 'n': {'a': [1]}}") == {
        "on": True,
        "off": False,
        "none": None,
        "xy": [1, 2.5],
        "n": {"a": [1]},
    }
    refused = [
        "{'a': __import__('os').getcwd()}",  # code is never run
        "{'a': open('/etc/passwd')}",
        "{1: 'not a str key'}",
        "{'a': {1, 2}}",  # a set
        "{'a': b'bytes'}",
        "{'a': 1j}",
        "['a list']",
        "{'a': 1,",  # cut
        "{" * 300 + "}" * 300,  # too deep
        "{'p': '" + "x" * MAX_REPR_BODY_CHARS + "'}",  # over the cap
    ]
    assert [parse_request_body(text) for text in refused] == [None] * len(refused)
    assert parse_request_body("{'p': '" + "x" * (MAX_REPR_BODY_CHARS - 20) + "'}") is not None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-30T12:00:00.000Z", (T0,)),
        ("2026-11-30T17:30:00.000+05:30", (T0,)),
        ("Mon, 30 Nov 2026 12:00:00 GMT", (T0,)),  # RFC 1123
        ("Mon, 30 Nov 2026 17:30:00 +0530", (T0,)),
        (T0, (T0,)),
        (int(T0), (T0,)),
        (str(int(T0)), (T0,)),
        (int(T0 * 1000), (T0,)),
        (str(int(T0 * 1000)), (T0,)),
        (UTC_NAIVE, (T0, T0 - IST_SHIFT)),  # naive: read in UTC, then in +05:30
        (IST_NAIVE, (T0 + IST_SHIFT, T0)),
        ("Mon, 30 Nov 2026 12:00:00", (T0, T0 - IST_SHIFT)),  # RFC 1123 without a zone is naive too
        ("soon", ()),
        ("", ()),
        (None, ()),
        (False, ()),
    ],
)
def test_timestamp_candidates(raw: Any, expected: tuple[float, ...]) -> None:
    assert timestamp_candidates(raw) == expected
    # ``parse_timestamp`` keeps its meaning: a naive time is UTC.
    assert parse_timestamp(raw) == (timestamp_candidates(raw, ("UTC",)) or (None,))[0]


def test_naive_zones_given_to_the_parser() -> None:
    row = {**FULL_ROW, "created_at": IST_NAIVE}
    for zones in (("Asia/Kolkata",), ("+05:30",), ("+0530",)):
        assert timestamp_candidates(IST_NAIVE, zones) == (T0,)
        (record,) = parse_history_page(answer([row]), naive_zones=zones)[0]
        assert (record.created_at, record.created_candidates) == (T0, (T0,))
        by_id = parse_history_record(answer(row), "req-1", naive_zones=zones)
        assert by_id is not None
        assert by_id.created_at == T0
        from_row = record_from_row(row, naive_zones=zones)
        assert from_row is not None
        assert from_row.created_candidates == (T0,)
    # Default: both readings, the first (UTC) is ``created_at``; one of them is the true time.
    (record,) = parse_history_page(answer([row]))[0]
    assert record.created_candidates == (T0 + IST_SHIFT, T0)
    assert record.created_at == T0 + IST_SHIFT
    assert NAIVE_TIMESTAMP_ZONES == ("UTC", "+05:30")
    # The same zone twice is one candidate.
    assert timestamp_candidates(UTC_NAIVE, ("UTC", "+00:00", "Z")) == (T0,)


@pytest.mark.parametrize("bad", ["Asia", "Mars/Olympus", "+25:00", "+05:61", "IST", "5:30", ""])
def test_history_zone_refuses_unknown_zones(bad: str) -> None:
    with pytest.raises(ValueError, match=r"IANA time zone name \(e\.g\. Asia/Kolkata\).*UTC offset \(e\.g\. \+05:30\)"):
        history_zone(bad)


def test_an_unreadable_time_key_falls_back_to_the_next() -> None:
    record = record_from_row({"request_id": "r", "model_created": "n/a", "created_at": "2026-11-30T12:00:00Z"})
    assert record is not None
    assert record.created_at == T0


def test_merge_keeps_the_earliest_rows_candidates() -> None:
    early = {**FULL_ROW, "created_at": UTC_NAIVE}
    late = {**FULL_ROW, "created_at": "2026-11-30T12:00:05Z", "generation_url": "https://x/2.jpeg"}
    for rows_ in ([early, late], [late, early]):
        (record,) = parse_history_page(answer(rows_))[0]
        assert record.created_at == T0
        assert record.created_candidates == (T0, T0 - IST_SHIFT)
    undated = {k: v for k, v in FULL_ROW.items() if k != "created_at"}
    (record,) = parse_history_page(answer([undated, late]))[0]
    assert record.created_candidates == (T0 + 5,)


UUID = "3f2a9c1e-7b4d-4e8a-9c2f-0a1b2c3d4e5f"
HEX32 = UUID.replace("-", "")


def test_same_request_id() -> None:
    assert same_request_id(UUID, HEX32)
    assert same_request_id(HEX32, UUID)
    assert same_request_id(UUID.upper(), HEX32)
    assert same_request_id("req-1", "req-1")
    assert not same_request_id(UUID, HEX32[:-1] + "0")
    assert not same_request_id(UUID, HEX32 + "0")
    assert not same_request_id("req-1", "req1")  # not hex ids: exact only
    assert not same_request_id("REQ-1", "req-1")
    assert not same_request_id("", "")
    assert not same_request_id("-", "--")


def test_record_by_id_accepts_our_id_in_another_spelling_and_never_another_id() -> None:
    row = {**FULL_ROW, "request_id": HEX32}
    record = parse_history_record(answer(row), UUID)
    assert record is not None
    assert record.request_id == UUID  # as asked: the caller compares it with the v2 id
    assert record.request_body == {"prompt": "a fox", "seed": 7}
    rows_ = [
        {**row, "generation_url": "https://x/0.jpeg"},
        {**FULL_ROW, "request_id": UUID, "generation_url": "https://x/1.jpeg"},
    ]
    merged = parse_history_record(answer({"data": rows_}), UUID)
    assert merged is not None
    assert merged.output_urls == ("https://x/0.jpeg", "https://x/1.jpeg")  # one request, both spellings
    other = {**FULL_ROW, "request_id": HEX32[:-1] + "0"}
    assert parse_history_record(answer(other), UUID) is None
    assert parse_history_record(answer([other]), UUID) is None
    assert parse_history_record(answer({**FULL_ROW, "request_id": "req1"}), "req-1") is None


def test_query_user_filters() -> None:
    plain = history_query(model="m", since=T0)
    assert "user_id" not in plain
    assert "user_email" not in plain
    assert history_query(model="m", since=T0, user_id="user-7")["user_id"] == "user-7"
    assert history_query(model="m", since=T0, user_email="me@example.com")["user_email"] == "me@example.com"
    with pytest.raises(ValueError, match="not both"):
        history_query(model="m", since=T0, user_id="user-7", user_email="me@example.com")


def test_search_takes_a_naive_time_in_any_of_its_zones() -> None:
    """A naive India time read as UTC is 5.5 h in the future: the search must not miss it for that."""
    body = {"prompt": "a fox", "seed": 7}
    search = HistorySearch("sd3-large-txt2img", body, since=T0 - 10, until=T0 + 10)
    page = [{**FULL_ROW, "created_at": IST_NAIVE}]  # truly T0, read first as T0 + 5.5 h
    assert search.take(parse_history_page(answer(page))[0], False) is False
    best = search.best()
    assert best is not None
    assert best.created_at == T0  # the reading in the window, for the caller's submitted_at
    assert best.created_candidates == (T0 + IST_SHIFT, T0)
    # No reading in the window: not a match.
    late = HistorySearch("sd3-large-txt2img", body, since=T0 + 3600, until=T0 + 3700)
    late.take(parse_history_page(answer(page))[0], False)
    assert late.best() is None
    # A page is "all older" only if every reading of every row is.
    old_naive = [{**FULL_ROW, "created_at": "2026-11-30T12:00:00"}]  # T0 (UTC) or T0 - 5.5 h (IST)
    newest_first = HistorySearch("sd3-large-txt2img", body, since=T0 - 60, until=T0 + 60)
    assert newest_first.take(parse_history_page(answer(old_naive))[0], True) is True
    older = HistorySearch("sd3-large-txt2img", body, since=T0 + 3600, until=T0 + 3700)
    assert older.take(parse_history_page(answer(old_naive))[0], True) is False
