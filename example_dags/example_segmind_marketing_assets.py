"""Daily marketing assets: prompts from a versioned file -> Segmind SD3 Large -> S3 -> contact sheet.

The pipeline our users run: a credits check before spending, one deferrable generation task per
prompt (throttled by a pool so concurrency stays under the account's rate limit) followed by its
own persistence task (streamed to S3 with a manifest): the two form a
task group mapped over the prompts, so one failed prompt does not hold back the others. A final
task writes a batch manifest and an HTML contact sheet (thumbnails with prompt, seed, cost and
request id) for a human to review and emits one asset event for the batch on ``IMAGES`` (the keys,
hashes and manifests of its images in the event's extra), and the run fails if any prompt produced
no image.

Override the prompts for one run with the ``prompts`` param (a list of
``{"prompt", "negative_prompt"?, "aspect_ratio"?}``), e.g. ``airflow dags trigger ... --conf``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, Param, TriggerRule, get_current_context, task, task_group

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

# Deployment settings, read from the environment at parse time (no connection, no network), so the
# DAG parses anywhere; `make demo` and the integration test set them for the local emulator.
BUCKET = os.environ.get("SEGMIND_EXAMPLE_BUCKET", "segmind-marketing-assets")
#: "@daily" in production; "none" for manual runs only (the integration test).
SCHEDULE = os.environ.get("SEGMIND_EXAMPLE_SCHEDULE", "@daily")
#: Pool capping concurrent Segmind jobs under the plan's rate limit. Create it first, or the tasks never
#: start: `airflow pools set segmind 4 "Segmind jobs" --include-deferred`.
POOL = os.environ.get("SEGMIND_EXAMPLE_POOL", "segmind")
#: Only for the local emulator, whose media URLs are plain http on 127.0.0.1.
ALLOW_LOOPBACK_MEDIA = os.environ.get("SEGMIND_ALLOW_INSECURE_LOOPBACK", "").lower() in ("1", "true", "yes")
PROMPTS_FILE = Path(__file__).resolve().parent / "prompts" / "marketing_prompts.json"
#: Credits one SD3 Large image costs, with a margin; the check refuses to start a batch it cannot pay.
CREDITS_PER_IMAGE = 0.05
ALLOWED_KEYS = {"prompt", "negative_prompt", "aspect_ratio"}
#: One asset for every image this DAG stores (not one per image): declared, so it shows in the lineage
#: view, and what example_segmind_asset_consumer schedules on. One event per batch, from the contact
#: sheet task: the mapped persist tasks finish together, and Airflow (up to at least 3.3.2) may leave
#: events of concurrently finishing mapped tasks to the consumer's next run (apache/airflow#54659).
#: An event's extra names the bucket the images really went to (the bucket is a per-run param).
IMAGES = Asset(f"s3://{BUCKET}/segmind/example_segmind_marketing_assets")

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
            # Every key present (None = the operator's default): the mapped group takes them all.
            cleaned.append({key: spec.get(key) for key in sorted(ALLOWED_KEYS)})
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

    @task_group(group_id="render")
    def render(prompt: str, negative_prompt: str | None, aspect_ratio: str | None) -> Any:
        """One prompt's chain, mapped per prompt: generate (deferrable) -> persist to S3.

        Mapping the group rather than each task keeps prompts independent: a prompt that fails for
        good (say, a content-safety block) stops only its own persist task, and every other
        image of the batch still reaches S3.
        """
        generated = SegmindTextToImageOperator(
            task_id="generate",
            prompt=prompt,
            negative_prompt=negative_prompt,
            aspect_ratio=aspect_ratio,
            output_format="jpeg",
            deferrable=True,
            pool=POOL,
            # The grid names each mapped instance by its prompt instead of its index. ``ti.task``, not
            # ``task``: on Airflow 3.1 the context's ``task`` of a mapped group's task is not rendered.
            map_index_template="{{ ti.task.prompt | truncate(60) }}",
        )
        # Not ``credits >> rendered`` outside: that would wire only the group's returned task
        # (persist); generation is what must wait for the credits check.
        credits >> generated
        stored = SegmindToS3Operator(
            task_id="persist",
            results=generated.output,
            s3_bucket="{{ params.bucket }}",
            asset=None,  # the batch's one event comes from contact_sheet
            allow_insecure_loopback=ALLOW_LOOPBACK_MEDIA,
            # The same prompt, read from the generate task's result (its summary's params).
            map_index_template=(
                "{{ ti.task.results.get('params', {}).get('prompt', '') | truncate(60) "
                "if ti.task.results is mapping else '' }}"
            ),
        )
        return stored.output

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[IMAGES])
    def contact_sheet(uris: list[list[str] | None]) -> dict[str, Any]:
        """Write a batch manifest and an HTML contact sheet of the images that were stored.

        Runs even when some prompts failed (``all_done``): a reviewer gets what exists; a failed
        prompt's entry is missing here (``None``; Airflow 3.1 gives a ``NOTSET`` marker instead)
        and ``batch_succeeded`` fails the run for it. Its success emits the batch's event on
        ``IMAGES``, listing what was stored.
        """
        from airflow_provider_segmind.utils.contact_sheet import write_contact_sheet

        context = get_current_context()
        return write_contact_sheet(
            [uri for group in uris if isinstance(group, list | tuple) for uri in group],
            bucket=context["params"]["bucket"],
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            asset_event=context["outlet_events"][IMAGES],
        )

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def batch_succeeded() -> None:
        """Fail the run when any task failed: ``contact_sheet`` runs regardless, so without this
        leaf a run with failed prompts would still show as a success."""
        raise RuntimeError("Some prompts produced no image; see the failed render.generate / render.persist tasks.")

    prompts = load_prompts()
    credits = check_credits(prompts)
    rendered = render.expand_kwargs(prompts)
    sheet = contact_sheet(rendered)
    [prompts, credits, rendered, sheet] >> batch_succeeded()
