"""The long form of the soak: ``python -m tests.soak --prompts 200 --runs 3`` (what ``make soak`` runs).

Each run gets its own seed (``--seed``, then +1 per run), its own throw-away AIRFLOW_HOME and
database, and prints its summary table; the exit status is non-zero if any run broke a guarantee.
The request history rotates through every profile of ``emulator/config.py`` ``HISTORY_PROFILES``,
one contiguous segment of the prompts each (``tests.soak.harness.history_segments``), each run
starting one profile later; ``--history-profile NAME`` (repeatable) picks the profiles instead.
Artifacts (worker log, chaos and event records, result JSON) are kept under ``--workdir``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_segmind.emulator.config import HISTORY_PROFILES
from tests.soak.harness import (
    SoakSettings,
    airflow_home,
    audit,
    default_bound,
    format_report,
    history_segments,
    run_soak,
)


def rotated_profiles(run_number: int) -> list[str]:
    """Every history profile, starting ``run_number`` profiles in: consecutive runs put each profile on
    other prompts (and so other faults)."""
    names = list(HISTORY_PROFILES)
    start = run_number % len(names)
    return names[start:] + names[:start]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--prompts", type=int, default=200, help="prompts per run (default 200)")
    parser.add_argument("--runs", type=int, default=1, help="consecutive runs, each with the next seed")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000, help="seed of the first run")
    parser.add_argument("--bound", type=float, default=None, help="seconds one run may take (default 300 + 4.5/prompt)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep artifacts here (default: a temp dir)")
    parser.add_argument(
        "--history-off",
        action="store_true",
        help="run with the connection's history_lookup false: the audit reports the duplicates it then bills",
    )
    parser.add_argument(
        "--history-profile",
        dest="history_profiles",
        action="append",
        choices=list(HISTORY_PROFILES),
        default=None,
        metavar="NAME",
        help=f"the request history's profile ({', '.join(HISTORY_PROFILES)}) for every prompt (repeat for a "
        "rotation of several); default: rotate through all of them, one segment of the prompts each, each run "
        "starting one profile later",
    )
    args = parser.parse_args(argv)
    bound = args.bound if args.bound is not None else default_bound(args.prompts)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="segmind-soak-"))
    failed = 0
    for number in range(args.runs):
        settings = SoakSettings(
            prompts=args.prompts,
            seed=args.seed + number,
            bound_seconds=bound,
            history_lookup=not args.history_off,
            history_profiles=tuple(args.history_profiles or rotated_profiles(number)),
        )
        workdir = root / f"run-{number + 1}-seed-{settings.seed}"
        segments = ", ".join(str(segment) for segment in history_segments(settings))
        print(
            f"soak run {number + 1}/{args.runs}: {settings.prompts} prompts, seed {settings.seed}, "
            f"history profiles {segments} ...",
            flush=True,
        )
        with airflow_home() as env:
            run = run_soak(settings, workdir=workdir, dags_folder=Path(env["AIRFLOW__CORE__DAGS_FOLDER"]), env=env)
            result = audit(run)
        print(format_report(run, result), flush=True)
        print(f"artifacts: {workdir}\n", flush=True)
        failed += bool(result.violations)
    print(f"{args.runs - failed}/{args.runs} soak runs passed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
