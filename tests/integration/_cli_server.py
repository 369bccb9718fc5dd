"""Run ``airflow`` CLI commands for a test cluster in one long-lived process.

Why not one ``airflow`` process per command, as a user types them: each one imports Airflow and
its providers again, about 6 CPU-seconds on this machine, and the real-Airflow scenarios and
benchmark 1c issue about 40 of them per CI run (``pools set``, ``dags unpause``, ``dags
trigger``): minutes of a 2-core CI spent on imports. Here the same commands run through the same
parser and functions (``airflow.__main__.main``'s steps, minus argcomplete), once per line.

Protocol: one JSON list of arguments per line on stdin; one JSON object per line on the file
descriptor that was stdout at start (``rc``, ``stdout``, ``stderr``). Everything else the process
prints (Airflow's logs) goes to its stderr, which the cluster sends to a log file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback


def main() -> None:
    """Serve commands until stdin closes."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray writes to fd 1 (log handlers, C code) must not corrupt the replies

    from airflow import configuration
    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    wrote_config = False
    for line in sys.stdin:
        argv = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        rc = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                args = parser.parse_args(argv)
                if args.subcommand not in ("lazy_loaded", "version") and not wrote_config:
                    # As airflow.__main__.main does before every command but these two.
                    write = getattr(configuration, "write_default_airflow_configuration_if_needed", None)
                    if write is not None:
                        write()
                    wrote_config = True
                args.func(args)
            except SystemExit as exit_:
                code = exit_.code
                rc = code if isinstance(code, int) else (0 if code is None else 1)
                if not isinstance(code, int) and code is not None:
                    print(code, file=sys.stderr)
            except BaseException:  # reported to the caller, who raises
                traceback.print_exc()
                rc = 1
        replies.write(json.dumps({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")


if __name__ == "__main__":
    main()
