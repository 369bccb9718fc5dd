"""Issue 23 item 5: Segmind's model catalogue (SDK 1.3.0 ``segmind/models.py``, ``Models.list``).

The answer's shapes, the refusal of an unknown or retired slug with close matches, the hook's cache
(key, lifetime, invalidation), the connection test's count, the default per host, and the operators
refusing before anything is billed while an unreachable catalogue never stops a run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_segmind.exceptions import (
    SegmindInvalidResponseError,
    SegmindModelNotFoundError,
    SegmindModelRetiredError,
)
from airflow_provider_segmind.hooks import _cache
from airflow_provider_segmind.hooks._cache import _CATALOGUE_CACHE, _CatalogueCache
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator
from airflow_provider_segmind.protocol.answer import HttpAnswer
from airflow_provider_segmind.protocol.catalogue import (
    DEFAULT_CATALOGUE_URL,
    catalogue_from_body,
    default_catalogue_url,
    parse_model_catalogue,
)
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from tests.support.jobs import FAST_SCHEDULE, PROMPT, captured_logs, make_context, use_emulator


@pytest.fixture(autouse=True)
def _empty_catalogue_cache() -> Iterator[None]:
    _CATALOGUE_CACHE.clear()
    yield
    _CATALOGUE_CACHE.clear()


def answer(status: int, body: Any, url: str = DEFAULT_CATALOGUE_URL) -> HttpAnswer:
    return HttpAnswer(status, {"content-type": "application/json"}, json.dumps(body).encode(), url)


# ------------------------------------------------------------------ the answer, as a pure function


@pytest.mark.parametrize(
    "body",
    [
        # What public clients of the live endpoint read (the SDK's segmind/models.py says only "Dictionary").
        {"Inference Segmind Model Information List With Details": [{"slug": "sdxl1.0-txt2img", "title": "SDXL"}]},
        # The SDK's own test mock (segmind/segmind-python tests/test_models.py).
        {"models": [{"id": "sdxl1.0-txt2img", "name": "SDXL 1.0"}], "total": 1, "page": 1},
        ["sdxl1.0-txt2img"],
        {"data": {"items": [{"model_slug": "sdxl1.0-txt2img"}]}},
    ],
)
def test_the_catalogue_is_read_in_every_plausible_shape(body: Any) -> None:
    assert parse_model_catalogue(answer(200, body)).available == ["sdxl1.0-txt2img"]


def test_the_list_with_the_most_slugs_wins_and_retired_flags_are_read() -> None:
    catalogue = catalogue_from_body(
        {
            "tags": ["fast"],
            "models": [
                {"slug": "a-model"},
                {"slug": "old-model", "is_depreciated": True},
                {"slug": "gone-model", "status": "retired"},
                {"title": "No slug here"},
                {"slug": "Not A Slug"},
            ],
        }
    )
    assert catalogue.available == ["a-model"]
    assert catalogue.is_retired("old-model")
    assert catalogue.is_retired("gone-model")
    assert catalogue.describe() == "1 model available (2 retired)"


def test_an_answer_without_a_slug_or_an_error_is_not_a_catalogue() -> None:
    with pytest.raises(SegmindInvalidResponseError):
        parse_model_catalogue(answer(200, {"models": [{"title": "Stable Diffusion"}]}))
    with pytest.raises(Exception, match="404"):
        parse_model_catalogue(answer(404, {"error": "Not Found"}))


def test_refusals_name_the_slug_and_close_matches() -> None:
    catalogue = catalogue_from_body(
        [{"slug": SD3_LARGE_MODEL}, {"slug": "sd3-med-img2img"}, {"slug": "old-one", "is_depreciated": True}]
    )
    unknown = catalogue.refusal("stable-diffusion-3-large-txt2im")
    assert isinstance(unknown, SegmindModelNotFoundError)
    assert "'stable-diffusion-3-large-txt2im'" in str(unknown)
    assert f"Close matches: '{SD3_LARGE_MODEL}'" in str(unknown)
    assert "check_model_catalogue" in str(unknown)  # the way out for a model private to the account
    retired = catalogue.refusal("old-one")
    assert isinstance(retired, SegmindModelRetiredError)
    assert "retired" in str(retired)
    assert catalogue.refusal(SD3_LARGE_MODEL) is None
    assert catalogue_from_body([]).refusal("anything") is None  # an empty list proves nothing


def test_the_catalogue_url_is_the_sdks_except_on_loopback() -> None:
    assert default_catalogue_url("https://api.segmind.com") == DEFAULT_CATALOGUE_URL
    assert default_catalogue_url("http://127.0.0.1:8787") == "http://127.0.0.1:8787/inference-model-information/list"


def test_the_cache_keeps_a_list_an_hour_and_a_failure_five_minutes() -> None:
    now = [0.0]
    cache = _CatalogueCache(clock=lambda: now[0])
    listed = catalogue_from_body(["a-model"])
    cache.put(("u", "k1"), listed)
    cache.put(("u", "k2"), SegmindInvalidResponseError("down"))
    now[0] = 299.0
    assert cache.lookup(("u", "k1")) == (listed, 299.0)
    assert cache.lookup(("u", "k2")) is not None
    now[0] = 300.0
    assert cache.lookup(("u", "k2")) is None  # a failure is retried after five minutes
    now[0] = 3600.0
    assert cache.lookup(("u", "k1")) is None  # a list after an hour
    assert "k1" not in repr(cache)


# ------------------------------------------------------------------ the hook and the emulator


def test_the_hook_reads_the_emulators_catalogue_once_per_hour(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(
        catalogue_models=["flux-schnell"], retired_models=["old-model"], missing_models=["flux-schnell"]
    )
    use_emulator(monkeypatch, emu, extra={"check_model_catalogue": True})
    hook = SegmindHook()
    catalogue = hook.get_model_catalogue()
    assert catalogue.available == [SD3_LARGE_MODEL.replace("txt2img", "img2img"), SD3_LARGE_MODEL]
    assert catalogue.is_retired("old-model")
    assert not catalogue.lists("flux-schnell")  # missing models are never listed
    SegmindHook().get_model_catalogue()
    assert emu.stats()["catalogue_calls"] == 1  # the second hook of the process used the cache
    hook.get_model_catalogue(refresh=True)
    assert emu.stats()["catalogue_calls"] == 2
    requests_seen = emu.requests_log("/inference-model-information")
    assert all(entry["has_api_key"] for entry in requests_seen)  # sent with the key, like the SDK


def test_a_slug_missing_from_an_old_list_reads_it_again_once(emulator_factory: Any, monkeypatch: Any) -> None:
    now = [1000.0]
    monkeypatch.setattr(_cache, "_CATALOGUE_CACHE", _CatalogueCache(clock=lambda: now[0]))
    monkeypatch.setattr("airflow_provider_segmind.hooks.segmind._CATALOGUE_CACHE", _cache._CATALOGUE_CACHE)
    emu = emulator_factory()
    use_emulator(monkeypatch, emu, extra={"check_model_catalogue": True})
    hook = SegmindHook()
    hook.check_model(SD3_LARGE_MODEL)
    emu.configure(catalogue_models=["brand-new-model"])
    now[0] += 30  # a young list is trusted: the new model is refused
    with pytest.raises(SegmindModelNotFoundError):
        hook.check_model("brand-new-model")
    assert emu.stats()["catalogue_calls"] == 1
    now[0] += 61  # an older list is read again before a refusal
    hook.check_model("brand-new-model")
    assert emu.stats()["catalogue_calls"] == 2


def test_check_model_is_on_for_real_hosts_and_off_for_loopback(emulator: Any, monkeypatch: Any) -> None:
    use_emulator(monkeypatch, emulator)
    assert SegmindHook().get_settings().check_model_catalogue is False
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_DEFAULT", json.dumps({"conn_type": "segmind", "password": "SG_0123456789abcdef"})
    )
    settings = SegmindHook().get_settings()
    assert settings.check_model_catalogue is True
    assert settings.catalogue_url == DEFAULT_CATALOGUE_URL
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_DEFAULT",
        json.dumps(
            {"conn_type": "segmind", "password": "SG_0123456789abcdef", "extra": {"check_model_catalogue": "maybe"}}
        ),
    )
    with pytest.raises(Exception, match="check_model_catalogue"):
        SegmindHook().get_settings()


def test_an_unreachable_catalogue_is_logged_and_never_blocks(
    emulator: Any, monkeypatch: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    use_emulator(monkeypatch, emulator, extra={"check_model_catalogue": True})
    emulator.script([{"endpoint": "models", "fault": "502"}])
    hook = SegmindHook()
    with caplog.at_level(logging.WARNING):
        hook.check_model("no-such-model")  # no refusal: the catalogue could not say
    logged = captured_logs(caplog, capsys)
    assert "could not be read (HTTP 502), so the model 'no-such-model' was not checked" in logged
    assert "retried" not in logged
    assert emulator.stats()["catalogue_calls"] == 1  # one attempt, no retry loop
    hook.check_model("no-such-model")
    assert emulator.stats()["catalogue_calls"] == 1  # the failure is remembered (five minutes)


def test_the_connection_test_says_how_many_models(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(catalogue_models=["flux-schnell", "sdxl1.0-txt2img"])
    use_emulator(monkeypatch, emu)
    ok, message = SegmindHook().test_connection()
    assert ok, message
    assert "Segmind's model catalogue: 4 models available." in message
    assert emu.api_key not in message
    emu.script([{"endpoint": "models", "fault": "500"}])
    ok, message = SegmindHook().test_connection()
    assert ok, message  # the key works; the catalogue is a convenience
    assert "could not be read (HTTP 500); runs are not affected" in message
    assert ".." not in message


# ------------------------------------------------------------------ the operators


def test_an_unknown_slug_is_refused_before_anything_is_billed(emulator: Any, monkeypatch: Any) -> None:
    use_emulator(monkeypatch, emulator, extra={"check_model_catalogue": True})
    op = SegmindRunOperator(
        task_id="run",
        model="stable-diffusion-3-large-txt2im",
        inputs={"prompt": PROMPT},
        poll_schedule=FAST_SCHEDULE,
        deferrable=True,
    )
    with pytest.raises(AirflowFailException, match="Close matches: 'stable-diffusion-3-large-txt2img'"):
        op.execute(make_context())
    assert emulator.stats()["submit_attempts"] == 0


def test_a_listed_slug_runs_and_a_retired_one_is_refused(emulator_factory: Any, monkeypatch: Any) -> None:
    emu = emulator_factory(retired_models=["old-model"])
    use_emulator(monkeypatch, emu, extra={"check_model_catalogue": True})
    op = SegmindTextToImageOperator(task_id="t2i", prompt=PROMPT, poll_schedule=FAST_SCHEDULE, deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(make_context())
    assert emu.stats()["submissions"] == 1
    retired = SegmindRunOperator(
        task_id="old", model="old-model", inputs={"prompt": PROMPT}, poll_schedule=FAST_SCHEDULE, deferrable=True
    )
    with pytest.raises(AirflowFailException, match="retired"):
        retired.execute(make_context())
    assert emu.stats()["submissions"] == 1


def test_with_the_check_off_a_slug_the_catalogue_lacks_is_sent(emulator: Any, monkeypatch: Any) -> None:
    use_emulator(monkeypatch, emulator)  # loopback: off by default
    op = SegmindRunOperator(
        task_id="run",
        model="my-private-finetune",
        inputs={"prompt": PROMPT},
        poll_schedule=FAST_SCHEDULE,
        deferrable=True,
    )
    with pytest.raises(TaskDeferred):
        op.execute(make_context())
    assert emulator.stats()["catalogue_calls"] == 0
    assert emulator.stats()["submissions"] == 1
