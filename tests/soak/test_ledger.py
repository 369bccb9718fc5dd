"""The billing ledger both audits count by (soak and cluster): what counts as paid twice; and the
soak's ownership and safe-rule accounting (issue 22): requests held by two task instances, the
tries the safe rule failed, the history profiles' segments."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.emulator.config import HISTORY_PROFILES, OWN_USER_EMAIL
from airflow_provider_segmind.emulator.request_history import _TEAMMATE_NAMESPACE
from airflow_provider_segmind.exceptions import SegmindError
from airflow_provider_segmind.operators._claims import claim_name
from airflow_provider_segmind.operators._history import _FOUND_NOTHING, Ambiguous, _HistoryLookups
from airflow_provider_segmind.operators._reconcile import _Reconciler
from airflow_provider_segmind.protocol.history import request_id_key
from tests.soak.harness import (
    GENERATE,
    Sighting,
    SoakRun,
    SoakSettings,
    billing_ledger,
    classify,
    history_segments,
    history_user_email,
    make_plan,
    named_request_ids,
    owner_name,
    profile_changes,
    run_sightings,
)


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


# ---- who owns which request, and the safe rule (issue 22) ---------------------------------------

A = "0b7e5a43-1c1d-4a7e-9a51-5f8f0e3d2a11"
B = "6f9d4c21-8e0b-4d53-a2c7-9b1e4f7a6c02"
C = "2c4e6a80-9b1d-4f3a-8c5e-7d9f1b3a5c04"


def _generate(index: int) -> str:
    return owner_name(GENERATE, index)


def test_a_request_held_by_two_task_instances_is_counted_whatever_the_spelling() -> None:
    jobs = [_job(A, "[p0001] a fox", "COMPLETED", 1.0), _job(B, "[p0002] a cat", "COMPLETED", 1.0)]
    sightings = [
        Sighting(A, _generate(1), 1, "XCom return_value"),
        Sighting(A, _generate(1), 1, "claim"),
        # The history lists ids without dashes (hex-ids): the same request, held by prompt 2's task too.
        Sighting(A.replace("-", ""), _generate(2), 2, "trigger watched"),
        Sighting(B, _generate(2), 2, "XCom return_value"),
    ]
    ledger = billing_ledger(jobs, prompts=10, sightings=sightings)
    assert [(rid, sorted(owners)) for rid, owners in ledger.shared] == [(A, [_generate(1), _generate(2)])]
    assert ledger.owners[request_id_key(A)][_generate(1)] == {"XCom return_value", "claim"}
    # Prompt 2's task holding prompt 1's request is also another prompt's request.
    assert ledger.misowned == [(A, 1, _generate(2))]
    assert ledger.unbilled == []
    assert ledger.paid_twice == []


def test_one_owner_per_request_is_clean_and_an_unbilled_request_is_named() -> None:
    jobs = [_job(A, "[p0001] a fox", "COMPLETED", 1.0)]
    sightings = [
        Sighting(A, _generate(1), 1, "XCom segmind_request_id"),
        Sighting(A, _generate(1), 1, "claim"),
        Sighting(C, _generate(1), 1, "claim"),  # e.g. a teammate's request taken from a team history
    ]
    ledger = billing_ledger(jobs, prompts=10, sightings=sightings)
    assert ledger.shared == []
    assert ledger.misowned == []
    assert ledger.unbilled == [(C, _generate(1))]
    assert ledger.prompt_of(A.upper().replace("-", "")) == 1
    assert ledger.prompt_of(C) is None


def _fake_operator(history: bool = True) -> Any:
    return SimpleNamespace(history_wait=4.0, _forget=lambda context: None, _history_on=lambda: history)


def _safe_rule_message(found: Ambiguous | str, what: str) -> str:
    """The operator's own safe-rule message (``_HistoryLookups._fail_safe``), not a copy of it."""
    with pytest.raises(AirflowFailException) as raised:
        _HistoryLookups._fail_safe(_fake_operator(), {}, found, what)  # type: ignore[arg-type]
    return str(raised.value)


def test_classify_names_the_safe_rule_apart_from_the_rule_without_history() -> None:
    lost = "The outcome of this Segmind submit is unknown (Connection lost calling http://127.0.0.1:1/v2/x)"
    ambiguous = _safe_rule_message(Ambiguous((A, B.replace("-", ""))), lost)
    none_shown = _safe_rule_message(_FOUND_NOTHING, lost)
    unrecorded = _safe_rule_message(
        Ambiguous((A, B)), "An earlier try sent a Segmind submit whose request id was never recorded"
    )
    for message in (ambiguous, none_shown, unrecorded):
        assert "nothing is billed twice" in message
        assert classify(message) == "safe rule"
    # history_lookup off: the unknown outcome is still its own cause (issue 12's rule).
    with pytest.raises(AirflowFailException) as raised:
        _Reconciler._fail_unknown(_fake_operator(history=False), SegmindError("read timeout"))  # type: ignore[arg-type]
    assert classify(str(raised.value)) == "submit outcome unknown"
    assert named_request_ids(ambiguous) == (A, B.replace("-", ""))
    assert named_request_ids(none_shown) == ()


def test_the_ledger_names_each_safe_rule_failure_with_its_prompt_and_request_ids() -> None:
    lost = "The outcome of this Segmind submit is unknown (HTTP 502)"
    ambiguous = _safe_rule_message(Ambiguous((A, B)), lost)
    nothing = _safe_rule_message(_FOUND_NOTHING, lost)
    events = [
        {"kind": "retry", "task_id": GENERATE, "map_index": 4, "try_number": 1, "error": "HTTP 502 rate limited"},
        {"kind": "failed", "task_id": GENERATE, "map_index": 4, "try_number": 2, "error": ambiguous},
        {"kind": "failed", "task_id": GENERATE, "map_index": 4, "try_number": 2, "error": ambiguous},  # twice seen
        {"kind": "failed", "task_id": GENERATE, "map_index": 1, "try_number": 1, "error": nothing},
        {"kind": "failed", "task_id": GENERATE, "map_index": 2, "try_number": 1, "error": "job FAILED: boom"},
    ]
    ledger = billing_ledger([], prompts=10, failures=events)
    assert [(f.index, f.try_number, f.request_ids) for f in ledger.safe_rule] == [(1, 1, ()), (4, 2, (A, B))]


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


def test_run_sightings_read_xcom_records_triggers_and_claims(tmp_path: Path) -> None:
    settings = SoakSettings(prompts=3, history_profiles=("all",))
    run = SoakRun(settings, make_plan(settings), "SG_x", "bucket", tmp_path, tmp_path)
    run.jobs = [_job(A, "[p0000] a fox", "COMPLETED", 1.0), _job(B, "[p0001] a cat", "COMPLETED", 2.0)]
    owner = ["segmind_soak", "run-1", GENERATE]

    def claim(request_id: str, owner: list[Any]) -> dict[str, Any]:
        return {"key": claim_name(request_id, 1.0), "value": {"owner": owner, "generation": 3, "at": 1.0}}

    teammate = str(uuid.uuid5(_TEAMMATE_NAMESPACE, f"{B}/0"))
    run.result = {
        "dag_id": "segmind_soak",
        "run_id": "run-1",
        "xcoms": [
            {"task_id": GENERATE, "map_index": 0, "key": "segmind_request_id", "value": A},
            {"task_id": GENERATE, "map_index": 0, "key": "return_value", "value": {"request_id": A}},
            {"task_id": "render.persist", "map_index": 0, "key": "return_value", "value": ["s3://b/k"]},
        ],
        "task_state_store": [{"task_id": GENERATE, "map_index": 1, "key": "r", "value": {"request_id": B}}],
        "claims": [
            claim(A, [*owner, 0]),
            claim(teammate, [*owner, 1]),  # prompt 1's task took a teammate's copy of its request
            claim(C, ["other_dag", "run-9", GENERATE, 0]),  # another run's claim: not this run's business
        ],
    }
    run.chaos = [{"kind": "trigger", "task_id": GENERATE, "map_index": 1, "request_id": B.replace("-", "")}]
    sightings, read = run_sightings(run)
    assert read["claim"] == 2
    assert read["claims of other runs (left out)"] == 1
    ledger = billing_ledger(run.jobs, 3, sightings)
    assert set(ledger.owners[request_id_key(A)][owner_name(GENERATE, 0)]) == {
        "XCom segmind_request_id",
        "XCom return_value",
        "claim",
    }
    assert ledger.owners[request_id_key(B)] == {owner_name(GENERATE, 1): {"task state store", "trigger watched"}}
    assert ledger.shared == []
    assert ledger.misowned == []
    assert ledger.unbilled == [(f"{teammate} (a teammate's copy of {B})", owner_name(GENERATE, 1))]


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
    assert ledger.uncharged == 1
