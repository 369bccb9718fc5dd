"""The full form of the cluster test: ``python -m tests.cluster --prompts 60 --runs 3``.

Each run gets its own seed (``--seed``, then +1 per run), its own servers, database and AIRFLOW_HOME
under ``--workdir`` (kept: component logs, events), and prints its summary table; the exit status
is non-zero if any run broke a guarantee.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("--prompts", type=int, default=60, help="prompts per run (default 60)")
    parser.add_argument("--runs", type=int, default=1, help="consecutive runs, each with the next seed")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000, help="seed of the first run")
    parser.add_argument("--short", action="store_true", help="the pytest form's settings (16 prompts)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep artifacts here (default: a temp dir)")
    args = parser.parse_args(argv)
    # SIGTERM, and SIGINT even when started in the background (where a shell ignores it), unwind
    # through run_cluster's clean-up: every server and Airflow process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="segmind-cluster-"))
    # This process imports Airflow (for a constant): never let that touch the developer's ~/airflow.
    os.environ["AIRFLOW_HOME"] = str(root / "harness-airflow-home")
    from tests.cluster.scenario import ClusterSettings, audit, format_report, run_cluster

    failed = 0
    for number in range(args.runs):
        seed = args.seed + number
        settings = ClusterSettings.short(seed) if args.short else ClusterSettings(prompts=args.prompts, seed=seed)
        if not args.short and args.prompts != settings.prompts:
            settings = dataclasses.replace(settings, prompts=args.prompts)
        workdir = root / f"run-{number + 1}-seed-{seed}"
        print(f"cluster run {number + 1}/{args.runs}: {settings.prompts} prompts, seed {seed} ...", flush=True)
        try:
            run = run_cluster(settings, workdir)
        except Exception as err:
            print(f"cluster run {number + 1} broke off: {type(err).__name__}: {err}", flush=True)
            print(f"artifacts: {workdir}\n", flush=True)
            failed += 1
            continue
        result = audit(run)
        print(format_report(run, result), flush=True)
        print(f"artifacts: {workdir}\n", flush=True)
        failed += bool(result.violations)
    print(f"{args.runs - failed}/{args.runs} cluster runs passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
