"""Run the emulator in-process: an aiohttp server on its own event loop in a daemon thread.

Tests and demos get a real HTTP endpoint on 127.0.0.1 with no subprocess to manage. All reads and
writes of the emulator's state from the caller's thread are marshalled onto the server's loop, so
``stats()``, ``configure()`` and friends are thread-safe and see a consistent snapshot.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from aiohttp import web

from airflow_provider_segmind.emulator.app import create_app
from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.state import EmulatorState

T = TypeVar("T")

#: A large accept backlog: benchmarks open thousands of connections at once.
LISTEN_BACKLOG: Final = 4096
#: How long a stopping server waits for in-flight requests (e.g. a ``slow`` fault) before cancelling.
SHUTDOWN_TIMEOUT: Final = 0.5
START_TIMEOUT: Final = 30.0


async def start_site(
    app: web.Application, host: str, port: int, *, shutdown_timeout: float = SHUTDOWN_TIMEOUT
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0 = a free port); return the runner and the bound port.

    Access logging is off (it costs more than a status poll) and keep-alive is on (aiohttp's default).
    """
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1]
    return runner, int(bound)


def client_host(host: str) -> str:
    """The address a local client should dial for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class SegmindEmulator:
    """A running Segmind emulator in a background thread.

    ::

        with SegmindEmulator(EmulatorConfig.for_profile("fast")) as emu:
            client = SegmindClient(api_key=emu.api_key, base_url=f"{emu.base_url}/v1")

    Keyword overrides are applied on top of ``config``: ``SegmindEmulator(credits=0.1)``. ``clock``
    (default ``time.time``) lets a test drive job lifecycles and retention without sleeping.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, clock: Callable[[], float] = time.time, **overrides: Any
    ) -> None:
        config = config or EmulatorConfig()
        self.state = EmulatorState(config.with_changes(**overrides) if overrides else config, clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stop: asyncio.Event | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving; returns once the socket is listening. Raises if it cannot bind."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        thread = threading.Thread(target=self._run, args=(ready, failure), name="segmind-emulator", daemon=True)
        thread.start()
        if not ready.wait(START_TIMEOUT):
            raise RuntimeError(f"The Segmind emulator did not start within {START_TIMEOUT:g} s")
        if failure:
            thread.join()
            raise failure[0]
        self._thread = thread
        return self

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(ready, failure))
        finally:
            loop.close()
            self._loop = None

    async def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        config = self.state.config
        try:
            self._runner, self._port = await start_site(create_app(state=self.state), config.host, config.port)
        except BaseException as err:
            failure.append(err)
            ready.set()
            return
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._runner.cleanup()
            self._runner = None

    def stop(self) -> None:
        """Stop serving and wait for the thread to end. Jobs and stats survive a later ``start()``."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        self._thread = None
        self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("The Segmind emulator is not running: call start() first")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port``, no trailing slash, no version (the SDK wants ``base_url + "/v1"``)."""
        return f"http://{client_host(self.state.config.host)}:{self.port}"

    @property
    def api_key(self) -> str:
        """The first configured key (the emulator's default key unless configured otherwise)."""
        return self.state.config.api_key

    @property
    def config(self) -> EmulatorConfig:
        return self.state.config

    # ---- state, marshalled onto the server's loop -------------------------------------------

    def _call(self, func: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return func()

        async def run() -> T:
            return func()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=30)

    def stats(self) -> dict[str, Any]:
        """The same counters as ``GET /_emulator/stats``."""
        return self._call(self.state.stats_snapshot)

    def reset(self) -> None:
        """Forget jobs, stats, scripts and recorded requests; restore every key's credits."""
        self._call(self.state.reset)

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Change config fields now (see :class:`EmulatorConfig`); returns the new config."""
        return self._call(lambda: self.state.configure(**changes))

    def script(self, steps: Iterable[Mapping[str, Any]]) -> None:
        """Queue scripted faults: ``[{"endpoint": "submit", "fault": "500", "times": 1}, ...]``."""
        steps = list(steps)
        self._call(lambda: self.state.faults.script(steps))

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the emulator remembers, as ``/_emulator/jobs/{id}`` describes it."""
        return self._call(lambda: [job.describe(self.state.clock()) for job in self.state.jobs.values()])

    def job(self, request_id: str) -> dict[str, Any] | None:
        """One job's times, status, model and params, or ``None`` if unknown."""

        def describe() -> dict[str, Any] | None:
            job = self.state.jobs.get(request_id)
            return job.describe(self.state.clock()) if job is not None else None

        return self._call(describe)

    def expire(self, request_id: str) -> None:
        """Make a job pass its retention now (its status and result then answer 404)."""

        def expire_now() -> None:
            job = self.state.jobs[request_id]
            job.expires_at = min(job.expires_at, self.state.clock())

        self._call(expire_now)

    def requests_log(self, path_prefix: str = "") -> list[dict[str, Any]]:
        """Recent requests (method, path, headers with keys redacted, ``has_api_key``)."""
        return self._call(lambda: self.state.requests_log(path_prefix))
