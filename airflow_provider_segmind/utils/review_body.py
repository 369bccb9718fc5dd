"""The review screen's text: a Markdown body showing each candidate image, its prompt, seed and cost.

Airflow's review screen (Human-in-the-loop "Required actions") renders ``body`` as Markdown. Each
candidate is shown as an image through a short-lived presigned S3 URL (the bucket stays private,
the link expires), under the option label the reviewer picks, with the facts from its manifest; a
link to the run's contact sheet can be added for reviewers whose screen does not load images.

The links are signed with SigV4 (``X-Amz-Algorithm=AWS4-HMAC-SHA256``), by the client the input
images use too (:func:`~airflow_provider_segmind.transfers._s3.sigv4_client`): the Amazon
provider's ``S3Hook.generate_presigned_url`` leaves the signature version to botocore, which may
sign with SigV2, refused by S3 for buckets created since 2020.

Who can open them: anyone holding the body while a link is valid. The body is stored in Airflow's
metadata database and shown to whoever may see the task, and HITL notifiers (Slack, email, ...)
send it outside Airflow, where Airflow's access control does not reach; a link keeps working after
the review is answered, until it expires. Hence a short default (:data:`DEFAULT_URL_EXPIRY`). Written with Jinja2 like
:mod:`airflow_provider_segmind.utils.contact_sheet` (Jinja2 comes with Airflow). S3 is only
touched when the body is built, at run time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, Final

import jinja2

from airflow_provider_segmind.exceptions import ReviewInputError
from airflow_provider_segmind.utils.presigning import sigv4_client
from airflow_provider_segmind.utils.review_candidates import PUBLISH_NONE, candidate_labels, pin, split_uri
from airflow_provider_segmind.utils.s3_keys import SHA256_METADATA, manifest_key

#: SigV4 presigned URLs live at most 7 days.
MAX_URL_EXPIRY: Final = timedelta(days=7)
#: Presigned image links live this long unless the review says otherwise (not the review's response
#: timeout, a day by default: a link forwarded by a notifier works for anyone who has it, and keeps
#: working after the answer). An hour covers a reviewer who answers the notification; one who comes
#: later clears the review task for fresh links. It is also about what links signed with temporary
#: credentials (an instance or task role, an assumed role: an hour by default) live anyway.
DEFAULT_URL_EXPIRY: Final = timedelta(hours=1)
#: Markdown's ASCII punctuation that could start markup (links, images, emphasis, HTML, headings).
_MARKDOWN_SPECIAL: Final = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&])")


def escape_markdown(value: Any) -> str:
    """Text shown literally in Markdown: one line, every markup character backslash-escaped.

    Prompts are user text: ``![x](https://elsewhere)`` in a prompt must not show someone else's
    image on the review screen, nor ``<b>`` turn into markup.
    """
    text = " ".join(str(value).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _url(value: str) -> str:
    """A link destination in ``<...>`` (spaces and parentheses allowed), refusing what breaks out of it."""
    if any(c in value for c in "<>\n\r"):
        raise ValueError(f"not a URL usable in Markdown: {value!r}")
    return f"<{value}>"


# Not HTML: HTML autoescaping would show "&amp;" in URLs and prompts; values go through md/url instead.
_ENV: Final = jinja2.Environment(
    autoescape=False,  # noqa: S701
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["md"] = escape_markdown
_ENV.filters["url"] = _url
#: The body. Values are escaped with ``md`` (text) or ``url`` (link destinations); no raw HTML.
_BODY: Final = _ENV.from_string(
    """{{ intro | md }}

{% if contact_sheet %}
[Open the contact sheet of this run]({{ contact_sheet | url }}) (all candidates on one page\
{%- if expires %}, link valid for {{ expires | md }}{% endif %}).

{% endif %}
{% for card in cards %}
### {{ card.label | md }}

{% if card.image and inline %}
![{{ card.alt | md }}]({{ card.image | url }})
{% elif card.image %}
[Open the image]({{ card.image | url }}) ({{ card.uri | md }})
{% else %}
{{ card.uri | md }}
{% endif %}

{% for name, value in card.rows %}**{{ name }}:** {{ value | md }}{% if not loop.last %} · {% endif %}{% endfor %}


{% endfor %}
---

**{{ publish_none | md }}** (preselected: the answer if nobody responds in time) publishes nothing: \
remove it when you choose images. Candidates that are not chosen stay where they are.
"""
)


def _rows(manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
    metrics = manifest.get("metrics") or {}
    width, height = manifest.get("width"), manifest.get("height")
    rows = [
        ("Prompt", manifest.get("prompt")),
        ("Negative prompt", manifest.get("negative_prompt")),
        ("Seed", manifest.get("seed")),
        ("Size", f"{width}x{height}" if width and height else None),
        ("Cost", manifest.get("cost", metrics.get("cost"))),
        ("Model", manifest.get("model")),
        ("Request", manifest.get("request_id")),
        # The first hex digits of what the review pins (the publish step copies exactly these bytes).
        ("SHA-256", f"{manifest['sha256'][:12]}…" if isinstance(manifest.get("sha256"), str) else None),
    ]
    return [(name, str(value)) for name, value in rows if value not in (None, "")]


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def render_review_body(
    uris: Sequence[str],
    manifests: Sequence[Mapping[str, Any] | None],
    images: Sequence[str | None],
    *,
    contact_sheet: str | None = None,
    expires: timedelta | None = None,
    intro: str | None = None,
    inline: bool = True,
) -> str:
    """The Markdown body: per candidate its option label, its image (or a link to the object), its facts.

    Pure: everything it shows is passed in (see :func:`build_review_body` for the S3 side).
    """
    labels = candidate_labels(uris)
    cards = []
    for label, uri, manifest, image in zip(labels, uris, manifests, images, strict=True):
        facts = manifest or {}
        cards.append(
            {
                "label": label,
                "uri": uri,
                "image": image,
                "alt": label,
                "rows": _rows(facts),
            }
        )
    return _BODY.render(
        intro=intro or f"{len(cards)} candidate image(s). Choose the ones to publish.",
        contact_sheet=contact_sheet,
        expires=_duration(expires) if expires else None,
        cards=cards,
        inline=inline,
        publish_none=PUBLISH_NONE,
    )


def build_review_body(
    uris: Sequence[str],
    *,
    aws_conn_id: str = "aws_default",
    expires: timedelta = DEFAULT_URL_EXPIRY,
    images: bool = True,
    contact_sheet: str | None = None,
    intro: str | None = None,
) -> str:
    """The review's Markdown body (:func:`build_review` without its pins)."""
    body, _pins = build_review(
        uris, aws_conn_id=aws_conn_id, expires=expires, images=images, contact_sheet=contact_sheet, intro=intro
    )
    return body


def build_review(
    uris: Sequence[str],
    *,
    aws_conn_id: str = "aws_default",
    expires: timedelta = DEFAULT_URL_EXPIRY,
    images: bool = True,
    contact_sheet: str | None = None,
    intro: str | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Read each candidate's manifest and object head, presign its image (and the contact sheet), render the body.

    Returns the body and one pin per option (:func:`~airflow_provider_segmind.utils.review_candidates.pin`:
    label, URI, SHA-256, version id): what the review shows is pinned, the image link included (it
    names the pinned version where the bucket keeps versions), so the publish step can check it
    copies that object. A candidate whose bytes are not the ones its manifest records (its
    ``x-amz-meta-sha256`` differs) is refused here, before anyone is asked.

    :param uris: the candidates' ``s3://`` URIs, in the order of the review's options.
    :param expires: how long the presigned (SigV4) links work (default 1 hour, capped at 7 days,
        SigV4's limit).
    :param images: show the images inline; ``False`` links each one instead (for a screen that
        does not load images, with ``contact_sheet``).
    :param contact_sheet: an ``s3://`` URI of the run's contact sheet (``write_contact_sheet``'s
        ``contact_sheet``), linked through a presigned URL too.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    client = sigv4_client(S3Hook(aws_conn_id=aws_conn_id))
    expires = min(expires, MAX_URL_EXPIRY)
    seconds = int(expires.total_seconds())

    def presign(uri: str, version_id: str | None = None) -> str:
        bucket, key = split_uri(uri)
        params = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
        url = client.generate_presigned_url(ClientMethod="get_object", Params=params, ExpiresIn=seconds)
        if not url:
            raise RuntimeError(f"could not presign {uri}")
        return str(url)

    manifests: list[Mapping[str, Any] | None] = []
    pins: list[dict[str, Any]] = []
    for label, uri in zip(candidate_labels(uris), uris, strict=True):
        bucket, key = split_uri(uri)
        manifest = json.loads(client.get_object(Bucket=bucket, Key=manifest_key(key))["Body"].read())
        head = client.head_object(Bucket=bucket, Key=key)
        recorded = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}.get(SHA256_METADATA)
        sha256 = manifest.get("sha256") if isinstance(manifest, Mapping) else None
        if recorded is not None and sha256 is not None and recorded != sha256:
            raise ReviewInputError(
                f"candidates: {uri} is not the object its manifest describes (its sha256 metadata {recorded}, its "
                f"manifest {sha256}): it was changed after it was stored; nothing was asked"
            )
        manifests.append(manifest if isinstance(manifest, Mapping) else None)
        pins.append(pin(label, uri, sha256 or recorded, head.get("VersionId")))
    body = render_review_body(
        uris,
        manifests,
        [presign(p["uri"], p["version_id"]) for p in pins],
        contact_sheet=presign(contact_sheet) if contact_sheet else None,
        expires=expires,
        intro=intro,
        inline=images,
    )
    return body, pins
