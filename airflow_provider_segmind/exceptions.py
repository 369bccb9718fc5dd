"""Typed errors for every way a Segmind call can go wrong.

The classes carry what a caller needs to decide what to do next (retry, fail the task for good,
submit anew) as attributes, and a message that says what happened and what to do about it.
They never hold the API key or request headers: messages are built only from the status code,
the server's own error text (redacted again by :func:`redact` before it gets here) and ids.

This module imports nothing from Airflow so the pure protocol layer and the emulator stay cheap
to import. Every ``SegmindError`` subclass is defined here and imported from here only, as the
Amazon provider keeps its errors in ``aws/exceptions.py``.
"""

from __future__ import annotations

from typing import Any


class SegmindError(Exception):
    """Base class for every error raised by this provider.

    :param message: what happened and what to do, for a human.
    :param status_code: the HTTP status the server answered with, if any.
    :param error_text: the server's own ``error`` text, if any.
    :param request_id: the v2 request the error concerns, if any.
    """

    #: Whether a later attempt of the same call can succeed (drives the retry policy).
    transient: bool = False
    #: Whether re-running the Airflow task can help. ``False`` means fail without task retries.
    task_retry_helps: bool = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_text: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_text = error_text
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r})"


class SegmindAuthenticationError(SegmindError):
    """401: the API key is missing, wrong or expired."""

    task_retry_helps = False


class SegmindForbiddenError(SegmindError):
    """403: the key is valid but the account may not use this model or endpoint."""

    task_retry_helps = False


class SegmindNotFoundError(SegmindError):
    """404: something the URL names does not exist (see the two subclasses)."""

    task_retry_helps = False


class SegmindModelNotFoundError(SegmindNotFoundError):
    """404 on an inference call: the model slug does not exist (a typo, or a retired model)."""


class SegmindRequestNotFoundError(SegmindNotFoundError):
    """404 on a v2 status or result call: the request id is unknown or its 1 hour retention passed."""


class SegmindModelRetiredError(SegmindModelNotFoundError):
    """410: the model was retired by Segmind."""


class SegmindInsufficientCreditsError(SegmindError):
    """406: refused before the run. Usually the account has not enough credits, but Segmind also
    answers 406 for a team spend limit, a missing or wrong Content-Type and a parameter it refused
    before running (docs.segmind.com/api-reference, status codes); the message carries the server's text."""

    task_retry_helps = False


class SegmindInvalidParametersError(SegmindError, ValueError):
    """400/422 at submit, or a parameter that fails validation before any request is sent.

    :param field: the (first) offending parameter, when known.
    :param allowed: a human description of its allowed values, when known.
    :param problems: every bad field as ``(field, problem, allowed values)``, when validation found
        several; the message names them all.
    """

    task_retry_helps = False

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        allowed: str | None = None,
        problems: list[tuple[str, str, str]] | None = None,
        status_code: int | None = None,
        error_text: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, error_text=error_text, request_id=request_id)
        self.field = field
        self.allowed = allowed
        self.problems = list(problems or ([(field, "", allowed or "")] if field else []))


class SegmindRateLimitError(SegmindError):
    """429: too many requests for the account's plan (docs.segmind.com/api-reference/rate-limits: Free 5/min,
    Pro 50/min; the pricing page reportedly 60-1000/min pooled per team; whether status polls count is undocumented).

    :param retry_after: seconds the server asked us to wait, when it said so.
    """

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class SegmindServerError(SegmindError):
    """5xx: Segmind (or a gateway in front of it) failed; usually passes."""

    transient = True


class SegmindJobFailedError(SegmindError):
    """A v2 job reached FAILED; ``error_text`` holds the server's reason (e.g. a content-safety block).

    :param metrics: the timing metrics the FAILED body carried.
    """

    def __init__(self, message: str, *, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.metrics = dict(metrics or {})


class SegmindInvalidInputJobError(SegmindJobFailedError):
    """A job FAILED because the model refused its input (e.g. "Prompt is Mandatory and must be string").

    The same body fails the same way on every submit, so a task retry cannot help (see
    :func:`~airflow_provider_segmind.protocol.is_invalid_input`). Segmind charges nothing for a FAILED
    job, but each retry would still take a try, a queue wait and rate-limit budget for a known outcome.
    """

    task_retry_helps = False


class SegmindResultNotReadyError(SegmindError):
    """The status said COMPLETED but the result answer still says QUEUED/PROCESSING (a lagging replica).

    Transient: fetching the result again, after a wait, is the fix; the job is not submitted again.
    """

    transient = True


class SegmindContentBlockedError(SegmindJobFailedError):
    """A job FAILED because the content-safety filter blocked the prompt or image.

    Re-running the same task would be blocked again, so a task retry cannot help (the FAILED job itself
    is not charged).
    """

    task_retry_helps = False


class SegmindTransportError(SegmindError):
    """The call did not produce a usable HTTP answer: connection, timeout or undecodable body.

    :param request_sent: ``False`` only when the request certainly never reached the server
        (connection refused, DNS failure, connect timeout). A non-idempotent submit is retried
        only then, because Segmind bills every accepted submit and has no idempotency key.
    :param summary: what happened without the retry advice (the connection test shows it);
        default the message.
    """

    transient = True

    def __init__(self, message: str, *, request_sent: bool = True, summary: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.request_sent = request_sent
        #: What happened, without the retry advice (e.g. for the connection test's message).
        self.summary = summary or message


class SegmindInvalidResponseError(SegmindTransportError):
    """The server answered, but not with what the protocol promises (HTML, bad JSON, missing fields).

    Retried like a transport error: a proxy's HTML error page is usually transient.
    """


class SegmindUnexpectedStatusError(SegmindError):
    """An HTTP status the protocol does not define for this call (e.g. 405 for a wrong method)."""

    task_retry_helps = False


# The S3 transfer, review and publish errors (the operators that raise them live in transfers/ and
# operators/; the classes are here so every SegmindError has one home).


class SegmindOutputError(SegmindError):
    """An output could not be fetched or was refused; nothing was written to S3."""


class SegmindOutputRefusedError(SegmindOutputError, ValueError):
    """The output breaks the transfer's policy (URL, host, address, redirect, type, size): a retry cannot help."""

    task_retry_helps = False


class SegmindOutputDownloadError(SegmindOutputError):
    """The download failed on the way (connection, timeout, 5xx, truncated body): a retry may help."""

    transient = True


class S3ObjectConflictError(SegmindError):
    """A different object is already at the key (``replace=False``), or it cannot be compared."""

    task_retry_helps = False


class S3WriteError(SegmindError):
    """S3 refused or failed a write (permissions, missing bucket, throttling, store limitation)."""


class UnsafeS3KeyError(SegmindError, ValueError):
    """The bucket, key or key template is unsafe or invalid; nothing was written."""

    task_retry_helps = False


class ReviewInputError(SegmindError, ValueError):
    """A review's or publish step's input is wrong (named in the message); nothing was copied."""

    task_retry_helps = False


class PublishIntegrityError(SegmindError):
    """A chosen candidate in S3 is not the object its manifest describes; nothing of it was published."""

    task_retry_helps = False
