"""Pytest plugin (``-p tests.xdist_lanes``): how ``make test`` splits the suites over two processes.

Most tests wait on real servers and real time, so pytest-xdist's three processes (``make test``)
more than halve the wall time on a 2-core machine. Two rules make that safe and short:

- **Lanes for real Airflow processes.** The suites that start a whole Airflow (scheduler, triggerer,
  API server, dag processor) or the fault-injection soak each keep a core busy for minutes, and each
  has a time bound. Each lane is one xdist scope, so its suites run one after the other in one
  process. There are two lanes, so at most two Airflows run at once, and with three processes one
  is left for the quick files from the start.
- **Longest first.** The lanes are collected first (``--no-loadscope-reorder`` keeps collection
  order), so they start at once instead of after the quick files, which then fill in around them.

Every other file is its own scope (``--dist loadfile``'s rule), so module fixtures start once. Without
xdist (``PYTEST_JOBS=0``) only the collection order changes.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Test files (path prefixes from the repository root, as in node ids) that start real Airflow
#: processes, by lane; the first matching prefix wins. Each lane's suites add up to a few minutes.
LANES: tuple[tuple[str, str], ...] = (
    ("tests/integration/test_real_airflow.py", "real Airflow 1"),
    ("tests/soak/test_soak.py", "real Airflow 1"),
    ("tests/integration/", "real Airflow 2"),
    ("tests/cluster/", "real Airflow 2"),
)
LANE_NAMES = frozenset(name for _, name in LANES)


def lane_of(nodeid: str) -> str:
    """The xdist scope of a test: its lane, or its own file."""
    path = nodeid.split("::", 1)[0]
    return next((name for prefix, name in LANES if path.startswith(prefix)), path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the lanes first, in lane order (a stable sort: every other test keeps its order)."""
    order = sorted(LANE_NAMES)
    items.sort(key=lambda item: order.index(lane) if (lane := lane_of(item.nodeid)) in LANE_NAMES else len(order))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """A file-scoped scheduler whose heavy files form one scope (see the module docstring)."""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid)

    return LaneScheduling(config, log)
