"""SegmindReviewOperator's own rules: options built from the candidates (the same again when the task resumes
with the answer), "Publish none" as the default on timeout, and bad candidates refused by name. The real
wait and answer (REST API, UI) are in tests/integration/test_review_publish.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.operators.review import DEFAULT_RESPONSE_TIMEOUT, SegmindReviewOperator
from airflow_provider_segmind.utils.review_candidates import PUBLISH_NONE, review_options

CANDIDATES = ["s3://bucket/candidates/run/a-0.jpeg", "s3://bucket/candidates/run/b-0.jpeg"]


def event(*options: str, user: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "chosen_options": list(options),
        "params_input": {},
        "responded_at": datetime(2026, 11, 30, tzinfo=UTC),
        "responded_by_user": user,
        "timedout": user is None,
    }


def test_multiple_choice_with_a_timeout_and_publish_none_as_its_default() -> None:
    op = SegmindReviewOperator(task_id="review", candidates=CANDIDATES)
    assert op.multiple is True
    assert op.defaults == [PUBLISH_NONE]
    assert op.response_timeout == DEFAULT_RESPONSE_TIMEOUT == timedelta(days=1)


@pytest.mark.parametrize(
    ("response_timeout", "url_expiry", "expected"),
    [
        (DEFAULT_RESPONSE_TIMEOUT, None, timedelta(hours=1)),  # short, not the day the review waits
        (None, None, timedelta(hours=1)),  # waiting forever: still an hour
        (timedelta(minutes=20), None, timedelta(minutes=20)),  # no longer than the review is open
        (timedelta(seconds=10), None, timedelta(minutes=1)),  # at least a minute
        (DEFAULT_RESPONSE_TIMEOUT, timedelta(hours=8), timedelta(hours=8)),  # asked for: as asked
        (DEFAULT_RESPONSE_TIMEOUT, timedelta(days=30), timedelta(days=7)),  # SigV4's limit
    ],
)
def test_the_image_links_live_an_hour_unless_asked(
    response_timeout: timedelta | None, url_expiry: timedelta | None, expected: timedelta
) -> None:
    """Issue 24 item 4: the links reach notifiers outside Airflow and outlive the answer: short by default."""
    op = SegmindReviewOperator(
        task_id="review", candidates=CANDIDATES, response_timeout=response_timeout, url_expiry=url_expiry
    )
    assert op.url_expiry == expected
    with pytest.raises(ValueError, match="url_expiry must be at least 0:01:00"):
        SegmindReviewOperator(task_id="review", candidates=CANDIDATES, url_expiry=timedelta(seconds=5))


@pytest.mark.parametrize("argument", ["options", "multiple", "defaults"])
def test_the_options_are_the_operators_own(argument: str) -> None:
    with pytest.raises(ValueError, match=f"sets '{argument}' itself"):
        SegmindReviewOperator(task_id="review", candidates=CANDIDATES, **{argument: ["x"]})


def test_the_resumed_task_checks_the_answer_against_the_candidates_options() -> None:
    """``execute_complete`` runs on a fresh operator (resumed task): it rebuilds the same options."""
    op = SegmindReviewOperator(task_id="review", candidates=CANDIDATES)
    labels = review_options(CANDIDATES)
    result = op.execute_complete({}, event(labels[0], labels[1], user={"id": "1", "name": "ada"}))
    assert result["chosen_options"] == labels[:2]
    assert result["responded_by_user"] == {"id": "1", "name": "ada"}
    # The timeout default: "Publish none", nobody responded.
    assert SegmindReviewOperator(task_id="review", candidates=CANDIDATES).execute_complete({}, event(PUBLISH_NONE))[
        "chosen_options"
    ] == [PUBLISH_NONE]
    with pytest.raises(ValueError, match="not in"):
        SegmindReviewOperator(task_id="review", candidates=CANDIDATES).execute_complete({}, event("3. c-0.jpeg"))


@pytest.mark.parametrize(
    ("candidates", "match"),
    [
        ([], "candidates is empty"),
        ([None, []], "candidates is empty"),
        ({"uri": "s3://b/k"}, "candidates must be a list"),
        (["s3://bucket/a.jpeg", "http://x/b.jpeg"], r"candidates: 'http://x/b\.jpeg' is not an s3://bucket/key URI"),
    ],
)
def test_bad_candidates_fail_before_the_review_is_asked(candidates: Any, match: str) -> None:
    with pytest.raises(AirflowFailException, match=match):
        SegmindReviewOperator(task_id="review", candidates=candidates).execute({})  # type: ignore[arg-type]
