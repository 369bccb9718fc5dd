"""SegmindPublishOperator against a real S3 endpoint (moto server) with candidates the real transfer stored.

What is checked: only the chosen candidates are copied to ``published/``, byte for byte, each with a
manifest naming who approved it and when; the rejected ones stay as candidates; the writes are
conditional (a retry rewrites nothing); one asset event lists the published objects only; and bad
input fails naming its argument before anything is copied.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.transfers.publish import DEFAULT_PUBLISHED_KEY, SegmindPublishOperator
from airflow_provider_segmind.utils.review_candidates import PUBLISH_NONE, candidate_labels
from tests.support.review import store_candidates
from tests.support.s3 import S3Env, asset_extra, make_context
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

PROMPTS = ["a teal kettle", "a teal kettle, side view", "a teal kettle, top view"]
RESPONDED_AT = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def answer(*options: str, user: dict[str, str] | None = None) -> dict[str, Any]:
    """What the review task returns (the standard provider's HITL result)."""
    return {
        "chosen_options": list(options),
        "params_input": {},
        "responded_at": RESPONDED_AT,
        "responded_by_user": user if user is not None else {"id": "7", "name": "ada"},
    }


def publisher(s3: S3Env, candidates: Any, review: Any, **kwargs: Any) -> SegmindPublishOperator:
    return SegmindPublishOperator(
        task_id="publish", candidates=candidates, review=review, s3_bucket=s3.bucket, **kwargs
    )


def published_keys(s3: S3Env) -> list[str]:
    stored = s3.keys()
    return [key for key in stored if key.startswith("published/")]


@pytest.fixture
def candidates(emu: SegmindEmulator, s3: S3Env) -> list[str]:
    return store_candidates(emu, s3, PROMPTS)


def test_only_the_chosen_candidates_are_published_with_who_approved_them(candidates: list[str], s3: S3Env) -> None:
    labels = candidate_labels(candidates)
    before = s3.keys()
    op = publisher(s3, candidates, answer(labels[0], labels[2]))
    context = make_context(task_id="publish")
    published = op.execute(context)

    keys = published_keys(s3)
    assert len(published) == 2
    assert sorted(keys) == sorted(
        [uri.split("/", 3)[3] for uri in published] + [uri.split("/", 3)[3] + ".manifest.json" for uri in published]
    )
    # The rejected candidate (and every candidate) is still where it was.
    after = s3.keys()
    assert set(before) <= set(after)
    assert {key for key in after if not key.startswith("published/")} == set(before)
    for source, target in zip([candidates[0], candidates[2]], published, strict=True):
        source_body, _ = s3.get(source.split("/", 3)[3])
        target_key = target.split("/", 3)[3]
        body, head = s3.get(target_key)
        assert body == source_body
        manifest = json.loads(s3.get(target_key + ".manifest.json")[0])
        source_manifest = json.loads(s3.get(source.split("/", 3)[3] + ".manifest.json")[0])
        assert head["Metadata"]["sha256"] == manifest["sha256"] == source_manifest["sha256"]
        assert manifest["uri"] == target
        assert manifest["prompt"] == source_manifest["prompt"]
        assert manifest["approval"] == {
            "approved_by": {"id": "7", "name": "ada"},
            "approved_at": RESPONDED_AT.isoformat(),
            "timed_out": False,
            "chosen_options": [labels[0], labels[2]],
            "review_task_id": None,
        }
        assert manifest["source"]["candidate_uri"] == source
        assert manifest["producer"]["operator"] == "SegmindPublishOperator"
        assert manifest["write"] == "created"
    # The default layout: published/<dag_id>/<run_id>/<request_id>-<index>.<ext>
    assert all(key.startswith("published/segmind_dag/manual__2026-01-01T00") for key in keys)
    # One event, on the published destination only, listing the published objects.
    assert op.event_target.uri == f"s3://{s3.bucket}/published"  # no DAG here: no {dag_id} in the prefix
    extra = asset_extra(context, op.event_target)
    assert extra["count"] == 2
    assert [obj["key"] for obj in extra["objects"]] == [uri.split("/", 3)[3] for uri in published]


def test_the_asset_is_declared_on_the_published_prefix_when_the_dag_is_parsed(s3: S3Env) -> None:
    from airflow.sdk import DAG, Asset

    with DAG("review_dag", schedule=None):
        op = SegmindPublishOperator(task_id="publish", candidates=[], review={}, s3_bucket=s3.bucket)
    assert op.outlets == [Asset(f"s3://{s3.bucket}/published/review_dag")]
    assert DEFAULT_PUBLISHED_KEY.startswith("published/")


def test_a_retry_rewrites_nothing(candidates: list[str], s3: S3Env) -> None:
    labels = candidate_labels(candidates)
    first = publisher(s3, candidates, answer(labels[1])).execute(make_context(task_id="publish", try_number=1))
    key = first[0].split("/", 3)[3]
    manifest_before = s3.get(key + ".manifest.json")[0]
    again = publisher(s3, candidates, answer(labels[1])).execute(make_context(task_id="publish", try_number=2))
    assert again == first
    assert len(s3.versions(key)) == 1
    assert len(s3.versions(key + ".manifest.json")) == 1
    assert s3.get(key + ".manifest.json")[0] == manifest_before


def test_publish_none_copies_nothing_and_skips(candidates: list[str], s3: S3Env) -> None:
    """Also what a timed-out review answers (its default): no copy, no asset event (the task is skipped)."""
    timed_out = answer(PUBLISH_NONE)
    timed_out["responded_by_user"] = None
    with pytest.raises(AirflowSkipException, match=PUBLISH_NONE):
        publisher(s3, candidates, timed_out).execute(make_context(task_id="publish"))
    assert published_keys(s3) == []


def test_a_candidate_changed_after_review_is_not_published(candidates: list[str], s3: S3Env) -> None:
    labels = candidate_labels(candidates)
    key = candidates[0].split("/", 3)[3]
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"not the reviewed image", ContentType="image/jpeg")
    with pytest.raises(AirflowFailException, match="changed since it was stored"):
        publisher(s3, candidates, answer(labels[0])).execute(make_context(task_id="publish"))
    assert published_keys(s3) == []


@pytest.mark.parametrize(
    ("review", "kwargs", "match"),
    [
        (answer("4. not-a-candidate.jpeg"), {}, r"review\.chosen_options: \['4\. not-a-candidate\.jpeg'\] not among"),
        (answer(), {}, r"review\.chosen_options is empty"),
        ("LABEL0", {}, r"review must be the review task's result"),
        ({"chosen_options": "LABEL0"}, {}, r"review\.chosen_options must be a list"),
        (answer("LABEL0", PUBLISH_NONE), {}, r"review\.chosen_options: 'Publish none' cannot be chosen together"),
        (answer("LABEL0"), {"s3_key": "../published/{request_id}.{ext}"}, r"s3_key .*'\.\.' segment"),
        (answer("LABEL0"), {"s3_key": "published/{prompt}.jpeg"}, r"s3_key .*unknown placeholder \{prompt\}"),
        (answer("LABEL0", "LABEL1"), {"s3_key": "published/fixed.{ext}"}, r"s3_key: two chosen candidates would be"),
        (
            answer("LABEL0"),
            {"s3_key": "candidates/{dag_id}/{run_id}/store_candidates/{map_index}/{request_id}-{index}.{ext}"},
            r"s3_key: .* is a candidate's own key",
        ),
        (answer("LABEL0"), {"s3_bucket": "not a bucket"}, r"s3_bucket/s3_key .*Invalid S3 bucket name"),
    ],
)
def test_bad_input_names_the_field_and_copies_nothing(
    candidates: list[str], s3: S3Env, review: Any, kwargs: dict[str, Any], match: str
) -> None:
    labels = dict(zip(["LABEL0", "LABEL1"], candidate_labels(candidates), strict=False))
    if isinstance(review, dict) and isinstance(review.get("chosen_options"), list):
        review = {**review, "chosen_options": [labels.get(o, o) for o in review["chosen_options"]]}
    before = s3.keys()
    op = SegmindPublishOperator(
        task_id="publish", candidates=candidates, review=review, **{"s3_bucket": s3.bucket, **kwargs}
    )
    with pytest.raises(AirflowFailException, match=match):
        op.execute(make_context(task_id="publish", dag_id="segmind_dag", run_id="manual__2026-01-01T00:00:00+00:00"))
    assert s3.keys() == before


@pytest.mark.parametrize(
    ("candidates", "match"),
    [
        ([], r"candidates is empty"),
        ("s3://bucket/one.jpeg", r"candidates must be a list"),
        (["https://example.com/a.jpeg"], r"candidates: 'https://example\.com/a\.jpeg' is not an s3://bucket/key URI"),
        (["s3://bucket/a/../b.jpeg"], r"candidates: .*'\.\.' segment"),
        (["s3://bucket/a.jpeg", "s3://bucket/a.jpeg"], r"candidates: s3://bucket/a\.jpeg is listed twice"),
    ],
)
def test_bad_candidates_are_refused_before_any_s3_call(s3: S3Env, candidates: Any, match: str) -> None:
    op = publisher(s3, candidates, answer("1. a.jpeg"))
    with pytest.raises(AirflowFailException, match=match):
        op.execute(make_context(task_id="publish"))
    assert s3.keys() == []
