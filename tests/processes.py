"""Process-group helpers shared by the test harnesses that start servers and Airflow processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still alive (a group we may not signal counts as alive)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen[Any], *, term_wait: float) -> None:
    """Stop a process started with ``start_new_session=True`` and its group: TERM, wait, then KILL.

    For harnesses whose leftovers are a defect to clean up (the browser, the integration cluster);
    the soak's stop never KILLs, on purpose, so its audit can see what a TERM left behind.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=term_wait)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
