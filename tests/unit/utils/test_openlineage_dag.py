"""OpenLineage in a real ``dag.test()`` run: the provider's listener, its file transport, our facets.

The DAG generates on the emulator (loopback) and stores into moto's S3 server (loopback); the run
happens in a child process whose environment turns OpenLineage on with the file transport
(``AIRFLOW__OPENLINEAGE__TRANSPORT``), as a deployment would. The COMPLETE events must name
exactly the S3 objects written, link each to the Segmind output it holds, and carry the request's
facets; the facets must validate against the JSON schemas the documentation publishes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.hooks.segmind import SegmindHook
from tests.support.media import photo
from tests.support.s3 import S3Env
from tests.unit.transfers.test_segmind_to_s3_dag import _BROKEN

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "docs" / "schemas"
DAG_ID = "segmind_lineage_dag_test"
PHOTO_KEY = "photos/shoe.png"
DAG_SOURCE = """
import os
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_segmind.operators.segmind import SegmindImageToImageOperator, SegmindTextToImageOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

BUCKET = os.environ.get("SEGMIND_LINEAGE_TEST_BUCKET", "segmind-lineage-unset")
FAST_POLLS = {"initial_delay": 0.02, "queued_interval": 0.05, "interval": 0.05, "max_interval": 0.2}

with DAG(dag_id="DAG_ID_HERE", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
    # Deferrable: submit, defer, resume (end_from_trigger stays off while OpenLineage is on).
    images = SegmindTextToImageOperator.partial(
        task_id="generate", deferrable=True, poll_schedule=FAST_POLLS
    ).expand(prompt=["a red fox in fresh snow", "a blue whale at dusk"])
    variant = SegmindImageToImageOperator(
        task_id="variant",
        prompt="the same shoe on a beach",
        image=f"s3://{BUCKET}/PHOTO_KEY_HERE",
        strength=0.6,
        deferrable=False,
        poll_schedule=FAST_POLLS,
    )
    SegmindToS3Operator(task_id="persist", results=images.output, s3_bucket=BUCKET, allow_insecure_loopback=True)
    SegmindToS3Operator(
        task_id="persist_variant", results=variant.output, s3_bucket=BUCKET, s3_key="variants/",
        allow_insecure_loopback=True,
    )
""".replace("DAG_ID_HERE", DAG_ID).replace("PHOTO_KEY_HERE", PHOTO_KEY)


def _events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _completes(events: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == f"{DAG_ID}.{task_id}"]


def _names(datasets: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["namespace"], d["name"]) for d in datasets}


def _check_schema(facet: dict[str, Any]) -> None:
    """A custom facet validates against the JSON schema its ``_schemaURL`` names (docs/schemas/).

    Its own part of the schema, that is: the ``allOf``'s OpenLineage base facet (``_producer``,
    ``_schemaURL``) is a remote reference, checked here by hand instead of fetched.
    """
    url = facet["_schemaURL"]
    assert url.startswith("https://segmind.github.io/airflow-provider-segmind/schemas/")
    address, _, pointer = url.partition("#")
    file_name = address.rsplit("/", 1)[1]
    schema = json.loads((SCHEMAS / file_name).read_text())
    base, own = schema["$defs"][pointer.rsplit("/", 1)[1]]["allOf"]
    assert base["$ref"].startswith("https://openlineage.io/spec/")
    assert isinstance(facet["_producer"], str)
    jsonschema.validate(facet, own)


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.usefixtures("airflow_db")
def test_dag_test_emits_the_objects_written(
    emu: SegmindEmulator,
    s3: S3Env,
    dags_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key=PHOTO_KEY, Body=photo((200, 30, 30)), ContentType="image/png")
    path = dags_folder / f"{DAG_ID}.py"
    path.write_text(DAG_SOURCE)
    # Other tests' dag.test() parse the shared DAGs folder: leave no DAG (and none of its assets) behind.
    request.addfinalizer(lambda: path.unlink(missing_ok=True))
    log = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "SEGMIND_LINEAGE_TEST_BUCKET": s3.bucket,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(log), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "segmind-tests",
        # Emit in a thread, not a forked child: the run ends only after every event is written.
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.run_dag", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    events = _events(log)
    assert emu.api_key not in log.read_text()

    written = set(s3.keys()) - {PHOTO_KEY}
    images = {key for key in written if not key.endswith(".manifest.json")}
    assert len(images) == 3

    # The generation tasks: one COMPLETE per mapped instance, with the request's facets.
    generated = _completes(events, "generate")
    assert len(generated) == 2
    segmind_outputs: dict[str, tuple[str, str]] = {}
    for event in generated:
        run_facet = event["run"]["facets"]["segmind"]
        job = emu.job(run_facet["requestId"])
        assert run_facet["model"] == "stable-diffusion-3-large-txt2img"
        assert run_facet["seed"] == job["params"]["seed"]
        # dag.test() resumes a deferred task with the event only, dropping the defer's kwargs: the
        # filled seed comes back in the trigger's event (issue 24 item 8).
        assert run_facet["seedFilled"] is True
        result = SegmindHook().get_result(run_facet["requestId"])
        assert run_facet["cost"] == result.metrics["cost"] > 0
        assert event["job"]["facets"]["segmind"]["model"] == "stable-diffusion-3-large-txt2img"
        _check_schema(run_facet)
        _check_schema(event["job"]["facets"]["segmind"])
        assert event["inputs"] == []  # text-to-image: no input dataset
        (output,) = event["outputs"]
        url = urlsplit(result.output_urls[0])
        assert (output["namespace"], output["name"]) == (f"{url.scheme}://{url.netloc}", url.path.lstrip("/"))
        segmind_outputs[run_facet["requestId"]] = (output["namespace"], output["name"])

    # The transfer: exactly the image objects it wrote, each linked to the Segmind output it holds.
    (persist,) = _completes(events, "persist")
    persisted = {name for namespace, name in _names(persist["outputs"])}
    assert {namespace for namespace, _ in _names(persist["outputs"])} == {f"s3://{s3.bucket}"}
    assert persisted == {key for key in images if not key.startswith("variants/")}
    assert _names(persist["inputs"]) == set(segmind_outputs.values())  # the generate tasks' outputs
    for output in persist["outputs"]:
        facet = output["facets"]["segmind"]
        _check_schema(facet)
        manifest = json.loads(s3.get(output["name"] + ".manifest.json")[0])
        assert facet["requestId"] == manifest["request_id"]
        assert facet["outputIndex"] == manifest["output_index"]
        assert facet["sha256"] == manifest["sha256"] == s3.head(output["name"])["Metadata"]["sha256"]
        assert (facet["sourceNamespace"], facet["sourceName"]) == segmind_outputs[facet["requestId"]]
        assert facet["manifestKey"] == output["name"] + ".manifest.json"

    # Image-to-image: the product photo in S3 is the input, its variant the output of the next task.
    (variant,) = _completes(events, "variant")
    assert _names(variant["inputs"]) == {(f"s3://{s3.bucket}", PHOTO_KEY)}
    variant_facet = variant["run"]["facets"]["segmind"]
    assert variant_facet["model"] == "stable-diffusion-3-large-img2img"
    assert variant_facet["seedFilled"] is True
    assert variant_facet["seed"] == emu.job(variant_facet["requestId"])["params"]["seed"]
    (variant_output,) = variant["outputs"]
    (persist_variant,) = _completes(events, "persist_variant")
    assert _names(persist_variant["inputs"]) == {(variant_output["namespace"], variant_output["name"])}
    (stored_variant,) = persist_variant["outputs"]
    assert stored_variant["name"].startswith("variants/")

    # Everything written is accounted for: each image an output dataset, each manifest named in its facet.
    named = persisted | {stored_variant["name"]}
    assert written == named | {name + ".manifest.json" for name in named}
