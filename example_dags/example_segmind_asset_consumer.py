"""Runs whenever the Segmind transfer stores new images: scheduled on the S3 asset alias.

``SegmindToS3Operator`` emits one S3 asset event per object through the alias
``segmind-s3-outputs`` (with sha256, size, content type, request id and manifest URI in the event's
extra). A downstream team schedules on that alias and reacts to exactly the new objects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, AssetAlias, task

#: The alias SegmindToS3Operator emits on by default.
ASSET_ALIAS = "segmind-s3-outputs"

with DAG(
    dag_id="example_segmind_asset_consumer",
    schedule=[AssetAlias(ASSET_ALIAS)],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["segmind", "example"],
) as dag:

    @task(inlets=[AssetAlias(ASSET_ALIAS)])
    def list_new_images(*, inlet_events: Any = None) -> list[dict[str, Any]]:
        """Collect the objects that triggered this run (a real team would index or publish them)."""
        events = inlet_events[AssetAlias(ASSET_ALIAS)] if inlet_events is not None else []
        images = [{"uri": event.asset.uri, **(event.extra or {})} for event in events]
        for image in images:
            print(f"new image {image['uri']} sha256={image.get('sha256')} request={image.get('request_id')}")
        return images

    list_new_images()
