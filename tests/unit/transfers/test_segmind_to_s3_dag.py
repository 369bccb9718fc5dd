"""Generate-then-persist through Airflow itself: ``dag.test()`` with the real operators, emulator and moto.

The DAG file is written into the session's DAGS_FOLDER (``dag.test()`` serializes the DAG from its
file) and runs: a mapped SegmindTextToImageOperator, a mapped SegmindToS3Operator over its
``.output`` (one result each), a single SegmindToS3Operator over the whole lazy sequence, and one
with a templated bucket. The asset events must land in the metadata database: one per task
instance, on one asset per destination, never one asset per image.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.protocol.params import SD3_SIZES
from tests.support.s3 import S3Env

DAG_ID = "segmind_generate_then_persist_s3"
DAG_SOURCE = """
import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

BUCKET = os.environ.get("SEGMIND_S3_TEST_BUCKET", "my-bucket")
FAST_POLLS = {"initial_delay": 0.02, "queued_interval": 0.05, "interval": 0.05, "max_interval": 0.2}

with DAG(
    dag_id="DAG_ID_HERE", schedule=None, start_date=datetime(2026, 1, 1), catchup=False, params={"bucket": BUCKET}
) as dag:
    images = SegmindTextToImageOperator.partial(
        task_id="generate", aspect_ratio="16:9", deferrable=False, poll_schedule=FAST_POLLS
    ).expand(prompt=["a red fox in fresh snow", "a blue whale at dusk", "a green parrot in the rain"])

    # One persist task per generated image (map index in the key)...
    SegmindToS3Operator.partial(
        task_id="persist_each", s3_bucket=BUCKET, allow_insecure_loopback=True
    ).expand(results=images.output)

    # ...or one task for the whole batch (the mapped output arrives as a lazy sequence).
    SegmindToS3Operator(
        task_id="persist_all",
        results=images.output,
        s3_bucket=BUCKET,
        s3_key="batch/{{ dag.dag_id }}/{run_id}/{request_id}-{index}.{ext}",  # Jinja, then placeholders
        allow_insecure_loopback=True,
    )

    # A bucket known only at run time: one static asset for the task.
    SegmindToS3Operator(
        task_id="persist_templated",
        results=images.output,
        s3_bucket="{{ params.bucket }}",
        s3_key="templated/",
        allow_insecure_loopback=True,
    )

    # Through a named alias: the event lands on the rendered destination's asset.
    SegmindToS3Operator(
        task_id="persist_aliased",
        results=images.output,
        s3_bucket="{{ params.bucket }}",
        s3_key="aliased/",
        asset_alias="segmind-test-aliased",
        allow_insecure_loopback=True,
    )
""".replace("DAG_ID_HERE", DAG_ID)
PROMPTS = 3


def _load_dag(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def _asset_events(dag_id: str, run_id: str) -> list[tuple[str, int, str, dict[str, Any]]]:
    """(task id, map index, asset URI, extra) of every asset event the run emitted, from the metadata DB."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = (
        select(AssetEvent.source_task_id, AssetEvent.source_map_index, AssetModel.uri, AssetEvent.extra)
        .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        .order_by(AssetEvent.source_task_id, AssetEvent.source_map_index)
    )
    with create_session() as session:
        return [(task, index, uri, dict(extra or {})) for task, index, uri, extra in session.execute(query)]


def _asset_rows(bucket: str, dag_id: str) -> set[str]:
    """Every asset the metadata DB holds in ``bucket`` (each test has its own) or for ``dag_id``'s tasks."""
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import or_, select

    query = select(AssetModel.uri).where(
        or_(AssetModel.uri.like(f"s3://{bucket}%"), AssetModel.uri.like(f"segmind-s3://{dag_id}/%"))
    )
    with create_session() as session:
        return set(session.scalars(query))


def _objects(extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's objects; a JSON string through an alias on Airflow 3.1 (it hashes alias extras)."""
    objects = extra["objects"]
    if isinstance(objects, str):
        assert tuple(int(part) for part in version("apache-airflow-core").split(".")[:2]) < (3, 2)
        objects = json.loads(objects)
    assert isinstance(objects, list)
    return objects


def _execution_api_rejects_the_task_runner() -> str | None:
    """Why ``dag.test()`` cannot start any task here, if it cannot (as in operators/test_segmind_dag_test.py).

    Airflow 3.1's task SDK client sends Execution API bodies without a Content-Type header, which
    FastAPI >= 0.132 refuses (HTTP 422): the fix is the ``fastapi<0.132`` constraint, not code.
    """
    from airflow.sdk.api.client import Client

    if "content-type" in inspect.getsource(Client.request):
        return None
    if tuple(int(part) for part in version("fastapi").split(".")[:2]) >= (0, 132):
        return f"Airflow {version('apache-airflow')} cannot start tasks with FastAPI {version('fastapi')}: pin <0.132"
    return None


def _serialize_if_needed(dag: Any, path: Path) -> None:
    """Airflow 3.3's ``dag.test()`` serializes the DAG itself; 3.1's expects it in the database already."""
    from airflow.sdk import DAG

    if "sync_bag_to_db" in inspect.getsource(DAG.test):
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    sync_bag_to_db(DagBag(dag_folder=str(path), include_examples=False), "dags-folder", None)


_BROKEN = _execution_api_rejects_the_task_runner()


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.usefixtures("airflow_db")
def test_generate_then_persist_with_dag_test(
    emu: SegmindEmulator, s3: S3Env, dags_folder: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("SEGMIND_S3_TEST_BUCKET", s3.bucket)
    path = dags_folder / f"{DAG_ID}.py"
    path.write_text(DAG_SOURCE)
    request.addfinalizer(lambda: path.unlink(missing_ok=True))  # other tests parse the shared DAGs folder
    dag = _load_dag(path)
    _serialize_if_needed(dag, path)

    run = dag.test()
    assert run.state == "success"

    keys = s3.keys()
    images = [key for key in keys if not key.endswith(".manifest.json")]
    assert len(keys) == 2 * len(images)  # a manifest beside each object
    each = sorted(key for key in images if "/persist_each/" in key)
    batch = sorted(key for key in images if key.startswith("batch/"))
    templated = sorted(key for key in images if key.startswith("templated/"))
    aliased = sorted(key for key in images if key.startswith("aliased/"))
    assert len(each) == len(batch) == len(templated) == len(aliased) == PROMPTS
    assert [key.split("/")[4] for key in each] == ["0", "1", "2"]  # map index in the key: no collision
    assert all(key.startswith(f"segmind/{DAG_ID}/{run.run_id}/persist_each/") for key in each)
    assert all(key.startswith(f"batch/{DAG_ID}/{run.run_id}/") for key in batch)

    prompts = set()
    for key in each + batch + templated + aliased:
        data, obj = s3.get(key)
        assert obj["ContentType"] == "image/jpeg"
        with Image.open(io.BytesIO(data)) as image:
            assert image.size == SD3_SIZES["16:9"]
        manifest = json.loads(s3.get(key + ".manifest.json")[0])
        assert manifest["airflow"]["dag_id"] == DAG_ID
        assert manifest["airflow"]["run_id"] == run.run_id
        prompts.add(manifest["prompt"])
    assert prompts == {"a red fox in fresh snow", "a blue whale at dusk", "a green parrot in the rain"}

    # One asset per destination, none per image: the default layout's, the Jinja key's static part,
    # the templated bucket's task asset, and the alias's rendered destination (created once).
    default_asset = f"s3://{s3.bucket}/segmind/{DAG_ID}"
    batch_asset = f"s3://{s3.bucket}/batch"
    templated_asset = f"segmind-s3://{DAG_ID}/persist_templated"
    aliased_asset = f"s3://{s3.bucket}/aliased/{DAG_ID}"
    assert _asset_rows(s3.bucket, DAG_ID) == {default_asset, batch_asset, templated_asset, aliased_asset}
    events = _asset_events(DAG_ID, run.run_id)
    assert [(task, index, uri) for task, index, uri, _ in events] == [
        ("persist_aliased", -1, aliased_asset),
        ("persist_all", -1, batch_asset),
        ("persist_each", 0, default_asset),
        ("persist_each", 1, default_asset),
        ("persist_each", 2, default_asset),
        ("persist_templated", -1, templated_asset),
    ]
    extras = {(task, index): extra for task, index, _, extra in events}
    for (task, index), keys in {
        ("persist_aliased", -1): aliased,
        ("persist_all", -1): batch,
        ("persist_templated", -1): templated,
        **{("persist_each", i): [key] for i, key in enumerate(each)},
    }.items():
        extra = extras[(task, index)]
        assert (extra["bucket"], extra["count"], extra["truncated"]) == (s3.bucket, len(keys), False)
        objects = _objects(extra)
        assert sorted(item["key"] for item in objects) == keys
        assert all(item["manifest"] == item["key"] + ".manifest.json" for item in objects)
        for item in objects:
            data, obj = s3.get(item["key"])
            assert item["sha256"] == obj["Metadata"]["sha256"]
            assert item["key"].startswith(extra["prefix"])
    assert extras[("persist_all", -1)]["prefix"] == f"batch/{DAG_ID}/{run.run_id}/"
    assert emu.stats()["submissions"] == PROMPTS  # each image generated once, stored three times
    assert all(entry["has_api_key"] is False for entry in emu.requests_log("/media"))
