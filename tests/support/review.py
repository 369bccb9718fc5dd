"""Candidates for the review tests: real emulator images stored in moto S3 by the real transfer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator
from tests.support.s3 import FakeTI, S3Env, generate, make_context


def store_candidates(
    emu: SegmindEmulator, s3: S3Env, prompts: list[str], *, s3_key: str = "candidates/", **context: Any
) -> list[str]:
    """One image per prompt (seed 100, 101, ...), stored under ``candidates/`` without an asset event."""
    results = [generate(emu, prompt=prompt, seed=100 + n) for n, prompt in enumerate(prompts)]
    op = SegmindToS3Operator(
        task_id="store_candidates",
        results=results,
        s3_bucket=s3.bucket,
        s3_key=s3_key,
        asset=None,
        allow_insecure_loopback=True,
    )
    return list(op.execute(make_context(task_id="store_candidates", **context)))


@dataclass
class ReviewTI(FakeTI):
    """The stand-in TI, reading back its own XComs (what the review pushes before it waits)."""

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        assert task_ids == self.task_id
        return self.xcom.get(key)


def review_context(ti: ReviewTI | None = None) -> dict[str, Any]:
    """A context for the review task; the same ``ti`` carries its XComs from the wait to the resume."""
    ti = ti or ReviewTI(task_id="review")
    return {"ti": ti, "task_instance": ti, "run_id": ti.run_id}
