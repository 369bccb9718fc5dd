"""The cluster scenario: the marketing pipeline over many prompts while processes are SIGKILLed, then the audit.

One run of ``example_dags/example_segmind_marketing_assets.py`` (generate, deferrable -> persist to S3,
mapped per prompt; the prompts and their ``__fail__``/``__unsafe__`` markers come from the soak's plan,
:func:`tests.soak.harness.make_plan`) on :class:`tests.cluster.topology.CeleryCluster`, against the
Segmind emulator and moto's S3 server (both in this process, on loopback). While it runs:

1. **Triggerer kill**: once enough generation tasks are deferred, the triggerer holding the most
   triggers is SIGKILLed; the reassignment delay is the time until every trigger it held runs on
   the survivor (``trigger.triggerer_id`` changes). Governed by ``[triggerer]
   triggerer_health_check_threshold`` and ``[triggerer] job_heartbeat_sec`` (see
   :data:`tests.cluster.topology.FAILOVER_SETTINGS`). The dead triggerer is started again after step 2.
2. **Worker kill in the submit window**: the emulator is told to hold the answers of the next submits
   (a scripted ``slow`` fault: the job is created and billed, the answer comes ``slow_seconds`` later)
   and of the next media downloads; once one of those submits is in flight from a try that has a
   retry left (or, failing that, once all of them are), the Celery worker running most of them is
   SIGKILLed with its whole process group (pool and task processes), so it dies
   between Segmind accepting the submit and the request record / deferral, and, where persists are
   running, in the middle of a download + upload. It is started again a few seconds later. The
   killed tries are failed by the scheduler's heartbeat timeout and retried; a retry must re-attach to
   the job its dead try left (the "attempt" record + the request history), not pay again. A killed
   try that had no retry left is its own named outcome ("worker killed on its last try", recognised
   by the scheduler's "heartbeat timeout" audit-log row for that try).
3. **Scheduler restart**: the scheduler is SIGKILLed and started again once (it adopts the Celery
   tasks of the dead one).

The audit then checks: every prompt is stored in S3 with a verified manifest, or failed with a
cause named in its task's log; paid submissions (the emulator's billing) equal prompts billed plus
resubmissions of FAILED or expired jobs only; the API key occurs nowhere (every log file, a
``pg_dump`` of the metadata database: XCom, trigger kwargs, variables, task state; Redis, sampled
every few seconds during the run: Celery's queues and unacked messages; the S3 objects); no
multipart upload is left; every process and server is stopped. It prints a summary table.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.cluster.topology import FAILOVER_SETTINGS
from tests.soak.harness import Audit, SoakSettings, _image_check, billing_ledger, classify, make_plan, prompt_index

REPO: Final = Path(__file__).resolve().parents[2]
DAG_ID: Final = "example_segmind_marketing_assets"
GENERATE: Final = "render.generate"
PERSIST: Final = "render.persist"
REGION: Final = "us-east-1"
S3_CREDENTIALS: Final = {"aws_access_key_id": "cluster", "aws_secret_access_key": "cluster"}
#: Prompt keys the marketing DAG accepts (the soak's plan also draws seeds, which it does not take).
DAG_KEYS: Final = ("prompt", "negative_prompt", "aspect_ratio")


@dataclass(frozen=True)
class ClusterSettings:
    """One run. The defaults are the full form's (60 prompts)."""

    prompts: int = 60
    seed: int = 1
    #: ``segmind`` pool slots: generation tasks running (submitting) at once; deferred ones hold none.
    pool_slots: int = 6
    inference_time: tuple[float, float] = (20.0, 40.0)
    #: Deferred generation tasks before the triggerer kill.
    deferred_before_kill: int = 10
    #: Submits (and media downloads) whose answers the emulator holds for ``slow_seconds``.
    held_submits: int = 3
    held_media: int = 4
    slow_seconds: float = 45.0
    #: The connection's read timeout: longer than ``slow_seconds``, so a held submit is only slow.
    read_timeout: float = 120.0
    bound_seconds: float = 2400.0

    @classmethod
    def short(cls, seed: int = 1) -> ClusterSettings:
        """The pytest form: fewer prompts, the same three kills."""
        return cls(prompts=16, seed=seed, pool_slots=4, deferred_before_kill=4, held_submits=2, held_media=1)


@dataclass
class ClusterRun:
    """What one run collected, for the audit."""

    settings: ClusterSettings
    api_key: str
    bucket: str
    workdir: Path
    specs: list[dict[str, Any]] = field(default_factory=list)
    fail_marked: set[int] = field(default_factory=set)
    unsafe_marked: set[int] = field(default_factory=set)
    run_id: str = ""
    state: str = "missing"
    wall_seconds: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    task_instances: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[tuple[str, int], str] = field(default_factory=dict)
    #: The worker log of each try of a failed task instance, in try order.
    attempt_logs: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    #: (task_id, map_index, try_number) of every try the scheduler failed by heartbeat timeout (its audit log).
    heartbeat_timeouts: set[tuple[str, int, int]] = field(default_factory=set)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    emulator_stats: dict[str, Any] = field(default_factory=dict)
    media_requests: list[dict[str, Any]] = field(default_factory=list)
    s3_objects: dict[str, tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    s3_uploads: list[dict[str, Any]] = field(default_factory=list)
    key_found: Counter[str] = field(default_factory=Counter)
    scanned: Counter[str] = field(default_factory=Counter)
    celery_messages_seen: int = 0
    airflow_version: str = "?"
    #: Request-record Variables (Airflow 3.1/3.2): most seen at once during the run, left at the end.
    request_variables: tuple[int, int] = (0, 0)
    leftovers: list[str] = field(default_factory=list)
    failure: str | None = None

    def event(self, kind: str, **details: Any) -> dict[str, Any]:
        entry = {"kind": kind, "at": time.time(), **details}
        self.events.append(entry)
        print(f"[cluster] {kind}: {json.dumps(details, default=str)}", flush=True)
        return entry


#: The error a try ends with when its job FAILED (``job_failed_error``), naming the job.
_FAILED_JOB: Final = re.compile(r"Segmind job ([0-9A-Za-z-]{8,}) FAILED")
_BODY: Final = re.compile(rb'"body":\s*"([A-Za-z0-9+/=]+)"')


def with_bodies_decoded(value: bytes) -> bytes:
    """``value`` followed by the decoded body of every Celery message in it (kombu base64-encodes
    message bodies: the raw bytes alone would hide a key inside a task's arguments)."""
    parts = [value]
    for match in _BODY.finditer(value):
        with contextlib.suppress(ValueError):
            parts.append(base64.b64decode(match.group(1), validate=True))
    return b"\n".join(parts)


class _RedisSampler(threading.Thread):
    """Scans every Redis key and value every ``interval`` s while the run goes on (Celery messages
    are deleted once acknowledged, so a scan at the end alone would see an empty queue)."""

    def __init__(
        self,
        snapshot: Callable[[], dict[bytes, bytes]],
        key: bytes,
        records: Callable[[], int],
        interval: float = 2.0,
    ) -> None:
        super().__init__(name="cluster-redis-sampler", daemon=True)
        self.snapshot, self.key, self.records, self.interval = snapshot, key, records, interval
        #: Most request-record Variables seen at once (Airflow 3.1/3.2: mapped tries writing them concurrently).
        self.records_max = 0
        self.stop_event = threading.Event()
        self.found = 0
        self.bytes_scanned = 0
        self.samples = 0
        self.messages: set[bytes] = set()

    def sample(self) -> None:
        with contextlib.suppress(Exception):
            for name, raw in self.snapshot().items():
                value = with_bodies_decoded(raw)
                self.bytes_scanned += len(name) + len(value)
                self.found += name.count(self.key) + value.count(self.key)
                if b"render.generate" in value or b"render.persist" in value:
                    self.messages.add(hashlib.sha256(value).digest())
            self.samples += 1
        with contextlib.suppress(Exception):
            self.records_max = max(self.records_max, self.records())

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=30)
        self.sample()  # and once more at the end


def _connection_env(api_key: str, emulator_url: str, s3_endpoint: str, settings: ClusterSettings) -> dict[str, str]:
    segmind = {
        "conn_type": "segmind",
        "password": api_key,
        "host": emulator_url,
        "extra": {"read_timeout": settings.read_timeout},
    }
    aws = {
        "conn_type": "aws",
        "login": S3_CREDENTIALS["aws_access_key_id"],
        "password": S3_CREDENTIALS["aws_secret_access_key"],
        "extra": {"endpoint_url": s3_endpoint, "region_name": REGION},
    }
    return {"AIRFLOW_CONN_SEGMIND_DEFAULT": json.dumps(segmind), "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws)}


def run_cluster(settings: ClusterSettings, workdir: Path) -> ClusterRun:
    """Start everything, run the scenario, collect, stop everything (on every path)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from airflow_provider_segmind.emulator.config import EmulatorConfig
    from airflow_provider_segmind.emulator.server import SegmindEmulator
    from tests.cluster.servers import PostgresServer, RedisServer
    from tests.cluster.topology import CeleryCluster

    workdir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    plan = make_plan(SoakSettings(prompts=settings.prompts, seed=settings.seed, shares={}))
    run = ClusterRun(
        settings=settings,
        api_key="SG_" + secrets.token_hex(16),
        bucket=f"segmind-cluster-{uuid.uuid4().hex[:8]}",
        workdir=workdir,
        specs=[{k: spec[k] for k in DAG_KEYS if k in spec} for spec in plan.specs],
        fail_marked=plan.fail_marked,
        unsafe_marked=plan.unsafe_marked,
        run_id=f"cluster_{settings.seed}_{int(time.time())}",
    )
    started = time.monotonic()
    emulator = SegmindEmulator(
        EmulatorConfig(
            api_keys=(run.api_key,),
            queue_time=(0.5, 2.0),
            inference_time=settings.inference_time,
            credits=1_000_000.0,
            seed=settings.seed,
            request_log_size=200_000,
            history_lag_seconds=0.3,
        )
    )
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    postgres = PostgresServer(workdir)
    redis = RedisServer(workdir)
    cluster: CeleryCluster | None = None
    sampler: _RedisSampler | None = None
    moto_started = False
    try:
        emulator.start()
        moto.start()
        moto_started = True
        host, port = moto.get_host_and_port()
        s3_endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, **S3_CREDENTIALS)
        s3.create_bucket(Bucket=run.bucket)
        postgres.start()
        redis.start()
        env = {
            **_connection_env(run.api_key, emulator.base_url, s3_endpoint, settings),
            "SEGMIND_EXAMPLE_BUCKET": run.bucket,
            "SEGMIND_EXAMPLE_POOL": "segmind",
            "SEGMIND_ALLOW_INSECURE_LOOPBACK": "1",
            "SEGMIND_EXAMPLE_SCHEDULE": "none",
        }
        cluster = CeleryCluster(
            home=workdir / "airflow-home", dags_folder=REPO / "example_dags", env=env, postgres=postgres, redis=redis
        )
        cluster.start()
        run.event("cluster up", seconds=round(time.monotonic() - started, 1), triggerers=cluster.triggerer_jobs)
        cluster.airflow("pools", "set", "segmind", str(settings.pool_slots), "Segmind jobs")
        cluster.wait_for_dag(DAG_ID, timeout=300)
        run.airflow_version = cluster.airflow("version").strip()
        from airflow_provider_segmind.operators._records import REQUEST_VARIABLE_PREFIX

        def records() -> int:
            rows = cluster.query("SELECT count(*) FROM variable WHERE key LIKE ?", (REQUEST_VARIABLE_PREFIX + "%",))
            return int(rows[0][0]) if rows else 0

        sampler = _RedisSampler(redis.snapshot, run.api_key.encode(), records)
        sampler.start()
        cluster.trigger(DAG_ID, run.run_id, {"prompts": run.specs})
        run.event("triggered", run_id=run.run_id, prompts=settings.prompts)
        _drive(run, cluster, emulator, deadline=started + settings.bound_seconds)
        left = max(1.0, started + settings.bound_seconds - time.monotonic())
        run.state = cluster.wait_for_run(DAG_ID, run.run_id, timeout=left)
        run.event("run finished", state=run.state, seconds=round(time.monotonic() - started, 1))
        _collect(run, cluster, emulator, s3)
        sampler.stop()
        run.scanned["redis"] = sampler.bytes_scanned
        run.key_found["redis (Celery broker)"] += sampler.found
        run.celery_messages_seen = len(sampler.messages)
        run.request_variables = (sampler.records_max, records())
        dump = postgres.dump()
        run.scanned["postgres"] = len(dump)
        run.key_found["postgres (pg_dump --data-only)"] += dump.count(run.api_key.encode())
        run.scanned["postgres control: a request id present"] = int(
            bool(run.jobs) and run.jobs[0]["request_id"].encode() in dump
        )
        s3.close()
    except Exception as err:
        run.failure = f"{type(err).__name__}: {err}"
        if cluster is not None:
            (workdir / "component-tails.txt").write_text(cluster.log_tail(80))
        raise
    finally:
        # Each step runs even if an earlier one raised (or a SIGTERM lands in the middle of it).
        with contextlib.ExitStack() as teardown:
            teardown.callback(lambda: (workdir / "events.json").write_text(json.dumps(run.events, default=str)))
            teardown.callback(
                lambda: run.leftovers.extend(n for n, s in (("redis", redis), ("postgres", postgres)) if s.alive())
            )
            teardown.callback(emulator.stop)
            if moto_started:
                teardown.callback(moto.stop)
            teardown.callback(postgres.stop)
            teardown.callback(redis.stop)
            if cluster is not None:
                teardown.callback(_scan_logs, run, cluster.home)
                teardown.callback(
                    lambda: run.leftovers.extend(f"airflow pid {p}" for p in cluster.leftover_processes())
                )
                teardown.callback(cluster.stop)
            if sampler is not None and sampler.is_alive():
                teardown.callback(sampler.join, 30)
                sampler.stop_event.set()
        run.wall_seconds = time.monotonic() - started
    return run


# --------------------------------------------------------------------------------------------
# The kills
# --------------------------------------------------------------------------------------------


def _tis(cluster: Any, run_id: str) -> list[dict[str, Any]]:
    rows = cluster.query(
        "SELECT task_id, map_index, state, try_number, max_tries, pid FROM task_instance "
        "WHERE dag_id = ? AND run_id = ?",
        (DAG_ID, run_id),
    )
    return [
        {"task_id": t, "map_index": m, "state": s, "try_number": n, "max_tries": x, "pid": p}
        for t, m, s, n, x, p in rows
    ]


def _last_try(ti: Mapping[str, Any]) -> bool:
    """Whether the try is its task instance's last (Airflow retries while ``try_number <= max_tries``)."""
    return bool(ti["try_number"] > (ti["max_tries"] or 0))


def _drive(run: ClusterRun, cluster: Any, emulator: Any, *, deadline: float) -> None:
    """Apply the three kills in order, each when its moment comes (see the module docstring)."""
    victim = _kill_triggerer(run, cluster, deadline)
    # Armed only now: held while the triggerer phase ran, the submits' hold would have run out.
    armed_at = time.time()
    _hold_submits(run, emulator)
    _kill_worker_in_submit_window(run, cluster, emulator, deadline, armed_at)
    known = set(cluster._running_triggerer_jobs())
    cluster.launch(victim)
    cluster.triggerer_jobs[victim] = cluster._wait_new_triggerer_job(victim, known, deadline)
    run.event("triggerer restarted", triggerer=victim, job_id=cluster.triggerer_jobs[victim])
    _restart_scheduler(run, cluster)


def _wait(condition: Callable[[], Any], deadline: float, what: str, interval: float = 1.0) -> Any:
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")


def _kill_triggerer(run: ClusterRun, cluster: Any, deadline: float) -> str:
    """SIGKILL the triggerer holding the most deferred generation tasks; measure the takeover. Returns its name."""
    s = run.settings
    want = min(s.deferred_before_kill, s.prompts - len(run.fail_marked) - len(run.unsafe_marked))

    def held() -> dict[int, list[int]] | None:
        rows = cluster.query(
            "SELECT t.triggerer_id, t.id FROM trigger t JOIN task_instance ti ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.state = 'deferred'",
            (DAG_ID, run.run_id),
        )
        by: dict[int, list[int]] = defaultdict(list)
        for triggerer_id, trigger_id in rows:
            if triggerer_id is not None:
                by[int(triggerer_id)].append(int(trigger_id))
        return by if sum(len(v) for v in by.values()) >= want else None

    by = _wait(held, deadline, f"{want} deferred generation tasks")
    names = {job: name for name, job in cluster.triggerer_jobs.items()}
    victim_job = max((job for job in by if job in names), key=lambda job: len(by[job]))
    victim, survivor = names[victim_job], next(n for n in names.values() if n != names[victim_job])
    triggers = by[victim_job]
    killed_at = cluster.kill(victim)
    run.event("triggerer killed", triggerer=victim, job_id=victim_job, triggers=len(triggers))

    moved: dict[int, float] = {}
    while len(moved) < len(triggers) and time.monotonic() < deadline:
        rows = dict(cluster.query("SELECT id, triggerer_id FROM trigger WHERE id = ANY(?)", (triggers,)))
        now = time.time()
        for trigger_id in triggers:
            if trigger_id not in moved and rows.get(trigger_id) != victim_job:
                moved[trigger_id] = now - killed_at  # reassigned (or already fired by the survivor)
        time.sleep(0.5)
    delays = sorted(moved.values())
    run.event(
        "triggers reassigned",
        survivor=survivor,
        moved=len(moved),
        of=len(triggers),
        first_seconds=round(delays[0], 1) if delays else None,
        last_seconds=round(delays[-1], 1) if delays else None,
    )
    return victim


def _hold_submits(run: ClusterRun, emulator: Any) -> None:
    """Script the emulator: the next submits and media downloads are answered ``slow_seconds`` late."""
    s = run.settings
    run.event("holding submits and media", submits=s.held_submits, media=s.held_media, seconds=s.slow_seconds)
    steps = [{"endpoint": "submit", "fault": "slow", "times": s.held_submits, "seconds": s.slow_seconds}]
    if s.held_media:
        steps.append({"endpoint": "media", "fault": "slow", "times": s.held_media, "seconds": s.slow_seconds})
    emulator.script(steps)


def _kill_worker_in_submit_window(
    run: ClusterRun, cluster: Any, emulator: Any, deadline: float, armed_at: float
) -> None:
    s = run.settings
    armed = time.monotonic()

    def pending() -> dict[str, int]:
        return dict(emulator.stats().get("scripted_pending") or {})

    def held_tries() -> list[dict[str, Any]]:
        """Generation tries in the submit window: running, their job billed since the hold was armed."""
        held = {prompt_index(job["params"].get("prompt")) for job in emulator.jobs() if job["submitted_at"] >= armed_at}
        return [
            ti
            for ti in _tis(cluster, run.run_id)
            if ti["task_id"] == GENERATE and ti["state"] == "running" and ti["map_index"] in held
        ]

    def window_ready() -> bool:
        # Aim at a try with a retry left: kill as soon as one is in the window. In the short form the
        # held submits are mostly the __fail__ prompt's retries (every first try has submitted by
        # now), so waiting for every held submit would mostly catch its last try (issue 24 item 10).
        # Only once every held submit has arrived is a window of last tries taken as it is.
        window = held_tries()
        return any(not _last_try(ti) for ti in window) or (bool(window) and not pending().get("submit"))

    def media_held() -> bool:
        return not pending().get("media")

    # The held submits are the next ones any generation try sends (first tries, or retries).
    _wait(window_ready, min(deadline, armed + 600), "a held submit in the window of a running try")
    held_at = time.monotonic()
    time.sleep(2.0)  # their tasks are now waiting for the answer, the job exists and is billed
    # Give a persist the chance to be mid-download too, well inside the submits' hold.
    with contextlib.suppress(TimeoutError):
        _wait(media_held, min(deadline, held_at + s.slow_seconds / 2), "a held media download")
    tis = _tis(cluster, run.run_id)
    in_window = held_tries()
    persisting = [ti for ti in tis if ti["task_id"] == PERSIST and ti["state"] == "running"]
    load: Counter[str] = Counter()
    for ti in in_window:
        load[cluster.component_of(ti["pid"]) if ti["pid"] else None] += 10
    for ti in persisting:
        load[cluster.component_of(ti["pid"]) if ti["pid"] else None] += 1
    running: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for ti in tis:
        if ti["task_id"] in (GENERATE, PERSIST) and ti["state"] == "running" and ti["pid"]:
            running[cluster.component_of(ti["pid"])].append(ti)
    workers = [n for n in ("worker-1", "worker-2") if load.get(n)]
    # Aim at tries with retries left: a worker running some task's last try (whose death no retry
    # repairs: the scheduler fails it by heartbeat timeout) is the victim only when every worker with
    # a try in the submit window runs one. Such a kill is counted as its own named outcome.
    in_window_workers = [n for n in workers if load[n] >= 10]
    spare = [n for n in in_window_workers if not any(_last_try(ti) for ti in running.get(n, []))]
    victim = max(spare or in_window_workers or workers, key=lambda n: load[n]) if workers else "worker-1"
    held_here = [ti["map_index"] for ti in in_window if cluster.component_of(ti["pid"] or 0) == victim]
    persist_here = [ti["map_index"] for ti in persisting if cluster.component_of(ti["pid"] or 0) == victim]
    killed = [[ti["task_id"], ti["map_index"], ti["try_number"]] for ti in running.get(victim, [])]
    last_tries = [[ti["task_id"], ti["map_index"], ti["try_number"]] for ti in running.get(victim, []) if _last_try(ti)]
    cluster.kill(victim)
    run.event(
        "worker killed",
        worker=victim,
        generate_after_accepted_submit=held_here,
        persist_running=persist_here,
        in_window_total=len(in_window),
        killed_tries=killed,
        killed_last_tries=last_tries,
        avoided_last_tries=bool(spare) and len(spare) < len(in_window_workers),
    )
    time.sleep(5)
    cluster.launch(victim)
    cluster.wait_for_worker(victim, deadline)
    run.event("worker restarted", worker=victim)


def _restart_scheduler(run: ClusterRun, cluster: Any) -> None:
    cluster.kill("scheduler")
    run.event("scheduler killed")
    cluster.launch("scheduler")
    run.event("scheduler restarted")


# --------------------------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------------------------


def _collect(run: ClusterRun, cluster: Any, emulator: Any, s3: Any) -> None:
    run.task_instances = _tis(cluster, run.run_id)
    run.jobs = emulator.jobs()
    run.emulator_stats = emulator.stats()
    run.media_requests = emulator.requests_log("/media")
    logs = cluster.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run.run_id}"
    for ti in run.task_instances:
        if ti["state"] != "failed":
            continue
        folder = logs / f"task_id={ti['task_id']}"
        if ti["map_index"] >= 0:
            folder = folder / f"map_index={ti['map_index']}"
        attempts = sorted(folder.glob("attempt=*.log"), key=lambda p: p.stat().st_mtime)
        run.errors[(ti["task_id"], ti["map_index"])] = attempts[-1].read_text(errors="replace") if attempts else ""
        # The worker's log of each try (not the triggerer's attempt=N.log.trigger.* files), in try order.
        tries = sorted(
            (int(match.group(1)), path)
            for path in folder.glob("attempt=*.log")
            if (match := re.fullmatch(r"attempt=(\d+)\.log", path.name))
        )
        run.attempt_logs[(ti["task_id"], ti["map_index"])] = [path.read_text(errors="replace") for _, path in tries]
    # The scheduler's audit-log row for a try it failed because its heartbeat stopped (a dead worker).
    run.heartbeat_timeouts = {
        (str(task_id), int(map_index), int(try_number))
        for task_id, map_index, try_number in cluster.query(
            "SELECT task_id, map_index, try_number FROM log WHERE dag_id = ? AND run_id = ? AND event = ?",
            (DAG_ID, run.run_id, "heartbeat timeout"),
        )
        if try_number is not None
    }
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=run.bucket):
        for obj in page.get("Contents", []):
            answer = s3.get_object(Bucket=run.bucket, Key=obj["Key"])
            meta = {"Metadata": answer.get("Metadata") or {}, "ETag": obj.get("ETag")}
            run.s3_objects[obj["Key"]] = (answer["Body"].read(), meta)
    run.s3_uploads = list(s3.list_multipart_uploads(Bucket=run.bucket).get("Uploads", []))


def _scan_logs(run: ClusterRun, home: Path) -> None:
    key = run.api_key.encode()
    files = 0
    for path in [*home.glob("*.out"), *(home / "logs").rglob("*"), *run.workdir.glob("*.log")]:
        if path.is_file():
            data = path.read_bytes()
            files += 1
            run.scanned["log bytes"] += len(data)
            if key in data:
                run.key_found[f"log {path.name}"] += data.count(key)
    run.scanned["log files"] = files
    for name, (body, meta) in run.s3_objects.items():
        if key in body or key in json.dumps(meta, default=str).encode():
            run.key_found[f"s3 {name}"] += 1


# --------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------


def audit(run: ClusterRun) -> Audit:
    """Check every guarantee; return the violations and the summary rows."""
    a = Audit()
    s = run.settings
    n = s.prompts
    a.check(run.failure is None, f"the run broke off: {run.failure}")
    a.check(run.state in ("success", "failed"), f"the DAG run did not finish: {run.state}")
    tis = {(t["task_id"], t["map_index"]): t for t in run.task_instances}

    # ---- billing -------------------------------------------------------------------------
    ledger = billing_ledger(run.jobs, n)
    for job in ledger.strays:
        a.check(False, f"billed job {job['request_id']} belongs to no prompt")
    for index, earlier in ledger.paid_twice:
        a.check(False, f"prompt {index}: job {earlier['request_id']} ({earlier['status']}) paid twice")
    jobs_by_prompt, resubmits = ledger.jobs_by_prompt, ledger.resubmits
    submissions = run.emulator_stats.get("submissions", -1)
    expected = len(jobs_by_prompt) + sum(resubmits.values())
    a.check(submissions == expected, f"paid submissions {submissions} != {expected} expected")

    # ---- every prompt: stored with a verified manifest, or failed with a named cause -----------
    prefix = f"segmind/{DAG_ID}/{run.run_id}/{PERSIST}/"
    images: dict[int, list[str]] = defaultdict(list)
    for key in run.s3_objects:
        if key.startswith(prefix) and not key.endswith(".manifest.json"):
            images[int(key[len(prefix) :].split("/", 1)[0])].append(key)
    outcomes: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    for i, spec in enumerate(run.specs):
        per, gen = tis.get((PERSIST, i)), tis.get((GENERATE, i))
        if per is not None and per["state"] == "success":
            outcomes["stored"] += 1
            _audit_stored(a, run, i, spec, images.get(i, []), jobs_by_prompt.get(i, []))
            continue
        a.check(not images.get(i), f"prompt {i}: not stored but S3 holds {images.get(i)}")
        failed = next((t for t in (gen, per) if t is not None and t["state"] == "failed"), None)
        if failed is None:
            outcomes["unaccounted"] += 1
            a.check(False, f"prompt {i} unaccounted: generate={gen and gen['state']} persist={per and per['state']}")
            continue
        cause = cause_of(run, failed)
        outcomes["failed, cause named" if cause else "failed, no cause"] += 1
        causes[f"{failed['task_id'].split('.')[-1]}: {cause}"] += 1
        a.check(cause is not None, f"prompt {i}: {failed['task_id']} failed, no named cause in its log")
    for i in run.fail_marked:
        cause = causes_of(run, tis, i)
        if cause == WORKER_KILLED_ON_LAST_TRY:
            # Its last try's worker was SIGKILLed: every try before it must have failed as a FAILED job.
            earlier = run.attempt_logs.get((GENERATE, i), [])[:-1]
            a.check(
                bool(earlier) and all(classify(text) == "job FAILED" for text in earlier),
                f"prompt {i} (__fail__): its last try's worker was killed, but its earlier tries did not fail as "
                f"FAILED jobs: {[classify(text) for text in earlier]}",
            )
            continue
        a.check(cause == "job FAILED", f"prompt {i} (__fail__) did not end as a FAILED job")
    for i in run.fail_marked:
        # Each try that failed as a FAILED job failed with a job of its own: a retry submits anew (on
        # Airflow 3.1.0 the retries once re-ran the first try's event, issue 24 item 7).
        named = [set(_FAILED_JOB.findall(text)) for text in run.attempt_logs.get((GENERATE, i), [])]
        failed_jobs = [next(iter(ids)) for ids in named if len(ids) == 1]
        a.check(
            len(failed_jobs) == len(set(failed_jobs)),
            f"prompt {i} (__fail__): a retry failed with an earlier try's job, not a new one: {failed_jobs}",
        )
    for i in run.unsafe_marked:
        a.check(causes_of(run, tis, i) == "content blocked", f"prompt {i} (__unsafe__) did not end blocked")

    # ---- S3, key, leftovers ------------------------------------------------------------------
    a.check(not run.s3_uploads, f"{len(run.s3_uploads)} multipart upload(s) left: {run.s3_uploads[:3]}")
    a.check(not +run.key_found, f"the API key appears in: {dict(+run.key_found)}")
    media_with_key = [r for r in run.media_requests if r.get("has_api_key")]
    a.check(not media_with_key, f"{len(media_with_key)} media downloads carried the API key")
    a.check(run.celery_messages_seen > 0, "control: no Celery message was seen in Redis (the scan saw nothing)")
    a.check(run.scanned["postgres control: a request id present"] == 1, "control: the DB dump holds no request id")
    a.check(not run.leftovers, f"still running after the run: {run.leftovers}")

    # ---- the kills happened ------------------------------------------------------------------
    kinds = {e["kind"]: e for e in run.events}
    for kind in ("triggerer killed", "triggers reassigned", "worker killed", "worker restarted", "scheduler restarted"):
        a.check(kind in kinds, f"the scenario step '{kind}' did not happen")
    moved = kinds.get("triggers reassigned", {})
    a.check(moved.get("moved") == moved.get("of"), f"triggers not reassigned: {moved}")
    worker = kinds.get("worker killed", {})
    a.check(bool(worker.get("generate_after_accepted_submit")), "the worker kill hit no task in the submit window")
    retried_in_window = [
        i for i in worker.get("generate_after_accepted_submit", []) if len(jobs_by_prompt.get(i, [])) == 1
    ]
    killed_last = [tuple(t) for t in worker.get("killed_last_tries", [])]
    for task_id, index, try_number in killed_last:
        a.check(
            (task_id, index, try_number) in run.heartbeat_timeouts,
            f"{task_id}[{index}] try {try_number} was killed on its last try, but the scheduler did not fail it "
            "by heartbeat timeout",
        )
    if killed_last:
        last_try_row = ", ".join(
            f"{task_id.split('.')[-1]}[{index}] try {number}: failed by heartbeat timeout"
            for task_id, index, number in killed_last
        )
    else:
        last_try_row = "none (the kill aims at tries with retries left"
        last_try_row += "; it spared a worker running one)" if worker.get("avoided_last_tries") else ")"

    retries = Counter(t["task_id"] for t in run.task_instances if t["try_number"] > 1)
    a.rows = [
        ("run", f"{DAG_ID} {run.run_id} ({run.state}), Airflow {run.airflow_version}"),
        ("wall time", f"{run.wall_seconds:.0f} s (bound {s.bound_seconds:g} s)"),
        ("prompts", str(n)),
        ("  stored in S3, manifest verified", str(outcomes["stored"])),
        (
            "  failed, cause named in its log",
            f"{outcomes['failed, cause named']}  " + ", ".join(f"{k} x{v}" for k, v in sorted(causes.items())),
        ),
        ("  unaccounted / no cause", str(outcomes["unaccounted"] + outcomes["failed, no cause"])),
        (
            "paid submissions (emulator)",
            f"{submissions} = {len(jobs_by_prompt)} prompts + {resubmits['FAILED']} resubmits of FAILED + "
            f"{resubmits['EXPIRED']} of expired jobs",
        ),
        (
            "triggerer SIGKILL",
            f"{kinds.get('triggerer killed', {}).get('triggerer')} holding "
            f"{kinds.get('triggerer killed', {}).get('triggers')} triggers",
        ),
        (
            "  reassignment delay",
            f"first {moved.get('first_seconds')} s, last {moved.get('last_seconds')} s "
            f"({moved.get('moved')}/{moved.get('of')} moved; [triggerer] triggerer_health_check_threshold "
            f"{FAILOVER_SETTINGS['AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD']} s, job_heartbeat_sec "
            f"{FAILOVER_SETTINGS['AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC']} s)",
        ),
        (
            "worker SIGKILL (whole session)",
            f"{worker.get('worker')}: {len(worker.get('generate_after_accepted_submit', []))} generate tries "
            f"after Segmind accepted their submit, {len(worker.get('persist_running', []))} persists running",
        ),
        ("  re-attached, no second payment", f"{len(retried_in_window)} of those prompts billed once"),
        ("  tries killed on their last try", last_try_row),
        ("scheduler SIGKILL + restart", "yes" if "scheduler restarted" in kinds else "no"),
        (
            "request records in Variables",
            f"up to {run.request_variables[0]} at once, {run.request_variables[1]} left "
            "(Airflow 3.1/3.2 store; 3.3 uses the task state store)",
        ),
        ("task retries", ", ".join(f"{k} x{v}" for k, v in sorted(retries.items())) or "none"),
        ("multipart uploads left", str(len(run.s3_uploads))),
        (
            "API key occurrences",
            f"{sum(run.key_found.values())} (logs: {run.scanned['log files']} files, "
            f"{run.scanned['log bytes'] / 1e6:.1f} MB; pg_dump {run.scanned['postgres'] / 1e6:.1f} MB; "
            f"Redis {run.scanned['redis'] / 1e6:.2f} MB, {run.celery_messages_seen} Celery messages; "
            f"{len(run.s3_objects)} S3 objects)",
        ),
        ("left running after the run", str(len(run.leftovers))),
    ]
    return a


#: The named outcome of a try whose worker the scenario SIGKILLed when it had no retry left: the
#: scheduler fails it by heartbeat timeout (its audit log says "heartbeat timeout"; the try's own log
#: just stops), and no retry follows. docs/deploying.md says what a user sees and what a clear does.
WORKER_KILLED_ON_LAST_TRY: Final = "worker killed on its last try"


def cause_of(run: ClusterRun, ti: Mapping[str, Any]) -> str | None:
    """Why a failed task instance failed: its last try was one the scenario killed (and the scheduler
    failed by heartbeat timeout), or the cause its last attempt's log names."""
    key = (ti["task_id"], ti["map_index"], ti["try_number"])
    killed = next((e for e in run.events if e["kind"] == "worker killed"), {})
    if key in run.heartbeat_timeouts and list(key) in killed.get("killed_last_tries", []):
        return WORKER_KILLED_ON_LAST_TRY
    return classify(run.errors.get((ti["task_id"], ti["map_index"])))


def causes_of(run: ClusterRun, tis: Mapping[Any, Any], i: int) -> str | None:
    for task in (GENERATE, PERSIST):
        ti = tis.get((task, i))
        if ti is not None and ti["state"] == "failed":
            return cause_of(run, ti)
    return None


def _audit_stored(
    a: Audit, run: ClusterRun, i: int, spec: Mapping[str, Any], keys: list[str], jobs: list[dict[str, Any]]
) -> None:
    if len(keys) != 1:
        a.check(False, f"prompt {i}: {len(keys)} objects in S3, expected 1: {keys}")
        return
    key = keys[0]
    data, meta = run.s3_objects[key]
    manifest_entry = run.s3_objects.get(key + ".manifest.json")
    a.check(manifest_entry is not None, f"prompt {i}: {key} has no manifest")
    if manifest_entry is None:
        return
    manifest = json.loads(manifest_entry[0])
    sha = hashlib.sha256(data).hexdigest()
    problem = _image_check(data, spec)
    a.check(problem is None, f"prompt {i}: {key} {problem}")
    a.check(manifest.get("sha256") == sha, f"prompt {i}: manifest sha256 != object's")
    a.check(meta["Metadata"].get("sha256") == sha, f"prompt {i}: object metadata sha256 != object's")
    a.check(manifest.get("size") == len(data), f"prompt {i}: manifest size != object size")
    a.check(manifest.get("prompt") == spec["prompt"], f"prompt {i}: manifest prompt is {manifest.get('prompt')!r}")
    a.check(manifest.get("airflow", {}).get("map_index") == i, f"prompt {i}: manifest map_index wrong")
    a.check(bool(jobs), f"prompt {i}: stored but no job was billed")
    if jobs:
        a.check(manifest.get("request_id") == jobs[-1]["request_id"], f"prompt {i}: manifest names another request")


def format_report(run: ClusterRun, result: Audit) -> str:
    s = run.settings
    return result.table(f"Segmind on CeleryExecutor + Postgres + Redis: {s.prompts} prompts, seed {s.seed}")
