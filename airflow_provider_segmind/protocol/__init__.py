"""The Segmind API's rules, as pure functions: no sockets, no Airflow, no clocks read implicitly.

Both transports (``requests`` on the worker, ``aiohttp`` in the triggerer) and the emulator use
this package, so URL building, parameter validation, answer parsing, error classification, the
retry policy and the poll schedule are written once and cannot drift between the sync and async
paths. A transport's whole job is: build the request from :mod:`.urls` (:func:`status_url`,
:func:`auth_headers`, ...), send it, wrap what came back in an :class:`HttpAnswer`, and hand that
to a ``parse_*`` function, which returns a typed value or raises the typed error from
:mod:`..exceptions`.

One module per concern, each readable on its own (read them in this order; each imports only
those above it):

- :mod:`.vocabulary`: default host, key header, model slug, job states, endpoints.
- :mod:`.text`: API keys removed from outside text; message sentences joined once.
- :mod:`.urls`: base URL, per-call URLs, auth headers, and what keeps the key on its origin.
- :mod:`.image_input`: an ``s3://`` input image: its URI, and when two presigned URLs name one object.
- :mod:`.params`: which parameters a model takes (SD3 Large in full).
- :mod:`.answer`: one HTTP answer, transport-neutral; its rate-limit wait and error text.
- :mod:`.retry`: what is retried, how long to wait, when a submit may be resent.
- :mod:`.errors`: the error taxonomy (which typed error an answer is, and what to do).
- :mod:`.responses`: successful answers into typed values.
- :mod:`.polling`: the poll schedule and the watch's state machine (:class:`PollTracker`).
- :mod:`.learning`: what completed jobs of a model took, and where that places the next job's polls.
- :mod:`.rate_budget`: how one key's request limit is shared by the processes using it.
- :mod:`.history`: Segmind's request-history API (URLs, query, records, answers).
- :mod:`.history_search`: finding a submit whose answer was lost among those records.

Every name callers used from the former single ``protocol.py`` is importable from here; the
request-history names are imported from their modules (or from :mod:`airflow_provider_segmind.history`,
their old path), not from here.
"""

from __future__ import annotations

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindContentBlockedError,
    SegmindError,
    SegmindForbiddenError,
    SegmindInsufficientCreditsError,
    SegmindInvalidInputJobError,
    SegmindInvalidParametersError,
    SegmindInvalidResponseError,
    SegmindJobFailedError,
    SegmindModelNotFoundError,
    SegmindModelRetiredError,
    SegmindNotFoundError,
    SegmindRateLimitError,
    SegmindRequestNotFoundError,
    SegmindResultNotReadyError,
    SegmindServerError,
    SegmindTransportError,
    SegmindUnexpectedStatusError,
)
from airflow_provider_segmind.protocol.answer import (
    HttpAnswer,
    lower_headers,
    parse_retry_after,
)
from airflow_provider_segmind.protocol.errors import (
    MODEL_CATALOGUE_URL,
    classify_error,
    is_content_block,
    is_invalid_input,
    job_failed_error,
    transport_error,
)
from airflow_provider_segmind.protocol.params import (
    SD3_ASPECT_RATIOS,
    SD3_DEFAULTS,
    SD3_DOCUMENTED_FIELDS,
    SD3_FIELDS,
    SD3_IMAGE_FIELDS,
    SD3_IMG2IMG_DEFAULTS,
    SD3_IMG2IMG_DOCUMENTED_FIELDS,
    SD3_IMG2IMG_FIELDS,
    SD3_IMG2IMG_MODES,
    SD3_MODEL_FIELDS,
    SD3_MODES,
    SD3_OUTPUT_FORMATS,
    SD3_PROMPT_MAX_CHARS,
    SD3_SEED_MAX,
    SD3_SIZES,
    SD3_STABILITY_FIELDS,
    SEED_MODEL_PREFIXES,
    SEED_RANDOM,
    invalid_parameters,
    model_takes_seed,
    unknown_params,
    validate_params,
    validate_sd3_img2img_params,
    validate_sd3_params,
)
from airflow_provider_segmind.protocol.polling import (
    KNOWN_INFERENCE_SECONDS,
    OUTCOME_COMPLETED,
    OUTCOME_ERROR,
    OUTCOME_EXPIRED,
    OUTCOME_FAILED,
    OUTCOME_TIMEOUT,
    RATE_LIMIT_PATIENCE_SECONDS,
    RESULT_RETENTION_SECONDS,
    PollSchedule,
    PollStep,
    PollTracker,
)
from airflow_provider_segmind.protocol.responses import (
    CreditBalance,
    JobResult,
    JobStatusResponse,
    SubmitResponse,
    SyncRunResponse,
    parse_credit_balance,
    parse_credits,
    parse_int,
    parse_result,
    parse_run_sync,
    parse_status,
    parse_submit,
)
from airflow_provider_segmind.protocol.retry import (
    SUBMIT_REFUSED_5XX,
    RetryPolicy,
    submit_certainly_refused,
    submit_outcome_unknown,
)
from airflow_provider_segmind.protocol.text import (
    MAX_ERROR_TEXT,
    redact,
    sentences,
)
from airflow_provider_segmind.protocol.urls import (
    REQUEST_ID_PATTERN,
    auth_headers,
    check_request_id,
    credits_url,
    has_dot_segment,
    is_loopback_host,
    is_request_id,
    normalize_base_url,
    refuse_cleartext_key,
    result_url,
    run_sync_url,
    same_origin,
    status_url,
    submit_url,
)
from airflow_provider_segmind.protocol.vocabulary import (
    API_KEY_HEADER,
    DEFAULT_BASE_URL,
    RATE_LIMIT_RESET_HEADER,
    SD3_LARGE_IMG2IMG_MODEL,
    SD3_LARGE_MODEL,
    TERMINAL_STATUSES,
    V1_INTERESTING_HEADERS,
    Endpoint,
    SegmindJobStatus,
)

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_BASE_URL",
    "KNOWN_INFERENCE_SECONDS",
    "MAX_ERROR_TEXT",
    "MODEL_CATALOGUE_URL",
    "OUTCOME_COMPLETED",
    "OUTCOME_ERROR",
    "OUTCOME_EXPIRED",
    "OUTCOME_FAILED",
    "OUTCOME_TIMEOUT",
    "RATE_LIMIT_PATIENCE_SECONDS",
    "RATE_LIMIT_RESET_HEADER",
    "REQUEST_ID_PATTERN",
    "RESULT_RETENTION_SECONDS",
    "SD3_ASPECT_RATIOS",
    "SD3_DEFAULTS",
    "SD3_DOCUMENTED_FIELDS",
    "SD3_FIELDS",
    "SD3_IMAGE_FIELDS",
    "SD3_IMG2IMG_DEFAULTS",
    "SD3_IMG2IMG_DOCUMENTED_FIELDS",
    "SD3_IMG2IMG_FIELDS",
    "SD3_IMG2IMG_MODES",
    "SD3_LARGE_IMG2IMG_MODEL",
    "SD3_LARGE_MODEL",
    "SD3_MODEL_FIELDS",
    "SD3_MODES",
    "SD3_OUTPUT_FORMATS",
    "SD3_PROMPT_MAX_CHARS",
    "SD3_SEED_MAX",
    "SD3_SIZES",
    "SD3_STABILITY_FIELDS",
    "SEED_MODEL_PREFIXES",
    "SEED_RANDOM",
    "SUBMIT_REFUSED_5XX",
    "TERMINAL_STATUSES",
    "V1_INTERESTING_HEADERS",
    "CreditBalance",
    "Endpoint",
    "HttpAnswer",
    "JobResult",
    "JobStatusResponse",
    "PollSchedule",
    "PollStep",
    "PollTracker",
    "RetryPolicy",
    "SegmindJobStatus",
    "SubmitResponse",
    "SyncRunResponse",
    "auth_headers",
    "check_request_id",
    "classify_error",
    "credits_url",
    "has_dot_segment",
    "invalid_parameters",
    "is_content_block",
    "is_invalid_input",
    "is_loopback_host",
    "is_request_id",
    "job_failed_error",
    "lower_headers",
    "model_takes_seed",
    "normalize_base_url",
    "parse_credit_balance",
    "parse_credits",
    "parse_int",
    "parse_result",
    "parse_retry_after",
    "parse_run_sync",
    "parse_status",
    "parse_submit",
    "redact",
    "refuse_cleartext_key",
    "result_url",
    "run_sync_url",
    "same_origin",
    "sentences",
    "status_url",
    "submit_certainly_refused",
    "submit_outcome_unknown",
    "submit_url",
    "transport_error",
    "unknown_params",
    "validate_params",
    "validate_sd3_img2img_params",
    "validate_sd3_params",
]

# The typed errors stay importable from here, as they were from the single module.
__all__ += [
    "SegmindAuthenticationError",
    "SegmindContentBlockedError",
    "SegmindError",
    "SegmindForbiddenError",
    "SegmindInsufficientCreditsError",
    "SegmindInvalidInputJobError",
    "SegmindInvalidParametersError",
    "SegmindInvalidResponseError",
    "SegmindJobFailedError",
    "SegmindModelNotFoundError",
    "SegmindModelRetiredError",
    "SegmindNotFoundError",
    "SegmindRateLimitError",
    "SegmindRequestNotFoundError",
    "SegmindResultNotReadyError",
    "SegmindServerError",
    "SegmindTransportError",
    "SegmindUnexpectedStatusError",
]
