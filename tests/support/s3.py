"""Helpers for the S3 transfer tests: real Segmind results, bucket inspection, a task context.

The only stand-in is the task instance in a unit test's context (ids and XCom pushes), for which
there is no Airflow runtime outside ``dag.test()``; the asset-event accessor is Airflow's real one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL, SegmindJobStatus

REGION = "us-east-1"
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass
class S3Env:
    """A fresh bucket on the moto server, plus a direct boto3 client to inspect it."""

    endpoint: str
    bucket: str
    client: Any

    def keys(self) -> list[str]:
        answer = self.client.list_objects_v2(Bucket=self.bucket)
        return sorted(obj["Key"] for obj in answer.get("Contents", []))

    def uploads(self) -> list[dict[str, Any]]:
        return list(self.client.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def versions(self, key: str) -> list[dict[str, Any]]:
        answer = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
        return [v for v in answer.get("Versions", []) if v["Key"] == key]

    def get(self, key: str) -> tuple[bytes, dict[str, Any]]:
        answer = self.client.get_object(Bucket=self.bucket, Key=key)
        return answer["Body"].read(), answer

    def head(self, key: str) -> dict[str, Any]:
        return dict(self.client.head_object(Bucket=self.bucket, Key=key))

    def assert_empty(self) -> None:
        """Nothing written: no object, no version, no multipart upload left behind."""
        assert self.keys() == []
        versions = self.client.list_object_versions(Bucket=self.bucket)
        assert versions.get("Versions", []) == []
        assert versions.get("DeleteMarkers", []) == []
        assert self.uploads() == []


def generate(emu: SegmindEmulator, **params: Any) -> dict[str, Any]:
    """Run one real job on the emulator and return the summary a Segmind operator returns.

    Same shape as the generation operators' XCom result: request_id, model, status, output_urls,
    images, seed, metrics, params, output_inline (no image bytes).
    """
    hook = SegmindHook("segmind_default")
    body = {"prompt": "a lighthouse at dawn", **params}
    request_id = hook.submit(SD3_LARGE_MODEL, body).request_id
    deadline = time.monotonic() + 20
    while hook.get_status(request_id).status is not SegmindJobStatus.COMPLETED:
        assert time.monotonic() < deadline, "the emulator job did not complete"
        time.sleep(0.01)
    result = hook.get_result(request_id)
    hook.close()
    return {
        "request_id": request_id,
        "model": SD3_LARGE_MODEL,
        "status": "COMPLETED",
        "output_url": result.output_urls[0] if result.output_urls else None,
        "output_urls": list(result.output_urls),
        "output_inline": result.base64_image is not None,
        "images": [dict(image) for image in result.images],
        "seed": result.seed,
        "metrics": dict(result.metrics),
        "params": body,
    }


@dataclass
class FakeTI:
    """The task-instance fields the transfer reads (ids), and XCom pushes recorded."""

    dag_id: str = "segmind_dag"
    run_id: str = "manual__2026-01-01T00:00:00+00:00"
    task_id: str = "persist"
    map_index: int = -1
    try_number: int = 1
    xcom: dict[str, Any] = field(default_factory=dict)

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = json.loads(json.dumps(value))


def make_context(**ti_fields: Any) -> dict[str, Any]:
    """A task context with a stand-in TI and Airflow's real outlet-event accessors."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    ti = FakeTI(**ti_fields)
    return {"ti": ti, "run_id": ti.run_id, "outlet_events": OutletEventAccessors()}


def asset_extra(context: dict[str, Any], asset: Any) -> dict[str, Any]:
    """The ``extra`` the task gave the event Airflow emits on its ``Asset`` outlet."""
    return dict(context["outlet_events"][asset].extra)


def alias_events(context: dict[str, Any], alias_name: str) -> list[Any]:
    from airflow.sdk import AssetAlias

    return list(context["outlet_events"][AssetAlias(alias_name)].asset_alias_events)
