"""Issue 23 item 3: what a failure costs. The emulator follows Segmind's error docs by default.

Segmind's error docs (docs.segmind.com/docs/serverless-api#api-error-codes, as quoted by the API
Evangelist catalogue, github.com/api-evangelist/segmind ``errors/segmind-error-codes.yml``): a 422
(a v2 job that ran and FAILED) is "billed: false", and "Billing fields (cost, remaining_credits)
are omitted on a failure because nothing was charged". ``bill_failed_jobs=True`` is the other
reading (charged at submit whatever the outcome). The submit needs the credits either way.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL

COST = 0.5


def _submit(emu: SegmindEmulator, prompt: str, model: str = SD3_LARGE_MODEL) -> requests.Response:
    return requests.post(
        f"{emu.base_url}/v2/{model}", json={"prompt": prompt}, headers={"x-api-key": emu.api_key}, timeout=10
    )


def _settled(emu: SegmindEmulator, request_id: str) -> requests.Response:
    """The job's status once it is done (FAILED answers 422, COMPLETED 200)."""
    for _ in range(200):
        answer = requests.get(
            f"{emu.base_url}/v2/requests/{request_id}/status", headers={"x-api-key": emu.api_key}, timeout=10
        )
        if answer.json().get("status") in ("COMPLETED", "FAILED"):
            return answer
        time.sleep(0.02)
    raise AssertionError("the job did not settle")


def _history_row(emu: SegmindEmulator, request_id: str) -> dict[str, Any]:
    answer = requests.get(
        f"{emu.base_url}/inference-request/request-history/{request_id}", headers={"x-api-key": emu.api_key}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_failed_job_is_not_charged_by_default(emulator_factory: Any) -> None:
    emu = emulator_factory(credits=10.0, cost=COST, queue_time=0.0, inference_time=0.01)
    failed = _submit(emu, "a fox __fail__").json()["request_id"]
    blocked = _submit(emu, "a fox __unsafe__").json()["request_id"]
    done = _submit(emu, "a fox").json()["request_id"]

    answer = _settled(emu, failed)
    assert answer.status_code == 422
    body = answer.json()
    assert body["status"] == "FAILED"
    assert "cost" not in body["metrics"]  # "omitted on a failure because nothing was charged"
    assert "remaining_credits" not in body["metrics"]
    assert _settled(emu, blocked).status_code == 422
    assert _settled(emu, done).status_code == 200

    stats = emu.stats()
    assert stats["submissions"] == 3  # every job created counts
    assert stats["unbilled_failures"] == 2
    assert stats["credits_billed"] == pytest.approx(COST)  # only the COMPLETED one
    assert sum(stats["credits"].values()) == pytest.approx(10.0 - COST)
    jobs = {job["request_id"]: job for job in emu.jobs()}
    assert (jobs[failed]["billed"], jobs[failed]["cost"]) == (False, 0.0)
    assert (jobs[done]["billed"], jobs[done]["cost"]) == (True, COST)
    assert _history_row(emu, failed)["credits_deduction"] == 0
    assert _history_row(emu, done)["credits_deduction"] == pytest.approx(COST)


def test_the_other_reading_charges_a_failed_job_at_submit(emulator_factory: Any) -> None:
    emu = emulator_factory(credits=10.0, cost=COST, queue_time=0.0, inference_time=0.01, bill_failed_jobs=True)
    failed = _submit(emu, "a fox __fail__").json()["request_id"]
    assert _settled(emu, failed).status_code == 422
    stats = emu.stats()
    assert (stats["submissions"], stats["unbilled_failures"]) == (1, 0)
    assert stats["credits_billed"] == pytest.approx(COST)
    assert emu.job(failed)["billed"] is True  # type: ignore[index]
    assert _history_row(emu, failed)["credits_deduction"] == pytest.approx(COST)


def test_a_submit_needs_the_credits_even_if_its_job_would_fail(emulator_factory: Any) -> None:
    emu = emulator_factory(credits=COST / 2, cost=COST)
    answer = _submit(emu, "a fox __fail__")
    assert answer.status_code == 406
    assert emu.stats()["submissions"] == 0


def test_v2_validation_failures_are_not_charged_either(emulator_factory: Any) -> None:
    """An SD3 body Segmind refuses runs and FAILs (``v2_validation="job"``): nothing is charged."""
    emu = emulator_factory(credits=1.0, cost=COST, queue_time=0.0, inference_time=0.01)
    answer = requests.post(
        f"{emu.base_url}/v2/{SD3_LARGE_MODEL}",
        json={"prompt": "x", "aspect_ratio": "4:3"},
        headers={"x-api-key": emu.api_key},
        timeout=10,
    )
    assert _settled(emu, answer.json()["request_id"]).status_code == 422
    assert emu.stats()["credits_billed"] == 0
    assert emu.stats()["unbilled_failures"] == 1


def test_the_switch_from_config_json_and_cli() -> None:
    from airflow_provider_segmind.emulator.__main__ import build_parser, config_from_args

    assert EmulatorConfig().bill_failed_jobs is False
    assert EmulatorConfig().with_changes(bill_failed_jobs="true").bill_failed_jobs is True
    assert config_from_args(build_parser().parse_args(["--bill-failed-jobs"])).bill_failed_jobs is True
    assert config_from_args(build_parser().parse_args([])).bill_failed_jobs is False
    with pytest.raises(ValueError, match="bill_failed_jobs must be true or false"):
        EmulatorConfig(bill_failed_jobs="maybe")  # type: ignore[arg-type]


def test_configure_switches_it_at_run_time(emulator_factory: Any) -> None:
    emu = emulator_factory(cost=COST, queue_time=0.0, inference_time=0.01)
    emu.configure(bill_failed_jobs=True)
    _settled(emu, _submit(emu, "__fail__").json()["request_id"])
    emu.configure(bill_failed_jobs=False)
    _settled(emu, _submit(emu, "__fail__").json()["request_id"])
    assert emu.stats()["credits_billed"] == pytest.approx(COST)
    assert emu.stats()["unbilled_failures"] == 1
