"""Daily marketing assets: prompts from a versioned file -> Segmind SD3 Large -> S3 -> contact sheet.

The pipeline our users run: a credits check before spending, one deferrable generation task per
prompt (mapped, throttled by a pool so concurrency stays under the account's rate limit), one
persistence task per image (streamed to S3 with a manifest, emitting S3 asset events), and a final
task that writes a batch manifest and an HTML contact sheet (thumbnails with prompt, seed, cost
and request id) for a human to review.

Override the prompts for one run with the ``prompts`` param (a list of
``{"prompt", "negative_prompt"?, "aspect_ratio"?}``), e.g. ``airflow dags trigger ... --conf``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

# Deployment settings, read from the environment at parse time (no connection, no network), so the
# DAG parses anywhere; `make demo` and the integration test set them for the local emulator.
BUCKET = os.environ.get("SEGMIND_EXAMPLE_BUCKET", "segmind-marketing-assets")
#: "@daily" in production; "none" for manual runs only (the integration test).
SCHEDULE = os.environ.get("SEGMIND_EXAMPLE_SCHEDULE", "@daily")
#: Pool capping concurrent Segmind jobs under the plan's rate limit: `airflow pools set segmind 4 "Segmind"`.
POOL = os.environ.get("SEGMIND_EXAMPLE_POOL", "segmind")
#: Only for the local emulator, whose media URLs are plain http on 127.0.0.1.
ALLOW_LOOPBACK_MEDIA = os.environ.get("SEGMIND_ALLOW_INSECURE_LOOPBACK", "").lower() in ("1", "true", "yes")
PROMPTS_FILE = Path(__file__).resolve().parent / "prompts" / "marketing_prompts.json"
#: Credits one SD3 Large image costs, with a margin; the check refuses to start a batch it cannot pay.
CREDITS_PER_IMAGE = 0.05
ALLOWED_KEYS = {"prompt", "negative_prompt", "aspect_ratio"}

with DAG(
    dag_id="example_segmind_marketing_assets",
    description="Prompts file -> Segmind SD3 Large (deferrable) -> S3 + manifest -> contact sheet",
    schedule=None if SCHEDULE.lower() == "none" else SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["segmind", "example"],
    params={
        "prompts": Param(None, type=["null", "array"], description="Override the prompt file for this run."),
        "bucket": Param(BUCKET, type="string"),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=15)},
) as dag:

    @task
    def load_prompts() -> list[dict[str, Any]]:
        """Read the versioned prompt file (or the run's override) into kwargs for the mapped task."""
        override = get_current_context()["params"].get("prompts")
        specs = override if override else json.loads(PROMPTS_FILE.read_text())
        cleaned = []
        for number, spec in enumerate(specs):
            spec = {"prompt": spec} if isinstance(spec, str) else dict(spec)
            unknown = set(spec) - ALLOWED_KEYS
            if unknown:
                raise ValueError(f"prompt #{number}: unknown keys {sorted(unknown)}; allowed: {sorted(ALLOWED_KEYS)}")
            cleaned.append({key: value for key, value in spec.items() if value is not None})
        if not cleaned:
            raise ValueError("no prompts to render")
        return cleaned

    @task
    def check_credits(prompts: list[dict[str, Any]]) -> float:
        """Refuse to start a batch the account cannot pay for (the credits call is free)."""
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_provider_segmind.hooks.segmind import SegmindHook

        balance = SegmindHook().get_credits()
        needed = len(prompts) * CREDITS_PER_IMAGE
        if balance < needed:
            raise AirflowFailException(f"{balance:g} credits left, {needed:g} needed for {len(prompts)} images")
        return balance

    prompts = load_prompts()
    credits = check_credits(prompts)

    generated = SegmindTextToImageOperator.partial(
        task_id="generate",
        output_format="jpeg",
        deferrable=True,
        pool=POOL,
    ).expand_kwargs(prompts)
    credits >> generated

    stored = SegmindToS3Operator.partial(
        task_id="persist",
        s3_bucket="{{ params.bucket }}",
        allow_insecure_loopback=ALLOW_LOOPBACK_MEDIA,
    ).expand(results=generated.output)

    @task
    def contact_sheet(uris: list[list[str]]) -> dict[str, Any]:
        """Write a batch manifest and an HTML contact sheet next to the run's images."""
        from airflow_provider_segmind.utils.contact_sheet import write_contact_sheet

        context = get_current_context()
        return write_contact_sheet(
            [uri for group in uris for uri in group],
            bucket=context["params"]["bucket"],
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
        )

    contact_sheet(stored.output)
