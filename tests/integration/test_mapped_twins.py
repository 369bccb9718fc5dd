"""Issue 22, defect 2, on a real Airflow: mapped twins with one body, their submit answers lost.

Two mapped tasks of four map indexes each send the *same body* four times at the same time: SD3
with a user seed (``seed=42``) and a model without a seed (``flux-schnell``). Each group has its
own emulator (its own account), scripted to lose the answers of its first submits with a 504 or a
late 502 (the job IS created and billed, then that status is answered) while the request history
lags (rows listed with ``None`` fields for a few seconds), so the twins whose answer was lost
search the history while their siblings' identical requests are in it. The scheduler, the
LocalExecutor's workers, the triggerer and the Execution API are Airflow's own
(``tests/integration/cluster.py``, eight worker slots: the twins run at the same time); the claims
are real Airflow Variables written through the Task SDK, read back with ``airflow variables export``.

What must hold whatever the interleaving: the run ends; every task instance succeeded, or failed
with the safe rule's message ("nothing is billed twice"); no Segmind request is the result of two
task instances; each task instance sent at most one billed submit and the account paid exactly
one job per submit; every claim Variable names one owner, and that owner returned that request;
the API keys are in no log. The fixture prints who got which request (``-s``).

Its first runs found that an ambiguity seen during the whole wait was lost at the deadline: the
late-502 twin then submitted again (5 paid jobs for 4 task instances), fixed in
``operators/_history.py`` (``test_reconcile``'s unclaimed-twin test pins it without Airflow).
"""

from __future__ import annotations

import json
import re
import secrets
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.operators._claims import CLAIM_PREFIX, claim_name
from tests.integration.cluster import AirflowCluster

# The module fixture runs the whole scenario (Airflow start-up included) inside the first test's
# time limit; the run itself is bounded by RUN_TIMEOUT.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

DAG_ID = "segmind_e2e_mapped_twins"
TWINS = 4
#: Task id -> (connection id, model, the faults its emulator answers the first submits with).
#: ``504`` and ``late502`` both create (and bill) the job and lose its answer; the operator searches
#: the history after both, and after a 500/502/503 it would submit again if the history showed nothing.
GROUPS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # Two twins lose their answer: both search while each other's request (and the two answered
    # twins' claimed ones) are in the history. Nothing proves which is whose: the safe rule, unless
    # they are far enough apart in time for each window to hold one.
    "seeded": ("segmind_twins_seeded", "stable-diffusion-3-large-txt2img", ("504", "late502")),
    # One twin loses its answer: three identical requests of its siblings are in the history, claimed.
    "seedless": ("segmind_twins_seedless", "flux-schnell", ("504",)),
}
HISTORY_WAIT = 20
RUN_TIMEOUT = 300
SAFE_RULE = "nothing is billed twice"
DAG = """
    from datetime import timedelta

    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_segmind.operators.segmind import SegmindRunOperator, SegmindTextToImageOperator

    TWINS = TWINS_HERE
    COMMON = dict(deferrable=True, history_wait=HISTORY_WAIT_HERE, retries=1, retry_delay=timedelta(seconds=1))

    with DAG("DAG_ID_HERE", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), max_active_tasks=16):
        # A user seed: the four bodies are identical, seed included (no seed is filled).
        SegmindTextToImageOperator.partial(
            task_id="seeded", seed=42, segmind_conn_id="segmind_twins_seeded", **COMMON
        ).expand(prompt=["A red fox asleep in fresh snow, morning light"] * TWINS)
        # A model without a seed (none is filled for it): four identical bodies.
        SegmindRunOperator.partial(
            task_id="seedless", model="flux-schnell", segmind_conn_id="segmind_twins_seedless", **COMMON
        ).expand(inputs=[{"prompt": "A paper boat on a rain puddle"}] * TWINS)
"""
DAG = (
    DAG.replace("DAG_ID_HERE", DAG_ID).replace("TWINS_HERE", str(TWINS)).replace("HISTORY_WAIT_HERE", str(HISTORY_WAIT))
)
#: What a task log says once per billed submit it sent (answered, or its answer lost).
SUBMIT_LINES = re.compile(r"Submitted Segmind job [0-9a-f-]+|The outcome of Segmind submit \d+ is unknown")


def _emulator() -> SegmindEmulator:
    """An account of its own: realistic timings (the tasks defer), history rows that land late."""
    config = EmulatorConfig.for_profile(
        "realistic",
        api_keys=(f"SG_twins_{secrets.token_hex(12)}",),
        queue_time=(0.2, 1.0),
        inference_time=(3.0, 4.0),
        history_lag_seconds=2.5,
        history_lag_mode="null",
    )
    return SegmindEmulator(config)


def _task_logs(cluster: AirflowCluster, run_id: str, task_id: str, map_index: int) -> dict[str, str]:
    """The worker logs of one task instance, by file name (``attempt=N.log``; trigger logs apart)."""
    folder = cluster.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    folder /= f"map_index={map_index}"
    return {
        path.name: path.read_text(errors="replace")
        for path in sorted(folder.glob("attempt=*.log"))
        if re.fullmatch(r"attempt=\d+\.log", path.name)
    }


def _variables(cluster: AirflowCluster) -> dict[str, Any]:
    """Every Airflow Variable of the cluster, decrypted (``airflow variables export``)."""
    exported = cluster.home / "variables.json"
    cluster.airflow("variables", "export", str(exported))
    loaded: dict[str, Any] = json.loads(exported.read_text())
    return loaded


def _events(log: str) -> list[str]:
    """The lines of a task log that tell its story (submits, searches, claims, the end)."""
    wanted = (
        "Submitted Segmind job",
        "The outcome of Segmind submit",
        "Found the lost submit",
        "another task claimed it first",
        "claiming it back",
        "Claiming Segmind request",
        "Could not claim",
        "shows no request with this body",
        "-> safe rule:",
        "Pausing task as DEFERRED",
    )
    events = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
            text = f"{entry.get('timestamp', '')} {entry.get('event', '')}"
        except ValueError:
            text = line
        if SAFE_RULE in line:
            # The failure's reason is in the exception's detail, not in the event text.
            reason = re.search(r"the request history show[^.]*", line)
            text = f"{text} -> safe rule: {reason.group(0) if reason else '?'}"
        if any(marker in text for marker in wanted):
            events.append(text[:400])
    return events


@pytest.fixture(scope="module")
def twins_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Start Airflow, run the twins DAG once, collect what the tests inspect, stop everything."""
    home = tmp_path_factory.mktemp("airflow-twins")
    dags = home / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG))
    emulators = {task_id: _emulator() for task_id in GROUPS}
    cluster: AirflowCluster | None = None
    started = time.monotonic()
    try:
        for emulator in emulators.values():
            emulator.start()
        env = {
            f"AIRFLOW_CONN_{GROUPS[task_id][0].upper()}": json.dumps(
                {"conn_type": "segmind", "password": emulator.api_key, "host": emulator.base_url}
            )
            for task_id, emulator in emulators.items()
        }
        # Eight worker slots: the four twins of each group run at the same time (the searches
        # hold their slot for up to history_wait).
        env["AIRFLOW__CORE__PARALLELISM"] = str(2 * TWINS)
        cluster = AirflowCluster(home=home, dags_folder=dags, env=env)
        cluster.start()
        cluster.wait_for_dag(DAG_ID)
        booted = time.monotonic()
        for task_id, emulator in emulators.items():
            emulator.script([{"endpoint": "submit", "fault": fault} for fault in GROUPS[task_id][2]])
        run_id = f"twins_{int(time.time())}"
        cluster.trigger(DAG_ID, run_id)
        state = cluster.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
        ran = time.monotonic()
        tis = {
            (str(task), int(index)): {
                "state": ti_state,
                "try_number": int(tries),
                "start": start,
                "end": end,
            }
            for task, index, ti_state, tries, start, end in cluster.query(
                "SELECT task_id, map_index, state, try_number, start_date, end_date FROM task_instance "
                "WHERE dag_id = ? AND run_id = ?",
                (DAG_ID, run_id),
            )
        }
        results = {
            (str(task), int(index)): json.loads(value)
            for task, index, value in cluster.query(
                "SELECT task_id, map_index, value FROM xcom WHERE dag_id = ? AND run_id = ? AND key = 'return_value'",
                (DAG_ID, run_id),
            )
        }
        for key, ti in tis.items():
            ti["logs"] = _task_logs(cluster, run_id, *key)
            ti["result"] = results.get(key)
        variables = _variables(cluster)
        found = {
            "cluster": cluster,
            "run_id": run_id,
            "state": state,
            "task_instances": tis,
            "claims": {key: value for key, value in variables.items() if key.startswith(CLAIM_PREFIX)},
            "variables": sorted(variables),
            "stats": {task_id: emulator.stats() for task_id, emulator in emulators.items()},
            "jobs": {task_id: emulator.jobs() for task_id, emulator in emulators.items()},
            "api_keys": [emulator.api_key for emulator in emulators.values()],
            "log_tail": cluster.log_tail(80),
            "seconds": {"start-up": booted - started, "run": ran - booted},
        }
        _print_story(found)
        yield found
    finally:
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            for emulator in emulators.values():
                emulator.stop()


def _print_story(found: dict[str, Any]) -> None:
    """What happened, for the test report (``-rA`` / ``-s``): who got which request, and how."""
    print(f"\nrun {found['run_id']}: {found['state']}; seconds {found['seconds']}")
    returned = {
        ti["result"]["request_id"]: key for key, ti in found["task_instances"].items() if ti["result"] is not None
    }
    for task_id, stats in found["stats"].items():
        print(f"  {task_id}: paid jobs {stats['submissions']}, faults {dict(stats.get('faults', {}))}")
        for job in sorted(found["jobs"][task_id], key=lambda job: job["submitted_at"]):
            owner = returned.get(job["request_id"], "nobody")
            print(f"    job {job['request_id']} sent {job['submitted_at']:.3f}, returned by {owner}")
    for (task_id, index), ti in sorted(found["task_instances"].items()):
        result = ti["result"] or {}
        print(
            f"  {task_id}[{index}] {ti['state']} try {ti['try_number']} ({ti['start']} .. {ti['end']}) "
            f"-> {result.get('request_id')}"
        )
        for name, log in ti["logs"].items():
            for event in _events(log):
                print(f"      {name}: {event}")
    for name, value in sorted(found["claims"].items()):
        claim = _claim_value(value)
        print(f"  claim {name}: owner {claim.get('owner')} generation {claim.get('generation')}")


def _claim_value(exported: Any) -> dict[str, Any]:
    """A claim's value as ``airflow variables export`` writes it (with its description, or bare)."""
    value = exported.get("value") if isinstance(exported, dict) and "description" in exported else exported
    parsed = json.loads(value) if isinstance(value, str) else value
    assert isinstance(parsed, dict), exported
    return parsed


def test_the_run_ends_and_every_twin_succeeds_or_takes_the_safe_rule(twins_run: dict[str, Any]) -> None:
    assert twins_run["state"] in ("success", "failed"), twins_run["log_tail"]
    tis = twins_run["task_instances"]
    assert sorted(tis) == [(task_id, index) for task_id in sorted(GROUPS) for index in range(TWINS)]
    for key, ti in tis.items():
        if ti["state"] == "success":
            assert ti["result"] is not None, key
            assert ti["result"]["status"] == "COMPLETED", (key, ti["result"])
            continue
        assert ti["state"] == "failed", (key, ti["state"])
        last = ti["logs"][max(ti["logs"], key=lambda name: int(name.split("=")[1].split(".")[0]))]
        assert SAFE_RULE in last, (key, _events(last))


def test_the_twins_ran_at_the_same_time(twins_run: dict[str, Any]) -> None:
    """Each group's four task instances were all running before the first of them ended."""
    for task_id in GROUPS:
        group = [ti for (task, _), ti in twins_run["task_instances"].items() if task == task_id]
        assert all(ti["start"] and ti["end"] for ti in group), group
        assert max(ti["start"] for ti in group) < min(ti["end"] for ti in group), task_id


def test_the_lost_answers_sent_twins_to_the_history(twins_run: dict[str, Any]) -> None:
    """The scenario happened: each group's scripted 504s were consumed and that many twins searched."""
    for task_id, (_, _, faults) in GROUPS.items():
        assert twins_run["stats"][task_id]["faults"] == Counter(faults), twins_run["stats"][task_id]
        searched = [
            key
            for key, ti in twins_run["task_instances"].items()
            if key[0] == task_id and any("The outcome of Segmind submit" in log for log in ti["logs"].values())
        ]
        assert len(searched) == len(faults), searched


def test_no_request_is_the_result_of_two_task_instances(twins_run: dict[str, Any]) -> None:
    returned = [ti["result"]["request_id"] for ti in twins_run["task_instances"].values() if ti["result"]]
    assert [rid for rid, n in Counter(returned).items() if n > 1] == []


def test_the_twins_sent_one_body_and_each_returned_request_is_a_job_of_its_group(twins_run: dict[str, Any]) -> None:
    """The premise: each group's paid jobs all carry the same body (the seeded one its user seed)."""
    for task_id, jobs in twins_run["jobs"].items():
        bodies = {json.dumps(job["params"], sort_keys=True) for job in jobs}
        assert len(bodies) == 1, bodies
        (body,) = bodies
        assert (json.loads(body).get("seed") == 42) is (task_id == "seeded"), body
    for (task_id, index), ti in twins_run["task_instances"].items():
        if ti["result"] is None:
            continue
        jobs = {job["request_id"]: job for job in twins_run["jobs"][task_id]}
        job = jobs.get(ti["result"]["request_id"])
        assert job is not None, (task_id, index, ti["result"]["request_id"])
        assert job["model"] == GROUPS[task_id][1]
        assert job["status"] == "COMPLETED"


def test_one_paid_job_per_task_instance_that_submitted(twins_run: dict[str, Any]) -> None:
    for task_id in GROUPS:
        submits = {
            key: sum(len(SUBMIT_LINES.findall(log)) for log in ti["logs"].values())
            for key, ti in twins_run["task_instances"].items()
            if key[0] == task_id
        }
        assert all(n <= 1 for n in submits.values()), submits  # a retry or a search never sent a second one
        assert twins_run["stats"][task_id]["submissions"] == sum(submits.values()) == TWINS, submits


def test_every_claim_names_one_owner_who_returned_that_request(twins_run: dict[str, Any]) -> None:
    tis = twins_run["task_instances"]
    submitted_at = {job["request_id"]: job["submitted_at"] for jobs in twins_run["jobs"].values() for job in jobs}
    claimed: dict[str, tuple[str, int]] = {}
    for name, raw in twins_run["claims"].items():
        claim = _claim_value(raw)
        dag_id, run_id, task_id, map_index = claim["owner"]
        assert (dag_id, run_id) == (DAG_ID, twins_run["run_id"]), claim
        owner = tis[(task_id, int(map_index))]
        assert owner["state"] == "success", (name, claim, owner["state"])
        assert owner["result"] is not None, (name, claim)
        request_id = owner["result"]["request_id"]
        at = submitted_at[request_id]
        assert name in {claim_name(request_id, t) for t in (at, at - 600, at + 600)}, (name, claim, request_id)
        assert request_id not in claimed, (request_id, claimed[request_id], claim)
        claimed[request_id] = (task_id, int(map_index))
    # ... and every request a task returned is claimed by that task.
    for key, ti in tis.items():
        if ti["result"] is not None:
            assert claimed.get(ti["result"]["request_id"]) == key, (key, ti["result"]["request_id"])


def test_no_api_key_in_any_log(twins_run: dict[str, Any]) -> None:
    cluster: AirflowCluster = twins_run["cluster"]
    texts = [cluster.log_path.read_text(errors="replace")]
    texts += [path.read_text(errors="replace") for path in (cluster.home / "logs").rglob("*.log")]
    assert all(key not in text for key in twins_run["api_keys"] for text in texts)


def test_every_process_was_stopped(twins_run: dict[str, Any]) -> None:
    cluster: AirflowCluster = twins_run["cluster"]
    cluster.stop()  # idempotent; the fixture stops it (this runs before the fixture's teardown)
    assert cluster.leftover_processes() == []
