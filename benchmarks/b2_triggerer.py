"""Benchmark 2: triggerer capacity, N concurrent ``SegmindJobTrigger``s on one event loop.

The orchestrator starts the emulator (CLI, its own process and GIL) and, per run, a fresh worker
process (``python -m benchmarks.b2_triggerer worker ...``) that plays the triggerer:

1. submits N jobs to the emulator over HTTP (queue 0-5 s, inference 8-12 s), then closes that session;
2. snapshots the emulator's counters, this process's CPU time and RSS;
3. like ``TriggerRunner.create_triggers``: for each job, imports the classpath (cached), rebuilds the
   trigger from its ``serialize()`` kwargs (after a JSON round trip), and starts
   ``run_trigger`` as an asyncio task (greenback portal, then ``async for event in trigger.run()``);
4. waits for every trigger's event, then snapshots again and reads each job's ``completed_at``.

Baselines, each in the same run:

- ``baseline`` (graded): the very same trigger, rebuilt the same way, with one change: every HTTP
  call opens and closes its own ``aiohttp.ClientSession`` (so its own TCP connection), as several
  official triggers do (a hook method that creates a session per request). Everything else a
  trigger does (connection lookup, parsing, transition logs, the event) is identical, so the
  difference is the session strategy alone.
- ``bare`` (reported, N=1,000 only): a minimal coroutine with the same poll schedule
  (``PollTracker``) and a session per call that does none of a trigger's other work (no
  connection lookup, no result parsing, no logs, no event); the cheapest possible polling loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchmarks._common import (
    EMULATOR_KEY,
    PROCESSES,
    PYTHON,
    SD3,
    BenchResult,
    EmulatorProcess,
    Row,
    child_env,
    fmt,
    percentile,
    run_json,
    wait_port_file,
    yes_no,
)

TITLE = "Triggerer capacity"
EMULATOR_ARGS = (
    "--profile",
    "realistic",
    "--queue-time",
    "0-5",
    "--inference-time",
    "8-12",
    "--no-render-on-result",
)
SUBMIT_CONCURRENCY = 64
#: ours: the trigger; baseline: the same trigger with a new session per call (graded); bare: a
#: minimal polling loop with a new session per call and none of a trigger's other work.
MODES = ("ours", "baseline", "bare")
RUN_TIMEOUT_S = 240.0


# ----------------------------------------------------------------------------------------------
# The worker (a fresh process per run)
# ----------------------------------------------------------------------------------------------


async def _submit_all(base_url: str, n: int) -> dict[str, float]:
    import aiohttp

    submitted: dict[str, float] = {}
    semaphore = asyncio.Semaphore(SUBMIT_CONCURRENCY)
    headers = {"x-api-key": EMULATOR_KEY}
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            async with semaphore:
                body = {"prompt": f"capacity benchmark job {i}"}
                async with session.post(f"{base_url}/v2/{SD3}", json=body, headers=headers) as response:
                    answer = await response.json()
                    if response.status != 200:
                        raise RuntimeError(f"submit answered {response.status}: {answer}")
                    submitted[answer["request_id"]] = time.time()

        await asyncio.gather(*(one(i) for i in range(n)))
    return submitted


async def _get_json(base_url: str, path: str) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{base_url}{path}") as response:
        return await response.json()


async def _warm_up() -> None:
    """Load what the first trigger in a triggerer would load (imports, connection lookup, thread pool)."""
    from airflow_provider_segmind.hooks.segmind import SegmindHook
    from airflow_provider_segmind.triggers.segmind import _import_transport

    await asyncio.to_thread(_import_transport)
    await SegmindHook("segmind_default").aget_settings()


async def _ours(
    jobs: dict[str, float],
    received: dict[str, float],
    payloads: dict[str, dict[str, Any]],
    portal: Any,
    watching: dict[str, float],
) -> list[asyncio.Task[None]]:
    """Create and start the triggers the way ``TriggerRunner.create_triggers``/``run_trigger`` do."""
    from airflow._shared.module_loading import import_string

    from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger

    deadline = time.time() + 3600
    stored = {
        rid: json.dumps(
            SegmindJobTrigger(
                request_id=rid, conn_id="segmind_default", model=SD3, deadline=deadline, submitted_at=submitted
            ).serialize()
        )
        for rid, submitted in jobs.items()
    }
    cache: dict[str, Any] = {}

    async def run_trigger(rid: str, trigger: Any) -> None:
        if portal is not None:
            await portal.ensure_portal()
        async for event in trigger.run():
            received.setdefault(rid, time.time())
            payloads[rid] = event.payload

    tasks = []
    for n, (rid, row) in enumerate(stored.items()):
        classpath, kwargs = json.loads(row)
        if classpath not in cache:
            cache[classpath] = import_string(classpath)
        trigger = cache[classpath](**kwargs)
        watching[rid] = time.time()
        tasks.append(asyncio.create_task(run_trigger(rid, trigger), name=f"trigger {rid}"))
        if n % 50 == 0:
            await asyncio.sleep(0)
    return tasks


class _SessionPerCall:
    """Stands in for the shared session: every ``get`` opens (and closes) its own ``ClientSession``.

    This is the one thing the graded baseline changes in the real trigger: the style of official
    triggers whose hook method does ``async with aiohttp.ClientSession() as session`` per request.
    """

    def __init__(self, user_agent: str) -> None:
        self._headers = {"User-Agent": user_agent}

    @contextlib.asynccontextmanager
    async def get(self, url: Any, **kwargs: Any) -> AsyncIterator[Any]:
        import aiohttp

        async with aiohttp.ClientSession(headers=self._headers) as session, session.get(url, **kwargs) as response:
            yield response


def _use_a_session_per_call() -> None:
    """Make every ``SegmindHook`` in this (baseline) worker process use :class:`_SessionPerCall`."""
    from airflow_provider_segmind.hooks import segmind

    @contextlib.asynccontextmanager
    async def session_per_call(self: Any) -> Any:
        yield _SessionPerCall(segmind.USER_AGENT)

    segmind.SegmindHook.shared_session = session_per_call  # type: ignore[method-assign,assignment]


async def _bare(
    jobs: dict[str, float],
    received: dict[str, float],
    payloads: dict[str, dict[str, Any]],
    portal: Any,
    base_url: str,
    watching: dict[str, float],
) -> list[asyncio.Task[None]]:
    """The same schedule, but a new ``aiohttp.ClientSession`` (so a new TCP connection) per call."""
    import aiohttp

    from airflow_provider_segmind.protocol.answer import HttpAnswer
    from airflow_provider_segmind.protocol.responses import parse_status
    from airflow_provider_segmind.protocol.schedule import OUTCOME_COMPLETED, PollSchedule, PollTracker
    from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus

    schedule = PollSchedule.for_model(SD3)
    headers = {"x-api-key": EMULATOR_KEY}

    async def get(url: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
            return response.status, await response.read()

    async def watch(rid: str, submitted_at: float) -> None:
        if portal is not None:
            await portal.ensure_portal()
        tracker = PollTracker(schedule, started_at=submitted_at, submitted=True, last_status=SegmindJobStatus.QUEUED)
        status_url = f"{base_url}/v2/requests/{rid}/status"
        delay = tracker.first_delay(time.time())
        polls = 0
        while True:
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                code, body = await get(status_url)
                polls += 1
                step = tracker.on_status(parse_status(HttpAnswer(code, {}, body, status_url), rid), time.time())
            except asyncio.CancelledError:
                raise
            except Exception as err:
                step = tracker.on_error(err, time.time())
            if step.outcome == OUTCOME_COMPLETED:
                code, body = await get(f"{base_url}/v2/requests/{rid}")
                received.setdefault(rid, time.time())
                payloads[rid] = {"status": "success" if code == 200 else f"http {code}", "polls": polls + 1}
                return
            if step.outcome is not None:
                received.setdefault(rid, time.time())
                payloads[rid] = {"status": step.outcome, "polls": polls}
                return
            delay = step.delay

    tasks = []
    for n, (rid, submitted_at) in enumerate(jobs.items()):
        watching[rid] = time.time()
        tasks.append(asyncio.create_task(watch(rid, submitted_at)))
        if n % 50 == 0:
            await asyncio.sleep(0)
    return tasks


async def _worker(mode: str, n: int, base_url: str, emulator_pid: int, api_url: str) -> dict[str, Any]:
    import psutil

    from benchmarks._common import cpu_seconds, max_rss_bytes, rss_bytes

    try:
        import greenback as portal
    except ImportError:  # the triggerer runs without it too (AIRFLOW_DISABLE_GREENBACK_PORTAL)
        portal = None  # type: ignore[assignment]

    if mode == "baseline":
        _use_a_session_per_call()
    await _warm_up()
    submit0 = time.perf_counter()
    jobs = await _submit_all(base_url, n)
    submit_s = time.perf_counter() - submit0
    emulator = psutil.Process(emulator_pid)
    stats0 = await _get_json(base_url, "/_emulator/stats")
    emu_cpu0 = sum(emulator.cpu_times()[:2])
    received: dict[str, float] = {}
    watching: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    gc.collect()
    rss0 = rss_bytes()
    maxrss0 = max_rss_bytes()
    peak = rss0
    lags: list[float] = []
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.1)
            lags.append(time.perf_counter() - before - 0.1)
            peak = max(peak, rss_bytes())

    sampler = asyncio.create_task(sample())
    cpu0 = cpu_seconds()
    wall0 = time.perf_counter()
    if mode in ("ours", "baseline"):
        tasks = await _ours(jobs, received, payloads, portal, watching)
    else:
        tasks = await _bare(jobs, received, payloads, portal, api_url, watching)
    done, pending = await asyncio.wait(tasks, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - wall0
    cpu = cpu_seconds() - cpu0
    stop.set()
    await sampler
    peak = max(peak, rss_bytes())
    maxrss1 = max_rss_bytes()
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    crashed = [repr(t.exception())[:300] for t in done if not t.cancelled() and t.exception() is not None]
    emu_cpu = sum(emulator.cpu_times()[:2]) - emu_cpu0
    stats1 = await _get_json(base_url, "/_emulator/stats")
    completed_at = {job["request_id"]: job["completed_at"] for job in await _get_json(base_url, "/_emulator/jobs")}
    # Detection latency: from the later of the job's completion and its trigger's start. All N jobs are
    # submitted before the first trigger starts (so the CPU figures are the triggers' alone), and at
    # N=5,000 the submits take seconds: a job that finished before its trigger existed could not have
    # been noticed earlier by any trigger. The raw figure (from completion) is kept beside it.
    timed = [rid for rid in received if rid in completed_at]
    latencies = sorted(received[rid] - max(completed_at[rid], watching.get(rid, 0.0)) for rid in timed)
    raw_latencies = sorted(received[rid] - completed_at[rid] for rid in timed)
    done_before_watch = sum(1 for rid in timed if completed_at[rid] < watching.get(rid, 0.0))

    def delta(name: str) -> int:
        return int(stats1.get(name, 0)) - int(stats0.get(name, 0))

    responses0, responses1 = stats0.get("responses", {}), stats1.get("responses", {})
    return {
        "mode": mode,
        "n": n,
        "finished": len(received),
        "timed_out": len(pending),
        "crashed": crashed[:5],
        "event_statuses": dict(Counter(str(p.get("status")) for p in payloads.values())),
        "wall_s": wall,
        "cpu_s": cpu,
        "emulator_cpu_s": emu_cpu,
        "status_polls": delta("status_polls"),
        "result_fetches": delta("result_fetches"),
        "connections": delta("connections"),
        "responses": {k: int(v) - int(responses0.get(k, 0)) for k, v in responses1.items()},
        "max_in_flight": stats1.get("max_in_flight"),
        "rss_start_mb": rss0 / 2**20,
        "rss_peak_mb": peak / 2**20,
        "maxrss_growth_mb": max(0, maxrss1 - max(maxrss0, rss0)) / 2**20,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
        "latency_max_s": latencies[-1] if latencies else None,
        "raw_latency_p50_s": percentile(raw_latencies, 50),
        "raw_latency_p99_s": percentile(raw_latencies, 99),
        "done_before_watch": done_before_watch,
        "submit_s": submit_s,
        "watch_start_spread_s": (max(watching.values()) - min(watching.values())) if watching else 0.0,
        "loop_lag_p99_s": percentile(lags, 99),
        "loop_lag_max_s": max(lags) if lags else None,
    }


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--emulator-pid", type=int, required=True)
    parser.add_argument("--api-url", help="where the triggers poll (default: the emulator itself)")
    args = parser.parse_args(argv)
    result = asyncio.run(_worker(args.mode, args.n, args.emulator, args.emulator_pid, args.api_url or args.emulator))
    print(json.dumps(result))
    return 0


# ----------------------------------------------------------------------------------------------
# The orchestrator side
# ----------------------------------------------------------------------------------------------


def _one_run(emu: EmulatorProcess, mode: str, n: int, tls: _TlsFront | None = None) -> dict[str, Any]:
    assert emu.proc is not None
    emu.reset()
    api_url = tls.base_url if tls is not None else emu.base_url
    conn = json.dumps({"conn_type": "segmind", "password": EMULATOR_KEY, "host": api_url})
    extra = {"SSL_CERT_FILE": str(tls.cert)} if tls is not None else {}
    env = child_env(AIRFLOW_CONN_SEGMIND_DEFAULT=conn, **extra)
    figures: dict[str, Any] = run_json(
        [
            "-m",
            "benchmarks.b2_triggerer",
            "worker",
            "--mode",
            mode,
            "--n",
            str(n),
            "--emulator",
            emu.base_url,
            "--emulator-pid",
            str(emu.proc.pid),
            "--api-url",
            api_url,
        ],
        env=env,
        timeout=RUN_TIMEOUT_S + 120,
    )
    polls = figures["status_polls"]
    figures["tls"] = tls is not None
    figures["cpu_s_per_1000_polls"] = 1000.0 * figures["cpu_s"] / polls if polls else float("nan")
    figures["rss_per_trigger_kb"] = (figures["rss_peak_mb"] - figures["rss_start_mb"]) * 1024 / n
    figures["status_polls_per_job"] = polls / n
    print(
        f"    {mode:8} N={n}{' https' if tls else ''}: {figures['finished']}/{n} finished in "
        f"{figures['wall_s']:.1f} s, CPU {figures['cpu_s']:.1f} s, {polls} status polls, "
        f"{figures['connections']} connections, p99 latency {figures['latency_p99_s']:.2f} s",
        flush=True,
    )
    return figures


class _TlsFront:
    """The TLS proxy (``benchmarks._tls_proxy``) in front of the emulator, with a throw-away certificate."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cert = Path()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: Any = None

    def __enter__(self) -> _TlsFront:
        from benchmarks._tls_proxy import make_certificate

        self._dir = tempfile.TemporaryDirectory(prefix="segmind-bench-tls-")
        folder = Path(self._dir.name)
        self.cert, key = make_certificate(folder)
        port_file = folder / "port"
        args = ["--upstream-port", str(self.upstream_port), "--port-file", str(port_file)]
        self._proc = PROCESSES.start(
            [PYTHON, "-m", "benchmarks._tls_proxy", *args, "--cert", str(self.cert), "--key", str(key)],
            env=child_env(),
        )
        try:
            self.port = wait_port_file(port_file, self._proc, 30, "the TLS proxy")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            PROCESSES.stop(self._proc)
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def _cpu_row(
    metric: str, ours: dict[str, Any], base: dict[str, Any], graded: bool, note: str = "", target: float = 0.5
) -> Row:
    ratio = ours["cpu_s_per_1000_polls"] / base["cpu_s_per_1000_polls"]
    return Row(
        "2",
        metric,
        fmt(ours["cpu_s_per_1000_polls"], 2),
        fmt(base["cpu_s_per_1000_polls"], 2),
        f"{ratio:.2f}x",
        f"<= {target:g}x baseline" if graded else "report",
        yes_no(ratio <= target) if graded else "n/a",
        note=note,
    )


def _rows(
    label: str,
    n: int,
    ours: dict[str, Any],
    base: dict[str, Any],
    latency_target: float,
    graded: bool,
    cpu_target: float = 0.5,
) -> list[Row]:
    all_done = ours["finished"] == n and ours["event_statuses"].get("success", 0) == n
    mem_ratio = ours["rss_per_trigger_kb"] / base["rss_per_trigger_kb"] if base["rss_per_trigger_kb"] > 0 else None
    return [
        Row(
            "2",
            f"{label}: triggers finished (success events)",
            f"{ours['event_statuses'].get('success', 0):,}/{n:,}",
            f"{base['event_statuses'].get('success', 0):,}/{n:,}",
            "",
            "all",
            yes_no(all_done),
        ),
        _cpu_row(f"{label}: CPU s per 1,000 status polls (trigger side)", ours, base, graded, target=cpu_target),
        Row(
            "2",
            f"{label}: peak memory per trigger (RSS growth / N)",
            fmt(ours["rss_per_trigger_kb"], 1, " KB"),
            fmt(base["rss_per_trigger_kb"], 1, " KB"),
            f"{mem_ratio:.2f}x" if mem_ratio is not None else "",
            "report",
            "n/a",
        ),
        Row(
            "2",
            f"{label}: TCP connections opened",
            f"{ours['connections']:,}",
            f"{base['connections']:,}",
            f"{ours['connections'] / n:.2f} per trigger",
            f"<= {n:,} (1 per trigger)" if graded else "report",
            yes_no(ours["connections"] <= n) if graded else "n/a",
        ),
        Row(
            "2",
            f"{label}: detection latency p50 / p99 (from completion, or the trigger's start if later)",
            f"{fmt(ours['latency_p50_s'], 2)} / {fmt(ours['latency_p99_s'], 2)} s",
            f"{fmt(base['latency_p50_s'], 2)} / {fmt(base['latency_p99_s'], 2)} s",
            "",
            f"p99 <= {latency_target:g} s" if graded else "report",
            yes_no(ours["latency_p99_s"] <= latency_target) if graded else "n/a",
        ),
        Row(
            "2",
            f"  {label}: the same from completion only; jobs done before their trigger started",
            f"{fmt(ours['raw_latency_p50_s'], 2)} / {fmt(ours['raw_latency_p99_s'], 2)} s; "
            f"{ours['done_before_watch']:,}",
            f"{fmt(base['raw_latency_p50_s'], 2)} / {fmt(base['raw_latency_p99_s'], 2)} s; "
            f"{base['done_before_watch']:,}",
            "",
            "report",
            "n/a",
            note=f"the {n:,} submits took {ours['submit_s']:.1f} s (ours) / {base['submit_s']:.1f} s (baseline) before "
            f"the first trigger started; starting all triggers took {ours['watch_start_spread_s']:.1f} s / "
            f"{base['watch_start_spread_s']:.1f} s",
        ),
    ]


def run(quick: bool) -> BenchResult:
    from airflow_provider_segmind.protocol.schedule import PollSchedule

    result = BenchResult(2, TITLE)
    schedule = PollSchedule.for_model(SD3)
    latency_target = schedule.interval + 0.5
    sizes = [500] if quick else [1000, 5000]
    runs: dict[str, dict[str, Any]] = {}
    with EmulatorProcess(*EMULATOR_ARGS) as emu:
        for n in sizes:
            for mode in ("ours", "baseline", "bare") if n == sizes[0] else ("ours", "baseline"):
                runs[f"{mode}_{n}"] = _one_run(emu, mode, n)
        if not quick:
            with _TlsFront(emu.port) as tls:
                for mode in ("ours", "baseline"):
                    runs[f"{mode}_1000_https"] = _one_run(emu, mode, 1000, tls)
    result.figures = {"runs": runs, "schedule": schedule.to_dict(), "latency_target_s": latency_target}
    for n in sizes:
        # Graded: N=1,000 (p99, CPU <= 0.5x the session-per-call trigger) and N=5,000 (p99, CPU <= 0.3x).
        graded = n in (1000, 5000)
        result.rows += _rows(
            f"N={n:,}",
            n,
            runs[f"ours_{n}"],
            runs[f"baseline_{n}"],
            latency_target,
            graded,
            cpu_target=0.3 if n == 5000 else 0.5,
        )
        if n == sizes[0]:
            result.rows.append(
                _cpu_row(
                    f"N={n:,}: CPU per 1,000 polls vs a bare polling loop (session per call, no other work)",
                    runs[f"ours_{n}"],
                    runs[f"bare_{n}"],
                    graded=False,
                    note="bare = the same schedule with none of a trigger's other work (no connection lookup, "
                    "result parsing, transition logs or event); the graded baseline is the same trigger with a "
                    "session per call",
                )
            )
    if not quick:
        result.rows += _rows(
            "N=1,000 https (extra)", 1000, runs["ours_1000_https"], runs["baseline_1000_https"], latency_target, False
        )
    first = sizes[0]
    ours_first, base_first = runs[f"ours_{first}"], runs[f"baseline_{first}"]
    if ours_first["cpu_s_per_1000_polls"] > 0.5 * base_first["cpu_s_per_1000_polls"]:
        extra = ""
        if "ours_1000_https" in runs:
            tls_ratio = (
                runs["ours_1000_https"]["cpu_s_per_1000_polls"] / runs["baseline_1000_https"]["cpu_s_per_1000_polls"]
            )
            extra = f" Over https (the real API's scheme) the same comparison gives {tls_ratio:.2f}x."
        result.notes.append(
            "2: CPU per poll missed <= 0.5x on plain-http loopback: there a new connection costs the baseline only "
            "a socket and a session object, so most of both sides' CPU is the same aiohttp request/response work "
            "(~0.3 ms per call here) and the same per-trigger work (connection lookup, parsing, logs, the "
            "event)." + extra
        )
    result.notes.append(
        "2: each run is a fresh worker process playing the triggerer (classpath import, kwargs JSON round trip, "
        "greenback portal, async for over trigger.run(), all N tasks on one loop) against the emulator CLI in "
        "its own process (--no-render-on-result; jobs: queue 0-5 s, inference 8-12 s, submitted just before). "
        "CPU = the worker's user+system time from the first trigger's creation to the last event, over the "
        "emulator's status-poll count for the run. Memory = RSS peak (sampled every 0.1 s) minus RSS before "
        "creating the triggers. Connections = TCP connections the emulator accepted during the run. Latency = "
        "event receipt minus the job's completed_at from /_emulator/jobs. The https rows put a TLS-terminating "
        "proxy (own process, one upstream connection per client connection) in front of the emulator. "
        f"Schedule for SD3 Large: {schedule.to_dict()}; the shared session's connector keeps the hook's "
        "limit=100 (not raised)."
    )
    for key, figures in runs.items():
        if key.startswith("ours"):
            result.notes.append(
                f"2 ({key}): {figures['cpu_s']:.1f} CPU s over {figures['wall_s']:.0f} s (emulator "
                f"{figures['emulator_cpu_s']:.1f} CPU s); event-loop lag p99 {figures['loop_lag_p99_s'] * 1000:.0f} ms "
                f"(max {figures['loop_lag_max_s'] * 1000:.0f} ms); {figures['status_polls_per_job']:.2f} status polls "
                f"per job; RSS {figures['rss_start_mb']:.0f} -> {figures['rss_peak_mb']:.0f} MiB."
            )
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit("usage: python -m benchmarks.b2_triggerer worker --mode ours|baseline --n N --emulator URL ...")
