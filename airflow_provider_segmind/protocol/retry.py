"""The retry policy of one HTTP call, shared by both transports.

What is retried and how long to wait before the next attempt, and when a failed submit may be sent
again without billing twice (:func:`submit_certainly_refused`) or must not be sent again by anything
(:func:`submit_outcome_unknown`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_segmind.exceptions import (
    SegmindError,
    SegmindRateLimitError,
    SegmindServerError,
    SegmindTransportError,
)

#: The longest server-asked wait (``Retry-After`` / the reset header of a 429) that is honoured, for
#: one call's retries and for a watch's next poll alike: the plan limits count per minute (Free 5,
#: Pro 50: docs.segmind.com/api-reference/rate-limits), so a minute and a margin; a longer hint is capped to it.
RATE_LIMIT_MAX_WAIT: Final = 65.0


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry one HTTP call; the sync and async transports both obey it.

    - 429: wait what the server said (``Retry-After`` or the reset header), capped, plus jitter;
      if it said nothing, back off exponentially.
    - 5xx, connection errors, undecodable bodies: exponential backoff with full jitter.
    - 400/401/403/404/406/410/422 and FAILED jobs: never; another attempt gives the same answer.
    - A submit (``idempotent=False``) is retried only when the server certainly did not accept it
      (:func:`submit_certainly_refused`): a 429, a 500/502/503 answer, or a connection that never
      opened. Never after a read timeout, a reset mid-request or an unreadable answer, and never
      after a 504 or another 5xx, whose upstream may have queued (and billed) the job.
    """

    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    rate_limit_max_wait: float = RATE_LIMIT_MAX_WAIT
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")

    def is_retryable(self, error: BaseException, *, idempotent: bool, trust_5xx: bool = True) -> bool:
        """Whether another attempt of the same call may succeed and is safe (never double-bills).

        ``trust_5xx=False``: a 500/502/503 answer to a submit is not taken as a refusal (see
        :func:`submit_certainly_refused`); the caller checks the request history instead.
        """
        if not isinstance(error, SegmindError) or not error.transient:
            return False
        if idempotent:
            return True
        return submit_certainly_refused(error, trust_5xx=trust_5xx)

    def delay(self, error: BaseException, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1)."""
        draw = (rng or random._inst).uniform
        if isinstance(error, SegmindRateLimitError) and error.retry_after is not None:
            return min(error.retry_after, self.rate_limit_max_wait) + draw(0, self.jitter)
        ceiling = min(self.backoff_max, self.backoff_initial * (2 ** (attempt - 1)))
        return draw(ceiling / 2, ceiling) + draw(0, self.jitter) * 0.1

    @classmethod
    def from_extras(cls, extras: Mapping[str, Any]) -> RetryPolicy:
        """Build from connection extras ``max_retries`` (attempts after the first) and ``retry_backoff``."""
        kwargs: dict[str, Any] = {}
        if extras.get("max_retries") is not None:
            kwargs["max_attempts"] = int(extras["max_retries"]) + 1
        if extras.get("retry_backoff") is not None:
            kwargs["backoff_initial"] = float(extras["retry_backoff"])
        if extras.get("retry_backoff_max") is not None:
            kwargs["backoff_max"] = float(extras["retry_backoff_max"])
        return cls(**kwargs)


#: 5xx answers to a submit that mean no job was queued. Segmind's submit errors, 5xx included,
#: "come back at once with the error body" (docs.segmind.com, async inference: v2 submit): an answer from
#: Segmind itself, before queueing. Segmind's error docs list a 500 as "billed: false" and as often a
#: parameter problem (docs.segmind.com/docs/serverless-api#api-error-codes, quoted in
#: :mod:`.errors`): resending it cannot bill twice, though it may fail the same way. 503 means the
#: server could not take the request at all (RFC 9110 section 15.6.4). Any other 5xx leaves the
#: outcome unknown: 504 is a gateway that gave up
#: waiting while the upstream may have queued (and billed) the job, and proxies' 52x codes (a
#: timeout after connecting, an unknown upstream error) say nothing about it either.
SUBMIT_REFUSED_5XX: Final = frozenset({500, 502, 503})


def submit_certainly_refused(error: BaseException, *, trust_5xx: bool = True) -> bool:
    """Whether a failed submit certainly created no job, so sending it again cannot bill twice.

    True for a 429, a 500/502/503 (:data:`SUBMIT_REFUSED_5XX`) and a connection that never opened
    (``request_sent=False``). Not for a read timeout or a reset after the body was sent, an
    unreadable answer (a 200 whose body was cut is a billed job), a 504 or another 5xx.

    ``trust_5xx=False`` (the operators, when the request history can be searched): a 500/502/503
    is not trusted either. Issue 13 reports gateway 5xx answers sent *after* the upstream queued
    the job (a "late" 5xx); with the history on, such a submit is reconciled through the history
    (found -> re-attach, not found -> submit) instead of being resent blindly, so it never bills
    twice. Without the history, the documented reading above stands (a resend is the only way on).
    """
    if isinstance(error, SegmindRateLimitError):
        return True
    if isinstance(error, SegmindServerError):
        return trust_5xx and error.status_code in SUBMIT_REFUSED_5XX
    if isinstance(error, SegmindTransportError):
        return not error.request_sent
    return False


def submit_outcome_unknown(error: BaseException, *, trust_5xx: bool = True) -> bool:
    """Whether a submit that raised ``error`` may nevertheless have queued (and billed) a job.

    Such a submit must not be sent again by anything (the hook's retries, a task retry): Segmind
    has no idempotency key, so only Segmind's request history can tell whether it arrived.
    An answered refusal (4xx) or a certain refusal (:func:`submit_certainly_refused`) is known.
    """
    return (
        isinstance(error, SegmindError) and error.transient and not submit_certainly_refused(error, trust_5xx=trust_5xx)
    )
