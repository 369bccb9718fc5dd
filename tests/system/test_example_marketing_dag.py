"""The marketing example DAG itself through ``dag.test()``: one blocked prompt must not cost the others.

The DAG maps generate -> persist per prompt (a mapped task group), so a prompt that fails for good
stops only its own chain: the other prompts' images still land in S3 with their manifests, the
contact sheet is written from what was stored, and the run ends failed (``batch_succeeded``) so the
missing image is noticed. Real emulator, real S3 endpoint (moto), real task runner.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_segmind.emulator.server import SegmindEmulator
from tests.support.s3 import S3Env
from tests.unit.transfers.test_segmind_to_s3_dag import _BROKEN, _asset_events, _asset_rows, _serialize_if_needed

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_segmind_marketing_assets.py"
DAG_ID = "example_segmind_marketing_assets"
PROMPTS = [
    {"prompt": "a lemon on a linen tablecloth, product shot", "aspect_ratio": "1:1"},
    {"prompt": "__unsafe__ something the safety filter blocks"},
    {"prompt": "a bicycle against a yellow wall", "negative_prompt": "people"},
]


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _task_states(dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
    )
    with create_session() as session:
        return {(task_id, map_index): str(state) for task_id, map_index, state in session.execute(query)}


def _map_index_labels(dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
    """Each task instance's ``rendered_map_index`` (its ``map_index_template`` as the task runner rendered it)."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    with create_session() as session:
        return {(ti.task_id, ti.map_index): ti.rendered_map_index for ti in session.scalars(query)}


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.usefixtures("airflow_db")
def test_a_blocked_prompt_does_not_hold_back_the_others(
    emu: SegmindEmulator, s3: S3Env, dags_folder: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("SEGMIND_EXAMPLE_BUCKET", s3.bucket)
    monkeypatch.setenv("SEGMIND_EXAMPLE_POOL", "default_pool")
    monkeypatch.setenv("SEGMIND_EXAMPLE_SCHEDULE", "none")
    monkeypatch.setenv("SEGMIND_ALLOW_INSECURE_LOOPBACK", "1")
    path = dags_folder / EXAMPLE.name
    shutil.copy(EXAMPLE, path)
    # Other tests' dag.test() parse the shared DAGs folder, where this DAG would declare its assets in
    # their bucket (both examples read SEGMIND_EXAMPLE_BUCKET): leave nothing behind.
    request.addfinalizer(lambda: path.unlink(missing_ok=True))
    shutil.copytree(EXAMPLE.parent / "prompts", dags_folder / "prompts", dirs_exist_ok=True)
    dag = _load(path)
    _serialize_if_needed(dag, dags_folder)

    run = dag.test(run_conf={"prompts": PROMPTS})

    states = _task_states(DAG_ID, run.run_id)
    assert run.state == "failed"  # a prompt produced no image: the run says so
    assert states[("render.generate", 1)] == "failed"
    assert states[("render.persist", 1)] == "upstream_failed"
    for index in (0, 2):
        assert states[("render.generate", index)] == "success"
        assert states[("render.persist", index)] == "success"
    assert states[("contact_sheet", -1)] == "success"
    assert states[("batch_succeeded", -1)] == "failed"
    # Issue 24 item 9: the grid names each mapped instance by its prompt (map_index_template), the
    # failed one too; its persist never ran, so it has no name (3.3 shows its index then).
    labels = _map_index_labels(DAG_ID, run.run_id)
    for index, entry in enumerate(PROMPTS):  # all shorter than the template's 60 characters
        assert labels[("render.generate", index)] == entry["prompt"]
    for index in (0, 2):
        assert labels[("render.persist", index)] == PROMPTS[index]["prompt"]
    assert labels[("render.persist", 1)] in (None, "1")

    keys = s3.keys()
    images = sorted(key for key in keys if key.endswith(".jpeg"))
    assert len(images) == 2
    assert all(key + ".manifest.json" in keys for key in images)
    manifests = [json.loads(s3.get(key + ".manifest.json")[0]) for key in images]
    assert {m["prompt"] for m in manifests} == {PROMPTS[0]["prompt"], PROMPTS[2]["prompt"]}
    batch = [key for key in keys if key.endswith("batch-manifest.json")]
    sheets = [key for key in keys if key.endswith("contact-sheet.html")]
    assert len(batch) == 1
    assert len(sheets) == 1
    assert json.loads(s3.get(batch[0])[0])["images"] == 2
    # One paid submission per prompt: the blocked one is not retried (a retry cannot unblock it).
    assert emu.stats()["submissions"] == len(PROMPTS)

    # One asset for the DAG's images (the one the consumer example schedules on) and one event per
    # batch, from the contact sheet, carrying every stored image's key, hash and manifest; no asset
    # row per image.
    asset_uri = f"s3://{s3.bucket}/segmind/{DAG_ID}"
    assert _asset_rows(s3.bucket, DAG_ID) == {asset_uri}
    ((task, index, uri, extra),) = _asset_events(DAG_ID, run.run_id)
    assert (task, index, uri) == ("contact_sheet", -1, asset_uri)
    assert (extra["bucket"], extra["count"], extra["truncated"]) == (s3.bucket, 2, False)
    assert sorted(item["key"] for item in extra["objects"]) == images
    for item in extra["objects"]:
        assert item["manifest"] == item["key"] + ".manifest.json"
        assert item["sha256"] == s3.head(item["key"])["Metadata"]["sha256"]
    assert extra["batch_manifest"] == f"s3://{s3.bucket}/{batch[0]}"
