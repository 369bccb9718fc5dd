"""The error taxonomy: which typed error (from :mod:`..exceptions`) an answer or a failure is, and what to do.

The same status means different things per call (404 at submit is an unknown model, at status an
expired request), a FAILED job's reason says whether a retry can help (content block, refused
input, or a server-side failure), and a broken connection must say whether the request left.
Each message names what happened and the action that fixes it, with the server's text redacted.

What a failure costs, and what 400, 422 and 500 mean: Segmind's error docs
(docs.segmind.com/docs/serverless-api#api-error-codes and
docs.segmind.com/docs/serverless-api/async-inference#error-handling, as quoted by the API Evangelist
catalogue, github.com/api-evangelist/segmind ``errors/segmind-error-codes.yml``) give every error
status as "billed: false" (only a 200 is billed); a FAILED v2 job's "Billing fields (cost,
remaining_credits) are omitted on a failure because nothing was charged". 400 is the "Malformed
body, a missing required field, or an operation the model does not support". 422 is "v2 only --
the inference itself ran and failed. NOT a malformed request body", with a FAILED body and its
reason, so a 422 is classified by that reason like a FAILED job (:func:`ran_and_failed_error`), not
as a refused body. "On the media-editing endpoints, submitting ALWAYS returns 200 with a request_id
even if the body is invalid": such a body surfaces as a FAILED job, which
:func:`is_invalid_input` recognises. And "Read a 500 on a request you have only just changed as a
PARAMETER problem before assuming the platform is broken. Values are validated up front only where
the model declares a fixed set; anything else reaches the model and fails during generation, which
surfaces as 500": a 500 answered to a submit says so (it is still retried: it is not billed, and a
server fault is the other reading).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindForbiddenError,
    SegmindInsufficientCreditsError,
    SegmindInvalidInputJobError,
    SegmindInvalidParametersError,
    SegmindJobFailedError,
    SegmindModelNotFoundError,
    SegmindModelRetiredError,
    SegmindNotFoundError,
    SegmindRateLimitError,
    SegmindRequestNotFoundError,
    SegmindServerError,
    SegmindTransportError,
    SegmindUnexpectedStatusError,
)
from airflow_provider_segmind.protocol.answer import HttpAnswer, error_text, parse_retry_after
from airflow_provider_segmind.protocol.retry import SUBMIT_REFUSED_5XX
from airflow_provider_segmind.protocol.text import MAX_ERROR_TEXT, clause, redact, sentences
from airflow_provider_segmind.protocol.vocabulary import Endpoint

_SUBMIT_404_HINT = "Check the model slug on segmind.com/models (slugs are lower-case, with dashes)"
#: A 500 answered to a submit or a v1 run: Segmind's error docs read it as a parameter problem first.
_SUBMIT_500_ADVICE = (
    "Nothing was charged. Segmind reads a 500 to a request as a parameter problem first: values a model "
    "does not declare as a fixed set are checked only when it runs, and fail as a 500. If the task's "
    "parameters changed recently, check them against the model's page; otherwise it is a server fault, "
    "retried with backoff"
)

#: Where a DAG author finds a current model when theirs is retired.
MODEL_CATALOGUE_URL: Final = "https://www.segmind.com/models"


def _advice_406(text: str | None) -> str:
    """406 is "refused before the run", for several reasons (docs.segmind.com/api-reference, status codes):
    insufficient credits, a team spend limit, a missing/wrong Content-Type, a refused parameter."""
    lowered = (text or "").lower()
    if "content type" in lowered or "content-type" in lowered:
        return (
            "Segmind did not see a JSON request (a proxy may have changed the Content-Type): check the "
            "connection's host and any proxy in between"
        )
    if "limit" in lowered or "spend" in lowered:
        return "A team spend limit was reached: raise it in the Segmind team settings, or wait for it to reset"
    if "credit" in lowered:
        return "The account has insufficient credits (paid and free together): Top up before running again"
    return (
        "Segmind answers 406 for insufficient credits, a team spend limit, a missing or wrong Content-Type, "
        "or a parameter it refused before the run: the server's text says which"
    )


def classify_error(answer: HttpAnswer, endpoint: Endpoint, *, request_id: str | None = None) -> SegmindError:
    """Turn a non-success answer into the typed error that says what happened and what to do.

    The same status means different things per call: 404 at submit is an unknown model, at status
    it is an unknown or expired request, at credits an account without credits or a wrong host;
    422 at submit is a bad parameter, at status a FAILED job. Messages are joined with
    :func:`sentences`, so a server text ending in a full stop does not get a second one.
    """
    status = answer.status
    text = error_text(answer)
    said = f": {clause(text)}" if clause(text) else ""
    where = f"Segmind {endpoint.value}" + (f" for request {request_id}" if request_id else "")
    common: dict[str, Any] = {"status_code": status, "error_text": text, "request_id": request_id}
    if status == 401:
        # The server's own text already says what is wrong with the key; say it ourselves only without one.
        return SegmindAuthenticationError(
            sentences(
                f"{where} was refused (HTTP 401){said}",
                "" if said else "The API key is missing, wrong or expired",
                "Put a valid key in the Segmind connection's password (API Key) field",
            ),
            **common,
        )
    if status == 403:
        return SegmindForbiddenError(
            sentences(
                f"{where} was forbidden (HTTP 403){said}",
                "The key is valid but this account may not use this model or endpoint: check the plan and the "
                "model's access on segmind.com",
            ),
            **common,
        )
    if status == 404:
        if endpoint in (Endpoint.STATUS, Endpoint.RESULT):
            return SegmindRequestNotFoundError(
                sentences(
                    f"{where} was not found (HTTP 404){said}",
                    "The id is unknown or its 1 hour retention has passed: submit the job again to get a new result",
                ),
                **common,
            )
        if endpoint is Endpoint.CATALOGUE:
            return SegmindNotFoundError(
                sentences(
                    f"{where} was not found (HTTP 404) at {answer.url or 'the catalogue URL'}{said}",
                    "Set the connection extra check_model_catalogue to false to stop asking it",
                ),
                **common,
            )
        if endpoint is Endpoint.CREDITS:
            return SegmindNotFoundError(
                sentences(
                    f"{where} was not found (HTTP 404) at {answer.url or 'the credits URL'}{said}",
                    "This is not Segmind's credits endpoint: check the connection's host",
                ),
                **common,
            )
        return SegmindModelNotFoundError(
            sentences(f"{where} was not found (HTTP 404){said}", _SUBMIT_404_HINT), **common
        )
    if status == 410:
        # Retired models answer 410 (docs.segmind.com/api-reference, status codes).
        return SegmindModelRetiredError(
            sentences(
                f"{where} failed: Segmind has retired this model (HTTP 410){said}",
                f"Pick a current model in the catalogue, {MODEL_CATALOGUE_URL}, and change the task's model slug",
            ),
            **common,
        )
    if status == 406:
        return SegmindInsufficientCreditsError(
            sentences(
                f"{where} was refused before the run (HTTP 406){said}",
                _advice_406(text),
                "Nothing was generated or billed",
            ),
            **common,
        )
    if status in (400, 422):
        if endpoint in (Endpoint.STATUS, Endpoint.RESULT):
            # A FAILED job arrives as 422 with a JSON body; parse_status/parse_result handle it
            # before reaching here, so this is a 400/422 without that body.
            return SegmindJobFailedError(sentences(f"{where} reports the job failed (HTTP {status}){said}"), **common)
        if status == 422:
            # "the inference itself ran and failed. NOT a malformed request body" (module docstring).
            return ran_and_failed_error(where, text, **common)
        return SegmindInvalidParametersError(
            sentences(
                f"{where} rejected the parameters (HTTP {status}){said}",
                "Fix the task's parameters; nothing was billed",
            ),
            **common,
        )
    if status == 429:
        return SegmindRateLimitError(
            sentences(
                f"{where} was rate limited (HTTP 429){said}",
                # The readings and their sources: emulator/config.py RATE_LIMIT_PLANS.
                "Segmind allows Free 5 and Pro 50 requests a minute (docs.segmind.com/api-reference/rate-limits; "
                "its pricing page reportedly 60 to 1000, pooled per team); whether status polls count is not "
                "documented (python -m airflow_provider_segmind.contract tells for your account): lower the DAG's "
                "concurrency with a pool, or upgrade",
            ),
            retry_after=parse_retry_after(answer.headers, answer.received_at),
            **common,
        )
    if status >= 500:
        billed_call = endpoint in (Endpoint.SUBMIT, Endpoint.RUN_SYNC)
        if billed_call and status not in SUBMIT_REFUSED_5XX:
            advice = "The job may have been queued (and billed), so the submit is not sent again"
        elif billed_call and status == 500:
            advice = _SUBMIT_500_ADVICE
        else:
            advice = "This is usually temporary and is retried with backoff"
        return SegmindServerError(
            sentences(f"{where} failed on Segmind's side (HTTP {status}){said}", advice), **common
        )
    return SegmindUnexpectedStatusError(
        sentences(
            f"{where} answered with unexpected HTTP {status}{said}",
            "HTTP 405 means a wrong method or URL: check the connection's host" if status == 405 else "",
        ),
        **common,
    )


_CONTENT_BLOCK = re.compile(r"safety|nsfw|\brai\b|content polic|moderation|flagged|blocked", re.IGNORECASE)

#: How a model says it refused its input. Segmind's own example of a FAILED job is "Prompt is
#: Mandatory and must be string" (docs.segmind.com, async inference: the v2 status example); the
#: other phrasings are the common ones of input validators (pydantic, FastAPI, the models' own checks).
_INVALID_INPUT = re.compile(
    r"\bmandatory\b|\brequired\b|\bmissing\b|\bmust (?:be|have|contain|not)\b|\bshould be\b"
    r"|\binvalid\b|\bnot (?:a )?valid\b|\bnot allowed\b|\bnot supported\b|\bunsupported\b"
    r"|\bout of range\b|\bvalidation\b|\bunprocessable\b|\bcannot be (?:empty|blank|null)\b"
    r"|\bexpected (?:a |an )?(?:string|str|integer|int|number|float|boolean|bool|list|array|object|dict)\b"
    r"|\btoo (?:long|short|large|small|big|many)\b|\bexceeds?\b|\b(?:greater|less) than\b",
    re.IGNORECASE,
)
#: Signs of a failure on Segmind's side, which a later run can survive: these win over
#: :data:`_INVALID_INPUT` ("CUDA out of memory: tensor too large" is the GPU's problem, not the input's).
_TRANSIENT_FAILURE = re.compile(
    r"out of memory|\boom\b|\bcuda\b|\bgpu\b|timed? ?out|timeout|temporar|unavailable|overload|capacity"
    r"|internal (?:server )?error|\bworker\b|crash|connection|network|\bretry\b|try again|rate limit|busy",
    re.IGNORECASE,
)


def is_content_block(error: str | None) -> bool:
    """Whether a FAILED job's reason reads as a content-safety block (Segmind reports those as FAILED)."""
    return bool(error and _CONTENT_BLOCK.search(error))


def is_invalid_input(error: str | None) -> bool:
    """Whether a FAILED job's reason says the model refused its input, for any model.

    Such a job fails the same way on every submit of the same body, so it is not retried: Segmind
    charges nothing for a FAILED job (see the module docstring), but a retry would still spend a
    try, a queue wait and rate-limit budget on a known outcome. Models other than SD3 Large have no
    client-side validation (and media-editing endpoints take any body at submit), so
    this is the only place their bad inputs are caught. A reason that also names a server-side
    cause (GPU, memory, timeout, worker, ...) stays retryable: when in doubt, a retry is allowed.
    """
    if not error or _TRANSIENT_FAILURE.search(error):
        return False
    return bool(_INVALID_INPUT.search(error))


def job_failed_error(
    request_id: str, error: str | None, metrics: Mapping[str, Any] | None = None
) -> SegmindJobFailedError:
    """The error for a FAILED job, with the server's reason in the message.

    A content-safety block becomes :class:`SegmindContentBlockedError` and a refused input
    :class:`SegmindInvalidInputJobError`; a task retry cannot fix either.
    """
    reason = clause(error) or "no reason given"
    common: dict[str, Any] = {
        "error_text": error,
        "request_id": request_id,
        "status_code": 422,
        "metrics": dict(metrics or {}),
    }
    if is_content_block(error):
        return SegmindContentBlockedError(
            sentences(
                f"Segmind job {request_id} FAILED: {reason}",
                "The content-safety filter blocked it: change the prompt or input image; retrying the same "
                "request would be blocked again, so the task is not retried (a FAILED job is not charged)",
            ),
            **common,
        )
    if is_invalid_input(error):
        return SegmindInvalidInputJobError(
            sentences(
                f"Segmind job {request_id} FAILED: {reason}",
                "The model refused its input: fix the task's parameters; retrying the same request would "
                "fail again, so the task is not retried (a FAILED job is not charged)",
            ),
            **common,
        )
    return SegmindJobFailedError(
        sentences(
            f"Segmind job {request_id} FAILED: {reason}",
            "Check the prompt and parameters and run the task again. This job was not charged (Segmind "
            "bills no FAILED job); a new submit is billed when it completes",
        ),
        **common,
    )


def ran_and_failed_error(where: str, error: str | None, **common: Any) -> SegmindError:
    """A 422 answered to a submit or a v1 run: the inference ran and FAILED (not a malformed body).

    Classified by the reason, as a FAILED job is (:func:`job_failed_error`): a content block and a
    refused input fail without task retries (the same request fails again); any other reason (the
    model crashed, ran out of memory...) leaves the task retryable. Nothing was charged either way.
    A refused input stays a :class:`SegmindInvalidParametersError` (fix the parameters), as a 400 is.
    """
    said = f": {clause(error)}" if clause(error) else ""
    ran = f"{where} ran and FAILED (HTTP 422){said}"
    if is_content_block(error):
        return SegmindContentBlockedError(
            sentences(
                ran,
                "The content-safety filter blocked it: change the prompt or input image; the same request "
                "would be blocked again, so the task is not retried. Nothing was charged",
            ),
            **common,
        )
    if is_invalid_input(error):
        return SegmindInvalidParametersError(
            sentences(
                ran,
                "The model refused its input: fix the task's parameters; the same request would fail again, "
                "so the task is not retried. Nothing was charged",
            ),
            **common,
        )
    return SegmindJobFailedError(
        sentences(ran, "Nothing was charged; a retry of the task submits the request again"), **common
    )


def transport_error(kind: str, *, request_sent: bool, url: str, detail: str) -> SegmindTransportError:
    """The error for a failed connection or timeout; the URL has no query and no key in it."""
    where = urlsplit(url)
    target = f"{where.scheme}://{where.netloc}{where.path}"
    advice = (
        "Segmind may not have received it; it is retried"
        if not request_sent
        else "The request may have reached Segmind: reads are retried, a submit is not (it would bill twice)"
    )
    summary = sentences(f"{kind} calling {target}: {clause(redact(detail)[:MAX_ERROR_TEXT])}")
    return SegmindTransportError(sentences(summary, advice), request_sent=request_sent, summary=summary)
