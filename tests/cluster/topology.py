"""The production topology, each component its own process: Airflow on Postgres with the CeleryExecutor.

api-server, scheduler, dag-processor, two Celery workers and two triggerers, all from this venv (the
provider installed), on a Postgres and a Redis from :mod:`tests.cluster.servers`, every port on
127.0.0.1. Each component is started in its own session, so a test can SIGKILL one component with
everything it forked (a worker with its pool and task processes, as when a node is drained) and
start it again. A session, not a process group: Airflow's task supervisor puts each task process in
a process group of its own (so it can signal the task's children), and those would survive a
``killpg`` of the worker. :meth:`CeleryCluster.stop` stops every component (SIGTERM to its group,
then SIGKILL to all of its session) and then sweeps anything left that carries this cluster's
AIRFLOW_HOME (:class:`tests.integration.cluster.AirflowCluster`'s sweep).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.servers import PostgresServer, RedisServer, stop_group
from tests.integration.cluster import AirflowCluster

#: The settings the failure handling depends on (the values here are tuned for a 2-core test box;
#: production keeps the defaults in brackets, see docs/deploying.md).
FAILOVER_SETTINGS = {
    # A triggerer whose last heartbeat is older than this is dead: the others take its triggers
    # (Trigger.assign_unassigned, run on every triggerer loop, about once a second) [30].
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "20",
    # How often a triggerer heartbeats [5].
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    # A running task whose heartbeat is older than this is failed (and retried): a killed worker's
    # tasks [300], checked every ..._detection_interval s [10].
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # A task sent to Celery but never started (a message the killed worker had reserved) is
    # rescheduled after this [600], checked every ..._check_interval s [120].
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "180",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "30",
    # How often a scheduler adopts the tasks of a dead scheduler [300].
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
}


def session_members(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(proc.pid) == sid:
                found.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return found


@dataclass
class CeleryCluster(AirflowCluster):
    """Airflow with the CeleryExecutor on ``postgres`` and ``redis``; components started one by one."""

    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    worker_concurrency: int = 4
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Triggerer name -> the id of its TriggererJob row (what ``trigger.triggerer_id`` points at).
    triggerer_jobs: dict[str, int] = field(default_factory=dict)
    _secrets: dict[str, str] = field(default_factory=dict)
    #: Components killed on purpose and not started again yet (not an "exited early" failure).
    _killed: set[str] = field(default_factory=set)

    COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer-1", "triggerer-2", "worker-1", "worker-2")

    @property
    def log_path(self) -> Path:
        return self.home / "components.log"

    def component_log(self, name: str) -> Path:
        return self.home / f"{name}.out"

    def environment(self) -> dict[str, str]:
        assert self.postgres is not None
        assert self.redis is not None
        if not self._secrets:
            from cryptography.fernet import Fernet

            self._secrets = {
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                # Every component signs and checks the task tokens with the same secret.
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            }
        env = super().environment()
        env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
                "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                **FAILOVER_SETTINGS,
                **self._secrets,
            }
        )
        env.update(self.env)
        return env

    def airflow(self, *args: str, timeout: float = 600) -> str:
        """The base class's CLI call with a longer default timeout: on a loaded 2-core box the CLI alone
        (import, config, DB) can take a minute."""
        return super().airflow(*args, timeout=timeout)

    def _command(self, name: str) -> list[str]:
        airflow = str(Path(sys.executable).parent / "airflow")
        if name == "api-server":
            return [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        if name == "scheduler":
            return [airflow, "scheduler", "--skip-serve-logs"]
        if name == "dag-processor":
            return [airflow, "dag-processor"]
        if name.startswith("triggerer-"):
            return [airflow, "triggerer", "--skip-serve-logs"]
        if name.startswith("worker-"):
            return [airflow, "celery", "worker", "--skip-serve-logs", "--celery-hostname", f"{name}@%h"]
        raise ValueError(name)

    def launch(self, name: str) -> subprocess.Popen[bytes]:
        """Start one component in its own process group, its output appended to ``<name>.out``."""
        with self.component_log(name).open("ab") as log:
            process = subprocess.Popen(
                self._command(name),
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.home,
            )
        self.processes[name] = process
        self._killed.discard(name)
        return process

    def start(self, timeout: float = 600) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate", timeout=600)
        deadline = time.monotonic() + timeout
        for name in ("api-server", "dag-processor", "scheduler"):
            self.launch(name)
        for name in ("triggerer-1", "triggerer-2"):
            known = set(self._running_triggerer_jobs())
            self.launch(name)
            self.triggerer_jobs[name] = self._wait_new_triggerer_job(name, known, deadline)
        for name in ("worker-1", "worker-2"):
            self.launch(name)
        for name in ("worker-1", "worker-2"):
            self.wait_for_worker(name, deadline)
        while not self._healthy():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster was not healthy after {timeout:g} s:\n{self.log_tail()}")
            time.sleep(2)

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if name not in self._killed and process.poll() is not None:
                raise RuntimeError(f"{name} exited early ({process.returncode}):\n{self.log_tail(name=name)}")

    def _running_triggerer_jobs(self) -> list[int]:
        return [
            int(row[0])
            for row in self.query("SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
        ]

    def _wait_new_triggerer_job(self, name: str, known: set[int], deadline: float) -> int:
        while time.monotonic() < deadline:
            self._check_alive()
            new = sorted(set(self._running_triggerer_jobs()) - known)
            if new:
                return new[-1]
            time.sleep(1)
        raise TimeoutError(f"{name} registered no TriggererJob:\n{self.log_tail(name=name)}")

    def wait_for_worker(self, name: str, deadline: float) -> None:
        """Until the Celery worker logs that it is ready to take tasks."""
        while time.monotonic() < deadline:
            self._check_alive()
            if b" ready." in self.component_log(name).read_bytes():
                return
            time.sleep(1)
        raise TimeoutError(f"{name} did not get ready:\n{self.log_tail(name=name)}")

    def kill(self, name: str) -> float:
        """SIGKILL every process of the component's session at once (no clean-up runs); returns when."""
        process = self.processes[name]
        self._killed.add(name)
        members = session_members(process.pid)
        killed_at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for member in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 30
        while session_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        return killed_at

    def component_of(self, pid: int) -> str | None:
        """Which running component's session ``pid`` belongs to (None if it is gone or none of ours)."""
        try:
            sid = os.getsid(pid)
        except OSError:
            return None
        return next((name for name, p in self.processes.items() if p.pid == sid and p.poll() is None), None)

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the metadata DB (``?`` placeholders, as the SQLite base class writes them)."""
        if self.postgres is None:
            return []
        import psycopg2

        try:
            return self.postgres.query(sql.replace("?", "%s"), args)
        except psycopg2.Error:
            return []

    def log_tail(self, lines: int = 60, *, name: str | None = None) -> str:
        names = [name] if name else list(self.processes)
        parts = []
        for each in names:
            try:
                text = self.component_log(each).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                text = ["(no log)"]
            parts.append(f"--- {each} ---\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, grace: float = 30) -> None:
        """SIGTERM every component's process group at once, SIGKILL what is left of their sessions after
        ``grace`` s, then sweep anything else that carries this cluster's AIRFLOW_HOME."""
        self._stop_cli_server()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            stop_group(process, grace=0.1)
            for member in session_members(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
        self._sweep()

    def leftover_processes(self) -> list[int]:
        alive = [pid for p in self.processes.values() for pid in session_members(p.pid)]
        return alive + super().leftover_processes()
