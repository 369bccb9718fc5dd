"""SegmindPublishOperator: copy the candidates a reviewer chose into a ``published/`` prefix, verified.

The write side is the transfer's own (``_s3.S3Writer``: conditional ``If-None-Match: *`` writes,
SHA-256 checked by S3; ``_storing.write_manifest_document``: the manifest beside each object;
``utils/s3_keys``: the key rules; ``_assets``: the one asset event per task). This module only reads
the chosen candidates back, checks they are the bytes the reviewer saw, and says who approved
them. Like the transfer it imports neither boto3 nor the Amazon provider at parse time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final

from airflow.providers.common.compat.sdk import AirflowSkipException, BaseOperator
from airflow.sdk import Asset

from airflow_provider_segmind import __version__
from airflow_provider_segmind.exceptions import PublishIntegrityError, ReviewInputError, UnsafeS3KeyError
from airflow_provider_segmind.transfers._assets import (
    AUTO_ASSET,
    DEFAULT_MAX_EVENT_OBJECTS,
    declare_outlet,
    declare_partial_outlet,
    emit_event,
)
from airflow_provider_segmind.transfers._s3 import (
    ConflictCheck,
    S3Writer,
    StoredObject,
    check_writer_options,
)
from airflow_provider_segmind.transfers._spool import Spool
from airflow_provider_segmind.transfers._storing import _ext_for, airflow_ids, write_manifest_document
from airflow_provider_segmind.utils.media_policy import DEFAULT_SPOOL_MEMORY
from airflow_provider_segmind.utils.review_candidates import (
    PINNED_KEY,
    PUBLISH_NONE,
    approval,
    chosen_candidates,
    flatten_candidates,
    split_uri,
)
from airflow_provider_segmind.utils.s3_client import ChecksumMode, s3_client
from airflow_provider_segmind.utils.s3_keys import SHA256_METADATA, manifest_key, parse_location, render_key, s3_uri
from airflow_provider_segmind.utils.task_failure import fail_for_good_if_no_retry_helps

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["DEFAULT_PUBLISHED_KEY", "SegmindPublishOperator"]

#: Where published images go: one folder per DAG (the asset), then per run, named like the candidate.
DEFAULT_PUBLISHED_KEY: Final = "published/{dag_id}/{run_id}/{request_id}-{index}.{ext}"
_CHUNK: Final = 1024 * 1024


class SegmindPublishOperator(BaseOperator):
    """Copy the candidates a reviewer chose into ``published/``, with a manifest naming who approved them.

    **Inputs**: ``candidates`` (templated), the ``s3://`` URIs a
    :class:`~airflow_provider_segmind.transfers.segmind_to_s3.SegmindToS3Operator` stored (its
    ``.output``, or a list of them), in the order the review showed them; ``review`` (templated),
    the review task's result (:class:`~airflow_provider_segmind.operators.review.SegmindReviewOperator`'s
    ``.output``: the standard provider's ``chosen_options``, ``responded_by_user``, ``responded_at``).

    **Checks, before anything is copied**: every candidate is a safe ``s3://bucket/key``, listed
    once; the answer chose at least one option, each of them one the review offered (or
    ``"Publish none"`` alone); the destination bucket and key template pass the transfer's key
    rules; no published key collides with another or with a candidate. A refused input fails the
    task without retries, naming the argument.

    **What the reviewer saw**: the review's result pins each option it offered (its URI, SHA-256
    and S3 version id, ``pinned_candidates``; see ``SegmindReviewOperator``). Every chosen option
    must still be the same candidate (same label, same URI: a list that shifted since the review is
    refused), and the candidate's manifest, ``x-amz-meta-sha256`` and current version must still be
    the pinned ones; all of them are checked before the first copy, so a shifted or changed
    candidate publishes nothing (``PublishIntegrityError``). A review result without pins (not made
    by ``SegmindReviewOperator``) is read against the candidates as they are (logged).

    **Copies**: each chosen object is read back (the pinned version, where the bucket keeps
    versions) and its SHA-256 compared with the pinned one and the one its manifest and its
    ``x-amz-meta-sha256`` record (the bytes published are the bytes reviewed), then written
    like the transfer writes: conditionally (``If-None-Match: *``), checksum-verified by S3, the
    SHA-256 in its metadata; a retry finds its own objects unchanged, a different object at a key
    fails (``replace=False``). Beside it, ``<key>.manifest.json``: the candidate's manifest with
    the new ``uri``/``bucket``/``key``/``write`` and an ``approval`` block::

        {"approval": {"approved_by": {"id", "name"} | null, "approved_at", "timed_out",
                      "chosen_options", "review_task_id"},
         "source": {..., "candidate_uri", "candidate_manifest"}, "timestamps": {..., "published_at"}}

    Candidates are never moved or deleted: the rejected ones stay where they are.

    **Publish none**: when the answer is ``"Publish none"`` (also the review's default on timeout)
    the task is skipped: nothing is copied and no asset event is emitted.

    **Asset event**: one per task on the published destination, as the transfer emits: with the
    default ``asset="auto"`` and a literal bucket, ``Asset("s3://<bucket>/published/<dag_id>")``,
    declared when the DAG is parsed; its ``extra`` lists the published objects (see
    ``SegmindToS3Operator``, **Asset events**). Candidates stored with ``asset=None`` emit none, so
    consumers of this asset see published images only.

    :param candidates: see above. Templated.
    :param review: see above. Templated.
    :param s3_bucket: the destination bucket (or ``s3://bucket``). Templated. Default: the
        candidates' bucket (they must then all be in one).
    :param s3_key: the published key template (placeholders as for the transfer; values from the
        candidate's manifest and this task). Templated. Default :data:`DEFAULT_PUBLISHED_KEY`.
    :param aws_conn_id: the AWS connection (Amazon provider's ``S3Hook``).
    :param replace: overwrite a different object found at a published key (default: fail).
    :param checksum_mode: as for the transfer.
    :param conflict_check: as for the transfer.
    :param asset: ``"auto"`` (default), an ``Asset``, a URI, or ``None`` (no event).
    :param asset_alias: emit through ``AssetAlias(asset_alias)`` instead.
    :param max_event_objects: objects listed in the event's ``extra``.
    :param tmp_dir: where large objects are spooled while they are verified.
    """

    template_fields: Sequence[str] = ("candidates", "review", "s3_bucket", "s3_key", "aws_conn_id")
    template_fields_renderers: ClassVar[dict[str, str]] = {"candidates": "json", "review": "json"}
    ui_color = "#f4e3c1"

    def __init__(
        self,
        *,
        candidates: Any,
        review: Any,
        s3_bucket: str | None = None,
        s3_key: str = DEFAULT_PUBLISHED_KEY,
        aws_conn_id: str = "aws_default",
        replace: bool = False,
        checksum_mode: ChecksumMode = "when_supported",
        conflict_check: ConflictCheck = "conditional",
        asset: Asset | str | None = AUTO_ASSET,
        asset_alias: str | None = None,
        max_event_objects: int = DEFAULT_MAX_EVENT_OBJECTS,
        tmp_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.event_target = declare_outlet(self, asset, asset_alias, s3_bucket, s3_key)
        check_writer_options(
            checksum_mode=checksum_mode,
            conflict_check=conflict_check,
            replace=replace,
            multipart_threshold=DEFAULT_SPOOL_MEMORY,
            part_size=DEFAULT_SPOOL_MEMORY,
            max_concurrency=4,
        )
        if not isinstance(max_event_objects, int) or max_event_objects < 0:
            raise ValueError("max_event_objects must be a number of objects (0 or more)")
        self.candidates = candidates
        self.review = review
        #: The review task, named in the manifests' ``approval`` when ``review`` is its ``.output``.
        self.review_task_id: str | None = getattr(getattr(review, "operator", None), "task_id", None)
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.aws_conn_id = aws_conn_id
        self.replace = replace
        self.checksum_mode: ChecksumMode = checksum_mode
        self.conflict_check: ConflictCheck = conflict_check
        self.asset = asset
        self.asset_alias = asset_alias
        self.max_event_objects = max_event_objects
        self.tmp_dir = tmp_dir

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """``partial()`` that declares the asset outlet too (see ``SegmindToS3Operator.partial``)."""
        kwargs.setdefault("s3_key", DEFAULT_PUBLISHED_KEY)
        partial = super().partial(**kwargs)
        declare_partial_outlet(partial.kwargs)
        return partial

    # ------------------------------------------------------------------ execute

    def execute(self, context: Context) -> list[str]:
        """Publish the chosen candidates; refused inputs and integrity failures fail without retries."""
        with fail_for_good_if_no_retry_helps():
            return self._execute(context)

    def _plan(self) -> tuple[list[str], list[tuple[str, dict[str, Any] | None]], str, str]:
        """Check every input (naming it) and return ``(candidates, chosen (uri, pin), bucket, key template)``."""
        candidates = flatten_candidates(self.candidates, field="candidates")
        if not candidates:
            raise ReviewInputError("candidates is empty: there is nothing to publish from")
        chosen = chosen_candidates(self.review, candidates, field="review")
        if chosen and isinstance(self.review, Mapping) and self.review.get(PINNED_KEY) is None:
            self.log.warning(
                "The review result pins no options (%r: not SegmindReviewOperator's result?): the chosen labels "
                "are read against the candidates as they are now.",
                PINNED_KEY,
            )
        buckets = {split_uri(uri)[0] for uri in candidates}
        bucket_arg = self.s3_bucket
        if not bucket_arg:
            if len(buckets) > 1:
                raise ReviewInputError(f"s3_bucket: the candidates are in {sorted(buckets)}; name the destination")
            bucket_arg = buckets.pop()
        try:
            bucket, template = parse_location(bucket_arg, self.s3_key or DEFAULT_PUBLISHED_KEY)
        except UnsafeS3KeyError as err:
            raise ReviewInputError(f"s3_bucket/s3_key (the published location): {err}") from None
        return candidates, chosen, bucket, template

    def _execute(self, context: Context) -> list[str]:
        candidates, chosen, bucket, template = self._plan()
        if not chosen:
            self.log.info("The reviewer chose %r: nothing is published, the candidates stay.", PUBLISH_NONE)
            raise AirflowSkipException(f"{PUBLISH_NONE}: no candidate was chosen")
        ids = airflow_ids(context["ti"])
        client = s3_client(self.aws_conn_id, self.checksum_mode)
        manifests = [self._candidate_manifest(client, uri) for uri, _ in chosen]
        for (uri, pinned), manifest in zip(chosen, manifests, strict=True):
            self._check_pin(client, uri, pinned, manifest)  # every one, before the first copy
        keys = [
            self._published_key(template, ids, manifest, uri)
            for (uri, _), manifest in zip(chosen, manifests, strict=True)
        ]
        self._check_keys(bucket, keys, candidates)
        approved = approval(self.review, task_id=self.review_task_id)
        writer = S3Writer(client, checksum_mode=self.checksum_mode, conflict_check=self.conflict_check, log=self.log)
        published: list[str] = []
        stored: list[dict[str, Any]] = []
        for (uri, pinned), manifest, key in zip(chosen, manifests, keys, strict=True):
            document = self._copy(client, writer, uri, pinned, manifest, bucket, key, approved, ids)
            stored.append(
                {
                    "key": key,
                    "sha256": document["sha256"],
                    "manifest": manifest_key(key),
                    "request_id": document.get("request_id"),
                }
            )
            published.append(s3_uri(bucket, key))
        self.log.info(
            "Published %d of %d candidate(s), approved by %s: %s",
            len(published),
            len(candidates),
            (approved["approved_by"] or {}).get("name", "the timeout default"),
            ", ".join(published),
        )
        emit_event(
            context,
            self.event_target,
            self.outlets,
            self.asset,
            bucket,
            template,
            stored,
            max_objects=self.max_event_objects,
            log=self.log,
        )
        return published

    # ------------------------------------------------------------------ steps

    def _candidate_manifest(self, client: Any, uri: str) -> dict[str, Any]:
        """The manifest the transfer wrote beside the candidate (its SHA-256, request id, prompt...)."""
        bucket, key = split_uri(uri)
        try:
            body = client.get_object(Bucket=bucket, Key=manifest_key(key))["Body"].read()
            manifest = json.loads(body)
        except Exception as err:
            raise PublishIntegrityError(
                f"candidates: cannot read the manifest of {uri} ({type(err).__name__}): only objects stored by "
                "SegmindToS3Operator with write_manifest=True can be published"
            ) from err
        if not isinstance(manifest, dict) or not isinstance(manifest.get("sha256"), str):
            raise PublishIntegrityError(f"candidates: the manifest of {uri} has no sha256")
        return manifest

    @staticmethod
    def _check_pin(client: Any, uri: str, pinned: Mapping[str, Any] | None, manifest: Mapping[str, Any]) -> None:
        """Refuse a chosen candidate that is not the object the review showed (its pin); nothing is copied yet."""
        if pinned is None:
            return
        option = pinned["option"]
        bucket, key = split_uri(uri)
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except Exception as err:
            raise PublishIntegrityError(
                f"review: {option!r} ({uri}) cannot be read back ({type(err).__name__}); nothing was copied"
            ) from err
        version = head.get("VersionId")
        version = version if version and version != "null" else None
        if pinned.get("version_id") and version != pinned["version_id"]:
            raise PublishIntegrityError(
                f"review: {option!r} ({uri}) changed since the review: the reviewer saw version "
                f"{pinned['version_id']}, S3 now has {version}; nothing was copied. Clear the review task to review it."
            )
        if pinned.get("sha256") and manifest["sha256"] != pinned["sha256"]:
            raise PublishIntegrityError(
                f"review: {option!r} ({uri}) changed since the review: the reviewer saw sha256 {pinned['sha256']}, "
                f"its manifest now says {manifest['sha256']}; nothing was copied. Clear the review task to review it."
            )
        recorded = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}.get(SHA256_METADATA)
        if pinned.get("sha256") and recorded is not None and recorded != pinned["sha256"]:
            raise PublishIntegrityError(
                f"review: {option!r} ({uri}) changed since the review: the reviewer saw sha256 {pinned['sha256']}, "
                f"its metadata now says {recorded}; nothing was copied. Clear the review task to review it."
            )

    @staticmethod
    def _published_key(template: str, ids: Mapping[str, Any], manifest: Mapping[str, Any], uri: str) -> str:
        values = {
            **ids,
            "request_id": manifest.get("request_id") or uri.rsplit("/", 1)[-1].rsplit(".", 1)[0],
            "index": manifest.get("output_index", 0),
            "ext": _ext_for(manifest.get("content_type"), uri),
            "model": manifest.get("model") or "unknown-model",
        }
        try:
            return render_key(template, values)
        except UnsafeS3KeyError as err:
            raise ReviewInputError(f"s3_key (the published key template): {err}") from None

    @staticmethod
    def _check_keys(bucket: str, keys: list[str], candidates: list[str]) -> None:
        seen: set[str] = set()
        for key in keys:
            if key in seen:
                raise ReviewInputError(
                    f"s3_key: two chosen candidates would be published at {key!r}; put {{request_id}} and "
                    "{index} in the published key template; nothing was copied"
                )
            seen.add(key)
            if s3_uri(bucket, key) in candidates:
                raise ReviewInputError(
                    f"s3_key: {s3_uri(bucket, key)} is a candidate's own key; publish under another prefix "
                    "(default published/...); nothing was copied"
                )

    def _copy(
        self,
        client: Any,
        writer: S3Writer,
        uri: str,
        pinned: Mapping[str, Any] | None,
        manifest: Mapping[str, Any],
        bucket: str,
        key: str,
        approved: Mapping[str, Any],
        ids: Mapping[str, Any],
    ) -> dict[str, Any]:
        """Read the candidate, check it is the reviewed object, write it and its manifest at ``key``."""
        source_bucket, source_key = split_uri(uri)
        version = (pinned or {}).get("version_id")
        # The pinned version: what the reviewer saw, even if the key is overwritten after _check_pin.
        answer = client.get_object(Bucket=source_bucket, Key=source_key, **({"VersionId": version} if version else {}))
        recorded = {str(k).lower(): str(v) for k, v in (answer.get("Metadata") or {}).items()}.get(SHA256_METADATA)
        digest = hashlib.sha256()
        with Spool(DEFAULT_SPOOL_MEMORY, self.tmp_dir) as spool:
            for chunk in answer["Body"].iter_chunks(_CHUNK):
                digest.update(chunk)
                spool.write(chunk)
            spool.finish()
            sha256 = digest.hexdigest()
            seen = (pinned or {}).get("sha256")
            if seen and sha256 != seen:
                raise PublishIntegrityError(
                    f"review: {uri} is not what the review showed (sha256 {sha256}; the reviewer saw {seen}): it was "
                    "not published"
                )
            if sha256 != manifest["sha256"] or (recorded is not None and recorded != sha256):
                raise PublishIntegrityError(
                    f"{uri} changed since it was stored (sha256 {sha256}; its manifest says {manifest['sha256']}, "
                    f"its metadata {recorded}): it was not published"
                )
            content_type = str(manifest.get("content_type") or answer.get("ContentType") or "application/octet-stream")
            request_id = str(manifest.get("request_id") or "")
            obj = StoredObject(spool, spool.size, sha256, content_type, {"segmind-request-id": request_id})
            outcome = writer.write(bucket, key, obj, replace=self.replace)
        self.log.info("%s %s from %s (sha256 %s)", outcome.outcome.capitalize(), s3_uri(bucket, key), uri, sha256)
        timestamps = dict(manifest.get("timestamps") or {})
        timestamps["published_at"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        document = {
            **manifest,
            "uri": s3_uri(bucket, key),
            "bucket": bucket,
            "key": key,
            "etag": outcome.etag,
            "version_id": outcome.version_id,
            "write": outcome.outcome,
            "approval": dict(approved),
            "source": {**(manifest.get("source") or {}), "candidate_uri": uri, "candidate_manifest": manifest_key(uri)},
            "timestamps": timestamps,
            "airflow": dict(ids),
            "producer": {
                "package": "airflow-provider-segmind",
                "version": __version__,
                "operator": type(self).__name__,
            },
        }
        write_manifest_document(writer, bucket, key, document, sha256, request_id, replace=self.replace, log=self.log)
        return document
