"""Issue 24 item 5: the publish step copies what the reviewer saw, or nothing.

A review option is labelled ``"<n>. <file name>"``: with a key template whose file names repeat
(``candidates/{request_id}/image.jpeg``) every option reads "<n>. image.jpeg", and a candidate list
that shifts between the review and the publish step would map "1. image.jpeg" to another object,
whose manifest and bytes agree with each other (so the SHA-256 check alone passes). The review pins
each option (URI, SHA-256, S3 version id) and the publish step checks the pins before its first copy.

Real candidates (emulator images stored by the real transfer in a moto S3 server), the review's
real ``prepare_review`` (options, body, pins) and ``execute_complete``; only the wait between them
(the standard provider's, which needs a running Airflow) is left out: the whole review is
tests/integration/test_review_publish.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.operators.review import XCOM_PINNED, SegmindReviewOperator
from airflow_provider_segmind.transfers.publish import SegmindPublishOperator
from airflow_provider_segmind.utils.review_candidates import PINNED_KEY, PUBLISH_NONE, candidate_labels
from tests.support.review import ReviewTI, review_context, store_candidates
from tests.support.s3 import S3Env, make_context
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

PROMPTS = ["a teal kettle", "a teal kettle, side view", "a teal kettle, top view"]
#: File names that repeat: every option is "<n>. image.jpeg".
REPEATING = "candidates/{request_id}/image.{ext}"


def reviewed(candidates: list[str], *options: str, resumed_with: list[str] | None = None) -> dict[str, Any]:
    """The review's result: ``prepare_review`` offers ``candidates``, the task resumes (a fresh operator,
    given ``resumed_with`` as its candidates then) with ``options`` chosen."""
    ti = ReviewTI(task_id="review")
    SegmindReviewOperator(task_id="review", candidates=candidates).prepare_review(review_context(ti))
    resumed = SegmindReviewOperator(task_id="review", candidates=resumed_with or candidates)
    event = {
        "chosen_options": list(options),
        "params_input": {},
        "responded_at": datetime(2026, 12, 1, tzinfo=UTC),
        "responded_by_user": {"id": "7", "name": "ada"},
    }
    return dict(resumed.execute_complete(review_context(ti), event))


def publish(s3: S3Env, candidates: list[str], review: dict[str, Any]) -> list[str]:
    op = SegmindPublishOperator(task_id="publish", candidates=candidates, review=review, s3_bucket=s3.bucket)
    return list(op.execute(make_context(task_id="publish")))


def published(s3: S3Env) -> list[str]:
    stored: list[str] = s3.keys()
    return [key for key in stored if key.startswith("published/")]


def key_of(uri: str) -> str:
    return uri.split("/", 3)[3]


@pytest.fixture
def candidates(emu: SegmindEmulator, s3: S3Env) -> list[str]:
    uris = store_candidates(emu, s3, PROMPTS, s3_key=REPEATING)
    assert candidate_labels(uris) == ["1. image.jpeg", "2. image.jpeg", "3. image.jpeg"]
    return uris


def test_the_review_pins_what_each_option_shows(candidates: list[str], s3: S3Env) -> None:
    ti = ReviewTI(task_id="review")
    op = SegmindReviewOperator(task_id="review", candidates=candidates)
    pins = op.prepare_review(review_context(ti))

    assert op.options == ["1. image.jpeg", "2. image.jpeg", "3. image.jpeg", PUBLISH_NONE]
    assert ti.xcom[XCOM_PINNED] == pins
    for number, (uri, pinned) in enumerate(zip(candidates, pins, strict=True), start=1):
        body, head = s3.get(key_of(uri))
        assert pinned == {
            "option": f"{number}. image.jpeg",
            "uri": uri,
            "sha256": hashlib.sha256(body).hexdigest(),
            "version_id": head["VersionId"],  # the fixture's bucket keeps versions
        }
        # What the body shows: the pinned bytes' hash, and the image of the pinned version.
        assert f"**SHA-256:** {pinned['sha256'][:12]}…" in op.body
        assert f"versionId={head['VersionId']}" in op.body


def test_a_candidate_list_that_shifted_since_the_review_publishes_nothing(candidates: list[str], s3: S3Env) -> None:
    """The review showed candidates[0] as "1. image.jpeg"; the publish step gets the list without it, where
    "1. image.jpeg" is candidates[1] (its manifest and bytes agree: the SHA-256 check alone would pass)."""
    shifted = candidates[1:]
    review = reviewed(candidates, "1. image.jpeg", resumed_with=shifted)
    # The resumed review checks the answer against what it offered, not against the shifted list.
    assert review["chosen_options"] == ["1. image.jpeg"]
    assert [p["uri"] for p in review[PINNED_KEY]] == candidates
    with pytest.raises(AirflowFailException, match=r"not the ones the review showed \('1\. image\.jpeg' showed "):
        publish(s3, shifted, review)
    assert published(s3) == []
    # Reordered, or a candidate added: the same.
    with pytest.raises(AirflowFailException, match="not the ones the review showed"):
        publish(s3, [candidates[1], candidates[0], candidates[2]], review)
    assert published(s3) == []
    # The list the review had: exactly the object the reviewer saw.
    (target,) = publish(s3, candidates, review)
    assert s3.get(key_of(target))[0] == s3.get(key_of(candidates[0]))[0]


def _rewrite(s3: S3Env, uri: str, body: bytes) -> None:
    """Replace a candidate by another image whose manifest and metadata agree with it (a re-run store)."""
    key = key_of(uri)
    sha256 = hashlib.sha256(body).hexdigest()
    manifest = json.loads(s3.get(key + ".manifest.json")[0])
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=body, ContentType="image/jpeg", Metadata={"sha256": sha256})
    s3.client.put_object(Bucket=s3.bucket, Key=key + ".manifest.json", Body=json.dumps({**manifest, "sha256": sha256}))


@pytest.mark.parametrize("versioning", [True, False], ids=["versioned", "unversioned"])
def test_a_candidate_changed_since_the_review_publishes_nothing(
    emu: SegmindEmulator, s3: S3Env, versioning: bool
) -> None:
    """Two options chosen, the second changed after the review: neither is copied. In a versioned bucket
    the version says so; without versions, the pinned SHA-256 (the new manifest agrees with the new bytes)."""
    if not versioning:
        s3 = S3Env(s3.endpoint, f"segmind-test-{uuid.uuid4().hex[:12]}", s3.client)
        s3.client.create_bucket(Bucket=s3.bucket)
    uris = store_candidates(emu, s3, PROMPTS, s3_key=REPEATING)
    review = reviewed(uris, "1. image.jpeg", "2. image.jpeg")
    assert [p["version_id"] is not None for p in review[PINNED_KEY]] == [versioning] * 3
    _rewrite(s3, uris[1], s3.get(key_of(uris[2]))[0])  # a whole, consistent, different image
    match = "the reviewer saw version" if versioning else "the reviewer saw sha256"
    with pytest.raises(
        AirflowFailException, match=rf"'2\. image\.jpeg' \({uris[1]}\) changed since the review: {match}"
    ):
        publish(s3, uris, review)
    assert published(s3) == []  # not even "1. image.jpeg", checked and unchanged


def test_a_candidate_overwritten_with_the_same_manifest_is_refused(candidates: list[str], s3: S3Env) -> None:
    review = reviewed(candidates, "3. image.jpeg")
    s3.client.put_object(Bucket=s3.bucket, Key=key_of(candidates[2]), Body=b"not the reviewed image")
    with pytest.raises(AirflowFailException, match=r"'3\. image\.jpeg' .* changed since the review"):
        publish(s3, candidates, review)
    assert published(s3) == []


def test_a_candidate_that_is_not_its_manifests_object_is_not_offered(candidates: list[str], s3: S3Env) -> None:
    key = key_of(candidates[0])
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"x", Metadata={"sha256": hashlib.sha256(b"x").hexdigest()})
    with pytest.raises(AirflowFailException, match=r"is not the object its manifest describes .* nothing was asked"):
        SegmindReviewOperator(task_id="review", candidates=candidates).prepare_review(review_context())


@pytest.mark.parametrize(
    ("pins", "match"),
    [
        ("1. image.jpeg", r"review\.pinned_candidates must be the review's list of pinned options"),
        ([{"uri": "s3://b/k"}], r"review\.pinned_candidates: .* is not a pinned option"),
        ([{"option": "1. a", "uri": "https://x/a"}], r"review\.pinned_candidates: 'https://x/a' is not an s3://"),
        ([{"option": "1. a", "uri": "s3://bucket/a", "sha256": 1}], r"sha256 of '1\. a' must be a string"),
    ],
)
def test_malformed_pins_are_refused_by_name(candidates: list[str], s3: S3Env, pins: Any, match: str) -> None:
    review = {"chosen_options": ["1. image.jpeg"], "responded_by_user": None, PINNED_KEY: pins}
    with pytest.raises(AirflowFailException, match=match):
        publish(s3, candidates, review)
    assert published(s3) == []
