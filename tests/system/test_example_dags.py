"""The example DAGs parse anywhere: no connection, no network, no import error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "example_dags"
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


def test_mapped_example_tasks_name_their_map_indexes(dagbag) -> None:
    """Issue 24 item 9: every mapped task of the examples has a ``map_index_template``, and it renders
    with the DAG's own (strict) template environment. The runs under ``dag.test()`` that read
    ``rendered_map_index`` back are in tests/system/test_example_marketing_dag.py,
    tests/system/test_example_product_photos_dag.py and tests/system/test_example_review_dag.py."""
    from types import SimpleNamespace

    def render(dag_id: str, task_id: str, **context: object) -> str:
        dag = dagbag.dags[dag_id]
        template = dag.get_task(task_id).map_index_template
        assert template, f"{dag_id}.{task_id} has no map_index_template"
        return str(dag.get_template_env().from_string(template).render(**context))

    mapped = {
        (dag_id, task.task_id)
        for dag_id, dag in dagbag.dags.items()
        for task in dag.tasks
        if type(task).__name__ == "MappedOperator" or task.get_closest_mapped_task_group() is not None
    }
    assert mapped == {
        ("example_segmind_marketing_assets", "render.generate"),
        ("example_segmind_marketing_assets", "render.persist"),
        ("example_segmind_product_photos", "variants"),
        ("example_segmind_review_and_publish", "generate"),
    }
    long_prompt = "a lemon on a linen tablecloth, product shot, soft light, shallow depth of field, 50 mm"
    assert (
        render(
            "example_segmind_marketing_assets",
            "render.generate",
            ti=SimpleNamespace(task=SimpleNamespace(prompt=long_prompt)),
        )
        == long_prompt[:57].rsplit(" ", 1)[0] + "..."
    )
    assert (
        render(
            "example_segmind_marketing_assets",
            "render.persist",
            ti=SimpleNamespace(task=SimpleNamespace(results={"params": {"prompt": "a bicycle against a yellow wall"}})),
        )
        == "a bicycle against a yellow wall"
    )
    empty = SimpleNamespace(task=SimpleNamespace(results=None))
    assert render("example_segmind_marketing_assets", "render.persist", ti=empty) == ""
    assert (
        render(
            "example_segmind_product_photos",
            "variants",
            ti=SimpleNamespace(task=SimpleNamespace(image="s3://bucket/product-photos/red-mug.png"), map_index=3),
        )
        == "red-mug.png, variant 2"
    )
    assert (
        render(
            "example_segmind_review_and_publish",
            "generate",
            ti=SimpleNamespace(task=SimpleNamespace(prompt="A running shoe on wet asphalt, dusk"), map_index=4),
            params={"variants": 3},
        )
        == "A running shoe on wet asphalt, dusk, variant 2"
    )
