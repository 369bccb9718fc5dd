"""How a typed Segmind error ends an Airflow task: as itself, or without retries when none can help.

Every ``SegmindError`` says whether another try of the task could succeed (``task_retry_helps``:
false for a refused input, a content block, an unsafe key, a conflicting object). Such an error is
raised as ``AirflowFailException``, so Airflow fails the task at once instead of spending its
retries (and, for a submit, credits) on the same answer; any other error propagates as it is.
One rule for the generation operators, the S3 transfer and the publish step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.exceptions import SegmindError

__all__ = ["fail_for_good_if_no_retry_helps", "raise_for_task"]


def raise_for_task(err: SegmindError) -> NoReturn:
    """Re-raise ``err``; as ``AirflowFailException`` (from it) when a task retry cannot help."""
    if not err.task_retry_helps:
        raise AirflowFailException(str(err)) from err
    raise err


@contextmanager
def fail_for_good_if_no_retry_helps() -> Iterator[None]:
    """Around a task's work: a ``SegmindError`` no retry fixes fails the task without retries."""
    try:
        yield
    except SegmindError as err:
        raise_for_task(err)
