"""The billing ledger both audits count by (soak and cluster): what counts as paid twice."""

from __future__ import annotations

from typing import Any

from tests.soak.harness import billing_ledger


def _job(request_id: str, prompt: str, status: str, at: float) -> dict[str, Any]:
    return {"request_id": request_id, "params": {"prompt": prompt}, "status": status, "submitted_at": at}


def test_only_a_failed_or_expired_job_may_be_billed_again() -> None:
    jobs = [
        _job("c", "[p0001] a fox", "COMPLETED", 3.0),  # the retry after the FAILED one
        _job("a", "[p0001] a fox", "FAILED", 1.0),
        _job("b", "[p0002] a cat", "EXPIRED", 1.0),
        _job("d", "[p0002] a cat", "COMPLETED", 2.0),
        _job("e", "[p0003] a dog", "COMPLETED", 1.0),  # billed twice: completed, then again
        _job("f", "[p0003] a dog", "COMPLETED", 2.0),
        _job("g", "no tag at all", "COMPLETED", 1.0),
        _job("h", "[p0099] out of range", "COMPLETED", 1.0),
    ]
    ledger = billing_ledger(jobs, prompts=10)
    assert sorted(ledger.jobs_by_prompt) == [1, 2, 3]
    assert [j["request_id"] for j in ledger.jobs_by_prompt[1]] == ["a", "c"]  # submit order
    assert ledger.resubmits == {"FAILED": 1, "EXPIRED": 1}
    assert [(i, j["request_id"]) for i, j in ledger.paid_twice] == [(3, "e")]
    assert [j["request_id"] for j in ledger.strays] == ["g", "h"]


def test_jobs_that_failed_unbilled_are_counted_like_the_others() -> None:
    """Issue 23 item 3: the emulator charges nothing for a FAILED job by default (``billed: false``); the
    ledger's rules hold either way, and it counts the uncharged ones."""
    unbilled = _job("a", "[p0001] a fox", "FAILED", 1.0) | {"billed": False, "cost": 0.0}
    charged = _job("b", "[p0002] a cat", "FAILED", 1.0) | {"billed": True, "cost": 0.04}  # bill_failed_jobs=True
    jobs = [
        unbilled,
        _job("c", "[p0001] a fox", "COMPLETED", 2.0) | {"billed": True},
        charged,
        _job("d", "[p0002] a cat", "COMPLETED", 2.0) | {"billed": True},
        _job("e", "[p0003] a dog", "COMPLETED", 1.0),  # an emulator without the field: billed
    ]
    ledger = billing_ledger(jobs, prompts=10)
    assert ledger.resubmits == {"FAILED": 2}
    assert ledger.paid_twice == []
    assert ledger.unbilled == 1
