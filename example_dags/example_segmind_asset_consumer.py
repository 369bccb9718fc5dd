"""Runs whenever the marketing DAG stores a batch of images: scheduled on its S3 asset.

The marketing DAG emits one event per batch on ``IMAGES`` (one asset for all its images, not one
per image), in the shape ``SegmindToS3Operator``'s own events have: ``extra`` is ``{"bucket",
"prefix", "count", "truncated", "objects": [{"key", "sha256", "manifest", "request_id"}]}``
(``objects`` is capped, 50 by default; ``truncated`` says when there were more, all of them under
``prefix``, each with its manifest beside it), plus the batch manifest's and contact sheet's URIs.
Airflow may fold several events into one run of this DAG: ``triggering_asset_events`` has them all.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, Asset, task

BUCKET = os.environ.get("SEGMIND_EXAMPLE_BUCKET", "segmind-marketing-assets")
#: The marketing DAG's asset (same URI; the name defaults to it, so the two definitions are one asset).
IMAGES = Asset(f"s3://{BUCKET}/segmind/example_segmind_marketing_assets")

with DAG(
    dag_id="example_segmind_asset_consumer",
    schedule=[IMAGES],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["segmind", "example"],
) as dag:

    @task
    def list_new_images(*, triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """Collect the objects that triggered this run (a real team would index or publish them)."""
        images: list[dict[str, Any]] = []
        for event in triggering_asset_events[IMAGES] if triggering_asset_events else []:
            extra = event.extra or {}
            for item in extra.get("objects", []):
                images.append({"uri": f"s3://{extra['bucket']}/{item['key']}", **item})
            if extra.get("truncated"):
                print(f"{extra['count']} objects stored; list s3://{extra['bucket']}/{extra['prefix']} for the rest")
        for image in images:
            print(f"new image {image['uri']} sha256={image['sha256']} request={image['request_id']}")
        return images

    list_new_images()
