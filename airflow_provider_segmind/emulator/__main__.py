"""``python -m airflow_provider_segmind.emulator``: serve the Segmind emulator until SIGINT/SIGTERM.

Prints one line, ``Segmind emulator listening on http://HOST:PORT``; with ``--port 0 --port-file
PATH`` the bound port is also written to PATH (atomically) for scripts that start it in the background.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_provider_segmind.emulator.app import create_app
from airflow_provider_segmind.emulator.config import (
    DEFAULT_API_KEY,
    ENDPOINTS,
    HISTORY_PROFILES,
    PROFILES,
    RATE_LIMIT_PLANS,
    EmulatorConfig,
    load_account_profile,
    parse_duration,
    parse_fault,
)
from airflow_provider_segmind.emulator.images import PILLOW_MISSING
from airflow_provider_segmind.emulator.server import client_host, start_site

DEFAULT_PORT = 8787


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_segmind.emulator",
        description="A local Segmind API (v1, v2 queue, credits, media) for tests, demos and benchmarks.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port to bind, 0 for a free one (default {DEFAULT_PORT})")
    add("--port-file", type=Path, help="write the bound port to this file once listening")
    add("--api-key", action="append", dest="api_keys", metavar="KEY", help=f"accepted key, repeatable "
        f"(default {DEFAULT_API_KEY})")  # fmt: skip
    add("--profile", action="append", dest="profiles", metavar="NAME|FILE",
        help=f"base settings, one of {', '.join(sorted(PROFILES))} (default realistic), and/or an account "
        "profile FILE written by `python -m airflow_provider_segmind.contract --profile-out FILE` (its history "
        "shape and rate limit on top); repeatable, files applied in order")  # fmt: skip
    add("--queue-time", type=parse_duration, metavar="S", help="seconds QUEUED, or a range such as 0.2-1")
    add("--inference-time", type=parse_duration, metavar="S", help="seconds PROCESSING, or a range such as 8-12")
    add("--result-ttl", type=float, metavar="S", help="seconds a result is kept (default 3600)")
    add("--credits", type=float, metavar="N", help="starting credits per key (default 100)")
    add("--free-credits", type=float, metavar="N", help="starting free credits per key, spent first (default 0)")
    add("--cost", type=float, metavar="N", help="credits billed per image (default 0.04)")
    add("--bill-failed-jobs", action="store_true",
        help="bill v2 jobs that end FAILED too (default: not charged, as Segmind's error docs say)")  # fmt: skip
    add("--rate-limit", type=int, metavar="N", help="requests a minute per account, keys shared (default unlimited)")
    add("--rate-limit-plan", choices=list(RATE_LIMIT_PLANS), dest="rate_limit_plan",
        help="Segmind's numbers by name: free (5/min) or pro (50/min), docs.segmind.com/api-reference/rate-limits; "
        "pooled-60..pooled-1000, the pricing page as reported (unverified); --rate-limit wins")  # fmt: skip
    add("--rate-limit-scope", choices=("submit", "all"),
        help="what counts against the limit: submit (inference POSTs only, default) or all (status polls too); "
        "Segmind does not document which")  # fmt: skip
    add("--rate-limit-headers", action="store_true",
        help="send x-ratelimit-limit/-remaining and the reset time on every answer while a limit is set")  # fmt: skip
    add("--catalogue-model", action="append", dest="catalogue_models", metavar="SLUG",
        help="a slug the model catalogue lists besides SD3 Large's, repeatable")  # fmt: skip
    add("--fault", action="append", type=parse_fault, default=[], metavar="NAME=PROB", help="random fault, repeatable")
    add("--fault-endpoints", metavar="LIST", help=f"comma-separated, from {','.join(sorted(ENDPOINTS))}")
    add("--slow-seconds", type=float, metavar="S", help="delay of the 'slow' fault")
    add("--v2-validation", choices=("job", "submit"), help="invalid SD3 params on v2: FAILED job or 400 at submit")
    add("--seed", type=int, help="seed for faults and timing ranges (default 0)")
    add("--no-render-on-result", action="store_true", help="do not render images when results are fetched")
    add("--history-lag", type=float, dest="history_lag_seconds", metavar="S",
        help="seconds before a request's history record lands (default 0)")  # fmt: skip
    add("--history-lag-mode", choices=("null", "absent"), dest="history_lag_mode",
        help="a lagging record: listed with null fields, or not listed (default null)")  # fmt: skip
    add("--history-profile", choices=list(HISTORY_PROFILES), dest="history_profile",
        help="what history rows look like (repr bodies, naive times, hex ids, teammates...; "
        "'all' for every one at once; default default); --history-lag flags win over it")  # fmt: skip
    return parser


def _profiles(values: Sequence[str] | None) -> tuple[str, list[str]]:
    """``--profile`` values: the named base (the last name given; default realistic) and the account profile files."""
    base, files = "realistic", []
    for value in values or ():
        if value in PROFILES:
            base = value
        else:
            files.append(value)
    return base, files


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The named profile's settings, the account profiles' on top, then every flag that was given."""
    base, files = _profiles(args.profiles)
    from_files: dict[str, Any] = {}
    for path in files:
        from_files.update(load_account_profile(path))
    overrides: dict[str, Any] = {"host": args.host, "port": args.port}
    if args.api_keys:
        overrides["api_keys"] = tuple(args.api_keys)
    flags = (
        "queue_time",
        "inference_time",
        "result_ttl",
        "credits",
        "free_credits",
        "cost",
        "rate_limit",
        "rate_limit_scope",
        "slow_seconds",
        "v2_validation",
        "seed",
        "fault_endpoints",
        "history_lag_seconds",
        "history_lag_mode",
        "history_profile",
        "rate_limit_plan",
        "catalogue_models",
    )
    overrides.update({name: getattr(args, name) for name in flags if getattr(args, name) is not None})
    if args.rate_limit_headers:
        overrides["rate_limit_headers"] = True
    if args.fault:
        overrides["faults"] = {**PROFILES[base].get("faults", {}), **dict(args.fault)}
    if args.no_render_on_result:
        overrides["render_on_result"] = False
    if args.bill_failed_jobs:
        overrides["bill_failed_jobs"] = True
    # Flags win over the files (a --history-profile given with a file replaces the file's history shape).
    return EmulatorConfig.for_profile(base, **from_files).with_changes(**overrides)


def _write_port_file(path: Path, port: int) -> None:
    """Write atomically, so a poller never reads an empty or partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".port-")
    with os.fdopen(fd, "w") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


async def serve(config: EmulatorConfig, *, port_file: Path | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then close the listener and finish in-flight requests."""
    runner, port = await start_site(create_app(config), config.host, config.port, shutdown_timeout=1.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if port_file is not None:
            _write_port_file(port_file, port)
        print(f"Segmind emulator listening on http://{client_host(config.host)}:{port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("PIL") is None:
        print(f"warning: {PILLOW_MISSING}; image requests will answer HTTP 500", file=sys.stderr)
    try:
        asyncio.run(serve(config, port_file=args.port_file))
    except OSError as err:
        print(f"error: cannot serve on {config.host}:{config.port}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
