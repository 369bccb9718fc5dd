"""Run ``airflow`` CLI commands for a test cluster in one long-lived process.

Why not one ``airflow`` process per command, as a user types them: each one imports Airflow and
its providers again, about 6 CPU-seconds on this machine, and the real-Airflow scenarios and
benchmark 1c issue about 40 of them per CI run (``pools set``, ``dags unpause``, ``dags
trigger``): minutes of a 2-core CI spent on imports. Here each line runs ``airflow.__main__.main``
itself, as the ``airflow`` script does (its parser is cached), in a process that imported Airflow once.

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
    """Serve commands until stdin closes, each through Airflow's own ``airflow.__main__.main``."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray writes to fd 1 (log handlers, C code) must not corrupt the replies

    from airflow.__main__ import main as airflow_main

    for line in sys.stdin:
        out, err = io.StringIO(), io.StringIO()
        rc = 0
        sys.argv = ["airflow", *json.loads(line)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                airflow_main()
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
