"""Shared harness for the benchmarks: result rows, child processes, the emulator and moto as processes.

Every process a benchmark starts goes through :class:`Processes`, which starts it in its own session
(so a terminal Ctrl-C reaches only the orchestrator) and stops its whole process group on every path:
normal exit, an exception, Ctrl-C or SIGTERM. Everything listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
BENCH_DIR: Final = Path(__file__).resolve().parent
PYTHON: Final = sys.executable
#: The emulator's default key (not a Segmind key).
EMULATOR_KEY: Final = "SG_0123456789abcdef"
SD3: Final = "stable-diffusion-3-large-txt2img"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table. ``ratio`` and ``met`` are filled in by the benchmark."""

    bench: str
    metric: str
    ours: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class BenchResult:
    """What one benchmark hands back: table rows, raw figures for the JSON, notes for the reader."""

    number: int | str
    title: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    error: str | None = None


def fmt(value: float | None, digits: int = 2, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def yes_no(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "yes" if ok else "NO"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


# --------------------------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("apache-airflow", "apache-airflow-task-sdk", "aiohttp", "boto3", "moto", "segmind", "requests"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
    }


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


class Processes:
    """Every child process of the run; :meth:`stop_all` ends them (process groups) on any path."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.DEVNULL,
        cwd: str | Path | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            stdout=stdout,
            stderr=stderr,
            cwd=str(cwd or REPO),
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        else:
            # The leader is gone; make sure nothing it started lingers in its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self._procs)):
            self.stop(proc, timeout=5.0)


PROCESSES = Processes()


def run_python(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` to completion (bounded by ``timeout``), registered for cleanup meanwhile."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = PROCESSES.start([PYTHON, *args], env=env, stdout=out, stderr=err)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            PROCESSES.stop(proc)
            raise TimeoutError(f"python {' '.join(args[:3])} ... did not finish within {timeout:g} s") from None
        finally:
            PROCESSES.stop(proc)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            [PYTHON, *args], code, out.read().decode(errors="replace"), err.read().decode(errors="replace")
        )


def run_json(args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 300.0) -> Any:
    """Run a child that prints one JSON document as its last stdout line; return it."""
    done = run_python(args, env=env, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"child {' '.join(args[:3])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}\n{done.stdout[-1000:]}"
        )
    return json.loads(lines[-1])


def wait_port_file(path: Path, proc: subprocess.Popen[bytes], timeout: float, what: str) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early with code {proc.returncode}")
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip()
            if text:
                return int(text)
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not report its port within {timeout:g} s")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for benchmark children: this run's throw-away Airflow home, quiet logging."""
    env = dict(os.environ)
    env.update(extra)
    pythonpath = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{pythonpath}" if pythonpath else str(REPO)
    return env


# --------------------------------------------------------------------------------------------
# HTTP helpers (control endpoints; stdlib only)
# --------------------------------------------------------------------------------------------


def http_json(url: str, *, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback only
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback only
        return json.load(response)


# --------------------------------------------------------------------------------------------
# The Segmind emulator as a separate process (its own GIL)
# --------------------------------------------------------------------------------------------


class EmulatorProcess:
    """``python -m airflow_provider_segmind.emulator`` on a free loopback port, stopped on exit.

    ``args`` are extra CLI flags (``--inference-time 8-12 ...``).
    """

    def __init__(self, *args: str, api_keys: Sequence[str] = (EMULATOR_KEY,), seed: int = 1) -> None:
        self.args = list(args)
        self.api_keys = list(api_keys)
        self.seed = seed
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> EmulatorProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="segmind-bench-emu-")
        port_file = Path(self._dir.name) / "port"
        cmd = [
            PYTHON,
            "-m",
            "airflow_provider_segmind.emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--credits",
            "1000000000",
            "--seed",
            str(self.seed),
        ]
        for key in self.api_keys:
            cmd += ["--api-key", key]
        self.proc = PROCESSES.start([*cmd, *self.args], env=child_env())
        try:
            self.port = wait_port_file(port_file, self.proc, 60, "the Segmind emulator")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            PROCESSES.stop(self.proc)
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def conn_json(self, key: str | None = None) -> str:
        return json.dumps({"conn_type": "segmind", "password": key or self.api_keys[0], "host": self.base_url})

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.base_url}/_emulator/stats")
        return result

    def jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = http_json(f"{self.base_url}/_emulator/jobs")
        return result

    def job(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.base_url}/_emulator/jobs/{request_id}")
        return result

    def configure(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"{self.base_url}/_emulator/config", method="POST", body=changes)
        return result

    def reset(self) -> None:
        http_json(f"{self.base_url}/_emulator/reset", method="POST", body={})


def key_label(api_key: str) -> str:
    from airflow_provider_segmind.emulator.state import key_label as label

    return label(api_key)


# --------------------------------------------------------------------------------------------
# moto's S3 server as a separate process (it keeps objects in its own memory)
# --------------------------------------------------------------------------------------------


class MotoProcess:
    """moto's ``ThreadedMotoServer`` in its own process on a free loopback port."""

    SCRIPT: Final = (
        "import sys, time, pathlib\n"
        "from moto.server import ThreadedMotoServer\n"
        "server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
        "server.start()\n"
        "host, port = server.get_host_and_port()\n"
        "tmp = pathlib.Path(sys.argv[1] + '.tmp'); tmp.write_text(str(port)); tmp.rename(sys.argv[1])\n"
        "try:\n"
        "    while True: time.sleep(3600)\n"
        "finally:\n"
        "    server.stop()\n"
    )

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> MotoProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="segmind-bench-moto-")
        port_file = Path(self._dir.name) / "port"
        env = child_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        self.proc = PROCESSES.start([PYTHON, "-c", self.SCRIPT, str(port_file)], env=env)
        try:
            self.port = wait_port_file(port_file, self.proc, 60, "moto")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            PROCESSES.stop(self.proc)
            self.proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --------------------------------------------------------------------------------------------
# Misc
# --------------------------------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's current resident set size (Linux ``/proc/self/statm``)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return 0


def max_rss_bytes() -> int:
    """This process's RSS high-water mark (``ru_maxrss`` is in KiB on Linux)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return float(usage.ru_utime + usage.ru_stime)


@contextlib.contextmanager
def env_vars(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback only
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g} s")
