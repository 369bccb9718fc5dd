"""Pytest plugin (``-p tests.xdist_lanes``): how ``make test`` splits the suites over two processes.

Most tests wait on real servers and real time, so pytest-xdist's three processes (``make test``)
more than halve the wall time on a 2-core machine. Two rules make that safe and short:

- **Lanes for real Airflow processes.** The suites that start a whole Airflow (scheduler, triggerer,
  API server, dag processor) or the fault-injection soak each keep a core busy for minutes, and each
  has a time bound. Each lane is one xdist scope, so its suites run one after the other in one
  process. There are two lanes, so at most two Airflows run at once, and with three processes one
  is left for the quick files from the start.
- **Longest first.** The lanes are collected first (``--no-loadscope-reorder`` keeps collection
  order), so they start at once instead of after the quick files, then the files that mostly wait
  (``WAITERS``); the quick files fill in around them.

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
#: Files that mostly wait (the exactly-once matrices sleep through history lags: about 110 s each
#: for 2 CPU-seconds; the dag.test files poll), started right after the lanes so their waiting
#: overlaps other files' work instead of ending the run on an idle machine.
WAITERS: tuple[str, ...] = (
    "tests/exactly_once/test_matrix_",
    "tests/unit/operators/test_segmind_dag_test.py",
    "tests/unit/operators/test_segmind.py",
    "tests/unit/operators/test_image_input.py",
    "tests/unit/operators/test_segmind_real_answers.py",
    "tests/unit/operators/test_reconcile.py",
)


def lane_of(nodeid: str) -> str:
    """The xdist scope of a test: its lane, or its own file."""
    path = nodeid.split("::", 1)[0]
    return next((name for prefix, name in LANES if path.startswith(prefix)), path)


def _rank(nodeid: str, lanes: list[str]) -> int:
    lane = lane_of(nodeid)
    if lane in LANE_NAMES:
        return lanes.index(lane)
    return len(lanes) if lane.startswith(WAITERS) else len(lanes) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the lanes first, in lane order, then the waiters (a stable sort: the rest keeps its order)."""
    lanes = sorted(LANE_NAMES)
    items.sort(key=lambda item: _rank(item.nodeid, lanes))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """A file-scoped scheduler whose heavy files form one scope (see the module docstring)."""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid)

    return LaneScheduling(config, log)
