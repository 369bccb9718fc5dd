"""The contract check's command line: ``python -m airflow_provider_segmind.contract [--conn-id ID]
[--spend-up-to USD] [--profile-out FILE]``.

Exit codes: 0 every assumption checked holds (or is one the provider handles); 1 at least one does
not (its row says ``DIFFERS``); 2 the check could not run (no connection, no key, a bad argument).
The API key is never printed or written: every text passes through the provider's redaction, and
the profile holds settings and findings only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from airflow_provider_segmind.contract.check import (
    DEFAULT_HISTORY_WAIT,
    DEFAULT_JOB_TIMEOUT,
    MAX_PAID_GENERATIONS,
    SD3_TXT2IMG_PRICE_USD,
    ContractCheck,
    ContractOptions,
)
from airflow_provider_segmind.exceptions import SegmindError
from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.protocol.vocabulary import DEFAULT_CONN_ID


def _usd(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive amount in USD, got {text!r}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_segmind.contract",
        description="Check the provider's assumptions about Segmind's API against your account (docs/contract.md).",
    )
    add = parser.add_argument
    add("--conn-id", default=DEFAULT_CONN_ID, help=f"the segmind connection (default {DEFAULT_CONN_ID})")
    add("--spend-up-to", type=_usd, metavar="USD",
        help=f"allow paid checks up to this many USD: at most {MAX_PAID_GENERATIONS} images, SD3 Large "
        f"(~${SD3_TXT2IMG_PRICE_USD} each). Without it only the free checks run")  # fmt: skip
    add("--profile-out", type=Path, metavar="FILE",
        help="write the JSON profile the emulator loads (emulator CLI: --profile FILE)")  # fmt: skip
    add("--history-wait", type=_seconds, default=DEFAULT_HISTORY_WAIT, metavar="S",
        help=f"seconds to wait for a new request in the history (default {DEFAULT_HISTORY_WAIT:g})")  # fmt: skip
    add("--job-timeout", type=_seconds, default=DEFAULT_JOB_TIMEOUT, metavar="S",
        help=f"how long to wait for an image (default {DEFAULT_JOB_TIMEOUT:g})")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = ContractOptions(
        conn_id=args.conn_id,
        spend_up_to=args.spend_up_to,
        history_wait=args.history_wait,
        job_timeout=args.job_timeout,
        profile_out=args.profile_out,
    )
    from airflow_provider_segmind.hooks.segmind import SegmindHook

    hook = SegmindHook(options.conn_id)
    try:
        check = ContractCheck(hook, options)
    except SegmindError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 2
    except Exception as err:  # a missing connection: Airflow's own error
        print(f"error: the connection {options.conn_id!r} could not be read: {redact(str(err))}", file=sys.stderr)
        return 2
    settings = check.settings
    print(
        f"Segmind contract check of connection {options.conn_id!r}: API {settings.base_url}, "
        f"history {settings.history_url}, catalogue {settings.catalogue_url}"
    )
    if options.spend_up_to is None:
        print(
            "Not spending: without --spend-up-to USD only the free checks run (credits, the model catalogue, "
            f"an unknown id, the history). The paid ones make at most {MAX_PAID_GENERATIONS} SD3 Large images, "
            f"~${SD3_TXT2IMG_PRICE_USD} each."
        )
    try:
        report = check.run()
    except SegmindError as err:
        print(f"error: {check._redacted(str(err))}", file=sys.stderr)
        return 2
    finally:
        hook.close()
    print()
    print(check.table(report))
    print()
    shown = json.dumps(report.profile["emulator"], sort_keys=False)
    print(f"Emulator settings that answer like this account: {shown}")
    if options.profile_out is not None:
        options.profile_out.parent.mkdir(parents=True, exist_ok=True)
        options.profile_out.write_text(json.dumps(report.profile, indent=2) + "\n", encoding="utf-8")
        print(
            f"Profile written to {options.profile_out}: "
            f"python -m airflow_provider_segmind.emulator --profile {options.profile_out}"
        )
    return report.exit_code
