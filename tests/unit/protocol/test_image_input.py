"""The pure rules of s3:// inputs: which URIs name one object, and when two presigned URLs name the same one.

A presigned URL is signed anew by every try (another date, expiry and signature): the request
history match must still see the earlier try's request as "the same body", or a retry after a lost
submit would pay for a second job.
"""

from __future__ import annotations

import pytest

from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.protocol.history_search import Match, body_match, body_matches
from airflow_provider_segmind.protocol.image_input import (
    is_presigned_url,
    s3_uri_problem,
    same_presigned_object,
    unsigned_url,
)
from airflow_provider_segmind.protocol.params import validate_params
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_IMG2IMG_MODEL

OBJECT = "https://photos.s3.eu-west-1.amazonaws.com/product-photos/mug.png"


def sigv4(date: str, expires: int = 900, version: str | None = None) -> str:
    query = f"versionId={version}&" if version else ""
    return (
        f"{OBJECT}?{query}X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261130%2Feu-west-1"
        f"%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
        f"&X-Amz-Signature={date[-6:]}abcdef0123456789"
    )


def test_two_signings_of_one_object_are_the_same_input_and_other_objects_are_not() -> None:
    first, second = sigv4("20261130T120000Z"), sigv4("20261130T121500Z", expires=600)
    assert first != second
    assert is_presigned_url(first)
    assert unsigned_url(first) == unsigned_url(second) == OBJECT
    assert same_presigned_object(first, second)
    assert not same_presigned_object(first, sigv4("20261130T120000Z").replace("mug.png", "vase.png"))
    assert not same_presigned_object(sigv4("20261130T120000Z", version="v1"), sigv4("20261130T120000Z", version="v2"))
    sigv2 = f"{OBJECT}?AWSAccessKeyId=AKID&Signature=abc%3D&Expires=1796041238"
    assert is_presigned_url(sigv2)
    assert same_presigned_object(first, sigv2)
    assert not same_presigned_object(OBJECT, OBJECT + "?x=1")  # unsigned URLs are compared exactly


def test_the_history_match_accepts_a_resigned_url_but_not_another_body() -> None:
    sent = {"prompt": "a mug", "mode": "image-to-image", "image": sigv4("20261130T121500Z"), "strength": 0.5}
    recorded = {**sent, "image": sigv4("20261130T120000Z"), "aspect_ratio": "1:1"}
    assert body_matches(sent, recorded)
    assert not body_matches({**sent, "prompt": "a vase"}, recorded)
    assert not body_matches(sent, {**recorded, "image": sigv4("20261130T120000Z").replace("mug", "cup")})
    assert not body_matches({**sent, "image": OBJECT}, recorded)  # a plain URL is not a signing of it


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://bucket", "no object key"),
        ("s3://bucket/", "no object key"),
        ("s3://bucket/photos/", "that is a prefix"),
        ("S3://bucket/a.png", "lower-case 's3://'"),
        ("s3://UPPER/a.png", "not an S3 bucket name"),
        ("s3://a..b/a.png", "not an S3 bucket name"),
        ("s3://bucket/a\nb.png", "control characters"),
    ],
)
def test_an_s3_uri_must_name_one_object(uri: str, problem: str) -> None:
    found = s3_uri_problem(uri)
    assert found is not None
    assert problem in found
    with pytest.raises(SegmindInvalidParametersError, match="'image'") as info:
        validate_params(SD3_LARGE_IMG2IMG_MODEL, {"prompt": "x", "image": uri, "strength": 0.5})
    assert problem in str(info.value)


def test_a_valid_s3_uri_passes_validation_unchanged() -> None:
    uri = "s3://photos-bucket/product photos/mug (1).png"
    assert s3_uri_problem(uri) is None
    body = validate_params(SD3_LARGE_IMG2IMG_MODEL, {"prompt": "x", "image": uri, "strength": 0.5})
    assert body["image"] == uri


def test_the_history_match_accepts_resigned_urls_under_any_name_and_in_lists() -> None:
    """Issue 23 item 2: ``history_search._same`` compares presigned URLs without their signature at any
    key and inside lists, so a retry that signs anew still finds its lost submit."""
    vase = sigv4("20261130T120000Z").replace("mug.png", "vase.png")
    sent = {
        "prompt": "both on a shelf",
        "input_image": sigv4("20261130T121500Z"),
        "images": [sigv4("20261130T121500Z", expires=600), vase.replace("20261130T120000Z", "20261130T121500Z")],
    }
    recorded = {
        "prompt": "both on a shelf",
        "input_image": sigv4("20261130T120000Z"),
        "images": [sigv4("20261130T120000Z"), vase],
    }
    assert body_matches(sent, recorded)
    assert not body_matches(sent, {**recorded, "images": [vase, sigv4("20261130T120000Z")]})  # another order
    assert not body_matches(sent, {**recorded, "images": [sigv4("20261130T120000Z")]})  # another length
    assert not body_matches(sent, {**recorded, "input_image": vase})  # another object


def test_a_list_of_media_the_history_replaced_by_a_placeholder_proves_nothing_either_way() -> None:
    """Segmind "does not store any input images" (docs.segmind.com/api-reference/logging): a row may
    hold a placeholder where the list of input media was, which is neither proof nor disproof."""
    sent = {"prompt": "two products", "images": [sigv4("20261130T121500Z"), "A" * 2048]}
    assert body_match(sent, {"prompt": "two products", "images": "<not stored>"}) is Match.PARTIAL
    assert body_match(sent, {"prompt": "another", "images": "<not stored>"}) is Match.NO
    assert body_match(sent, {"prompt": "two products", "images": OBJECT}) is Match.NO  # a URL is not a placeholder
    assert body_match({"prompt": "x", "tags": ["a", "b"]}, {"prompt": "x", "tags": "a,b"}) is Match.NO  # not media
