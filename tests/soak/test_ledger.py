"""The billing ledger both audits count by (soak and cluster): what counts as paid twice."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from airflow_provider_segmind.emulator.config import HISTORY_PROFILES, OWN_USER_EMAIL
from tests.soak.harness import SoakSettings, billing_ledger, history_segments, history_user_email, profile_changes


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


def test_history_segments_cover_every_prompt_once_and_every_profile_in_a_long_run() -> None:
    long = SoakSettings(prompts=200)
    segments = history_segments(long)
    assert [s.profile for s in segments] == list(HISTORY_PROFILES)
    assert segments[0].start == 0
    assert segments[-1].stop == 200
    assert all(a.stop == b.start for a, b in itertools.pairwise(segments))
    assert all(17 <= s.stop - s.start <= 19 for s in segments)
    # Fewer prompts than profiles: some profiles get one prompt each, the others none (the report says which).
    few = history_segments(SoakSettings(prompts=3))
    assert [(s.start, s.stop) for s in few] == [(0, 1), (1, 2), (2, 3)]
    short = history_segments(SoakSettings(prompts=32, history_profiles=("all",)))
    assert [(s.profile, s.start, s.stop) for s in short] == [("all", 0, 32)]
    with pytest.raises(ValueError, match="history_profiles"):
        SoakSettings(history_profiles=("nope",))


def test_profile_changes_keep_a_profiles_own_lag_and_the_user_filter_follows_teams() -> None:
    assert profile_changes("default", 0.3)["history_lag_seconds"] == 0.3
    assert profile_changes("hex-ids", 0.3)["history_id_form"] == "hex32"
    assert profile_changes("lagging", 0.3)["history_lag_seconds"] == HISTORY_PROFILES["lagging"]["history_lag_seconds"]
    assert profile_changes("all", 0.3)["history_team_rows"] == HISTORY_PROFILES["all"]["history_team_rows"]
    assert history_user_email(SoakSettings(history_profiles=("all",))) == OWN_USER_EMAIL
    assert history_user_email(SoakSettings()) == OWN_USER_EMAIL  # the rotation includes "team"
    assert history_user_email(SoakSettings(history_profiles=("default", "hex-ids"))) is None
