"""SegmindReviewOperator: a human chooses, in Airflow's UI, which stored candidate images get published.

A thin layer over the standard provider's ``HITLOperator`` (Airflow 3.1+ "Human-in-the-loop"),
whose options are fixed when the DAG is parsed, while candidates exist only at run time: this
operator builds the options from the candidates when it runs (one per candidate, plus "Publish
none") and the Markdown body that shows them (:mod:`~airflow_provider_segmind.utils.review_body`).
Waiting, the response form, the REST API and the timeout are the standard provider's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.providers.standard.operators.hitl import HITLOperator

from airflow_provider_segmind.exceptions import ReviewInputError
from airflow_provider_segmind.utils.review_body import DEFAULT_URL_EXPIRY, MAX_URL_EXPIRY, build_review
from airflow_provider_segmind.utils.review_candidates import (
    PINNED_KEY,
    PUBLISH_NONE,
    flatten_candidates,
    read_pins,
    review_options,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["DEFAULT_RESPONSE_TIMEOUT", "XCOM_PINNED", "SegmindReviewOperator"]

#: The review task's XCom holding its pins while it waits (its result carries them under :data:`PINNED_KEY`).
XCOM_PINNED: Final = "segmind_review_pins"

#: How long a review waits for an answer before its default (:data:`PUBLISH_NONE`) is taken.
DEFAULT_RESPONSE_TIMEOUT: Final = timedelta(days=1)
#: The shortest link lifetime (a reviewer needs time to open the screen).
_MIN_URL_EXPIRY: Final = timedelta(minutes=1)


class SegmindReviewOperator(HITLOperator):
    """Ask a reviewer which candidate images to publish (multiple choice), on Airflow's review screen.

    **Options**: one per candidate, labelled ``"<n>. <file name>"`` in the order of
    ``candidates``, then ``"Publish none"``; several may be chosen (``multiple=True``). They are
    built when the task runs, from the rendered ``candidates``.

    **Pins**: a label names a position, so each option is pinned to the object it showed: its URI,
    the SHA-256 of its bytes and its S3 version id (XCom ``segmind_review_pins`` while the review
    waits). The task resumes with the answer checked against the options it offered (not the
    candidates as they are then), and its result carries the pins (``pinned_candidates``), which
    :class:`~airflow_provider_segmind.transfers.publish.SegmindPublishOperator` checks: a candidate
    list that shifted or a candidate that changed since the review publishes nothing.

    **Body** (Markdown): each candidate's image through a presigned (SigV4) S3 URL valid for
    ``url_expiry`` (default 1 hour, or ``response_timeout`` if shorter; at most 7 days: see
    docs/review.md for who can open them and why short), under its option label, with
    prompt, seed, size, cost, model and request id from its manifest; ``contact_sheet`` adds a
    link to the run's contact sheet; ``show_images=False`` links the images instead of showing
    them. A ``body`` you pass (templated) comes first.

    **Timeout and default**: ``response_timeout`` (default 1 day). When it passes without an
    answer the review completes with its default, ``"Publish none"``: nothing is published, the
    candidates stay, the task succeeds (its result has ``responded_by_user: None``). To fail the
    run instead, let a downstream task check that.

    **Result** (XCom, the standard provider's, plus the pins): ``{"chosen_options", "params_input",
    "responded_at", "responded_by_user", "pinned_candidates": [{"option", "uri", "sha256",
    "version_id"}, ...]}``; pass it with ``candidates`` to
    :class:`~airflow_provider_segmind.transfers.publish.SegmindPublishOperator`.

    Answer it in the UI (the task's "Required Actions"), or through the REST API:
    ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/hitlDetails``
    with ``{"chosen_options": [...], "params_input": {}}``.

    :param candidates: the ``s3://`` URIs to choose from (``SegmindToS3Operator``'s ``.output``). Templated.
    :param subject: the review's headline. Templated.
    :param response_timeout: how long to wait for an answer (``None``: forever).
    :param aws_conn_id: the AWS connection that reads manifests and signs the image URLs.
    :param show_images: show each image in the body (default), or link it.
    :param contact_sheet: ``s3://`` URI of the run's contact sheet, linked from the body. Templated.
    :param url_expiry: how long the presigned links work (default: 1 hour, or ``response_timeout``
        if shorter; capped at 7 days). The links outlive the answer and reach the notifiers.
    :param kwargs: the ``HITLOperator``'s others (``body``, ``notifiers``, ``assigned_users``,
        ``params``); ``options``, ``multiple`` and ``defaults`` are this operator's.
    """

    template_fields: Sequence[str] = (*HITLOperator.template_fields, "candidates", "contact_sheet", "aws_conn_id")
    ui_color = "#fde2e4"

    def __init__(
        self,
        *,
        candidates: Any,
        subject: str = "Which images should be published?",
        response_timeout: timedelta | None = DEFAULT_RESPONSE_TIMEOUT,
        aws_conn_id: str = "aws_default",
        show_images: bool = True,
        contact_sheet: str | None = None,
        url_expiry: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        for fixed in ("options", "multiple", "defaults"):
            if fixed in kwargs:
                raise ValueError(f"SegmindReviewOperator sets {fixed!r} itself (one option per candidate)")
        # The options are the candidates', known only at run time (see execute); until then the one
        # option every review has, which is also its default on timeout.
        super().__init__(
            subject=subject,
            options=[PUBLISH_NONE],
            defaults=[PUBLISH_NONE],
            multiple=True,
            response_timeout=response_timeout,
            **kwargs,
        )
        self.candidates = candidates
        self.aws_conn_id = aws_conn_id
        self.show_images = show_images
        self.contact_sheet = contact_sheet
        if url_expiry is None:
            # Not the response timeout (a day by default): the links work for anyone who has the body
            # (notifiers send it out of Airflow) and keep working after the answer.
            url_expiry = max(min(DEFAULT_URL_EXPIRY, response_timeout or DEFAULT_URL_EXPIRY), _MIN_URL_EXPIRY)
        elif url_expiry < _MIN_URL_EXPIRY:
            raise ValueError(f"url_expiry must be at least {_MIN_URL_EXPIRY}, got {url_expiry}")
        self.url_expiry = min(url_expiry, MAX_URL_EXPIRY)

    def _candidate_uris(self) -> list[str]:
        try:
            uris = flatten_candidates(self.candidates, field="candidates")
            if not uris:
                raise ReviewInputError("candidates is empty: no image was stored, there is nothing to review")
        except ReviewInputError as err:
            raise AirflowFailException(str(err)) from err
        return uris

    def execute(self, context: Context) -> Any:
        """Build the options, body and pins from the candidates, then wait for the answer (the standard provider)."""
        self.prepare_review(context)
        return super().execute(context)

    def prepare_review(self, context: Context) -> list[dict[str, Any]]:
        """The first half of :meth:`execute`: options, body and pins (pushed to XCom), before the wait."""
        uris = self._candidate_uris()
        try:
            generated, pins = build_review(
                uris,
                aws_conn_id=self.aws_conn_id,
                expires=self.url_expiry,
                images=self.show_images,
                contact_sheet=self.contact_sheet or None,
            )
        except ReviewInputError as err:
            raise AirflowFailException(str(err)) from err
        self.options = [*(p["option"] for p in pins), PUBLISH_NONE]
        self.defaults = [PUBLISH_NONE]
        self.body = f"{self.body}\n\n{generated}" if self.body else generated
        context["ti"].xcom_push(key=XCOM_PINNED, value=pins)
        self.log.info("Asking for a review of %d candidate(s).", len(uris))
        return pins

    def _pins(self, context: Context) -> list[dict[str, Any]] | None:
        """The pins :meth:`prepare_review` pushed (an XCom kept while the task waits), if any."""
        ti = context.get("ti") if hasattr(context, "get") else None
        if ti is None:
            return None
        pushed = ti.xcom_pull(task_ids=self.task_id, key=XCOM_PINNED, map_indexes=getattr(ti, "map_index", -1))
        try:
            return read_pins(pushed, field=f"XCom {XCOM_PINNED}") or None
        except ReviewInputError:
            self.log.warning("The review's pins (XCom %s) are unreadable: %r", XCOM_PINNED, pushed)
            return None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Check the answer against the options ``execute`` offered, and return it with their pins.

        The options are the pinned ones (what the reviewer saw), not the candidates as they are now;
        a review started before the pins existed rebuilds them from the candidates.
        """
        pins = self._pins(context)
        self.options = [*(p["option"] for p in pins), PUBLISH_NONE] if pins else review_options(self._candidate_uris())
        self.defaults = [PUBLISH_NONE]
        result = super().execute_complete(context, event)
        if pins is None:
            self.log.warning(
                "No pinned options for this review (XCom %s): the publish step reads the chosen labels against "
                "the candidates as they are then.",
                XCOM_PINNED,
            )
            return result
        return {**result, PINNED_KEY: pins}
