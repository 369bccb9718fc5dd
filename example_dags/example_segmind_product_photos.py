"""Product photos under an S3 prefix -> Segmind SD3 image-to-image variants -> S3.

Marketing pipelines start from the product photos already in S3: list the photos under a prefix,
make ``VARIANTS`` variants of each (one mapped, deferrable image-to-image task per photo and
seed, on SD3 Large's image-to-image slug ``stable-diffusion-3-large-img2img``; ``image`` is an
``s3://`` URI, checked and sent by the operator through the Amazon provider's ``S3Hook``), and
store every variant back in S3 with its manifest. The photos' bytes never pass through XCom: only
their ``s3://`` URIs do.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from airflow_provider_segmind.operators.segmind import SegmindImageToImageOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

# Deployment settings, read at parse time (no connection, no network), so the DAG parses anywhere.
BUCKET = os.environ.get("SEGMIND_EXAMPLE_BUCKET", "segmind-marketing-assets")
PHOTOS_PREFIX = os.environ.get("SEGMIND_EXAMPLE_PHOTOS_PREFIX", "product-photos/")
#: ``auto``: a presigned URL for AWS S3, base64 for a custom endpoint (MinIO, the local demo).
IMAGE_TRANSPORT = os.environ.get("SEGMIND_EXAMPLE_IMAGE_TRANSPORT", "auto")
#: Only for the local emulator, whose media URLs are plain http on 127.0.0.1.
ALLOW_LOOPBACK_MEDIA = os.environ.get("SEGMIND_ALLOW_INSECURE_LOOPBACK", "").lower() in ("1", "true", "yes")
#: Variants per photo. Each gets a fresh random seed (``-1`` is Segmind's "random"; the operator
#: fills and records it, so the seed of every image is known): pinned seeds would send identical
#: bodies on every run, which the request history cannot tell apart (docs/exactly-once.md).
VARIANTS = 2
SEEDS = [-1] * VARIANTS
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

with DAG(
    dag_id="example_segmind_product_photos",
    description="S3 product photos -> Segmind SD3 image-to-image variants -> S3 + manifests",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["segmind", "example"],
) as dag:

    @task
    def photo_uris() -> list[str]:
        """The photos under the prefix, as ``s3://`` URIs (folder markers and other files left out)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        keys = S3Hook(aws_conn_id="aws_default").list_keys(bucket_name=BUCKET, prefix=PHOTOS_PREFIX)
        return [f"s3://{BUCKET}/{key}" for key in keys if key.lower().endswith(PHOTO_SUFFIXES)]

    variants = SegmindImageToImageOperator.partial(
        task_id="variants",
        prompt="the same product on a marble counter in soft morning light, studio photography",
        strength=0.6,
        output_format="png",
        image_transport=IMAGE_TRANSPORT,
        deferrable=True,
        # The grid names each mapped instance by its photo and variant (the prompt is the same for all):
        # the last expanded argument varies fastest, so the variant is the map index modulo VARIANTS.
        map_index_template=(
            "{{ ti.task.image.rsplit('/', 1)[-1] }}, variant {{ ti.map_index % " + str(VARIANTS) + " + 1 }}"
        ),
    ).expand(image=photo_uris(), seed=SEEDS)

    SegmindToS3Operator(
        task_id="store_variants",
        results=variants.output,
        s3_bucket=BUCKET,
        allow_insecure_loopback=ALLOW_LOOPBACK_MEDIA,
    )
