"""Review and publish: N variants per prompt -> S3 candidates -> a human chooses in Airflow's UI -> published/.

A marketing team does not publish AI images unreviewed. Each prompt is rendered ``variants``
times with different seeds (deferrable, against Segmind or the local emulator), every image is
stored as a candidate under ``candidates/`` (no asset event: candidates are not for consumers),
and a reviewer picks the ones to publish on the review screen (the task's "Required Actions";
images shown through presigned S3 URLs). The chosen images are copied to ``published/`` with a
manifest naming who approved them and when, and one asset event is emitted on
``s3://<bucket>/published/example_segmind_review_and_publish``; the others stay as candidates.
Unanswered for ``REVIEW_TIMEOUT``, the review takes its default, "Publish none".
See docs/review.md.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_segmind.operators.review import SegmindReviewOperator
from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.transfers.publish import SegmindPublishOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

# Deployment settings from the environment at parse time (no connection, no network needed to parse).
BUCKET = os.environ.get("SEGMIND_EXAMPLE_BUCKET", "segmind-marketing-assets")
#: Only for the local emulator, whose media URLs are plain http on 127.0.0.1.
ALLOW_LOOPBACK_MEDIA = os.environ.get("SEGMIND_ALLOW_INSECURE_LOOPBACK", "").lower() in ("1", "true", "yes")
REVIEW_TIMEOUT = timedelta(hours=8)

with DAG(
    dag_id="example_segmind_review_and_publish",
    description="Prompt variants -> S3 candidates -> human review (HITL) -> published/",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["segmind", "example", "review"],
    params={
        "prompts": Param(
            ["A ceramic coffee mug on a walnut desk, soft window light", "A running shoe on wet asphalt, dusk"],
            type="array",
            minItems=1,
        ),
        "variants": Param(3, type="integer", minimum=1, maximum=8),
    },
) as dag:

    @task
    def variants() -> list[dict[str, Any]]:
        """One generation per prompt and variant: the candidates the reviewer chooses from.

        No seed: the operator fills a fresh random one per task and records it in the result, so
        every candidate is different and its seed known (pinned seeds would send identical bodies
        on every run, which the request history cannot tell apart; docs/exactly-once.md).
        """
        params = get_current_context()["params"]
        return [{"prompt": prompt} for prompt in params["prompts"] for _ in range(params["variants"])]

    # --8<-- [start:review]
    generated = SegmindTextToImageOperator.partial(
        task_id="generate",
        output_format="jpeg",
        deferrable=True,
        # The grid names each mapped instance by its prompt and variant (variants() lists them prompt by prompt).
        map_index_template="{{ ti.task.prompt | truncate(60) }}, variant {{ ti.map_index % params.variants + 1 }}",
    ).expand_kwargs(variants())
    candidates = SegmindToS3Operator(
        task_id="store_candidates",
        results=generated.output,
        s3_bucket=BUCKET,
        s3_key="candidates/",
        asset=None,
        allow_insecure_loopback=ALLOW_LOOPBACK_MEDIA,
    )
    review = SegmindReviewOperator(
        task_id="review",
        candidates=candidates.output,
        subject="Which of these images should be published?",
        response_timeout=REVIEW_TIMEOUT,
    )
    SegmindPublishOperator(task_id="publish", candidates=candidates.output, review=review.output, s3_bucket=BUCKET)
    # --8<-- [end:review]
