"""Candidates for the review tests: real emulator images stored in moto S3 by the real transfer."""

from __future__ import annotations

from typing import Any

from airflow_provider_segmind.emulator import SegmindEmulator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator
from tests.transfers.helpers import S3Env, generate, make_context


def store_candidates(emu: SegmindEmulator, s3: S3Env, prompts: list[str], **context: Any) -> list[str]:
    """One image per prompt (seed 100, 101, ...), stored under ``candidates/`` without an asset event."""
    results = [generate(emu, prompt=prompt, seed=100 + n) for n, prompt in enumerate(prompts)]
    op = SegmindToS3Operator(
        task_id="store_candidates",
        results=results,
        s3_bucket=s3.bucket,
        s3_key="candidates/",
        asset=None,
        allow_insecure_loopback=True,
    )
    return list(op.execute(make_context(task_id="store_candidates", **context)))
