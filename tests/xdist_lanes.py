"""Pytest plugin (``-p tests.xdist_lanes``): how ``make test`` splits the suites over two processes.

Most tests wait on real servers and real time, so pytest-xdist's two processes nearly halve the
wall time on a 2-core machine. Two rules make that safe and short:

- **One lane for real Airflow processes.** The suites that start a whole Airflow (``tests/integration``:
  scheduler, triggerer, API server, dag processor) or the fault-injection soak each keep a core busy
  for minutes, and each has a time bound. They share one xdist scope, so they run one after the other
  in one process while the other process runs everything else; two of them at once on two cores is
  what made their bounds flaky.
- **Longest first.** That lane is collected first (``--no-loadscope-reorder`` keeps collection order),
  so it starts at once instead of after the quick files.

Every other file is its own scope (``--dist loadfile``'s rule), so module fixtures start once. Without
xdist (``PYTEST_JOBS=0``) only the collection order changes.
"""

from __future__ import annotations

from typing import Any

import pytest

#: Test files (paths from the repository root, as in node ids) that start real Airflow processes.
HEAVY_PREFIXES = ("tests/integration/", "tests/soak/test_soak.py", "tests/cluster/")
HEAVY_LANE = "real Airflow processes"


def lane_of(nodeid: str) -> str:
    """The xdist scope of a test: the heavy lane, or its own file."""
    path = nodeid.split("::", 1)[0]
    return HEAVY_LANE if path.startswith(HEAVY_PREFIXES) else path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the heavy lane first (a stable sort: every other test keeps its order)."""
    items.sort(key=lambda item: lane_of(item.nodeid) != HEAVY_LANE)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """A file-scoped scheduler whose heavy files form one scope (see the module docstring)."""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid)

    return LaneScheduling(config, log)
