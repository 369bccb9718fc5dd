"""Successful answers into typed values: a v2 submit, status and result, a v1 inference, the credits.

Each ``parse_*`` function takes an :class:`~.answer.HttpAnswer` and returns a frozen dataclass or
raises the typed error :func:`~.errors.classify_error` picks. A FAILED job is a status, not an
error, when polled, and the job-failed error when its result is fetched. Shapes Segmind does not
document (numeric strings, inline base64 images, nested balances) are tolerated; the source of
each tolerance is next to it.

Why plain functions, not pydantic models: the answers are read leniently on purpose (any of
several key names, a balance nested or bare, a FAILED body under a 422), and a shape Segmind does
not document must never fail a job that was billed; pydantic would validate strictly and then need
the same tolerances as before-validators, without removing code.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from airflow_provider_segmind.exceptions import SegmindInvalidResponseError, SegmindResultNotReadyError
from airflow_provider_segmind.protocol.answer import HttpAnswer, error_text
from airflow_provider_segmind.protocol.errors import classify_error, job_failed_error
from airflow_provider_segmind.protocol.text import MAX_ERROR_TEXT, clause, quoted_list, redact, sentences, snippet
from airflow_provider_segmind.protocol.urls import check_request_id, result_url, same_origin, status_url
from airflow_provider_segmind.protocol.vocabulary import V1_INTERESTING_HEADERS, Endpoint, SegmindJobStatus

#: The credits endpoint's 404 for an account without a credits record
#: (docs.segmind.com/api-reference, ``GET /v1/get-user-credits``).
_NO_CREDITS_RECORD = re.compile(r"no credits", re.IGNORECASE)


@dataclass(frozen=True)
class SubmitResponse:
    """A v2 submit's answer. ``status_url``/``response_url`` are already checked to be same-origin."""

    request_id: str
    status: SegmindJobStatus
    status_url: str
    response_url: str


@dataclass(frozen=True)
class JobStatusResponse:
    """A v2 status answer. ``error`` is the server's reason when ``status`` is FAILED."""

    request_id: str
    status: SegmindJobStatus
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class JobResult:
    """A COMPLETED v2 job's result body, with the fields image models carry pulled out.

    ``raw`` is the whole body; model-specific keys stay there. ``base64_image`` is set when the
    model returned the image inline instead of a URL (``base64: true``).
    """

    request_id: str
    status: SegmindJobStatus
    output: Any
    output_urls: tuple[str, ...]
    images: tuple[dict[str, Any], ...]
    seed: int | None
    metrics: dict[str, Any]
    base64_image: str | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class SyncRunResponse:
    """A v1 inference's answer: the bytes (an image, or JSON for other models) and useful headers."""

    content: bytes
    content_type: str
    headers: dict[str, str]

    @property
    def remaining_credits(self) -> float | None:
        return finite_number(self.headers.get("x-remaining-credits"))


def finite_number(value: Any) -> float | None:
    """A finite number from a number or a numeric string; ``None`` for anything else, booleans included.

    Undocumented numeric fields (credits, costs, latencies; the request history's too) arrive as
    numbers or strings; ``True`` is not a balance of 1, and ``nan``/``inf`` are no values at all.
    """
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


#: What :func:`_loads` returns for a body that is not JSON (``None`` is a valid JSON value).
_NOT_JSON: Final = object()


def _loads(answer: HttpAnswer) -> Any:
    """The body as JSON, or ``_NOT_JSON``: status and result answers are parsed once, not twice
    (once to look for a FAILED body, once for the object), since the triggerer parses thousands."""
    try:
        return json.loads(answer.body)
    except ValueError:
        return _NOT_JSON


def _json_object(answer: HttpAnswer, endpoint: Endpoint, parsed: Any = _NOT_JSON) -> dict[str, Any]:
    """The body as a JSON object; ``parsed`` is the body already parsed by :func:`_loads`, if it was."""
    # Not parsed yet, or not JSON: answer.json() parses (again) and raises the not-JSON error.
    body = answer.json() if parsed is _NOT_JSON else parsed
    if not isinstance(body, dict):
        raise SegmindInvalidResponseError(
            f"Segmind's {endpoint.value} answer is JSON but not an object: {snippet(answer.body)!r}",
            status_code=answer.status,
        )
    return body


def _parse_status_value(value: Any, answer: HttpAnswer, endpoint: Endpoint) -> SegmindJobStatus:
    try:
        return SegmindJobStatus(str(value).upper())
    except ValueError:
        raise SegmindInvalidResponseError(
            f"Segmind's {endpoint.value} answer has an unknown status {value!r}; expected one of "
            f"{quoted_list(s.value for s in SegmindJobStatus)}.",
            status_code=answer.status,
        ) from None


def _follow(advertised: Any, fallback: str, base_url: str) -> str:
    is_url = isinstance(advertised, str) and advertised.startswith(("http://", "https://"))
    if is_url and same_origin(advertised, base_url):
        return str(advertised)
    return fallback


def parse_submit(answer: HttpAnswer, base_url: str) -> SubmitResponse:
    """Parse a v2 submit; a 2xx without ``request_id`` is an error (as the SDK treats it)."""
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.SUBMIT)
    body = _json_object(answer, Endpoint.SUBMIT)
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise SegmindInvalidResponseError(
            f"Segmind's v2 submit answered HTTP {answer.status} without a request_id "
            f"(keys: {sorted(body)}). The job may exist: check the Segmind console before retrying.",
            status_code=answer.status,
        )
    check_request_id(request_id)
    return SubmitResponse(
        request_id=request_id,
        status=_parse_status_value(body.get("status", "QUEUED"), answer, Endpoint.SUBMIT),
        status_url=_follow(body.get("status_url"), status_url(base_url, request_id), base_url),
        response_url=_follow(body.get("response_url"), result_url(base_url, request_id), base_url),
    )


def _failed_body(answer: HttpAnswer, parsed: Any = _NOT_JSON) -> dict[str, Any] | None:
    """The FAILED body Segmind serves under HTTP 422 (or any code), if this answer is one.

    ``parsed`` is the body already parsed by :func:`_loads` (parsed here otherwise).
    """
    body = _loads(answer) if parsed is _NOT_JSON else parsed
    if isinstance(body, dict) and str(body.get("status", "")).upper() == SegmindJobStatus.FAILED.value:
        return body
    return None


def _metrics(body: Mapping[str, Any]) -> dict[str, Any]:
    metrics = body.get("metrics")
    return dict(metrics) if isinstance(metrics, dict) else {}


def parse_status(answer: HttpAnswer, request_id: str) -> JobStatusResponse:
    """Parse a v2 status answer. FAILED (HTTP 422 with a JSON body) is a status, not an error."""
    parsed = _loads(answer)
    failed = _failed_body(answer, parsed)
    if failed is not None:
        error = failed.get("error")
        return JobStatusResponse(
            request_id=request_id,
            status=SegmindJobStatus.FAILED,
            metrics=_metrics(failed),
            error=redact(str(error))[:MAX_ERROR_TEXT] if error else "the job failed without an error text",
        )
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.STATUS, request_id=request_id)
    body = _json_object(answer, Endpoint.STATUS, parsed)
    return JobStatusResponse(
        request_id=request_id,
        status=_parse_status_value(body.get("status"), answer, Endpoint.STATUS),
        metrics=_metrics(body),
    )


def _output_urls(output: Any, images: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    urls: list[str] = []
    candidates: list[Any] = [output] if not isinstance(output, list) else list(output)
    candidates += [img.get("url") for img in images]
    for item in candidates:
        if isinstance(item, str) and item.startswith(("http://", "https://")) and item not in urls:
            urls.append(item)
    return tuple(urls)


#: Leading bytes of the image formats image models return, to tell base64 images from long text.
_IMAGE_MAGIC: Final = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF8", b"RIFF")


def _looks_like_base64_image(value: str) -> bool:
    head = value[:64]
    if len(value) <= 64 or not re.fullmatch(r"[A-Za-z0-9+/=_-]+", head):
        return False
    try:
        prefix = base64.b64decode(head[: len(head) - len(head) % 4], validate=False)
    except ValueError:
        return False
    return prefix.startswith(_IMAGE_MAGIC)


def _base64_image(body: Mapping[str, Any]) -> str | None:
    """Find an inline base64 image: the key is not documented, so look where models put it.

    Only a string whose decoded first bytes are an image header counts, so a long text output
    (an LLM's answer) is never mistaken for an image.
    """
    for key in ("image", "output", "images"):
        value = body.get(key)
        if isinstance(value, list) and value and isinstance(value[0], str):
            value = value[0]
        if not isinstance(value, str):
            continue
        if value.startswith("data:") and "," in value:
            value = value.split(",", 1)[1]
        if _looks_like_base64_image(value):
            return value
    return None


def parse_int(value: Any) -> int | None:
    """An integer from an int or a numeric string ("42", " 42 ", "42.0"); anything else is ``None``.

    Results' ``seed`` and ``images[].file_size`` may arrive as strings (docs.segmind.com/api-reference,
    the v2 result): parse them rather than drop them.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = finite_number(value) if isinstance(value, (str, float)) else None
    if number is None or not number.is_integer():
        return None
    return int(number)


def _image_fields(image: Mapping[str, Any]) -> dict[str, Any]:
    """One ``images[]`` entry with ``seed`` / ``file_size`` as integers where they are numeric strings."""
    out = dict(image)
    for name in ("seed", "file_size"):
        if name in out and out[name] is not None:
            parsed = parse_int(out[name])
            if parsed is not None:
                out[name] = parsed
    return out


def parse_result(answer: HttpAnswer, request_id: str) -> JobResult:
    """Parse a v2 result. A FAILED body raises the job-failed error with the reason.

    The result's own ``status`` is checked: a result fetched after the status said COMPLETED may
    still say QUEUED/PROCESSING (a lagging replica), and must not become a COMPLETED summary with
    no output. That raises :class:`SegmindResultNotReadyError`, which is transient: every caller
    (trigger, sensor, blocking loop, re-attach) fetches the result again after a wait, bounded
    like any transient error. A body without ``status`` counts as COMPLETED (older answers).
    """
    parsed = _loads(answer)
    failed = _failed_body(answer, parsed)
    if failed is not None:
        raise job_failed_error(request_id, failed.get("error"), _metrics(failed))
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.RESULT, request_id=request_id)
    body = _json_object(answer, Endpoint.RESULT, parsed)
    status = _parse_status_value(body.get("status", "COMPLETED"), answer, Endpoint.RESULT)
    if status is not SegmindJobStatus.COMPLETED:
        raise SegmindResultNotReadyError(
            sentences(
                f"Segmind v2 result for request {request_id} still says {status.value} although its status "
                "said COMPLETED",
                "The result is fetched again after a wait; the job is not submitted again",
            ),
            status_code=answer.status,
            request_id=request_id,
        )
    raw_images = body.get("images")
    images = tuple(_image_fields(i) for i in raw_images if isinstance(i, dict)) if isinstance(raw_images, list) else ()
    seed = parse_int(body.get("seed"))
    if seed is None and images:
        seed = next((i["seed"] for i in images if isinstance(i.get("seed"), int)), None)
    return JobResult(
        request_id=request_id,
        status=status,
        output=body.get("output"),
        output_urls=_output_urls(body.get("output"), images),
        images=images,
        seed=seed,
        metrics=_metrics(body),
        base64_image=_base64_image(body),
        raw=body,
    )


def parse_run_sync(answer: HttpAnswer) -> SyncRunResponse:
    """Parse a v1 inference: raw image bytes (or JSON for ``base64: true`` and non-image models)."""
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.RUN_SYNC)
    if answer.content_type == "text/html":
        raise SegmindInvalidResponseError(
            f"Segmind's v1 inference answered HTTP {answer.status} with an HTML page "
            f"({snippet(answer.body)!r}); expected an image or JSON. Check the connection's host.",
            status_code=answer.status,
        )
    kept = {name: answer.headers[name] for name in V1_INTERESTING_HEADERS if name in answer.headers}
    return SyncRunResponse(content=answer.body, content_type=answer.content_type, headers=kept)


@dataclass(frozen=True)
class CreditBalance:
    """An account's balance: paid ``credits`` and ``free_credits``, both spendable.

    ``{"credits": 0.0, "free-credits": 0.018}`` (docs.segmind.com/api-reference,
    ``GET /v1/get-user-credits``): an account with only free credits can still run jobs, so guards
    compare :attr:`total`. ``note`` carries the server's text when it answered without a balance
    (404 "No credits found for the user").
    """

    credits: float
    free_credits: float = 0.0
    note: str | None = None

    @property
    def total(self) -> float:
        return self.credits + self.free_credits

    def describe(self) -> str:
        """E.g. ``0.018 credits remaining (0 paid + 0.018 free)``, for logs and the connection test."""
        text = f"{self.total:g} credits remaining ({self.credits:g} paid + {self.free_credits:g} free)"
        return f"{text}; Segmind says: {self.note}" if self.note else text


_PAID_KEYS: Final = ("credits", "remaining_credits", "balance", "credit_balance")
_FREE_KEYS: Final = ("free-credits", "free_credits", "freeCredits")


def _first_number(scopes: Iterable[Mapping[str, Any]], keys: Iterable[str]) -> float | None:
    for scope in scopes:
        for key in keys:
            number = finite_number(scope.get(key))
            if number is not None:
                return number
    return None


def parse_credit_balance(answer: HttpAnswer) -> CreditBalance:
    """Parse ``GET /v1/get-user-credits`` into paid and free credits.

    Documented shape: ``{"credits": 0.0, "free-credits": 0.018}`` (docs.segmind.com/api-reference,
    ``GET /v1/get-user-credits``). Tolerated too: a bare number, other balance key names, nesting under ``data``,
    and no free-credit key (0 free). A 404 whose text says the user has no credits ("No credits
    found for the user", same source) is an account with a zero balance, not a wrong model or URL.
    """
    if answer.status == 404:
        text = error_text(answer)
        if text and _NO_CREDITS_RECORD.search(text):
            return CreditBalance(0.0, 0.0, note=clause(text))
    if not 200 <= answer.status < 300:
        raise classify_error(answer, Endpoint.CREDITS)
    body = answer.json()
    if not isinstance(body, dict):
        number = finite_number(body)
        if number is not None:
            return CreditBalance(number)
    else:
        nested = body.get("data")
        scopes = [body, nested] if isinstance(nested, dict) else [body]
        paid = _first_number(scopes, _PAID_KEYS)
        free = _first_number(scopes, _FREE_KEYS)
        if paid is not None or free is not None:
            return CreditBalance(paid or 0.0, free or 0.0)
    raise SegmindInvalidResponseError(
        f"Segmind's credits answer has no credit balance in it: {snippet(answer.body)!r}", status_code=answer.status
    )


def parse_credits(answer: HttpAnswer) -> float:
    """The spendable balance (paid + free credits) of a credits answer; see :func:`parse_credit_balance`."""
    return parse_credit_balance(answer).total
