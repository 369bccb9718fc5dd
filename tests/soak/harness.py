"""The soak's harness: servers, the fault plan, one ``dag.test()`` run in a child process, then the audit.

:func:`run_soak` starts the Segmind emulator (random faults on submit, status, result and media calls),
moto's S3 server and a fault-injecting proxy in front of it (:mod:`tests.soak.s3_proxy`), writes the
soak DAG (:mod:`tests.soak.soak_dag`) into the DAGS_FOLDER, and runs it once with ``dag.test()`` in a
child process (:mod:`tests.soak.worker`) that injects the task- and trigger-level faults
(:mod:`tests.soak.chaos`). Then everything is stopped and the outcome is audited against the
emulator's billing record, S3's contents and every byte the run wrote (logs, database, XCom, trigger
kwargs, S3 objects), and who holds which Segmind request (:func:`billing_ledger`: paid twice, owned
by two task instances, failed by the safe rule). The audit returns a list of violations (empty =
pass) and a summary table. The request history answers in the emulator's history profiles, one per
segment of the prompts (:func:`history_segments`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from airflow_provider_segmind.emulator.config import HISTORY_PROFILES, OWN_USER_EMAIL, EmulatorConfig
from airflow_provider_segmind.operators._claims import claim_name
from airflow_provider_segmind.protocol.history import request_id_key
from airflow_provider_segmind.protocol.params import SD3_ASPECT_RATIOS, SD3_SIZES
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from tests.processes import group_alive
from tests.soak import s3_proxy

REPO: Final = Path(__file__).resolve().parents[2]
DAG_TEMPLATE: Final = Path(__file__).resolve().parent / "soak_dag.py"
REGION: Final = "us-east-1"
S3_CREDENTIALS: Final = {"aws_access_key_id": "soak", "aws_secret_access_key": "soak"}

#: Random emulator faults per API/media call (the 5% FAILED jobs are drawn per accepted job).
DEFAULT_EMULATOR_FAULTS: Final[Mapping[str, float]] = {
    "429": 0.10,
    "500": 0.03,
    "502": 0.02,
    "reset_before": 0.02,
    "slow": 0.03,
    "truncate": 0.02,  # media only
    "failed_job": 0.05,
    # Ambiguous submits (issue 13): the job IS created, then a 5xx or a cut connection (the late
    # ones are submit-only; ``reset_after`` and ``504`` also hit reads, which are simply retried).
    "late500": 0.02,
    "late502": 0.02,
    "late503": 0.01,
    "reset_after": 0.02,
    "504": 0.02,
}
FAULT_ENDPOINTS: Final = ("submit", "status", "result", "media")
#: Share of prompts whose first generate try gets each task/trigger-level fault (one each, at most).
DEFAULT_SHARES: Final[Mapping[str, float]] = {
    "restart": 0.15,
    "give_up": 0.08,
    "lost_event": 0.05,
    "crash_on_resume": 0.05,
    "expire": 0.08,
    "die_after_submit": 0.08,
}
#: The minimum runtime of a job whose trigger is restarted (the emulator's ``__hold_<s>s__`` prompt
#: marker): without it a loaded machine starts the trigger after the 0.1-0.6 s job has finished.
RESTART_HOLD_SECONDS: Final = 2.0
#: Prompts whose persist task meets an S3 outage longer than boto3's retries on its first try.
DEFAULT_S3_OUTAGE_SHARE: Final = 0.08
#: Prompts that FAIL on every submit (``__fail__``) or are content-blocked (``__unsafe__``).
FAIL_SHARE: Final = 0.02
UNSAFE_SHARE: Final = 0.01
POLL_SCHEDULE: Final[Mapping[str, float]] = {
    "initial_delay": 0.05,
    "queued_interval": 0.05,
    "interval": 0.05,
    "max_interval": 0.5,
    "error_backoff": 0.05,
    "rate_limit_max_wait": 0.5,
}
#: The soak connection's read timeout, and how long the emulator's "slow" fault stalls (longer).
READ_TIMEOUT: Final = 2.0
SLOW_SECONDS: Final = 2.5
GENERATE: Final = "render.generate"
PERSIST: Final = "render.persist"
_TAG = re.compile(r"\[p(\d{4})\]")

SUBJECTS: Final = (
    "a ceramic coffee mug on a sunlit oak table",
    "trail running shoes splashing through a mountain stream",
    "a minimalist desk lamp in a Scandinavian living room",
    "a stainless steel water bottle on a granite boulder",
    "a leather weekender bag on a train seat",
    "a pair of wireless earbuds on a concrete ledge",
    "a bowl of ramen with steam rising",
    "a wool beanie on a snowy fence post",
    "a vintage film camera on a map",
    "a glass teapot with blooming tea",
    "a folding bicycle against a brick wall",
    "a scented candle beside a stack of books",
    "a smartwatch on a runner's wrist",
    "a linen shirt hanging in an open window",
    "a cast iron skillet with cornbread",
)
STYLES: Final = (
    "product photo",
    "golden hour, shallow depth of field",
    "studio lighting, white background",
    "flat lay, top down",
    "watercolour illustration",
    "cinematic, moody",
)


@dataclass(frozen=True)
class SoakSettings:
    """One soak run. The defaults are the long form's, except ``prompts``."""

    prompts: int = 200
    seed: int = 1
    retries: int = 3
    retry_delay: float = 1.0
    max_consecutive_errors: int = 6
    bound_seconds: float = 1200.0
    emulator_faults: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EMULATOR_FAULTS))
    s3_faults: Mapping[str, float] = field(default_factory=lambda: dict(s3_proxy.DEFAULT_RATES))
    shares: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    s3_outage_share: float = DEFAULT_S3_OUTAGE_SHARE
    #: JPEGs are ~95-115 kB: this threshold sends part of them through multipart uploads.
    multipart_threshold: int = 105_000
    dag_id: str = "segmind_soak"
    #: The connection's ``history_lookup``: off shows the duplicates the request history prevents
    #: (reported, not a violation: the rule without history is documented to bill them).
    history_lookup: bool = True
    #: The operator's ``history_wait``, and how long the emulator's history records lag.
    history_wait: float = 4.0
    history_lag_seconds: float = 0.3
    #: The emulator's request-history profiles (``emulator/config.py`` ``HISTORY_PROFILES``), each
    #: answering for one contiguous segment of the prompts (:func:`history_segments`): the long form
    #: rotates through all of them, the short form uses ``("all",)`` (every shape at once). A profile
    #: that lags (``lagging``, ``all``) keeps its own lag; the others lag ``history_lag_seconds``.
    history_profiles: tuple[str, ...] = tuple(HISTORY_PROFILES)

    def __post_init__(self) -> None:
        unknown = [name for name in self.history_profiles if name not in HISTORY_PROFILES]
        if unknown or not self.history_profiles:
            raise ValueError(f"history_profiles {unknown or '()'}: choose from {', '.join(HISTORY_PROFILES)}")


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


def default_bound(prompts: int) -> float:
    """The wall-time bound of a run of ``prompts`` prompts: Airflow's start, then 4.5 s per prompt.

    One rule for the short form (the test suite, where two real Airflows and other suites share the
    machine's cores) and the long form (``python -m tests.soak``); a run past it has a stuck prompt.
    """
    return 300 + 4.5 * prompts


@dataclass(frozen=True)
class HistorySegment:
    """Prompts ``start`` to ``stop - 1`` are generated while the emulator's history answers as ``profile``."""

    profile: str
    start: int
    stop: int

    def __str__(self) -> str:
        return f"{self.profile} p{self.start}-p{self.stop - 1}"


def history_segments(settings: SoakSettings) -> list[HistorySegment]:
    """The prompts split into one contiguous segment per history profile, in the settings' order.

    A segment rather than a run per profile: one long-form run then meets every shape (11 profiles,
    ~18 prompts each in a 200-prompt run), with the same fault mix and the same audit. ``dag.test()``
    runs one task instance at a time (triggers inline), so the worker switches the emulator to the
    segment's profile before each generate try (:meth:`tests.soak.chaos.Chaos.use_history_profile`)
    and every history answer a try reads is in its prompt's profile. Fewer prompts than profiles:
    some profiles get none (the report says which).
    """
    n, names = settings.prompts, settings.history_profiles
    segments = [HistorySegment(name, k * n // len(names), (k + 1) * n // len(names)) for k, name in enumerate(names)]
    return [segment for segment in segments if segment.stop > segment.start]


def profile_changes(profile: str, base_lag: float) -> dict[str, Any]:
    """The emulator settings of history ``profile`` (every shape setting it leaves out at its default),
    lagging ``base_lag`` unless the profile sets a lag of its own."""
    changes = EmulatorConfig.history_profile(profile)
    if "history_lag_seconds" not in HISTORY_PROFILES[profile]:
        changes["history_lag_seconds"] = base_lag
    return changes


def history_user_email(settings: SoakSettings) -> str | None:
    """The connection's ``history_user_email``: the account's own user when a profile of the run lists
    a teammate's rows (as a team account would set it, once for the account), else none."""
    if any(HISTORY_PROFILES[segment.profile].get("history_team_rows") for segment in history_segments(settings)):
        return OWN_USER_EMAIL
    return None


@dataclass
class Plan:
    specs: list[dict[str, Any]]
    actions: dict[int, str]
    s3_outage: set[int]
    fail_marked: set[int]
    unsafe_marked: set[int]


def _count(n: int, share: float) -> int:
    return max(1, round(n * share)) if share > 0 else 0


def make_plan(settings: SoakSettings) -> Plan:
    """Prompts (unique, tagged ``[pNNNN]``) and which prompt gets which injected fault, from the seed."""
    rng = random.Random(f"soak-plan:{settings.seed}")
    n = settings.prompts
    indexes = list(range(n))
    rng.shuffle(indexes)
    fail_marked = set(indexes[: _count(n, FAIL_SHARE)])
    unsafe_marked = set(indexes[len(fail_marked) : len(fail_marked) + _count(n, UNSAFE_SHARE)])
    eligible = [i for i in indexes if i not in fail_marked | unsafe_marked]
    actions: dict[int, str] = {}
    cursor = 0
    for action, share in settings.shares.items():
        for index in eligible[cursor : cursor + _count(n, share)]:
            actions[index] = action
        cursor += _count(n, share)
    s3_outage = set(rng.sample(eligible, min(len(eligible), _count(n, settings.s3_outage_share))))
    specs = []
    for i in range(n):
        prompt = f"{rng.choice(SUBJECTS)}, {rng.choice(STYLES)} [p{i:04d}]"
        if i in fail_marked:
            prompt += " __fail__"
        if i in unsafe_marked:
            prompt += " __unsafe__"
        if actions.get(i) == "restart":
            # A restart must land mid-job on a loaded machine too: the job runs at least this long.
            prompt += f" __hold_{RESTART_HOLD_SECONDS:g}s__"
        spec: dict[str, Any] = {"prompt": prompt, "aspect_ratio": rng.choice(SD3_ASPECT_RATIOS)}
        if rng.random() < 0.3:
            spec["negative_prompt"] = "blurry, watermark"
        if rng.random() < 0.3:
            spec["seed"] = rng.randrange(0, 2**31)
        specs.append(spec)
    return Plan(specs, actions, s3_outage, fail_marked, unsafe_marked)


def prompt_index(prompt: Any) -> int | None:
    match = _TAG.search(prompt) if isinstance(prompt, str) else None
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class SoakRun:
    """Everything collected from one run, for the audit."""

    settings: SoakSettings
    plan: Plan
    api_key: str
    bucket: str
    workdir: Path
    airflow_home: Path
    started_at: float = 0.0
    wall_seconds: float = 0.0
    worker_exit: int | None = None
    worker_timed_out: bool = False
    result: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    chaos: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    emulator_stats: dict[str, Any] = field(default_factory=dict)
    media_requests: list[dict[str, Any]] = field(default_factory=list)
    s3_versions: list[dict[str, Any]] = field(default_factory=list)
    s3_delete_markers: list[dict[str, Any]] = field(default_factory=list)
    s3_uploads: list[dict[str, Any]] = field(default_factory=list)
    s3_objects: dict[tuple[str, str], tuple[bytes, dict[str, Any]]] = field(default_factory=dict)
    proxy_stats: Counter[str] = field(default_factory=Counter)
    leftovers: list[str] = field(default_factory=list)


def _child_env(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("AWS_", "AIRFLOW_CONN_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)


def run_soak(settings: SoakSettings, *, workdir: Path, dags_folder: Path, env: Mapping[str, str]) -> SoakRun:
    """Run the soak once; ``env`` carries the Airflow environment (home, database, DAGS_FOLDER)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from airflow_provider_segmind.emulator.config import EmulatorConfig
    from airflow_provider_segmind.emulator.server import SegmindEmulator

    workdir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's access log
    plan = make_plan(settings)
    segments = history_segments(settings)
    run = SoakRun(
        settings=settings,
        plan=plan,
        api_key="SG_" + secrets.token_hex(16),
        bucket=f"segmind-soak-{uuid.uuid4().hex[:10]}",
        workdir=workdir,
        airflow_home=Path(env["AIRFLOW_HOME"]),
    )
    threads_before = set(threading.enumerate())
    run.started_at = time.time()
    started = time.monotonic()

    config = EmulatorConfig(
        api_keys=(run.api_key,),
        queue_time=(0.02, 0.15),
        inference_time=(0.1, 0.5),
        credits=1_000_000.0,
        faults=dict(settings.emulator_faults),
        fault_endpoints=frozenset(FAULT_ENDPOINTS),
        # Longer than the connection's read timeout: a slow submit is a read timeout after the job
        # was created (an ambiguous submit, issue 13); slow reads time out and are retried.
        slow_seconds=SLOW_SECONDS,
        fault_retry_after=0.2,
        seed=settings.seed,
        request_log_size=500_000,
        render_threads=2,
        # The first segment's history profile; the worker switches to each prompt's (history_segments).
        **profile_changes(segments[0].profile, settings.history_lag_seconds),
    )
    emulator = SegmindEmulator(config)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    outage = {str(i) for i in plan.s3_outage}

    def outage_key(path: str) -> str | None:
        parts = path.split("/")
        if PERSIST in parts:
            index = parts[parts.index(PERSIST) + 1] if parts.index(PERSIST) + 1 < len(parts) else ""
            return index if index in outage else None
        return None

    emulator_thread: threading.Thread | None = None
    dag_file = dags_folder / f"{settings.dag_id}.py"
    process: subprocess.Popen[bytes] | None = None
    proxy: s3_proxy.FaultyS3Proxy | None = None
    moto_started = False
    inspector: Any = None
    try:
        emulator.start()
        emulator_thread = emulator._thread
        moto.start()
        moto_started = True
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        inspector = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **S3_CREDENTIALS)
        inspector.create_bucket(Bucket=run.bucket)
        inspector.put_bucket_versioning(Bucket=run.bucket, VersioningConfiguration={"Status": "Enabled"})
        proxy = s3_proxy.FaultyS3Proxy(
            endpoint, rates=settings.s3_faults, seed=settings.seed, outage=outage_key, outage_failures=3
        ).start()

        shutil.copyfile(DAG_TEMPLATE, dag_file)
        events_file, chaos_file = workdir / "events.jsonl", workdir / "chaos.jsonl"
        result_file, log_file = workdir / "result.json", workdir / "worker.log"
        for path in (events_file, chaos_file, result_file):
            path.unlink(missing_ok=True)
        dag_settings = {
            "dag_id": settings.dag_id,
            "retries": settings.retries,
            "retry_delay": settings.retry_delay,
            "poll_schedule": dict(POLL_SCHEDULE),
            "max_consecutive_errors": settings.max_consecutive_errors,
            "multipart_threshold": settings.multipart_threshold,
            "history_wait": settings.history_wait,
            "events_file": str(events_file),
        }
        worker_config = {
            "dag_file": str(dag_file),
            "emulator_url": emulator.base_url,
            "plan": {str(k): v for k, v in plan.actions.items()},
            "chaos_file": str(chaos_file),
            "result_file": str(result_file),
            "seed": settings.seed,
            "max_consecutive_errors": settings.max_consecutive_errors,
            "run_conf": {"prompts": plan.specs, "bucket": run.bucket},
            "history_segments": [
                {
                    "profile": segment.profile,
                    "start": segment.start,
                    "stop": segment.stop,
                    "changes": profile_changes(segment.profile, settings.history_lag_seconds),
                }
                for segment in segments
            ],
        }
        config_file = workdir / "worker.json"
        config_file.write_text(json.dumps(worker_config))
        segmind_conn = {
            "conn_type": "segmind",
            "password": run.api_key,
            "host": emulator.base_url,
            "extra": {
                "connect_timeout": 5,
                "read_timeout": READ_TIMEOUT,
                "retry_backoff": 0.05,
                "retry_backoff_max": 0.5,
                "history_lookup": settings.history_lookup,
                # Only where a profile lists a teammate's rows (then for the whole run, as an account sets it).
                **({"history_user_email": email} if (email := history_user_email(settings)) else {}),
            },
        }
        aws_conn = {
            "conn_type": "aws",
            "login": S3_CREDENTIALS["aws_access_key_id"],
            "password": S3_CREDENTIALS["aws_secret_access_key"],
            "extra": {"endpoint_url": proxy.url, "region_name": REGION},
        }
        child_env = _child_env(
            env,
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
            AIRFLOW_CONN_SEGMIND_DEFAULT=json.dumps(segmind_conn),
            AIRFLOW_CONN_AWS_DEFAULT=json.dumps(aws_conn),
            SEGMIND_SOAK_SETTINGS=json.dumps(dag_settings),
        )
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.soak.worker", str(config_file)],
                cwd=REPO,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                run.worker_exit = process.wait(timeout=max(1.0, settings.bound_seconds - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                run.worker_timed_out = True
                _stop_process_group(process)
                run.worker_exit = process.returncode

        run.result = json.loads(result_file.read_text()) if result_file.exists() else {}
        run.events = _read_jsonl(events_file)
        run.chaos = _read_jsonl(chaos_file)
        run.jobs = emulator.jobs()
        run.emulator_stats = emulator.stats()
        run.media_requests = emulator.requests_log("/media")
        _collect_s3(run, inspector)
        run.proxy_stats = Counter(proxy.stats)
    finally:
        if process is not None and process.poll() is None:
            _stop_process_group(process)
        if proxy is not None:
            proxy.stop()
        if inspector is not None:
            inspector.close()
        if moto_started:
            moto.stop()
        emulator.stop()
        dag_file.unlink(missing_ok=True)
        run.wall_seconds = time.monotonic() - started

    # Everything this run started must be gone.
    if process is not None and (process.poll() is None or group_alive(process.pid)):
        run.leftovers.append(f"worker process group {process.pid}")
    if emulator_thread is not None and emulator_thread.is_alive():
        run.leftovers.append("Segmind emulator thread")
    if proxy is not None and proxy.running:
        run.leftovers.append("S3 fault proxy")
    moto_thread = getattr(moto, "_thread", None)
    if moto_thread is not None and moto_thread.is_alive():
        run.leftovers.append("moto S3 server")
    deadline = time.monotonic() + 10
    while True:
        extra = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    run.leftovers += [f"thread {t.name}" for t in extra]
    return run


def _collect_s3(run: SoakRun, client: Any) -> None:
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=run.bucket):
        run.s3_versions += page.get("Versions", [])
        run.s3_delete_markers += page.get("DeleteMarkers", [])
    run.s3_uploads = list(client.list_multipart_uploads(Bucket=run.bucket).get("Uploads", []))
    for version in run.s3_versions:
        answer = client.get_object(Bucket=run.bucket, Key=version["Key"], VersionId=version["VersionId"])
        body = answer["Body"].read()
        meta = {
            "ContentType": answer.get("ContentType"),
            "ContentLength": answer.get("ContentLength"),
            "Metadata": answer.get("Metadata") or {},
        }
        run.s3_objects[(version["Key"], version["VersionId"])] = (body, meta)


# --------------------------------------------------------------------------------------------
# The audit
# --------------------------------------------------------------------------------------------

#: How a failed try's exception names its cause; the first match wins.
CAUSES: Final = (
    # The safe rule (issue 22, ``_HistoryLookups._fail_safe``): a lost submit (or an earlier try's
    # unrecorded one) that nothing proves is this task's (the history showed none, or several
    # unclaimed candidates) fails without retries; never a blind resend. Before "submit outcome
    # unknown": its message may begin with the same words.
    ("safe rule", re.compile(r"nothing is billed twice")),
    # history_lookup off: a lost submit answer fails the task without retries (issue 12's rule).
    ("submit outcome unknown", re.compile(r"outcome of this Segmind submit is unknown")),
    ("content blocked", re.compile(r"content-safety|Content blocked", re.I)),
    ("job FAILED", re.compile(r"FAILED")),
    ("result expired", re.compile(r"is gone \(HTTP 404\)|retention has passed|was not found \(HTTP 404\)")),
    ("gave up polling", re.compile(r"consecutive transient errors")),
    ("credits", re.compile(r"credits", re.I)),
    ("event lost", re.compile(r"resumed with an invalid event")),
    ("worker crash (simulated)", re.compile(r"SimulatedWorkerCrash|the worker died")),
    ("media download failed", re.compile(r"The output .* answered HTTP|broke off|truncated|Could not download")),
    (
        "API rate limit/5xx/reset",
        re.compile(r"rate limited|HTTP 5\d\d|Connection lost|Could not connect|timeout", re.I),
    ),
    ("S3 write failed", re.compile(r"SlowDown|InternalError|Connection was closed|NoSuchUpload|S3", re.I)),
)


def classify(error: str | None) -> str | None:
    for name, pattern in CAUSES:
        if error and pattern.search(error):
            return name
    return None


@dataclass
class Audit:
    violations: list[str] = field(default_factory=list)
    rows: list[tuple[str, str]] = field(default_factory=list)

    def check(self, condition: bool, message: str) -> None:
        if not condition:
            self.violations.append(message)

    def table(self, title: str) -> str:
        width = max(len(label) for label, _ in self.rows)
        lines = [title, "-" * len(title)]
        lines += [f"{label.ljust(width)}  {value}" for label, value in self.rows]
        verdict = "PASS" if not self.violations else f"FAIL ({len(self.violations)} violations)"
        lines += ["-" * len(title), f"{'verdict'.ljust(width)}  {verdict}"]
        lines += [f"  ! {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  ! ... {len(self.violations) - 50} more")
        return "\n".join(lines)


def _image_check(data: bytes, spec: Mapping[str, Any]) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            size, fmt = image.size, image.format
    except Exception as err:
        return f"not a valid image ({err})"
    expected = SD3_SIZES[spec.get("aspect_ratio") or "1:1"]
    if size != expected:
        return f"is {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}"
    if fmt != "JPEG":
        return f"is {fmt}, expected JPEG"
    return None


def owner_name(task_id: str, map_index: int | None, dag_id: str | None = None, run_id: str | None = None) -> str:
    """A task instance as the ledger names it: ``render.generate[3]``, with its DAG and run if another's."""
    index = "" if map_index in (None, -1) else f"[{map_index}]"
    return f"{task_id}{index}" if dag_id is None else f"{dag_id}/{run_id}/{task_id}{index}"


@dataclass(frozen=True)
class Sighting:
    """A task instance seen holding a Segmind request: it returned it or pushed it to XCom, recorded it
    in its task state store, watched it with a trigger, died after Segmind accepted it, or claims it
    (a ``segmind_claim_*`` Variable, ``operators/_claims.py``)."""

    request_id: str
    owner: str
    #: The owner's map index in this run (None: another run's or DAG's task instance).
    map_index: int | None
    source: str


@dataclass(frozen=True)
class SafeRuleFailure:
    """A task that failed with the safe rule's message (``_HistoryLookups._fail_safe``): nothing proved
    which request was its own, so it failed without retries instead of resending or guessing."""

    index: int
    task_id: str
    try_number: int | None
    #: The request ids its message names (the ambiguous candidates); none when the history showed none.
    request_ids: tuple[str, ...]
    error: str


#: A request id as a message may spell it: a dashed UUID, or its 32 hex digits (a ``hex-ids`` history).
_REQUEST_ID: Final = re.compile(r"\b[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\b")


def named_request_ids(text: str | None) -> tuple[str, ...]:
    """The request ids ``text`` names, in order, each once (in their own spelling)."""
    seen: dict[str, str] = {}
    for match in _REQUEST_ID.finditer(text or ""):
        seen.setdefault(request_id_key(match.group(0)), match.group(0))
    return tuple(seen.values())


@dataclass
class Ledger:
    """What the emulator billed, by prompt: the one rule both the soak and the cluster audit count by.

    A prompt may be billed again only after its earlier job FAILED or expired (``resubmits``); any
    other earlier job of the same prompt was paid twice (``paid_twice``). ``strays`` belong to no prompt.

    With ``sightings`` (:class:`Sighting`), who holds which request: ``owners`` (request id key ->
    owner -> sources); ``shared``, requests held by two task instances; ``misowned``, requests held
    by the task of another prompt than the one billed (``(request id, billed prompt, owner)``);
    ``unbilled``, requests a task holds that the account was never billed for (a teammate's).
    With ``failures`` (the failed tries' events), ``safe_rule``: the tries failed by the safe rule.

    ``uncharged``: jobs the emulator created without a charge (a job that FAILs is not charged, as
    Segmind's error docs say, unless the emulator's ``bill_failed_jobs`` is on): counted like any other
    job above, so the ledger holds either way.
    """

    jobs_by_prompt: dict[int, list[dict[str, Any]]]
    resubmits: Counter[str]
    paid_twice: list[tuple[int, dict[str, Any]]]
    strays: list[dict[str, Any]]
    owners: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    shared: list[tuple[str, dict[str, set[str]]]] = field(default_factory=list)
    misowned: list[tuple[str, int, str]] = field(default_factory=list)
    unbilled: list[tuple[str, str]] = field(default_factory=list)
    safe_rule: list[SafeRuleFailure] = field(default_factory=list)
    uncharged: int = 0

    def prompt_of(self, request_id: str) -> int | None:
        """The prompt a billed request belongs to (any spelling of its id), or None if never billed."""
        key = request_id_key(request_id)
        for index, billed in self.jobs_by_prompt.items():
            if any(request_id_key(job["request_id"]) == key for job in billed):
                return index
        return None


def billing_ledger(
    jobs: Iterable[Mapping[str, Any]],
    prompts: int,
    sightings: Iterable[Sighting] = (),
    failures: Iterable[Mapping[str, Any]] = (),
) -> Ledger:
    """Group the emulator's billed jobs by prompt (in submit order) and classify every earlier job;
    then who holds which request (``sightings``) and which tries the safe rule failed (``failures``:
    events with ``task_id``, ``map_index``, ``try_number`` and ``error``)."""
    ledger = Ledger(defaultdict(list), Counter(), [], [])
    billed_prompt: dict[str, int | None] = {}
    for job in jobs:
        ledger.uncharged += job.get("billed") is False
        index = prompt_index(job["params"].get("prompt"))
        billed_prompt[request_id_key(job["request_id"])] = index
        if index is None or not 0 <= index < prompts:
            ledger.strays.append(dict(job))
        else:
            ledger.jobs_by_prompt[index].append(dict(job))
    for index, billed in ledger.jobs_by_prompt.items():
        billed.sort(key=lambda job: job["submitted_at"])
        for earlier in billed[:-1]:
            if earlier["status"] in ("FAILED", "EXPIRED"):
                ledger.resubmits[earlier["status"]] += 1
            else:
                ledger.paid_twice.append((index, earlier))

    spelled: dict[str, str] = {}
    indexes: dict[tuple[str, str], int | None] = {}
    for sighting in sightings:
        key = request_id_key(sighting.request_id)
        spelled.setdefault(key, sighting.request_id)
        ledger.owners.setdefault(key, {}).setdefault(sighting.owner, set()).add(sighting.source)
        indexes[(key, sighting.owner)] = sighting.map_index
    for key, by_owner in ledger.owners.items():
        if len(by_owner) > 1:
            ledger.shared.append((spelled[key], by_owner))
        if key not in billed_prompt:
            ledger.unbilled += [(spelled[key], owner) for owner in sorted(by_owner)]
            continue
        index = billed_prompt[key]
        for owner in sorted(by_owner):
            if index is not None and indexes[(key, owner)] != index:
                ledger.misowned.append((spelled[key], index, owner))

    seen: set[tuple[Any, ...]] = set()
    for event in failures:
        if classify(event.get("error")) != "safe rule":
            continue
        try_key = (event.get("task_id"), event.get("map_index"), event.get("try_number"))
        if try_key in seen:
            continue
        seen.add(try_key)
        ledger.safe_rule.append(
            SafeRuleFailure(
                index=int(event.get("map_index", -1)),
                task_id=str(event.get("task_id")),
                try_number=event.get("try_number"),
                request_ids=named_request_ids(event.get("error")),
                error=str(event.get("error")),
            )
        )
    ledger.safe_rule.sort(key=lambda failure: (failure.index, failure.try_number or 0))
    return ledger


def run_sightings(run: SoakRun) -> tuple[list[Sighting], Counter[str]]:
    """Every request a generate task instance of the run was seen holding (see :class:`Sighting`), and
    a count of what was read (claims of other runs, left out unless they name this run's requests)."""
    result = run.result
    dag_id, run_id = result.get("dag_id", run.settings.dag_id), result.get("run_id")
    sightings: list[Sighting] = []
    read: Counter[str] = Counter()

    def see(request_id: Any, map_index: Any, source: str) -> None:
        if isinstance(request_id, str) and request_id and isinstance(map_index, int):
            sightings.append(Sighting(request_id, owner_name(GENERATE, map_index), map_index, source))
            read[source] += 1

    for x in result.get("xcoms", []):
        if x["task_id"] == GENERATE and x["key"] == "segmind_request_id":
            see(x["value"], x["map_index"], "XCom segmind_request_id")
        elif x["task_id"] == GENERATE and x["key"] == "return_value" and isinstance(x["value"], Mapping):
            see(x["value"].get("request_id"), x["map_index"], "XCom return_value")
    for row in result.get("task_state_store", []):
        if row["task_id"] == GENERATE and isinstance(row["value"], Mapping):
            see(row["value"].get("request_id"), row["map_index"], "task state store")
    for record in run.chaos:
        if record.get("kind") == "trigger" and record.get("task_id") == GENERATE:
            see(record.get("request_id"), record.get("map_index"), "trigger watched")
        elif record.get("kind") == "die_after_submit":
            see(record.get("request_id"), record.get("map_index"), "accepted before the worker died")

    # Claims name a request by a hash of its id (claim_name): resolve them against what was billed, and
    # against the teammate rows a team profile lists (derived from the billed ids, request_history.py).
    from airflow_provider_segmind.emulator.request_history import _TEAMMATE_NAMESPACE

    team_rows = max(int(bundle.get("history_team_rows", 0)) for bundle in HISTORY_PROFILES.values())
    by_digest: dict[str, str] = {}
    for job in run.jobs:
        rid = job["request_id"]
        by_digest[_claim_digest(rid)] = rid
        for n in range(team_rows):
            mate = str(uuid.uuid5(_TEAMMATE_NAMESPACE, f"{rid}/{n}"))
            by_digest[_claim_digest(mate)] = f"{mate} (a teammate's copy of {rid})"
    for claim in result.get("claims", []):
        value = claim.get("value")
        owner = value.get("owner") if isinstance(value, Mapping) else None
        rid = by_digest.get(str(claim.get("key", "")).rsplit("_", 1)[-1])
        ours = isinstance(owner, list) and len(owner) == 4 and owner[0] == dag_id and owner[1] == run_id
        if not ours and rid is None:
            read["claims of other runs (left out)"] += 1
            continue
        if isinstance(owner, list) and len(owner) == 4:
            name = owner_name(str(owner[2]), owner[3]) if ours else owner_name(str(owner[2]), owner[3], *owner[:2])
            index = owner[3] if ours and owner[2] == GENERATE and isinstance(owner[3], int) else None
        else:
            name, index = f"unreadable claim owner {owner!r}", None
        sightings.append(Sighting(rid or f"unknown request of claim {claim.get('key')}", name, index, "claim"))
        read["claim"] += 1
    return sightings, read


def _claim_digest(request_id: str) -> str:
    """The part of a claim's Variable name that names its request (``segmind_claim_<day>_<digest>``)."""
    return claim_name(request_id, 0.0).rsplit("_", 1)[-1]


def audit(run: SoakRun) -> Audit:
    """Check every guarantee; return the violations and the summary rows."""
    from airflow_provider_segmind.operators._reconcile import MAX_SUBMIT_ROUNDS

    a = Audit()
    settings, plan = run.settings, run.plan
    n = settings.prompts
    result = run.result
    a.check(not run.worker_timed_out, f"the run did not finish within {settings.bound_seconds:g} s")
    a.check(run.worker_exit == 0, f"the worker exited with {run.worker_exit} (see {run.workdir / 'worker.log'})")
    a.check(bool(result), "the worker wrote no result")
    a.check(run.wall_seconds <= settings.bound_seconds, f"wall time {run.wall_seconds:.0f} s > bound")
    run_id, dag_id = result.get("run_id", "?"), result.get("dag_id", settings.dag_id)

    tis = {(t["task_id"], t["map_index"]): t for t in result.get("task_instances", [])}
    xcom = {(x["task_id"], x["map_index"], x["key"]): x["value"] for x in result.get("xcoms", [])}
    store = {(s["task_id"], s["map_index"]): s["value"] for s in result.get("task_state_store", [])}
    failures: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for event in run.events:
        failures[(event["task_id"], event["map_index"])].append(event)

    # ---- billing: every job the emulator accepted, by prompt --------------------------------
    sightings, sighted = run_sightings(run)
    ledger = billing_ledger(run.jobs, n, sightings, run.events)
    for job in ledger.strays:
        a.check(False, f"billed job {job['request_id']} belongs to no prompt")
    jobs_by_prompt, resubmits, duplicates = ledger.jobs_by_prompt, ledger.resubmits, len(ledger.paid_twice)
    submissions = run.emulator_stats.get("submissions", -1)
    a.check(submissions == len(run.jobs), f"emulator billed {submissions} submissions but lists {len(run.jobs)} jobs")
    for index, earlier in ledger.paid_twice:
        a.check(
            not settings.history_lookup,
            f"prompt {index}: job {earlier['request_id']} ({earlier['status']}) was submitted again "
            "although it was neither FAILED nor expired (duplicate billing)",
        )
    # ---- ownership: one task instance per Segmind request ---------------------------------------
    for request_id, by_owner in ledger.shared:
        held = "; ".join(f"{owner} ({', '.join(sorted(sources))})" for owner, sources in sorted(by_owner.items()))
        a.check(False, f"request {request_id} is owned by {len(by_owner)} task instances: {held}")
    for request_id, billed_for, owner in ledger.misowned:
        a.check(False, f"prompt {billed_for}: its request {request_id} is held by {owner}, another prompt's task")
    for request_id, owner in ledger.unbilled:
        a.check(False, f"{owner} holds request {request_id}, which the account was never billed for")
    # Paid for, used by no task: a lost submit the safe rule left (or, history off, one resent). Reported.
    orphans = [
        (i, job)
        for i, billed in sorted(jobs_by_prompt.items())
        for job in billed
        if request_id_key(job["request_id"]) not in ledger.owners
    ]
    a.check(
        sighted["claim"] > 0 or not run.jobs,
        "control: no segmind_claim_* Variable of this run was read (the ownership check saw no claims)",
    )
    # ---- the safe rule: allowed, each one named; what it names must be this prompt's own requests
    segments = history_segments(settings)
    profile_of = {i: segment.profile for segment in segments for i in range(segment.start, segment.stop)}
    for failure in ledger.safe_rule:
        for request_id in failure.request_ids:
            owner_prompt = ledger.prompt_of(request_id)
            whose = "never billed (a teammate's?)" if owner_prompt is None else f"prompt {owner_prompt}'s"
            a.check(
                owner_prompt == failure.index,
                f"prompt {failure.index}: the safe rule (try {failure.try_number}, history profile "
                f"{profile_of.get(failure.index)}) names request {request_id}, {whose}",
            )
    prompts_billed = len(jobs_by_prompt)
    # With the history off, the duplicates are the documented cost (reported below, not violations).
    expected_paid = prompts_billed + sum(resubmits.values()) + (0 if settings.history_lookup else duplicates)
    a.check(submissions == expected_paid, f"paid submissions {submissions} != {expected_paid} expected")
    unbilled = run.emulator_stats.get("unbilled_failures", 0)
    a.check(unbilled == ledger.uncharged, f"emulator counts {unbilled} unbilled FAILED jobs, lists {ledger.uncharged}")

    # ---- outcome of every prompt -------------------------------------------------------------
    prefix = f"segmind/{_enc(dag_id)}/{_enc(run_id)}/"
    images: dict[int, list[str]] = defaultdict(list)
    manifests: set[str] = set()
    keys_seen: Counter[str] = Counter(v["Key"] for v in run.s3_versions)
    latest = {v["Key"]: v for v in run.s3_versions if v.get("IsLatest")}
    for key in latest:
        if key.endswith(".manifest.json"):
            manifests.add(key)
        elif key.startswith(prefix + PERSIST + "/"):
            images[int(key[len(prefix + PERSIST + "/") :].split("/", 1)[0])].append(key)
        elif key not in (prefix + "batch-manifest.json", prefix + "contact-sheet.html"):
            a.check(False, f"unexpected S3 object {key}")
    outcomes: Counter[str] = Counter()
    causes: Counter[str] = Counter()
    multipart = 0
    for i, spec in enumerate(plan.specs):
        jobs = jobs_by_prompt.get(i, [])
        gen, per = tis.get((GENERATE, i)), tis.get((PERSIST, i))
        if per is not None and per["state"] == "success":
            outcomes["stored"] += 1
            multipart += _audit_stored(a, run, i, spec, jobs, images.get(i, []), xcom, store, latest)
            continue
        a.check(not images.get(i), f"prompt {i}: its task did not succeed but S3 holds {images.get(i)}")
        failed_task = None
        if gen is not None and gen["state"] == "failed":
            failed_task = GENERATE
        elif gen is not None and gen["state"] == "success" and per is not None and per["state"] == "failed":
            failed_task = PERSIST
        if failed_task is None:
            outcomes["unaccounted"] += 1
            a.check(
                False, f"prompt {i} is unaccounted for: generate={gen and gen['state']} persist={per and per['state']}"
            )
            continue
        last = (failures.get((failed_task, i)) or [{}])[-1]
        cause = classify(last.get("error"))
        outcomes["failed with a named cause" if cause else "failed without a cause"] += 1
        causes[f"{failed_task}: {cause}"] += 1
        a.check(
            cause is not None,
            f"prompt {i}: task {failed_task} failed but its exception names no known cause: {last.get('error')!r:.300}",
        )
        if cause == "job FAILED":
            a.check(bool(jobs) and jobs[-1]["status"] == "FAILED", f"prompt {i}: says FAILED but its last job is not")
            if jobs and jobs[-1].get("error"):
                a.check(jobs[-1]["error"] in (last.get("error") or ""), f"prompt {i}: FAILED text not in the error")
        if cause == "result expired":
            a.check(bool(jobs) and jobs[-1]["status"] == "EXPIRED", f"prompt {i}: says expired but its job is not")
        if cause == "content blocked":
            a.check(
                gen is not None and gen["try_number"] == 1 and len(jobs) == 1,
                f"prompt {i}: a content-safety block must fail at once (tries {gen and gen['try_number']}, "
                f"jobs {len(jobs)})",
            )
    for i in plan.unsafe_marked:
        # History off: a submit of unknown outcome may end the task before the block is seen.
        cause = causes_for(tis, failures, i)
        # History on: a lost submit that nothing proves is ours may end it by the safe rule first.
        a.check(
            cause == "content blocked"
            or (not settings.history_lookup and cause == "submit outcome unknown")
            or (settings.history_lookup and cause == "safe rule"),
            f"prompt {i} (__unsafe__) did not end blocked (cause {cause})",
        )
    for i in plan.fail_marked:
        # Every try that got a job saw it FAIL; a try may also end earlier (a submit that got no answer).
        a.check(
            (tis.get((GENERATE, i)) or {}).get("state") == "failed" and causes_for(tis, failures, i) is not None,
            f"prompt {i} (__fail__) did not end as a failed generate task with a named cause",
        )
        jobs = jobs_by_prompt.get(i, [])
        failed_tries = sum(1 for e in failures.get((GENERATE, i), []) if classify(e["error"]) == "job FAILED")
        # A try ended by the safe rule may have billed up to MAX_SUBMIT_ROUNDS jobs it never saw FAIL.
        safe_tries = sum(1 for e in failures.get((GENERATE, i), []) if classify(e["error"]) == "safe rule")
        # History off: a late 5xx is resent by the hook, so one try may bill two FAILED jobs (reported).
        a.check(
            all(job["status"] == "FAILED" for job in jobs)
            and (
                len(jobs) == failed_tries
                or (not settings.history_lookup and len(jobs) > failed_tries)
                or (safe_tries and failed_tries <= len(jobs) <= failed_tries + MAX_SUBMIT_ROUNDS * safe_tries)
            ),
            f"prompt {i} (__fail__): {len(jobs)} jobs for {failed_tries} tries that saw a FAILED job"
            + (f" and {safe_tries} ended by the safe rule" if safe_tries else ""),
        )
    a.check(sum(outcomes.values()) == n, f"{sum(outcomes.values())} outcomes for {n} prompts")

    # ---- S3: no orphan, no partial, no rewrite -------------------------------------------------
    a.check(not run.s3_uploads, f"{len(run.s3_uploads)} multipart upload(s) left in S3: {run.s3_uploads[:3]}")
    a.check(not run.s3_delete_markers, f"{len(run.s3_delete_markers)} delete markers in S3")
    rewritten = [k for k, c in keys_seen.items() if c > 1 and not k.endswith(("batch-manifest.json", ".html"))]
    a.check(not rewritten, f"objects written more than once: {rewritten[:5]}")
    image_keys = {k for keys in images.values() for k in keys}
    for key in manifests:
        a.check(key.removesuffix(".manifest.json") in image_keys, f"manifest {key} has no object")
    for key in image_keys:
        a.check(key + ".manifest.json" in manifests, f"object {key} has no manifest")

    # ---- the API key, anywhere ------------------------------------------------------------------
    found, scanned = scan_for_key(run)
    a.check(not found, f"the API key appears in: {found}")
    media_with_key = [r for r in run.media_requests if r.get("has_api_key")]
    a.check(not media_with_key, f"{len(media_with_key)} media downloads carried the API key")
    a.check(len(run.media_requests) > 0, "no media download was recorded (the key check saw nothing)")

    # ---- injected faults: each one happened and did what it should -----------------------------
    injected = _audit_chaos(a, run, tis, failures, jobs_by_prompt)

    # ---- no leftovers ---------------------------------------------------------------------------
    a.check(not run.leftovers, f"still running after the soak: {run.leftovers}")

    # ---- the table ------------------------------------------------------------------------------
    retries = Counter(e["task_id"] for e in run.events if e["kind"] == "retry")
    log_path = run.workdir / "worker.log"
    log = log_path.read_bytes() if log_path.exists() else b""
    faults = run.emulator_stats.get("faults", {})
    switches = sum(1 for r in run.chaos if r.get("kind") == "history_profile")
    a.rows = [
        ("run", f"{dag_id} {run_id} ({result.get('state')})"),
        (
            "history profiles",
            ", ".join(str(segment) for segment in history_segments(settings))
            + (f" ({switches} switches)" if len(history_segments(settings)) > 1 else "")
            + "".join(
                f"; {name} not reached (fewer prompts than profiles)"
                for name in settings.history_profiles
                if name not in {segment.profile for segment in history_segments(settings)}
            )
            + f"; history_user_email {history_user_email(settings) or 'not set'}",
        ),
        (
            "wall time",
            f"{run.wall_seconds:.1f} s (bound {settings.bound_seconds:g} s; dag.test "
            f"{result.get('dag_test_seconds', 0):.1f} s)",
        ),
        ("prompts", str(n)),
        ("  stored in S3, manifest verified", str(outcomes["stored"])),
        (
            "  failed, cause named in exception",
            f"{outcomes['failed with a named cause']}  " + ", ".join(f"{k} x{v}" for k, v in sorted(causes.items())),
        ),
        ("  unaccounted", str(outcomes["unaccounted"] + outcomes["failed without a cause"])),
        (
            "paid submissions (emulator)",
            f"{submissions} = {prompts_billed} prompts + {resubmits['FAILED']} "
            f"resubmits of FAILED + {resubmits['EXPIRED']} of expired jobs ({ledger.uncharged} FAILED, not charged)",
        ),
        (
            f"  duplicates (history_lookup {'on' if settings.history_lookup else 'OFF'})",
            str(duplicates) + ("" if settings.history_lookup else " (billed twice: what the request history prevents)"),
        ),
        ("  history lookups (emulator)", str(run.emulator_stats.get("history_calls"))),
        (
            "  requests owned by two tasks",
            f"{len(ledger.shared)} (+ {len(ledger.misowned)} held by another prompt's task, "
            f"{len(ledger.unbilled)} never billed); {len(ledger.owners)} requests held, seen "
            + ", ".join(f"{k} x{v}" for k, v in sorted(sighted.items())),
        ),
        (
            "  billed requests no task holds",
            f"{len(orphans)}" + "".join(f"; {job['request_id']} (prompt {i}, {job['status']})" for i, job in orphans),
        ),
        ("  safe-rule failures (allowed)", str(len(ledger.safe_rule))),
        *[
            (
                f"    prompt {f.index} (try {f.try_number}, {profile_of.get(f.index)})",
                (f"names {', '.join(f.request_ids)}" if f.request_ids else "names no request (the history showed none)")
                + f"; the prompt was billed {len(jobs_by_prompt.get(f.index, []))} job(s)",
            )
            for f in ledger.safe_rule
        ],
        ("  prompts never billed", str(n - prompts_billed)),
        ("emulator faults injected", ", ".join(f"{k} x{v}" for k, v in sorted(faults.items()))),
        (
            "API calls",
            f"submit {run.emulator_stats.get('submit_attempts')}, status "
            f"{run.emulator_stats.get('status_polls')}, result {run.emulator_stats.get('result_fetches')}, media "
            f"{run.emulator_stats.get('media_fetches')}",
        ),
        *injected,
        ("S3 requests / faults", ", ".join(f"{k} x{v}" for k, v in sorted(run.proxy_stats.items()))),
        (
            "S3 objects",
            f"{len(image_keys)} images ({multipart} multipart) + {len(manifests)} manifests; "
            f"{len(run.s3_uploads)} multipart uploads left; {len(rewritten)} rewritten",
        ),
        (
            "  writer recoveries (from the logs)",
            f"{log.count(b'Aborting stray multipart upload')} stray multipart uploads aborted, "
            f"{log.count(b'already holds this object')} retried writes found their own object",
        ),
        ("task retries", ", ".join(f"{k} x{v}" for k, v in sorted(retries.items())) or "none"),
        (
            "  request-record store (from the logs)",
            f"{log.count(b'request record store failed')} failed accesses tried again, "
            f"{log.count(b'Could not read the Segmind request record')} reads given up, "
            f"{log.count(b'Could not record Segmind request')} writes given up",
        ),
        ("API key occurrences", f"{sum(found.values())} (scanned {scanned})"),
        ("left running after the run", str(len(run.leftovers))),
    ]
    return a


def causes_for(tis: Mapping[Any, Any], failures: Mapping[Any, Any], i: int) -> str | None:
    for task in (GENERATE, PERSIST):
        ti = tis.get((task, i))
        if ti is not None and ti["state"] == "failed":
            return classify((failures.get((task, i)) or [{}])[-1].get("error"))
    return None


def _enc(value: str) -> str:
    from airflow_provider_segmind.utils.s3_keys import encode_component

    return encode_component(value)


def _audit_stored(
    a: Audit,
    run: SoakRun,
    i: int,
    spec: Mapping[str, Any],
    jobs: list[dict[str, Any]],
    keys: list[str],
    xcom: Mapping[Any, Any],
    store: Mapping[Any, Any],
    latest: Mapping[str, Any],
) -> int:
    """One stored prompt: object, manifest, billing and request ids agree. Returns 1 if multipart."""
    if len(keys) != 1:
        a.check(False, f"prompt {i}: {len(keys)} objects in S3, expected 1: {keys}")
        return 0
    key = keys[0]
    version = latest[key]
    data, meta = run.s3_objects[(key, version["VersionId"])]
    manifest_version = latest.get(key + ".manifest.json")
    if manifest_version is None:
        return 0
    manifest = json.loads(run.s3_objects[(key + ".manifest.json", manifest_version["VersionId"])][0])
    sha = hashlib.sha256(data).hexdigest()
    problem = _image_check(data, spec)
    a.check(problem is None, f"prompt {i}: {key} {problem}")
    a.check(manifest.get("sha256") == sha, f"prompt {i}: manifest sha256 != object's")
    a.check(meta["Metadata"].get("sha256") == sha, f"prompt {i}: object metadata sha256 != object's")
    a.check(manifest.get("size") == len(data), f"prompt {i}: manifest size != object size")
    a.check(manifest.get("prompt") == spec["prompt"], f"prompt {i}: manifest prompt is {manifest.get('prompt')!r}")
    a.check(manifest.get("model") == SD3_LARGE_MODEL, f"prompt {i}: manifest model {manifest.get('model')!r}")
    a.check(manifest.get("airflow", {}).get("map_index") == i, f"prompt {i}: manifest map_index wrong")
    a.check(manifest.get("negative_prompt") == spec.get("negative_prompt", ""), f"prompt {i}: negative_prompt wrong")
    a.check(bool(jobs), f"prompt {i}: stored but no job was billed")
    if not jobs:
        return 0
    last = jobs[-1]
    a.check(manifest.get("request_id") == last["request_id"], f"prompt {i}: manifest request id is not its last job")
    a.check(key.rsplit("/", 1)[-1].startswith(last["request_id"]), f"prompt {i}: key names another request")
    a.check(manifest.get("seed") == last["seed"], f"prompt {i}: manifest seed {manifest.get('seed')} != {last['seed']}")
    if "seed" in spec:
        a.check(manifest.get("seed") == spec["seed"], f"prompt {i}: asked seed {spec['seed']}")
    else:  # issue 13: the operator filled a random seed, sent it, and the manifest records it
        a.check(
            isinstance(manifest.get("seed"), int) and manifest.get("seed") == last["params"].get("seed"),
            f"prompt {i}: manifest seed {manifest.get('seed')} is not the filled seed sent "
            f"({last['params'].get('seed')})",
        )
    a.check(last["status"] in ("COMPLETED", "EXPIRED"), f"prompt {i}: stored from a {last['status']} job")
    summary = xcom.get((GENERATE, i, "return_value")) or {}
    a.check(summary.get("request_id") == last["request_id"], f"prompt {i}: XCom request id != last job")
    a.check(xcom.get((GENERATE, i, "segmind_request_id")) == last["request_id"], f"prompt {i}: XCom id differs")
    record = store.get((GENERATE, i)) or {}
    a.check(record.get("request_id") == last["request_id"], f"prompt {i}: task state store id != last job")
    return int("-" in str(version.get("ETag", "")))


def _audit_chaos(
    a: Audit,
    run: SoakRun,
    tis: Mapping[Any, Any],
    failures: Mapping[Any, Any],
    jobs_by_prompt: Mapping[int, list[dict[str, Any]]],
) -> list[tuple[str, str]]:
    """Each injected task/trigger fault happened and was handled; returns table rows.

    A planned fault is applied at the map index's first deferral (usually try 1). A prompt that never
    deferred (every try failed before its submit was answered) gets none; its outcome is audited
    like any other prompt's.
    """
    plan = run.plan
    applied = {  # map index -> the record of the deferral its planned fault was applied to
        r["map_index"]: r for r in run.chaos if r.get("kind") == "trigger" and r.get("action") is not None
    }
    crashes = {r["map_index"] for r in run.chaos if r.get("kind") == "crash_on_resume"}
    by_action: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for index, record in applied.items():
        a.check(plan.actions.get(index) == record["action"], f"prompt {index}: unplanned {record['action']}")
        by_action[record["action"]].append(record)

    def failed_with(r: Mapping[str, Any], cause: str) -> bool:
        """Whether the try the fault was applied to failed with ``cause``."""
        return any(
            e["try_number"] == r["try_number"] and classify(e["error"]) == cause
            for e in failures.get((GENERATE, r["map_index"]), [])
        )

    def status(r: Mapping[str, Any]) -> str | None:
        return (r.get("event") or {}).get("status")

    restarts = by_action["restart"]
    restarted = [r for r in restarts if r.get("restarted")]
    mid_job = [r for r in restarted if r.get("job_status_at_restart") in ("QUEUED", "PROCESSING")]
    for r in restarts:
        i = r["map_index"]
        a.check(r.get("sessions_open_after_cancel") == 0, f"prompt {i}: aiohttp session left open after cancel")
        if r.get("restarted"):
            a.check(r.get("rebuilt_equal") is True, f"prompt {i}: rebuilt trigger differs from the original")
            a.check(r.get("deadline_kept") is True, f"prompt {i}: rebuilt trigger lost its deadline")
            a.check(
                (r.get("event") or {}).get("request_id") == r["request_id"],
                f"prompt {i}: the rebuilt trigger watched another request",
            )
    a.check(len(mid_job) >= max(1, len(restarts) // 2), f"only {len(mid_job)} of {len(restarts)} restarts mid-job")

    for r in by_action["give_up"]:
        i = r["map_index"]
        a.check(status(r) == "error", f"prompt {i}: the trigger did not give up ({status(r)})")
        a.check(not r.get("script_left"), f"prompt {i}: scripted faults left unconsumed: {r.get('script_left')}")
        a.check(failed_with(r, "gave up polling"), f"prompt {i}: the trigger's give-up did not fail its try")
    for r in by_action["lost_event"]:
        a.check(failed_with(r, "event lost"), f"prompt {r['map_index']}: a lost event did not fail its try loudly")
    for r in by_action["crash_on_resume"]:
        if status(r) == "success":
            a.check(r["map_index"] in crashes, f"prompt {r['map_index']}: the planned crash did not happen")
            a.check(failed_with(r, "worker crash (simulated)"), f"prompt {r['map_index']}: crash did not fail its try")
    expired = by_action["expire"]
    expired_before = [r for r in expired if r.get("job_status_when_expired") in ("QUEUED", "PROCESSING")]
    for r in expired:
        a.check("job_status_when_expired" in r, f"prompt {r['map_index']}: the planned expiry did not happen")

    # A forced retry must reattach to the job its earlier try submitted, unless that job FAILED or expired.
    reused = 0
    forced = by_action["give_up"] + by_action["lost_event"] + by_action["crash_on_resume"]
    for r in forced:
        jobs = {job["request_id"]: job for job in jobs_by_prompt.get(r["map_index"], [])}
        watched = jobs.get(r["request_id"])
        later = [
            job
            for job in jobs_by_prompt.get(r["map_index"], [])
            if job["submitted_at"] > (watched or {}).get("submitted_at", float("inf"))
        ]
        if watched is not None and watched["status"] not in ("FAILED", "EXPIRED"):
            a.check(not later, f"prompt {r['map_index']}: its retry submitted again although the job was reusable")
            reused += not later
    kwargs_snapshots = sum(1 for r in run.chaos if r.get("kind") == "trigger")

    # A worker that died between the accepted submit and the record write (issue 13): with the
    # request history its retry re-attaches to that job (found by its body); without, it pays again.
    deaths = [r for r in run.chaos if r.get("kind") == "die_after_submit"]
    reattached_after_death = safe_after_death = 0
    for r in deaths:
        i = r["map_index"]
        a.check(failed_with(r, "worker crash (simulated)"), f"prompt {i}: the death after submit did not fail its try")
        jobs = jobs_by_prompt.get(i, [])
        died = next((job for job in jobs if job["request_id"] == r["request_id"]), None)
        a.check(died is not None, f"prompt {i}: the job accepted before the death is not billed")
        later = [job for job in jobs if died is not None and job["submitted_at"] > died["submitted_at"]]
        if died is not None and died["status"] not in ("FAILED", "EXPIRED"):
            a.check(
                not later or not run.settings.history_lookup,
                f"prompt {i}: the retry after a death paid again although the history knew the job",
            )
            # The retry may also end by the safe rule (the history did not prove the job its own).
            safe = any(
                e["try_number"] > r["try_number"] and classify(e["error"]) == "safe rule"
                for e in failures.get((GENERATE, i), [])
            )
            safe_after_death += safe
            reattached_after_death += not later and not safe

    def count(action: str) -> str:
        planned = sum(1 for v in plan.actions.values() if v == action)
        return f"{len(by_action[action])} of {planned} planned"

    return [
        (
            "triggerer restarts (serialize() rebuild)",
            f"{count('restart')}; {len(restarted)} restarted, {len(mid_job)} while the job was QUEUED/PROCESSING",
        ),
        ("trigger gave up -> task retry", count("give_up")),
        ("event lost -> task retry", count("lost_event")),
        ("worker crash after resume -> retry", f"{count('crash_on_resume')}; {len(crashes)} crashed"),
        ("  forced retries that reattached", f"{reused} of {len(forced)} (no new submit; the rest FAILED/expired)"),
        ("jobs expired mid-flight", f"{count('expire')}; {len(expired_before)} before completion"),
        (
            "worker death after an accepted submit",
            f"{len(deaths)} of {sum(1 for v in plan.actions.values() if v == 'die_after_submit')} planned; "
            f"{reattached_after_death} retries re-attached through the request history"
            + (f", {safe_after_death} failed by the safe rule" if safe_after_death else ""),
        ),
        ("S3 outage on first persist write", f"{len(plan.s3_outage)} prompts"),
        ("trigger kwargs snapshots scanned", str(kwargs_snapshots)),
    ]


def scan_for_key(run: SoakRun) -> tuple[Counter[str], str]:
    """Count the API key in every byte the run wrote; returns (occurrences by source, what was scanned)."""
    key = run.api_key.encode()
    found: Counter[str] = Counter()
    total = 0
    files = 0

    def scan(name: str, data: bytes) -> None:
        nonlocal total
        total += len(data)
        count = data.count(key)
        if count:
            found[name] += count

    for path in run.workdir.iterdir():
        if path.is_file() and path.name != "worker.json":
            scan(path.name, path.read_bytes())
            files += 1
    home = run.airflow_home
    for path in [*home.glob("*.db*"), *(home / "logs").rglob("*")]:
        if path.is_file() and path.stat().st_mtime >= run.started_at - 1:
            scan(str(path.relative_to(home)), path.read_bytes())
            files += 1
    for (key_name, _), (body, meta) in run.s3_objects.items():
        scan(f"s3://{run.bucket}/{key_name}", body + json.dumps(meta, default=str).encode())
    # Positive controls: the scan reads the right bytes.
    log = (run.workdir / "worker.log").read_bytes() if (run.workdir / "worker.log").exists() else b""
    if run.result.get("run_id") and b"Submitted Segmind job" not in log:
        found["<control: task logs were not captured>"] += 1
    objects = len(run.s3_objects)
    return found, f"{files} files + {objects} S3 object versions, {total / 1e6:.1f} MB"


_TASK_HEADER = re.compile(
    r"\[DAG TEST\] (?:starting task task_id=|starting task_id=|running task <TaskInstance: [\w-]+\.)(?P<task>[\w.]+)"
    r"(?:.*?map_index=(?P<index>-?\d+))?"
)
_STORY_LINE = re.compile(r"airflow_provider_segmind|\[DAG TEST\] starting|Traceback|Error:|chaos|soak", re.IGNORECASE)
_STORY_LIMIT: Final = 80


def prompt_story(run: SoakRun, index: int) -> list[str]:
    """What the worker log says about prompt ``index``: its tasks' provider, chaos and error lines.

    ``dag.test()`` runs one task instance at a time (deferred ones through their trigger inline), so
    the lines between two "[DAG TEST] ... task" headers belong to the task instance the first names.
    A violation then comes with its story instead of a pointer to a deleted temp directory.
    """
    path = run.workdir / "worker.log"
    if not path.exists():
        return []
    story: list[str] = []
    current: tuple[str, int] | None = None
    for line in path.read_text(errors="replace").splitlines():
        header = _TASK_HEADER.search(line)
        if header:
            current = (header.group("task"), int(header.group("index") or -1))
        if current is not None and current[1] == index and _STORY_LINE.search(line):
            story.append(line[:400])
    return story[-_STORY_LIMIT:]


def format_report(run: SoakRun, result: Audit) -> str:
    s = run.settings
    profiles = s.history_profiles
    shown = f"history profile {profiles[0]}" if len(profiles) == 1 else f"{len(profiles)} history profiles rotated"
    title = f"Segmind fault-injection soak: {s.prompts} prompts, seed {s.seed}, {shown}"
    report = result.table(title)
    named = sorted({int(m.group(1)) for v in result.violations for m in [re.match(r"prompt (\d+)\b", v)] if m})
    for index in named:
        lines = prompt_story(run, index)
        report += f"\n\n--- prompt {index}: the worker log's story ({len(lines)} lines) ---\n" + "\n".join(lines)
    if result.violations:
        report += f"\n\nartifacts: {run.workdir}"
    return report


@contextlib.contextmanager
def airflow_home(path: Path | None = None) -> Iterator[dict[str, str]]:
    """A throw-away AIRFLOW_HOME with a migrated SQLite database (for the long form, outside pytest)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="segmind-soak-home-") as tmp:
        home = Path(path or tmp)
        (home / "dags").mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            }
        )
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=300,
        )
        yield env
