"""Process-group helpers shared by the test harnesses that start servers and Airflow processes."""

from __future__ import annotations

import os


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still alive (a group we may not signal counts as alive)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
