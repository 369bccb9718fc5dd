"""The lineage methods on their own: datasets named per the OpenLineage naming spec, the facets of a
real run (emulator over loopback, moto's S3 server), the end_from_trigger rule while OpenLineage is
on, and that importing the provider loads nothing of OpenLineage.

The whole ``dag.test()`` run, with the provider's listener and file transport, is in
``test_lineage_dag.py``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.operators.segmind import (
    SegmindImageToImageOperator,
    SegmindRunOperator,
    SegmindTextToImageOperator,
)
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_IMG2IMG_MODEL
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator
from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger, ends_from_trigger
from airflow_provider_segmind.utils.openlineage import image_dataset, output_dataset
from tests.support.media import MediaHost, photo
from tests.support.s3 import S3Env, make_context
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

FAST_POLLS = {"initial_delay": 0.02, "queued_interval": 0.05, "interval": 0.05, "max_interval": 0.2}
LOG = logging.getLogger("test_lineage_facets")


def _pair(dataset: Any) -> tuple[str, str] | None:
    return None if dataset is None else (dataset.namespace, dataset.name)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("s3://photos/products/shoe 1.png", ("s3://photos", "products/shoe 1.png")),
        # Pre-signed: the query (the signature) and user info never reach a lineage backend.
        (
            "https://user:secret@Bucket.s3.amazonaws.com:8443/a/b.png?X-Amz-Signature=abc#frag",
            ("https://bucket.s3.amazonaws.com:8443", "a/b.png"),
        ),
        ("http://[::1]:9000/img.jpeg", ("http://[::1]:9000", "img.jpeg")),
        ("https://images.segmind.com/generations/x.jpeg", ("https://images.segmind.com", "generations/x.jpeg")),
        ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==", None),
        ("data:image/png;base64,iVBORw0KGgo=", None),
        ("s3://bucket-only", None),
        ("ftp://host/file.png", None),
        (None, None),
    ],
)
def test_the_image_input_is_named_by_its_url(image: Any, expected: tuple[str, str] | None) -> None:
    assert _pair(image_dataset(image)) == expected


def test_an_inline_output_is_named_by_its_request() -> None:
    assert _pair(output_dataset(None, "rid-1", 0)) == ("segmind", "requests/rid-1/outputs/0")
    url = "https://images.segmind.com/generations/x.jpeg?token=t"
    assert _pair(output_dataset(url, "rid-1", 0)) == ("https://images.segmind.com", "generations/x.jpeg")


def test_a_run_reports_its_request_seed_cost_and_outputs(emu: SegmindEmulator, s3: S3Env) -> None:
    # A real photo in moto's S3: the operator reads an s3:// input before submitting it.
    s3.client.put_object(Bucket=s3.bucket, Key="shoes/red.png", Body=photo((200, 30, 30)), ContentType="image/png")
    image = f"s3://{s3.bucket}/shoes/red.png"
    op = SegmindImageToImageOperator(
        task_id="variant",
        prompt="the shoe on a beach",
        image=image,
        strength=0.5,
        poll_schedule=FAST_POLLS,
    )
    before = op.get_openlineage_facets_on_complete(None)  # what a FAIL event can say: input and model
    assert [_pair(d) for d in before.inputs] == [(f"s3://{s3.bucket}", "shoes/red.png")]
    assert before.outputs == []
    assert before.run_facets == {}
    assert before.job_facets["segmind"].model == SD3_LARGE_IMG2IMG_MODEL

    summary = op.execute(make_context())
    lineage = op.get_openlineage_facets_on_complete(None)
    facet = lineage.run_facets["segmind"]
    assert (facet.requestId, facet.model) == (summary["request_id"], SD3_LARGE_IMG2IMG_MODEL)
    assert facet.seed == summary["seed"] == emu.job(summary["request_id"])["params"]["seed"]
    assert facet.seedFilled is True
    assert facet.cost == summary["metrics"]["cost"]
    assert [_pair(d) for d in lineage.inputs] == [(f"s3://{s3.bucket}", "shoes/red.png")]
    assert [_pair(d) for d in lineage.outputs] == [_pair(image_dataset(summary["output_url"]))]
    assert facet._schemaURL.endswith("SegmindRunFacet.json#/$defs/SegmindRunFacet")


def test_the_run_operator_reads_image_from_its_inputs(emu: SegmindEmulator, media_host: MediaHost) -> None:
    # The emulator fetches a URL input (loopback only), so the photo comes from a real HTTP server.
    op = SegmindRunOperator(
        task_id="run",
        model=SD3_LARGE_IMG2IMG_MODEL,
        inputs={
            "prompt": "a fox",
            "mode": "image-to-image",
            "image": media_host.url + "?sig=x",
            "strength": 0.4,
        },
        poll_schedule=FAST_POLLS,
    )
    op.execute(make_context())
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [_pair(d) for d in lineage.inputs] == [(media_host.url.rsplit("/", 1)[0], "photo.png")]
    assert len(lineage.outputs) == 1


def test_inline_outputs_link_the_generation_and_the_transfer(emu: SegmindEmulator, s3: S3Env) -> None:
    """An inline (base64) output has no URL: both operators name it by request, so lineage still joins."""
    op = SegmindTextToImageOperator(task_id="gen", prompt="a fox", base64=True, poll_schedule=FAST_POLLS)
    summary = op.execute(make_context())
    assert summary["output_inline"] is True
    generated = op.get_openlineage_facets_on_complete(None)
    expected = ("segmind", f"requests/{summary['request_id']}/outputs/0")
    assert [_pair(d) for d in generated.outputs] == [expected]

    transfer = SegmindToS3Operator(
        task_id="persist", results=summary, s3_bucket=s3.bucket, allow_insecure_loopback=True
    )
    (uri,) = transfer.execute(make_context())
    stored = transfer.get_openlineage_facets_on_complete(None)
    assert [_pair(d) for d in stored.inputs] == [expected]
    (output,) = stored.outputs
    assert f"s3://{s3.bucket}/{output.name}" == uri
    assert output.namespace == f"s3://{s3.bucket}"
    facet = output.facets["segmind"]
    assert (facet.sourceNamespace, facet.sourceName) == expected
    assert facet.sha256 == s3.head(output.name)["Metadata"]["sha256"]
    assert facet.manifestKey == output.name + ".manifest.json"


def test_a_transfer_that_stored_nothing_reports_nothing(s3: S3Env) -> None:
    transfer = SegmindToS3Operator(task_id="persist", results=[], s3_bucket=s3.bucket)
    assert transfer.execute(make_context()) == []
    lineage = transfer.get_openlineage_facets_on_complete(None)
    assert (lineage.inputs, lineage.outputs) == ([], [])


# ---------------------------------------------------------------------------- end_from_trigger


@pytest.fixture
def openlineage_conf(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """OpenLineage's own configuration reads, with their caches cleared before and after the test."""
    from airflow.providers.openlineage import conf

    def clear() -> None:
        for name in dir(conf):
            cache_clear = getattr(getattr(conf, name), "cache_clear", None)
            if callable(cache_clear):
                cache_clear()

    for name in ("AIRFLOW__OPENLINEAGE__TRANSPORT", "AIRFLOW__OPENLINEAGE__DISABLED", "OPENLINEAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    clear()
    yield monkeypatch
    monkeypatch.undo()
    clear()


def _decide(requested: bool | None) -> bool:
    return ends_from_trigger(requested, outlets=[], record_in_variable=False, log=LOG, on_success_callback=None)


def test_openlineage_on_keeps_the_worker_resume(
    openlineage_conf: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert _decide(None) is True  # installed but not configured: OpenLineage is off, nothing changes
    openlineage_conf.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "console"}))
    assert _decide(None) is False
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert _decide(True) is False
    assert "OpenLineage is on" in caplog.text
    openlineage_conf.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "true")
    assert _decide(None) is True


def test_the_operator_defers_without_ending_from_the_trigger(
    emu: SegmindEmulator, openlineage_conf: pytest.MonkeyPatch
) -> None:
    openlineage_conf.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", json.dumps({"type": "console"}))
    op = SegmindTextToImageOperator(
        task_id="gen", prompt="a fox", deferrable=True, request_store="none", poll_schedule=FAST_POLLS
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, SegmindJobTrigger)
    assert trigger.end_from_trigger is False  # the resumed worker runs the listener and our facets


# ---------------------------------------------------------------------------- import cost


def test_importing_the_provider_loads_no_openlineage() -> None:
    """A DAG file pays nothing for lineage: the OpenLineage imports live inside the methods.

    ``import airflow.sdk`` itself loads each installed provider's ``get_provider_info`` (Airflow's
    provider discovery): only what our modules add on top counts.
    """
    probe = (
        "import sys\n"
        "def lineage():\n"
        "    return {m for m in sys.modules if m.startswith(('openlineage', 'airflow.providers.openlineage'))}\n"
        "import airflow.sdk\n"
        "before = lineage()\n"
        "import airflow_provider_segmind.operators.segmind, airflow_provider_segmind.sensors.segmind\n"
        "import airflow_provider_segmind.transfers.segmind_to_s3, airflow_provider_segmind.triggers.segmind\n"
        "print(sorted(lineage() - before), 'openlineage' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[] False"
