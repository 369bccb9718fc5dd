"""The example DAGs parse anywhere: no connection, no network, no import error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[1] / "example_dags"
EXPECTED = {
    "example_segmind_marketing_assets",
    "example_segmind_sensor",
    "example_segmind_asset_consumer",
    "example_segmind_product_photos",
    "example_segmind_review_and_publish",
}


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
    assert {t.task_id for t in dag.tasks} == {
        "load_prompts",
        "check_credits",
        "render.generate",
        "render.persist",
        "contact_sheet",
        "batch_succeeded",
    }
    generate = dag.get_task("render.generate")
    assert generate.deferrable is True
    assert generate.pool == "segmind"
    # One chain per prompt: generate and persist are mapped together, through their task group.
    group = dag.task_group_dict["render"]
    assert type(group).__name__ == "MappedTaskGroup"
    assert "render.generate" in dag.get_task("render.persist").upstream_task_ids
    assert {"load_prompts", "check_credits"} <= generate.upstream_task_ids
    # The contact sheet shows whatever was stored; the run still fails if any prompt failed.
    assert dag.get_task("contact_sheet").trigger_rule == "all_done"
    watcher = dag.get_task("batch_succeeded")
    assert watcher.trigger_rule == "one_failed"
    # A failed generate leaves its persist upstream_failed, which one_failed counts too.
    assert {"render.persist", "contact_sheet"} <= watcher.upstream_task_ids
