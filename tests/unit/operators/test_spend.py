"""Issue 27 item 2: the spend cap (``max_spend_per_day``) and ``max_cost``, against the emulator's ledger.

The arithmetic is tested on history records as the parsers make them; the whole rule runs through
``dag.test()`` (Airflow's real task runner, a mapped task of 200 prompts) against the emulator,
whose request history is the ledger, lagging like Segmind's. Billing is what the emulator charged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_segmind.hooks._spend import forget_ledger
from airflow_provider_segmind.operators._spend import forget_own_submits
from airflow_provider_segmind.protocol.history import HistoryRecord
from airflow_provider_segmind.protocol.spend import (
    day_bounds,
    ledger_query,
    model_price,
    over_max_cost,
    refusal,
    tally,
    today_records,
)
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus
from tests.support.jobs import captured_logs, use_emulator
from tests.unit.operators.test_segmind_dag_test import _BROKEN, run_dag, write_dag

NOW = 1_796_000_000.0  # 2026-11-30, mid-morning UTC
START, END = day_bounds(NOW)
MODEL = "stable-diffusion-3-large-txt2img"


def _record(rid: str, credits: float | None, status: SegmindJobStatus | None, at: float = NOW - 60) -> HistoryRecord:
    return HistoryRecord(
        request_id=rid, model_name=MODEL, status=status, credits=credits, created_at=at, created_candidates=(at,)
    )


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    forget_ledger()
    forget_own_submits()
    yield
    forget_ledger()
    forget_own_submits()


def test_a_request_listed_once_per_output_is_counted_once() -> None:
    """SDK: one row per output, each carrying the request's charge: counted once, in any id spelling."""
    rows = [
        _record("2c7f59ea-13f1-402c-9353-915a2b5a2124", 0.04, SegmindJobStatus.COMPLETED),
        _record("2C7F59EA13F1402C9353915A2B5A2124", 0.04, SegmindJobStatus.COMPLETED),
        _record("other", 0.04, SegmindJobStatus.COMPLETED),
    ]
    today = today_records(rows, NOW)
    assert len(today) == 2
    assert tally(today, {}, {}).spent == pytest.approx(0.08)


def test_only_todays_utc_requests_count_and_an_undated_one_counts() -> None:
    rows = [
        _record("yesterday", 0.04, SegmindJobStatus.COMPLETED, at=START - 1),
        _record("today", 0.04, SegmindJobStatus.COMPLETED, at=START + 1),
        HistoryRecord(request_id="undated", model_name=MODEL, status=SegmindJobStatus.COMPLETED, credits=0.04),
        # A naive time read both as UTC (yesterday) and +05:30: one reading is today, so it counts.
        HistoryRecord(
            request_id="naive", model_name=MODEL, status=SegmindJobStatus.COMPLETED, credits=0.04,
            created_at=START - 100, created_candidates=(START - 100, START + 19700),
        ),
    ]  # fmt: skip
    assert {r.request_id for r in today_records(rows, NOW)} == {"today", "undated", "naive"}


def test_in_flight_and_own_unlisted_submits_are_estimated() -> None:
    today = [
        _record("done", 0.04, SegmindJobStatus.COMPLETED),
        _record("landing", None, None),  # listed, not landed: the model's estimate
        _record("failed-free", 0.0, SegmindJobStatus.FAILED),  # a FAILED job is not charged
    ]
    spend = tally(today, {"landing": 0.05, "mine-unlisted": 0.05}, {MODEL: 0.04})
    assert spend.spent == pytest.approx(0.04)
    assert spend.in_flight == pytest.approx(0.05)  # our own estimate for it, not the model's
    assert spend.own_unlisted == pytest.approx(0.05)
    assert spend.total == pytest.approx(0.14)


def test_the_refusal_says_spent_cap_and_what_to_do() -> None:
    spend = tally([_record(f"r{i}", 0.04, SegmindJobStatus.COMPLETED) for i in range(50)], {}, {})
    assert refusal(spend, 2.0, 0.04, MODEL) is not None
    text = refusal(spend, 2.0, 0.04, MODEL) or ""
    assert "2 USD of the max_spend_per_day cap 2 USD" in text
    assert "Nothing was submitted, nothing billed" in text
    assert "Raise max_spend_per_day" in text
    assert refusal(spend, 2.05, 0.04, MODEL) is None
    assert refusal(spend, 2.01, None, MODEL) is None  # unknown price: a positive room is enough
    assert refusal(spend, 2.0, None, MODEL) is not None


def test_max_cost_refuses_a_model_charged_above_it() -> None:
    today = [_record("a", 0.04, SegmindJobStatus.COMPLETED), _record("b", 0.06, SegmindJobStatus.COMPLETED)]
    assert model_price(today, MODEL) == pytest.approx(0.06)
    assert over_max_cost(0.06, 0.05, MODEL) is not None
    assert over_max_cost(0.06, 0.06, MODEL) is None
    assert over_max_cost(None, 0.01, MODEL) is None  # no price known: nothing to refuse on


def test_the_ledger_query_spans_the_days_around_today_for_every_model() -> None:
    query = ledger_query(NOW, 2, user_email="me@example.com")
    assert (query["from_date"], query["to_date"]) == ("2026-11-29", "2026-12-01")
    assert "model_name" not in query
    assert query["page"] == "2"
    assert query["per_page"] == "100"
    assert query["user_email"] == "me@example.com"


# ------------------------------------------------------------------------------------ dag.test()

PROMPTS = 200
CAP_IMAGES = 50
PRICE = 0.04


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.timeout(900)
def test_a_mapped_task_of_200_prompts_bills_at_most_the_cap(
    airflow_db: Path,
    dags_folder: Path,
    emulator_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A cap worth 50 images, 200 prompts: at most 50 are billed (plus the documented slack, none in
    one process) and the other 150 fail without a submit, each saying spent / cap / what to do.

    The emulator's history lags 2 s with the rows absent (the worst case): the process's own
    submits, remembered until the ledger lists them, keep the cap exact through the lag.
    """
    emu = emulator_factory(queue_time=0.01, inference_time=0.02, cost=PRICE, history_lag_seconds=2.0,
                           history_lag_mode="absent")  # fmt: skip
    use_emulator(monkeypatch, emu, extra={"max_spend_per_day": CAP_IMAGES * PRICE})
    dag_id = "segmind_spend_cap_200"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG({dag_id!r}, schedule=None, start_date=START, catchup=False) as dag:
            SegmindTextToImageOperator.partial(
                task_id="generate", deferrable=False, poll_schedule=FAST, max_cost={PRICE!r}, retries=0,
                request_store="none",
            ).expand(prompt=[f"a lighthouse, variation {{i}}" for i in range({PROMPTS})])
        """,
    )
    caplog.set_level(logging.INFO)
    dr = run_dag(path, dag_id)

    states = [ti.state for ti in dr.get_task_instances() if ti.task_id == "generate"]
    jobs = emu.jobs()
    billed = sum(job["cost"] for job in jobs if job["billed"])
    logs = captured_logs(caplog, capsys)
    print(f"spend cap: {len(jobs)} submitted, billed {billed:.2f} USD against a cap of {CAP_IMAGES * PRICE:.2f} USD")
    assert len(states) == PROMPTS
    assert billed <= CAP_IMAGES * PRICE + 1e-9
    assert len(jobs) == CAP_IMAGES  # the cap is used up, not left idle
    assert states.count("success") == CAP_IMAGES
    assert states.count("failed") == PROMPTS - CAP_IMAGES
    assert logs.count("Segmind spend cap: today's (UTC) spend is 2 USD of the max_spend_per_day cap 2 USD") >= (
        PROMPTS - CAP_IMAGES
    ), "every refused task says spent / cap"
    assert "Raise max_spend_per_day on the connection" in logs
    assert emu.api_key not in logs


# ------------------------------------------------------------------ the check against the emulator's ledger


def _hook(monkeypatch: pytest.MonkeyPatch, emu: Any, **extra: Any) -> Any:
    from airflow_provider_segmind.hooks.segmind import SegmindHook

    use_emulator(monkeypatch, emu, extra={"max_retries": 0, **extra})
    return SegmindHook()


def test_another_process_spend_counts_once_its_row_lands(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_segmind.operators._spend import check_spend

    emu = emulator_factory(cost=PRICE)
    hook = _hook(monkeypatch, emu, max_spend_per_day=3 * PRICE)
    for n in range(3):  # "another process": submits this process never noted
        hook.submit(MODEL, {"prompt": f"elsewhere {n}"})
    with pytest.raises(AirflowFailException, match=r"spend is 0\.12 USD of the max_spend_per_day cap 0\.12 USD"):
        check_spend(hook, MODEL, PRICE, logging.getLogger(__name__))
    assert emu.stats()["submissions"] == 3


def test_max_cost_refuses_a_model_charged_above_it_before_the_submit(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_segmind.operators._spend import check_spend

    emu = emulator_factory(cost=0.06)
    hook = _hook(monkeypatch, emu)
    hook.submit(MODEL, {"prompt": "priced"})
    with pytest.raises(AirflowFailException, match=r"charged up to 0\.06 USD .* above this task's max_cost=0\.05 USD"):
        check_spend(hook, MODEL, 0.05, logging.getLogger(__name__))
    assert check_spend(hook, MODEL, 0.06, logging.getLogger(__name__)) == pytest.approx(0.06)


def test_an_unreadable_ledger_fails_the_try_without_a_submit(
    emulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

    from airflow_provider_segmind.operators._spend import check_spend

    emu = emulator_factory()
    hook = _hook(monkeypatch, emu, max_spend_per_day=1)
    emu.script([{"endpoint": "history", "fault": "500", "times": 1}])
    with pytest.raises(AirflowException, match="could not be read") as caught:
        check_spend(hook, MODEL, PRICE, logging.getLogger(__name__))
    assert not isinstance(caught.value, AirflowFailException)  # a retry may read it
    assert emu.stats()["submissions"] == 0
    assert emu.api_key not in str(caught.value)


def test_no_cap_and_no_max_cost_reads_nothing(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_segmind.operators._spend import check_spend

    emu = emulator_factory()
    assert check_spend(_hook(monkeypatch, emu), MODEL, None, logging.getLogger(__name__)) is None
    assert emu.stats()["history_calls"] == 0
