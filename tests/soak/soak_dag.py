"""The soak's DAG: the marketing DAG's pipeline and operators, one chain per prompt.

Same tasks and operators as ``example_dags/example_segmind_marketing_assets.py``: load the prompts
(from the run's ``prompts`` param) -> check credits -> ``SegmindTextToImageOperator`` (deferrable)
-> ``SegmindToS3Operator`` over its output -> contact sheet. One difference in wiring: the two
operators sit in a task group mapped over the prompts (``render.expand_kwargs``) instead of two
separately mapped tasks. With the example's ``generate.expand_kwargs(...)`` ->
``persist.expand(results=generate.output)``, the persist task depends on the WHOLE generate task, so
a single prompt that fails for good (a content-safety block) leaves ``persist`` upstream_failed for
every prompt and no image of the run reaches S3. The mapped group keeps each prompt's chain
independent, which is what "every prompt ends as an image or as a failed task" needs.

The rest is settings, read from ``SEGMIND_SOAK_SETTINGS`` (JSON) at parse time: a fast poll
schedule (the emulator's jobs take under a second), task retries with a short delay so forced
retries happen within the run, a low multipart threshold so some images go through multipart
uploads, a contact sheet that runs on whatever was stored (``all_done``: the soak fails some prompts
on purpose), and failure/retry callbacks that append each failed try's exception to
``events_file`` for the soak's accounting. The harness copies this file into the DAGS_FOLDER.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task, task_group

from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

SETTINGS: dict[str, Any] = json.loads(os.environ.get("SEGMIND_SOAK_SETTINGS") or "{}")
DAG_ID = SETTINGS.get("dag_id", "segmind_soak")
CREDITS_PER_IMAGE = 0.05
ALLOWED_KEYS = ("prompt", "negative_prompt", "aspect_ratio", "seed")


def _record(kind: str) -> Any:
    """A task callback appending ``{kind, task, map index, try, exception}`` to the events file."""

    def callback(context: Any) -> None:
        path = SETTINGS.get("events_file")
        if not path:
            return
        ti = context["ti"]
        error = context.get("exception")
        entry = {
            "kind": kind,
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "try_number": ti.try_number,
            "error_type": type(error).__name__ if error is not None else None,
            "error": str(error) if error is not None else None,
        }
        with open(path, "a", encoding="utf-8") as events:
            events.write(json.dumps(entry) + "\n")

    return callback


with DAG(
    dag_id=DAG_ID,
    description="Soak: prompts -> Segmind SD3 Large (deferrable) -> S3 + manifest -> contact sheet",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "prompts": Param([], type="array"),
        "bucket": Param("segmind-soak", type="string"),
    },
    default_args={
        "retries": int(SETTINGS.get("retries", 3)),
        "retry_delay": timedelta(seconds=float(SETTINGS.get("retry_delay", 1.0))),
        "on_retry_callback": _record("retry"),
        "on_failure_callback": _record("failed"),
    },
) as dag:

    @task
    def load_prompts() -> list[dict[str, Any]]:
        specs = get_current_context()["params"]["prompts"]
        cleaned = []
        for number, spec in enumerate(specs):
            spec = {"prompt": spec} if isinstance(spec, str) else dict(spec)
            unknown = set(spec) - set(ALLOWED_KEYS)
            if unknown:
                raise ValueError(f"prompt #{number}: unknown keys {sorted(unknown)}; allowed: {sorted(ALLOWED_KEYS)}")
            # Every key present (None = the operator's default): the mapped group takes them all.
            cleaned.append({key: spec.get(key) for key in ALLOWED_KEYS})
        if not cleaned:
            raise ValueError("no prompts to render")
        return cleaned

    @task
    def check_credits(prompts: list[dict[str, Any]]) -> float:
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_provider_segmind.hooks.segmind import SegmindHook

        balance = SegmindHook().get_credits()
        needed = len(prompts) * CREDITS_PER_IMAGE
        if balance < needed:
            raise AirflowFailException(f"{balance:g} credits left, {needed:g} needed for {len(prompts)} images")
        return balance

    @task_group(group_id="render")
    def render(prompt: Any, negative_prompt: Any, aspect_ratio: Any, seed: Any) -> Any:
        """One prompt's chain: generate (deferrable) -> persist. Mapped per prompt, so one prompt's
        failure stops only its own persist task, not every prompt's (see the module docstring)."""
        generated = SegmindTextToImageOperator(
            task_id="generate",
            prompt=prompt,
            negative_prompt=negative_prompt,
            aspect_ratio=aspect_ratio,
            seed=seed,
            output_format="jpeg",
            deferrable=True,
            poll_schedule=SETTINGS.get("poll_schedule"),
            max_consecutive_errors=int(SETTINGS.get("max_consecutive_errors", 10)),
            history_wait=float(SETTINGS.get("history_wait", 120.0)),
        )
        # Not ``credits >> rendered`` outside: that would wire only the group's returned task
        # (persist); generation is what must wait for the credits check.
        credits >> generated
        stored = SegmindToS3Operator(
            task_id="persist",
            results=generated.output,
            s3_bucket="{{ params.bucket }}",
            allow_insecure_loopback=True,
            multipart_threshold=int(SETTINGS.get("multipart_threshold", 8 * 1024 * 1024)),
        )
        return stored.output

    prompts = load_prompts()
    credits = check_credits(prompts)
    rendered = render.expand_kwargs(prompts)

    @task(trigger_rule="all_done")
    def contact_sheet(uris: list[list[str]]) -> dict[str, Any]:
        from airflow_provider_segmind.utils.contact_sheet import write_contact_sheet

        context = get_current_context()
        return write_contact_sheet(
            [uri for group in uris if isinstance(group, list | tuple) for uri in group],
            bucket=context["params"]["bucket"],
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
        )

    contact_sheet(rendered)
