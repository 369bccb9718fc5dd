"""Issue 22's matrix: every way a submit's answer can be lost, under every way the real history may answer.

Rows: how the answer is lost (a reset after sending, a 504, a late 502, a worker that dies after
sending, a v2 record that expired). Columns: the history profiles of the emulator
(``emulator/config.py`` ``HISTORY_PROFILES``: each of a-g alone, and all at once) and four bodies
(SD3 with a user seed, SD3 with a filled seed, a model without a seed, two mapped twins with the
identical body). Every cell must either re-attach each task to its **own** request or take the
documented safe rule (fail without retries, nothing resent); no cell pays twice and no request is
delivered to two tasks. Each cell's outcome (jobs paid / tasks succeeded / rule taken) is appended
to ``$SEGMIND_MATRIX_OUT`` (JSON lines) when set, for the closing note and docs/exactly-once.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.emulator.config import HISTORY_PROFILES
from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator
from tests.support.jobs import DictTaskStateStore, DyingStore, job_status, make_context, use_emulator, wait_for

FAULTS = ("reset", "504", "late502", "death", "expired")
PROFILES = tuple(HISTORY_PROFILES)
BODIES = ("sd3-seed", "sd3-filled", "seedless", "twins")

#: The account's own user, as a team sets it (connection extras) so teammates' rows are filtered out.
TEAM_EXTRA = {"history_user_email": "owner@example.com"}
FAST_EXTRA: dict[str, Any] = {"read_timeout": 0.5, "retry_backoff": 0.01, "max_retries": 1}
HISTORY_WAIT = 4.0
PROMPT = "a red fox in the snow"
SEEDLESS_MODEL = "flux-schnell"


def _operator(body: str) -> Any:
    common: dict[str, Any] = {"deferrable": False, "history_wait": HISTORY_WAIT, "poll_schedule": {"initial": 0.05}}
    if body == "seedless":
        return SegmindRunOperator(task_id="run", model=SEEDLESS_MODEL, inputs={"prompt": PROMPT}, **common)
    seed = None if body == "sd3-filled" else 42
    return SegmindTextToImageOperator(task_id="t2i", prompt=PROMPT, seed=seed, **common)


@dataclass
class Cell:
    fault: str
    profile: str
    body: str
    paid: int = 0
    succeeded: int = 0
    rule: str = ""
    owners: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            "profile": self.profile,
            "body": self.body,
            "paid": self.paid,
            "succeeded": self.succeeded,
            "rule": self.rule,
        }


def _run(op: Any, context: dict[str, Any]) -> dict[str, Any] | AirflowFailException:
    try:
        result: dict[str, Any] = op.execute(context)
    except AirflowFailException as err:
        return err
    return result


def run_cell(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, fault: str, profile: str, body: str) -> Cell:
    """Run one cell and check its guarantees; return what it paid and did."""
    emu = emulator_factory(**HISTORY_PROFILES[profile])
    extra = {**FAST_EXTRA, **(TEAM_EXTRA if profile in ("team", "all") else {})}
    use_emulator(monkeypatch, emu, extra=extra)
    cell = Cell(fault, profile, body)
    twins = body == "twins"
    tasks = 2 if twins else 1
    a_store = DyingStore() if fault == "death" else DictTaskStateStore()
    a_ctx = {"try_number": 1, "max_tries": 1, "map_index": 0}
    results: dict[str, Any] = {}

    def twin() -> None:
        results["B"] = _run(_operator(body), make_context(DictTaskStateStore(), map_index=1))

    if twins and fault != "death":
        twin()  # the twin submits first, and gets its answer
    if fault in ("reset", "504", "late502"):
        emu.script([{"endpoint": "submit", "fault": {"reset": "reset_after"}.get(fault, fault)}])
        results["A"] = _run(_operator(body), make_context(a_store, **a_ctx))
    elif fault == "death":
        with pytest.raises(SystemExit):
            _operator(body).execute(make_context(a_store, **a_ctx))
        if twins:
            twin()  # the twin submits the same body while the dead task waits for its retry
        results["A"] = _run(_operator(body), make_context(a_store, **{**a_ctx, "try_number": 2}))
    else:  # expired: the first try completed, its v2 record expired before the retry
        first = _run(_operator(body), make_context(a_store, **a_ctx))
        assert isinstance(first, dict), first
        wait_for(lambda: job_status(emu, first["request_id"]) == "COMPLETED", what="job completion")
        emu.expire(first["request_id"])
        a_store.set("segmind_request", {**a_store.get("segmind_request"), "submitted_at": 0.0})
        results["A"] = _run(_operator(body), make_context(a_store, **{**a_ctx, "try_number": 2}))

    jobs = emu.jobs()
    cell.paid = emu.stats()["submissions"]
    b_id = results["B"]["request_id"] if twins and isinstance(results.get("B"), dict) else None
    a_jobs = [j["request_id"] for j in jobs if j["request_id"] != b_id]
    delivered: list[str] = []
    for name, outcome in sorted(results.items()):
        if isinstance(outcome, dict):
            cell.succeeded += 1
            delivered.append(outcome["request_id"])
            cell.owners[name] = outcome["request_id"]
        else:
            text = str(outcome)
            assert "nothing is billed twice" in text, f"{name} failed without the safe rule: {text}"
            cell.rule = "safe rule"
    if not cell.rule:
        cell.rule = "re-attached" if fault != "expired" else "history by id"
    # The guarantees.
    assert len(delivered) == len(set(delivered)), f"one request delivered to two tasks: {cell.owners}"
    assert cell.paid <= tasks, f"{cell.paid} jobs paid for {tasks} task(s)"
    if "A" in cell.owners:
        assert cell.owners["A"] in a_jobs, f"task A was handed the twin's request {cell.owners['A']}"
    if twins:
        assert isinstance(results.get("B"), dict), "the twin (a clean submit) must succeed"
    out = os.environ.get("SEGMIND_MATRIX_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(cell.row()) + "\n")
    return cell
