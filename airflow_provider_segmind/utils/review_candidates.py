"""Review candidates: which stored images a reviewer chooses from, their option labels, and the choice read back.

The review step (:class:`~airflow_provider_segmind.operators.review.SegmindReviewOperator`) offers
one option per candidate and the publish step
(:class:`~airflow_provider_segmind.transfers.publish.SegmindPublishOperator`) maps the chosen
options back to S3 objects. Both call the functions here, so the labels are built by one rule: a
label depends only on the candidate's position and key (no S3 read), and a retried or resumed task
builds the same labels again. Every check names the argument it refuses, and all of them run
before anything is read or copied.

A label names a position, not an object: with a key template whose file names repeat
(``.../{request_id}/image.png``) "1. image.png" is whichever candidate comes first. So the review
**pins** what each option showed (:func:`pin`: its URI, the SHA-256 of its bytes and its S3 version
id), stores the pins with its answer (:data:`PINNED_KEY`), and the publish step checks every chosen
option against its pin (:func:`chosen_candidates`): a candidate list that shifted since the review,
or a candidate that changed, fails before anything is copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from airflow_provider_segmind.exceptions import ReviewInputError, UnsafeS3KeyError
from airflow_provider_segmind.utils.s3_keys import validate_bucket, validate_key

#: The option that publishes nothing; also what a review that times out chooses (see the operator).
PUBLISH_NONE: Final = "Publish none"
#: Longest option label (the UI shows options as buttons/checkbox labels).
_MAX_LABEL: Final = 80
#: The key of the review's result holding its pins (one per option it offered, see :func:`pin`).
PINNED_KEY: Final = "pinned_candidates"


def flatten_candidates(candidates: Any, *, field: str = "candidates") -> list[str]:
    """The candidates' ``s3://bucket/key`` URIs, in order, from a list or a list of lists (mapped tasks).

    Refuses (naming ``field``) anything that is not a non-empty list of distinct, safe S3 URIs.
    Entries that are ``None`` (a failed mapped store task upstream) are skipped.
    """
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise ReviewInputError(
            f"{field} must be a list of s3://bucket/key URIs (SegmindToS3Operator's return value), "
            f"got {type(candidates).__name__}"
        )
    uris: list[str] = []
    for item in candidates:
        if item is None:
            continue
        if isinstance(item, str):
            uris.append(item)
        elif isinstance(item, Sequence):
            uris.extend(flatten_candidates(item, field=field) if item else [])
        else:
            raise ReviewInputError(f"{field}: {item!r} is not an s3://bucket/key URI")
    seen: set[str] = set()
    for uri in uris:
        split_uri(uri, field=field)
        if uri in seen:
            raise ReviewInputError(f"{field}: {uri} is listed twice")
        seen.add(uri)
    return uris


def split_uri(uri: str, *, field: str = "candidates") -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://bucket/key`` URI, both checked by the transfer's key rules."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ReviewInputError(f"{field}: {uri!r} is not an s3://bucket/key URI")
    bucket, _, key = uri[5:].partition("/")
    try:
        return validate_bucket(bucket), validate_key(key)
    except UnsafeS3KeyError as err:
        raise ReviewInputError(f"{field}: {uri!r}: {err}") from None


def candidate_labels(uris: Sequence[str]) -> list[str]:
    """One option label per candidate: ``"<n>. <file name>"`` (unique by its number)."""
    labels = []
    for number, uri in enumerate(uris, start=1):
        name = uri.rsplit("/", 1)[-1]
        label = f"{number}. {name}"
        labels.append(label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "…")
    return labels


def review_options(uris: Sequence[str]) -> list[str]:
    """The review's options: every candidate's label, then :data:`PUBLISH_NONE`."""
    return [*candidate_labels(uris), PUBLISH_NONE]


def pin(option: str, uri: str, sha256: str | None, version_id: str | None) -> dict[str, Any]:
    """What one review option showed: its label, the object's URI, the SHA-256 of its bytes, its version id.

    ``version_id`` is ``None`` in a bucket without versioning (S3 answers ``"null"`` there).
    """
    return {
        "option": option,
        "uri": uri,
        "sha256": sha256,
        "version_id": version_id if version_id and version_id != "null" else None,
    }


def read_pins(value: Any, *, field: str = "review") -> list[dict[str, Any]] | None:
    """The review's pins (its :data:`PINNED_KEY`), checked; ``None`` when the review has none.

    A review result made by something other than :class:`SegmindReviewOperator` (or before it pinned
    its options) has none; a malformed one is refused, naming the field.
    """
    if value is None:
        return None
    where = f"{field}.{PINNED_KEY}"
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ReviewInputError(f"{where} must be the review's list of pinned options, got {type(value).__name__}")
    pins: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("option"), str):
            raise ReviewInputError(f"{where}: {item!r} is not a pinned option (option, uri, sha256, version_id)")
        split_uri(str(item.get("uri")), field=where)
        for name in ("sha256", "version_id"):
            if item.get(name) is not None and not isinstance(item.get(name), str):
                raise ReviewInputError(f"{where}: {name} of {item['option']!r} must be a string, got {item[name]!r}")
        pins.append(pin(item["option"], str(item["uri"]), item.get("sha256"), item.get("version_id")))
    if len({p["option"] for p in pins}) != len(pins):
        raise ReviewInputError(f"{where}: an option is pinned twice")
    return pins


def chosen_candidates(
    review: Any, uris: Sequence[str], *, field: str = "review"
) -> list[tuple[str, dict[str, Any] | None]]:
    """The chosen candidates as ``(uri, pin)``, in candidate order; ``[]`` for :data:`PUBLISH_NONE` alone.

    ``review`` is the review task's return value (the standard provider's HITL result:
    ``chosen_options``, ``responded_by_user``, ``responded_at``; from
    :class:`~airflow_provider_segmind.operators.review.SegmindReviewOperator` also its pins,
    :data:`PINNED_KEY`). Refuses, naming the field, an answer without options, an option that was
    not offered, or :data:`PUBLISH_NONE` mixed with candidates. With pins, every chosen option must
    still be the same object in ``uris`` (same label, same URI): a candidate list that shifted since
    the review (another order, a candidate added or gone) is refused; the pin is returned for the
    caller to check the object's bytes and version. Without pins (a result made otherwise), the
    option is read against ``uris`` as they are now (``pin`` is ``None``).
    """
    if not isinstance(review, Mapping):
        raise ReviewInputError(
            f"{field} must be the review task's result (a mapping with chosen_options), got {type(review).__name__}"
        )
    pins = read_pins(review.get(PINNED_KEY), field=field)
    picked = _chosen_labels(review, uris, pins, field=field)
    labels = candidate_labels(uris)
    by_label = dict(zip(labels, uris, strict=True))
    if pins is None:
        return [(uri, None) for label, uri in by_label.items() if label in picked]
    by_option = {p["option"]: p for p in pins}
    shifted = [
        f"{option!r} showed {by_option[option]['uri']}, but the candidates now give it "
        f"{by_label.get(option) or 'to no candidate'}"
        for option in sorted(picked)
        if by_label.get(option) != by_option[option]["uri"]
    ]
    if shifted:
        raise ReviewInputError(
            f"{field}: the candidates are not the ones the review showed ({'; '.join(shifted)}); nothing was "
            "copied. Pass the same candidates the review had, or clear the review task to review these."
        )
    return [(uri, by_option[label]) for label, uri in by_label.items() if label in picked]


def _chosen_labels(
    review: Mapping[str, Any], uris: Sequence[str], pins: list[dict[str, Any]] | None, *, field: str
) -> set[str]:
    """The chosen option labels (without :data:`PUBLISH_NONE`), each checked against what was offered."""
    chosen = review.get("chosen_options")
    if isinstance(chosen, str) or not isinstance(chosen, Sequence):
        raise ReviewInputError(f"{field}.chosen_options must be a list of option labels, got {chosen!r}")
    if not chosen:
        raise ReviewInputError(
            f"{field}.chosen_options is empty: choose at least one candidate, or {PUBLISH_NONE!r} to publish nothing"
        )
    offered = [p["option"] for p in pins] if pins is not None else candidate_labels(uris)
    unknown = [option for option in chosen if option != PUBLISH_NONE and option not in offered]
    if unknown:
        raise ReviewInputError(
            f"{field}.chosen_options: {unknown!r} not among the candidates ({offered!r} or {PUBLISH_NONE!r})"
        )
    if PUBLISH_NONE in chosen and len(set(chosen)) > 1:
        raise ReviewInputError(
            f"{field}.chosen_options: {PUBLISH_NONE!r} cannot be chosen together with candidates (the review form "
            "preselects it: remove it when choosing images); nothing was copied. Clear the review task to answer again."
        )
    return {str(option) for option in chosen if option != PUBLISH_NONE}


def approval(review: Mapping[str, Any], *, task_id: str | None = None) -> dict[str, Any]:
    """Who approved and when, for a published object's manifest.

    ``approved_by`` is the responding user (``{"id", "name"}``), or ``None`` when the review timed
    out and its default was taken (the standard provider leaves ``responded_by_user`` empty then).
    """
    user = review.get("responded_by_user")
    when = review.get("responded_at")
    return {
        "approved_by": {"id": str(user.get("id")), "name": str(user.get("name"))}
        if isinstance(user, Mapping)
        else None,
        "approved_at": when.isoformat() if isinstance(when, datetime) else (str(when) if when else None),
        "timed_out": not isinstance(user, Mapping),
        "chosen_options": [str(option) for option in review.get("chosen_options") or []],
        "review_task_id": task_id,
    }
