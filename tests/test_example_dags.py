"""The example DAGs parse anywhere: no connection, no network, no import error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[1] / "example_dags"
EXPECTED = {"example_segmind_marketing_assets", "example_segmind_sensor", "example_segmind_asset_consumer"}


@pytest.fixture
def dagbag(monkeypatch: pytest.MonkeyPatch):
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3.3+
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 3.1/3.2

    for name in list(os.environ):
        if name.startswith("AIRFLOW_CONN_"):
            monkeypatch.delenv(name)
    return DagBag(dag_folder=str(DAGS))  # examples are off by config (tests/airflow_env.py)


def test_example_dags_parse_without_connections(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == EXPECTED


def test_marketing_dag_shape(dagbag) -> None:
    dag = dagbag.dags["example_segmind_marketing_assets"]
    assert {t.task_id for t in dag.tasks} == {"load_prompts", "check_credits", "generate", "persist", "contact_sheet"}
    generate = dag.get_task("generate")
    assert generate.partial_kwargs["deferrable"] is True
    assert generate.partial_kwargs["pool"] == "segmind"
    assert dag.get_task("persist").upstream_task_ids == {"generate"}
    assert dag.get_task("generate").upstream_task_ids == {"load_prompts", "check_credits"}
