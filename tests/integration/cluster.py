"""A real Airflow (``airflow standalone``: scheduler, triggerer, dag-processor, api-server) for tests.

It runs in its own AIRFLOW_HOME with its own SQLite database and a free loopback port, so it never
touches the developer's Airflow, and it is stopped by process group, with a sweep for stragglers,
on every path (the api-server's workers do not always die with the group).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.processes import stop_group

TERMINAL_RUN_STATES = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class AirflowCluster:
    """``airflow standalone`` in ``home`` serving the DAGs in ``dags_folder``.

    :param env: extra environment (connections as ``AIRFLOW_CONN_*``, settings as ``AIRFLOW__*``).
    """

    home: Path
    dags_folder: Path
    env: Mapping[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    #: The worker's and the triggerer's log servers: free ports, not Airflow's fixed 8793/8794, so a
    #: cluster another test or developer runs on this machine cannot take them (seen: "address already
    #: in use" on 8794 while the Celery cluster test ran).
    worker_log_port: int = field(default_factory=free_port)
    trigger_log_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    #: The standalone's descendants seen at stop, pid -> start time (a pid may be reused later).
    _family: dict[int, float] = field(default_factory=dict)
    #: The long-lived process that runs this cluster's CLI commands (``airflow()``), and its lock.
    _cli: subprocess.Popen[str] | None = None
    _cli_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def log_path(self) -> Path:
        return self.home / "standalone.log"

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    def environment(self) -> dict[str, str]:
        bin_dir = str(Path(sys.executable).parent)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "PYTEST_"))
        }
        env.update(
            {
                "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "3",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.trigger_log_port),
            }
        )
        env.update(self.env)
        return env

    def airflow(self, *args: str, timeout: float = 120) -> str:
        """Run an ``airflow`` CLI command against this cluster's home; return its stdout.

        The commands run in one long-lived process (``_cli_server.py``: the same parser and
        functions, Airflow imported once instead of once per command).
        """
        with self._cli_lock:
            server = self._cli_server()
            assert server.stdin is not None
            assert server.stdout is not None
            server.stdin.write(json.dumps(list(args)) + "\n")
            server.stdin.flush()
            ready, _, _ = select.select([server.stdout], [], [], timeout)
            line = server.stdout.readline() if ready else ""
            if not line:
                self._stop_cli_server()
                why = f"no answer within {timeout:g} s" if not ready else "the CLI process exited"
                raise RuntimeError(f"airflow {' '.join(args)}: {why}:\n{self._cli_log_tail()}")
        reply = json.loads(line)
        if reply["rc"] != 0:
            raise RuntimeError(
                f"airflow {' '.join(args)} failed ({reply['rc']}): {reply['stderr'][-2000:]}\n{self._cli_log_tail()}"
            )
        return str(reply["stdout"])

    def _cli_server(self) -> subprocess.Popen[str]:
        if self._cli is None or self._cli.poll() is not None:
            self.home.mkdir(parents=True, exist_ok=True)
            with (self.home / "cli.log").open("ab") as log:
                self._cli = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("_cli_server.py"))],
                    env=self.environment(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    start_new_session=True,
                )
        return self._cli

    def _stop_cli_server(self) -> None:
        cli, self._cli = self._cli, None
        if cli is None:
            return
        with contextlib.suppress(OSError):
            assert cli.stdin is not None
            cli.stdin.close()  # end of input: it returns from main()
        try:
            cli.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop_group(cli, term_wait=5)
        if cli.stdout is not None:
            cli.stdout.close()

    def _cli_log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join((self.home / "cli.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no CLI log)"

    def start(self, timeout: float = 240) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate", timeout=300)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "airflow"), "standalone"],
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"airflow standalone exited early:\n{self.log_tail()}")
            if self._healthy():
                return
            time.sleep(1.0)
        raise TimeoutError(f"airflow standalone was not healthy after {timeout:g} s:\n{self.log_tail()}")

    def _healthy(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/api/v2/monitor/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                health = json.load(response)
        except OSError:
            return False
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all(health.get(part, {}).get("status") == "healthy" for part in parts)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the dag-processor has serialized ``dag_id`` (triggering before that fails)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query("SELECT 1 FROM serialized_dag WHERE dag_id = ?", (dag_id,)):
                return
            time.sleep(1.0)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:g} s:\n{self.log_tail()}")

    def trigger(self, dag_id: str, run_id: str, conf: Mapping[str, Any] | None = None) -> None:
        self.airflow("dags", "unpause", dag_id)
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(dict(conf or {})))

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the metadata DB directly (the CLI's table output is not meant for parsing)."""
        if not self.db_path.exists():
            return []
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10) as db:
            try:
                return db.execute(sql, args).fetchall()
            except sqlite3.OperationalError:
                return []

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        state = "missing"
        while time.monotonic() < deadline:
            rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
            state = rows[0][0] if rows else "missing"
            if state in TERMINAL_RUN_STATES:
                return str(state)
            time.sleep(2.0)
        return f"timeout ({state})"

    def task_instances(self, dag_id: str, run_id: str) -> list[tuple[str, int, str, int]]:
        """``(task_id, map_index, state, try_number)`` for every task instance of the run."""
        return [
            (str(t), int(m), str(s), int(n))
            for t, m, s, n in self.query(
                "SELECT task_id, map_index, state, try_number FROM task_instance "
                "WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index",
                (dag_id, run_id),
            )
        ]

    def stop(self) -> None:
        """Stop every process started: by process group, then every descendant and anything with our home."""
        self._stop_cli_server()
        process, self.process = self.process, None
        if process is None:
            return
        self._family.update(_descendants(process.pid))
        stop_group(process, term_wait=30)
        self._sweep()

    def _sweep(self) -> None:
        """Stop stragglers (api-server workers, task runners) that carry our AIRFLOW_HOME: TERM, then KILL."""
        import psutil

        procs = self._ours()
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=15)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)

    def _ours(self) -> list[Any]:
        """Live processes of this cluster: descendants seen at stop, and any carrying our AIRFLOW_HOME.

        The environment alone misses some: the scheduler's LocalExecutor workers ignore SIGTERM (a
        plain ``kill`` left them idle), so they outlive the process-group TERM whenever the
        standalone itself exits in time, and their ``setproctitle`` title overwrites the memory
        ``/proc/<pid>/environ`` reads (it reads as zeros), so the sweep did not see them. Idle
        "airflow worker -- LocalExecutor" processes, reparented to init, were found after runs of
        this cluster and of benchmark 1b until the descendants were remembered as well.
        """
        import psutil

        home = str(self.home)
        found = []
        for pid, created in sorted(self._family.items()):
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        for proc in psutil.process_iter(["pid"]):
            if proc.pid in self._family:
                continue
            try:
                if (
                    proc.pid != os.getpid()
                    and proc.status() != psutil.STATUS_ZOMBIE
                    and proc.environ().get("AIRFLOW_HOME") == home
                ):
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found

    def leftover_processes(self) -> list[int]:
        """Live processes still running with this cluster's AIRFLOW_HOME (should be none after stop)."""
        return [proc.pid for proc in self._ours()]


def _descendants(pid: int) -> dict[int, float]:
    """Every live descendant of ``pid``, pid -> start time (psutil; nothing if ``pid`` is gone)."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    family = {}
    for child in children:
        with contextlib.suppress(psutil.Error):
            family[child.pid] = child.create_time()
    return family
