"""The review body against a real S3 endpoint (moto server): presigned image links that really serve the
candidates, the facts from their manifests, option labels that match the review's options, and prompts
that cannot inject Markdown."""

from __future__ import annotations

import re
import urllib.request
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.utils.review_body import build_review_body, escape_markdown, render_review_body
from airflow_provider_segmind.utils.review_candidates import PUBLISH_NONE, candidate_labels, review_options
from tests.support.review import store_candidates
from tests.support.s3 import S3Env
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)

IMAGE = re.compile(r"!\[[^\]]*\]\(<([^>]+)>\)")


def assert_sigv4(link: str, *, seconds: int) -> None:
    """Issue 24 item 4: a SigV4 presigned URL (what S3 accepts for every bucket), never SigV2's
    ``AWSAccessKeyId``/``Signature``/``Expires``. moto serves both, so the form is what is checked."""
    query = parse_qs(urlparse(link).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Signature"][0]
    assert query["X-Amz-Credential"][0].endswith("/s3/aws4_request")
    assert query["X-Amz-Expires"] == [str(seconds)]
    assert not {"AWSAccessKeyId", "Signature", "Expires"} & set(query)


def test_the_amazon_providers_own_presign_may_be_sigv2_ours_is_sigv4(s3: S3Env) -> None:
    """Why the review signs through ``sigv4_client``: ``S3Hook.generate_presigned_url`` leaves the
    signature version to botocore, which signs this endpoint's URLs with SigV2 (boto3 1.44)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_provider_segmind.utils.presigning import sigv4_client

    s3.client.put_object(Bucket=s3.bucket, Key="a.jpeg", Body=b"x")
    hook = S3Hook(aws_conn_id="aws_default")
    theirs = hook.generate_presigned_url("get_object", params={"Bucket": s3.bucket, "Key": "a.jpeg"}, expires_in=60)
    ours = sigv4_client(hook).generate_presigned_url(
        "get_object", Params={"Bucket": s3.bucket, "Key": "a.jpeg"}, ExpiresIn=60
    )
    assert_sigv4(ours, seconds=60)
    if "X-Amz-Signature" not in theirs:  # the defect this guards against (boto3 may change its mind)
        assert "Signature=" in theirs
    assert fetch(ours) == b"x"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a presigned http URL on loopback
        return bytes(response.read())


def test_each_candidate_is_shown_through_a_short_lived_presigned_url(emu: SegmindEmulator, s3: S3Env) -> None:
    uris = store_candidates(emu, s3, ["a blue bicycle", "a red bicycle"])
    body = build_review_body(uris, expires=timedelta(minutes=15))

    links = IMAGE.findall(body)
    assert len(links) == 2
    for uri, link in zip(uris, links, strict=True):
        key = uri.split("/", 3)[3]
        assert fetch(link) == s3.get(key)[0]  # the link serves the stored candidate, unauthenticated
        assert_sigv4(link, seconds=900)
    # Under each image: its option label (as the review offers it) and its manifest's facts.
    for label in candidate_labels(uris):
        assert f"### {escape_markdown(label)}" in body
    assert review_options(uris)[-1] == PUBLISH_NONE
    assert "**Prompt:** a blue bicycle" in body
    assert "**Seed:** 100" in body
    assert "**Seed:** 101" in body
    assert f"**{escape_markdown(PUBLISH_NONE)}**" in body


def test_links_instead_of_images_and_a_contact_sheet_link(emu: SegmindEmulator, s3: S3Env) -> None:
    uris = store_candidates(emu, s3, ["a green lamp"])
    s3.client.put_object(Bucket=s3.bucket, Key="sheets/contact-sheet.html", Body=b"<html>sheet</html>")
    body = build_review_body(uris, images=False, contact_sheet=f"s3://{s3.bucket}/sheets/contact-sheet.html")
    assert not IMAGE.findall(body)
    sheet = re.search(r"\[Open the contact sheet of this run\]\(<([^>]+)>\)", body)
    assert sheet is not None
    assert fetch(sheet.group(1)) == b"<html>sheet</html>"
    image = re.search(r"\[Open the image\]\(<([^>]+)>\)", body)
    assert image is not None
    assert fetch(image.group(1)) == s3.get(uris[0].split("/", 3)[3])[0]
    assert "link valid for 1 hour)" in body
    assert_sigv4(sheet.group(1), seconds=3600)  # the default lifetime: 1 hour
    assert_sigv4(image.group(1), seconds=3600)


def test_a_prompt_cannot_inject_markdown_or_html() -> None:
    """Rendered by a CommonMark renderer (markdown-it, as Airflow's UI renders Markdown): one image, no links."""
    from markdown_it import MarkdownIt

    prompt = "![pwned](https://evil.example/x.png) <img src=x onerror=alert(1)> [click](javascript:alert(1)) # h"
    body = render_review_body(
        ["s3://bucket/c/1.jpeg"], [{"prompt": prompt, "seed": 1}], ["https://bucket.example/1.jpeg?sig=1&b=2"]
    )
    html = MarkdownIt("commonmark").render(body)
    assert re.findall(r"<img [^>]*>", html) == [
        '<img src="https://bucket.example/1.jpeg?sig=1&amp;b=2" alt="1. 1.jpeg" />'
    ]
    assert "<a " not in html
    assert 'evil.example/x.png"' not in html
    assert (
        "![pwned](https://evil.example/x.png) &lt;img src=x onerror=alert(1)&gt; [click](javascript:alert(1)) # h"
        in html
    )


def test_a_link_that_would_break_out_of_its_brackets_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="not a URL usable in Markdown"):
        render_review_body(["s3://bucket/c/1.jpeg"], [None], ["https://x.example/a>b"])
