"""The emulator's settings: one frozen dataclass, three named profiles, and parsers for the CLI/JSON.

The config is immutable so a running server can swap it atomically (``configure``) while handlers
read a consistent snapshot; jobs copy the timings they need when they are created.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from airflow_provider_segmind.protocol.contract import account_profile_settings

#: The emulator's own well-known key, used when none is configured. Not a Segmind key.
DEFAULT_API_KEY: Final = "SG_0123456789abcdef"

#: A duration in seconds, or a ``(low, high)`` range drawn uniformly per job.
Duration = float | tuple[float, float]
RateLimitScope = Literal["submit", "all"]
V2Validation = Literal["job", "submit"]
#: How a lagging history record looks while ``history_lag_seconds`` have not passed.
HistoryLagMode = Literal["null", "absent"]
#: How a history row holds ``request_body``: a JSON object, a JSON string, or a Python repr string.
HistoryBodyFormat = Literal["object", "json", "repr"]
#: What a history row keeps of media inputs: all, none (keys removed), or a placeholder.
HistoryStripMedia = Literal["keep", "absent", "replaced"]
#: How a history row writes its timestamps.
HistoryTimeFormat = Literal["iso_z", "iso_offset", "iso_naive_utc", "iso_naive_ist", "rfc1123", "epoch_s", "epoch_ms"]
#: The row key of the creation time.
HistoryTimeKey = Literal["created_at", "model_created", "createdAt", "timestamp"]
#: How a history row spells the request id: as the v2 API returned it, or 32 hex digits without dashes.
HistoryIdForm = Literal["v2", "hex32"]

HISTORY_BODY_FORMATS: Final = ("object", "json", "repr")
HISTORY_STRIP_MEDIA: Final = ("keep", "absent", "replaced")
HISTORY_TIME_FORMATS: Final = (
    "iso_z",
    "iso_offset",
    "iso_naive_utc",
    "iso_naive_ist",
    "rfc1123",
    "epoch_s",
    "epoch_ms",
)
HISTORY_TIME_KEYS: Final = ("created_at", "model_created", "createdAt", "timestamp")
HISTORY_ID_FORMS: Final = ("v2", "hex32")
#: The most ``history_team_rows`` a page window may add.
MAX_HISTORY_TEAM_ROWS: Final = 100
#: The user every account's own history rows belong to (shown when ``history_team_rows`` > 0; the
#: ``user_id``/``user_email`` filters of the list match it), and the teammate of the extra rows.
OWN_USER_ID: Final = "user-0"
OWN_USER_EMAIL: Final = "owner@example.com"
TEAMMATE_USER_ID: Final = "user-1"
TEAMMATE_USER_EMAIL: Final = "teammate@example.com"

#: Where faults can be injected: v2 submit, v1 run, v2 status, v2 result, media, credits, request
#: history, the model catalogue (``models``).
ENDPOINTS: Final = frozenset({"submit", "v1", "status", "result", "media", "credits", "history", "models"})
DEFAULT_FAULT_ENDPOINTS: Final = frozenset({"submit", "v1", "status", "result"})
#: Faults that replace or spoil one HTTP answer.
REQUEST_FAULTS: Final = frozenset(
    {"429", "500", "502", "504", "html502", "bad_json", "reset_before", "reset_after", "slow", "truncate", "wrong_type"}
    # Real answers rather than breakage, scripted to test the client's reading of them:
    # ``stale_result``: a v2 result that still says PROCESSING after the status said COMPLETED;
    # ``no_credits_record``: the credits endpoint's 404 "No credits found for the user".
    | {"stale_result", "no_credits_record"}
    # "Late" gateway errors: the job IS created (and billed), then this status is answered, as when
    # an upstream queued the job and the gateway in front of it failed (issue 13).
    | {"late500", "late502", "late503"}
)
#: Faults that decide a job's fate at submit time (the submit itself succeeds).
JOB_FAULTS: Final = frozenset({"failed_job", "content_safety"})
FAULT_NAMES: Final = REQUEST_FAULTS | JOB_FAULTS


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves. Every field can be changed at runtime with ``configure``.

    Timings (``queue_time``, ``inference_time``) accept a number or a ``(low, high)`` range drawn
    per job from the seeded RNG. Changes to timings, TTL and cost apply to jobs submitted after the
    change; a change to ``credits`` resets every key's balance to the new value.
    """

    #: Accepted API keys (``x-api-key``); each is its own account (credit balance, rate-limit window,
    #: jobs). More keys can join an account at run time (``POST /_emulator/keys``).
    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    host: str = "127.0.0.1"
    #: 0 picks a free port.
    port: int = 0
    #: Override the scheme://host:port put in returned URLs (default: the request's Host header).
    public_url: str | None = None
    queue_time: Duration = 0.5
    #: The seed pages quote ~9.59 s per SD3 Large image.
    inference_time: Duration = 9.6
    #: Status/results are kept this long after submission, then answer 404 (Segmind: 1 hour).
    result_ttl: float = 3600.0
    #: Starting balance of every key.
    credits: float = 100.0
    #: Starting free credits of every key, reported as ``free-credits`` and spent first.
    free_credits: float = 0.0
    #: Credits billed per accepted v1 run or v2 submit (a v2 job that FAILs is not billed by default).
    cost: float = 0.04
    #: Whether a v2 job that ends FAILED is billed. Segmind's error docs: a 422 (a FAILED v2 job) is
    #: "billed: false", and "Billing fields (cost, remaining_credits) are omitted on a failure because
    #: nothing was charged" (docs.segmind.com/docs/serverless-api#api-error-codes and
    #: .../async-inference#error-handling, as quoted by the API Evangelist catalogue,
    #: github.com/api-evangelist/segmind ``errors/segmind-error-codes.yml``). So ``False`` by default:
    #: the submit needs the credits (406 without them) but a job that FAILs is not charged. ``True`` is
    #: the other reading (charged at submit whatever the outcome). v1 runs are billed only when they
    #: answer 200, either way.
    bill_failed_jobs: bool = False
    #: Requests per ``rate_limit_window`` seconds per account (every key of an account shares the
    #: window: the "pooled" reading); ``None`` means unlimited. Two readings of Segmind's numbers,
    #: both named in :data:`RATE_LIMIT_PLANS` (``rate_limit_plan`` / ``--rate-limit-plan``):
    #: docs.segmind.com/api-reference/rate-limits says Free 5, Pro 50 requests a minute (Enterprise
    #: custom); Segmind's pricing page reportedly says 60, 120, 500 or 1000 a minute, pooled per team
    #: (as issue 23 reports it; not in any copy of the page we could read).
    rate_limit: int | None = None
    rate_limit_window: float = 60.0
    #: What counts against ``rate_limit``, two readings, since Segmind does not document whether
    #: status polls count: ``submit`` (default) only v1/v2 inference POSTs; ``all`` every
    #: authenticated API call (polls, results, credits, history, catalogue). The contract check
    #: (``python -m airflow_provider_segmind.contract``) tells which one an account follows when
    #: its answers carry rate-limit counters.
    rate_limit_scope: RateLimitScope = "submit"
    #: Send ``x-ratelimit-limit``, ``x-ratelimit-remaining`` and ``x-rate-limit-reset-at-utc`` on
    #: every authenticated answer while ``rate_limit`` is set (default off: Segmind reportedly sends
    #: only the reset header, on a 429). For clients, and the contract check, that read counters.
    rate_limit_headers: bool = False
    #: Fault name -> probability per request (see ``faults.py``); slices of one draw, keep the sum <= 1.
    faults: Mapping[str, float] = field(default_factory=dict)
    fault_endpoints: frozenset[str] = DEFAULT_FAULT_ENDPOINTS
    #: Delay added by the ``slow`` fault.
    slow_seconds: float = 5.0
    #: What the ``429`` fault's reset header asks the client to wait.
    fault_retry_after: float = 1.0
    #: Seeds the RNGs for faults and timing draws, so a run can be replayed.
    seed: int = 0
    #: v2 with invalid SD3 params: ``job`` accepts then FAILs the job (like Segmind), ``submit`` refuses it
    #: with a 400 (Segmind's code for a malformed body; its 422 is a job that ran and FAILED).
    v2_validation: V2Validation = "job"
    #: Slugs that answer 404 "Model not found".
    missing_models: frozenset[str] = frozenset()
    #: Slugs that answer 403 (the account may not use them).
    forbidden_models: frozenset[str] = frozenset()
    #: Slugs that answer 410 (retired).
    retired_models: frozenset[str] = frozenset()
    #: Only SD3 Large (its text-to-image and image-to-image slugs) exists; every other slug is 404.
    strict_models: bool = False
    #: Slugs the model catalogue (``GET /inference-model-information/list``) lists besides the ones
    #: the emulator models (:data:`CATALOGUE_KNOWN_MODELS`) and ``retired_models`` (listed as retired);
    #: ``missing_models`` are never listed, and with ``strict_models`` only what exists is.
    catalogue_models: frozenset[str] = frozenset()
    #: What a key of another account gets for a job it does not own: 404 (like an unknown id), 403
    #: or 401. Segmind's answer is not documented, so the provider is tested against all three.
    foreign_request_status: int = 404
    #: Render the image when a result is fetched, so ``images[].file_size`` is exact. Load tests that
    #: never download images can turn it off to keep result fetches O(1) (``file_size`` is then null
    #: until the image has been rendered).
    render_on_result: bool = True
    #: How many rendered images to keep (LRU); renders are deterministic, so eviction only costs CPU.
    media_cache_size: int = 256
    #: Threads that render images (Pillow releases the GIL while encoding).
    render_threads: int = 4
    #: How many recent requests ``/_emulator/requests`` keeps.
    request_log_size: int = 1000
    #: Request-history records lag: for this many seconds after a submit the request is either
    #: listed with ``None`` fields (``history_lag_mode="null"``: the SDK's "None for a ... record
    #: [that] has not landed yet") or not listed at all and its by-id lookup 404s (``"absent"``).
    history_lag_seconds: float = 0.0
    history_lag_mode: HistoryLagMode = "null"
    #: How many requests the history keeps (oldest dropped first). They outlive the v2 record
    #: (``result_ttl``) and the purge of expired jobs, and so do their media URLs.
    history_size: int = 100_000
    # What a history row looks like. Segmind's history is thinly documented (SDK 1.3.0
    # ``segmind/generations.py``: "request_body (the inputs as sent)", "timestamps"), so the
    # emulator can answer in every plausible shape; ``HISTORY_PROFILES`` names bundles of them.
    #: ``request_body`` as a JSON ``object`` (default), a ``json`` string, or a Python ``repr`` string.
    history_body_format: HistoryBodyFormat = "object"
    #: Media inputs in ``request_body``: ``keep`` (default), ``absent`` (removed) or ``replaced`` by
    #: ``"<not stored>"``. docs.segmind.com/api-reference/logging: "Segmind does not store any input
    #: images, videos, or audio files associated with any run for model inferencing."
    history_strip_media: HistoryStripMedia = "keep"
    #: ``request_body`` keeps only the keys the model's page declares (SD3 Large: the provider's
    #: ``SD3_DOCUMENTED_FIELDS``, no ``seed``); other models keep every key.
    history_declared_only: bool = False
    #: The timestamps: ``iso_z`` (default, ISO UTC with ``Z``), ``iso_offset`` (``+05:30``),
    #: ``iso_naive_utc``, ``iso_naive_ist`` (naive India time), ``rfc1123``, ``epoch_s``, ``epoch_ms``.
    history_time_format: HistoryTimeFormat = "iso_z"
    #: The creation time's key: ``created_at`` (default), ``model_created``, ``createdAt``, ``timestamp``.
    history_time_key: HistoryTimeKey = "created_at"
    #: The id rows carry: ``v2`` (default, the v2 request id) or ``hex32`` (32 lowercase hex digits,
    #: no dashes); the by-id route accepts both spellings.
    history_id_form: HistoryIdForm = "v2"
    #: Team accounts: this many extra rows of a teammate in every list answer (see
    #: :mod:`.request_history`), unless the list is filtered to the account's own user.
    history_team_rows: int = 0

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ValueError("EmulatorConfig.api_keys needs at least one key")
        for name in ("queue_time", "inference_time"):
            _check_duration(name, getattr(self, name))
        for name in (
            "result_ttl",
            "credits",
            "free_credits",
            "cost",
            "slow_seconds",
            "fault_retry_after",
            "rate_limit_window",
            "history_lag_seconds",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"EmulatorConfig.{name} must not be negative")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError("EmulatorConfig.rate_limit must be at least 1 (or None for no limit)")
        if self.rate_limit_scope not in ("submit", "all"):
            raise ValueError("EmulatorConfig.rate_limit_scope must be 'submit' or 'all'")
        if not isinstance(self.rate_limit_headers, bool):
            raise ValueError("EmulatorConfig.rate_limit_headers must be true or false")
        if self.foreign_request_status not in (401, 403, 404):
            raise ValueError("EmulatorConfig.foreign_request_status must be 401, 403 or 404")
        if self.history_lag_mode not in ("null", "absent"):
            raise ValueError("EmulatorConfig.history_lag_mode must be 'null' or 'absent'")
        if self.history_size < 0:
            raise ValueError("EmulatorConfig.history_size must be >= 0")
        for name, allowed in (
            ("history_body_format", HISTORY_BODY_FORMATS),
            ("history_strip_media", HISTORY_STRIP_MEDIA),
            ("history_time_format", HISTORY_TIME_FORMATS),
            ("history_time_key", HISTORY_TIME_KEYS),
            ("history_id_form", HISTORY_ID_FORMS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"EmulatorConfig.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        for flag in ("history_declared_only", "bill_failed_jobs"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"EmulatorConfig.{flag} must be true or false")
        team = self.history_team_rows
        if isinstance(team, bool) or not isinstance(team, int) or not 0 <= team <= MAX_HISTORY_TEAM_ROWS:
            raise ValueError(f"EmulatorConfig.history_team_rows must be an integer within 0..{MAX_HISTORY_TEAM_ROWS}")
        if self.v2_validation not in ("job", "submit"):
            raise ValueError("EmulatorConfig.v2_validation must be 'job' or 'submit'")
        unknown = set(self.faults) - FAULT_NAMES
        if unknown:
            raise ValueError(f"Unknown fault(s) {sorted(unknown)}; known: {sorted(FAULT_NAMES)}")
        for name, probability in self.faults.items():
            if not 0 <= probability <= 1:
                raise ValueError(f"Fault {name!r} probability must be within 0..1, got {probability!r}")
        if not self.fault_endpoints <= ENDPOINTS:
            raise ValueError(f"Unknown fault endpoint(s) {sorted(self.fault_endpoints - ENDPOINTS)}")
        if self.media_cache_size < 0 or self.render_threads < 1 or self.request_log_size < 0:
            raise ValueError("media_cache_size and request_log_size must be >= 0, render_threads >= 1")

    @property
    def api_key(self) -> str:
        """The first configured key: the one to hand to a client."""
        return self.api_keys[0]

    def with_changes(self, **changes: Any) -> EmulatorConfig:
        """A copy with ``changes`` applied; values may come from JSON (lists, "8-12" strings)."""
        return dataclasses.replace(self, **coerce_changes(changes))

    @staticmethod
    def history_profile(name: str) -> dict[str, Any]:
        """The settings of the history profile ``name`` (:data:`HISTORY_PROFILES`), every history
        shape setting it leaves out at its default: ``configure(**EmulatorConfig.history_profile(
        "all"))``, or ``configure(history_profile="all")``, which expands to the same."""
        try:
            bundle = HISTORY_PROFILES[name]
        except KeyError:
            raise ValueError(f"Unknown history profile {name!r}; choose one of {', '.join(HISTORY_PROFILES)}") from None
        return {**_HISTORY_SHAPE_DEFAULTS, **bundle}

    @classmethod
    def from_account_profile(
        cls, source: str | os.PathLike[str] | Mapping[str, Any], *, profile: str = "realistic", **overrides: Any
    ) -> EmulatorConfig:
        """The named ``profile`` with an account profile on top (the JSON file, or its parsed document,
        that ``python -m airflow_provider_segmind.contract --profile-out FILE`` wrote), then ``overrides``:
        an emulator whose history and rate limit answer like that account."""
        return cls.for_profile(profile, **{**load_account_profile(source), **overrides})

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> EmulatorConfig:
        """The named profile (``realistic``, ``fast``, ``chaos``) with ``overrides`` on top."""
        try:
            base = PROFILES[profile]
        except KeyError:
            raise ValueError(f"Unknown emulator profile {profile!r}; choose one of {sorted(PROFILES)}") from None
        return cls(**coerce_changes({**base, **overrides}))


#: ``realistic`` matches Segmind's quoted timings; ``fast`` is for tests; ``chaos`` adds every fault.
PROFILES: Final[Mapping[str, Mapping[str, Any]]] = {
    "realistic": {},
    "fast": {"queue_time": 0.05, "inference_time": 0.2, "slow_seconds": 1.0},
    "chaos": {
        "queue_time": (0.1, 0.5),
        "inference_time": (1.0, 3.0),
        "slow_seconds": 2.0,
        "faults": {
            "429": 0.03,
            "500": 0.03,
            "502": 0.02,
            "504": 0.01,
            "html502": 0.02,
            "bad_json": 0.02,
            "reset_before": 0.02,
            "reset_after": 0.01,
            "slow": 0.02,
            "failed_job": 0.05,
            "content_safety": 0.02,
        },
    },
}


#: What the real request history may answer (issue 22), one switch or all at once:
#: ``emulator_factory(**HISTORY_PROFILES["all"])``, ``configure(history_profile="all")``,
#: ``--history-profile all``. The letters are the issue's: (a) bodies, (b) media, (c) declared keys,
#: (d) timestamps, (e) ids, (f) lag, (g) teams.
HISTORY_PROFILES: Final[Mapping[str, Mapping[str, Any]]] = {
    "default": {},
    "sdk-repr": {"history_body_format": "repr"},
    "no-media": {"history_strip_media": "absent"},
    "declared-only": {"history_declared_only": True},
    "naive-ist": {"history_time_format": "iso_naive_ist"},
    "rfc1123": {"history_time_format": "rfc1123"},
    "epoch-ms": {"history_time_format": "epoch_ms"},
    "hex-ids": {"history_id_form": "hex32"},
    "lagging": {"history_lag_seconds": 2.0, "history_lag_mode": "null"},
    "team": {"history_team_rows": 2},
    "all": {
        "history_body_format": "repr",
        "history_strip_media": "absent",
        "history_declared_only": True,
        "history_time_format": "iso_naive_ist",
        "history_time_key": "model_created",
        "history_id_form": "hex32",
        "history_lag_seconds": 2.0,
        "history_lag_mode": "null",
        "history_team_rows": 2,
    },
}
#: Segmind's rate limits, both readings, by name (``rate_limit_plan``, ``--rate-limit-plan``): the
#: numbers only; ``rate_limit_scope`` says what counts. ``free``/``pro``: docs.segmind.com/api-reference/
#: rate-limits ("Free 5 RPM, Pro 50 RPM, Enterprise Custom"). ``pooled-*``: Segmind's pricing page as
#: issue 23 reports it (60 to 1000 requests a minute "pooled", per team; unverified). ``none``: no limit.
RATE_LIMIT_PLANS: Final[Mapping[str, Mapping[str, Any]]] = {
    "none": {"rate_limit": None},
    "free": {"rate_limit": 5, "rate_limit_window": 60.0},
    "pro": {"rate_limit": 50, "rate_limit_window": 60.0},
    "pooled-60": {"rate_limit": 60, "rate_limit_window": 60.0},
    "pooled-120": {"rate_limit": 120, "rate_limit_window": 60.0},
    "pooled-500": {"rate_limit": 500, "rate_limit_window": 60.0},
    "pooled-1000": {"rate_limit": 1000, "rate_limit_window": 60.0},
}
#: The models the emulator's catalogue always lists: the SD3 Large slugs it models (text-to-image,
#: and image-to-image, segmind.com/models/stable-diffusion-3-large-img2img/api).
CATALOGUE_KNOWN_MODELS: Final = ("stable-diffusion-3-large-txt2img", "stable-diffusion-3-large-img2img")

#: Every setting a history profile may set, at its default (a profile resets the ones it leaves out).
_HISTORY_SHAPE_DEFAULTS: Final[Mapping[str, Any]] = {
    f.name: f.default
    for f in dataclasses.fields(EmulatorConfig)
    if f.name in {name for bundle in HISTORY_PROFILES.values() for name in bundle}
}


def _check_duration(name: str, value: Duration) -> None:
    low, high = value if isinstance(value, tuple) else (value, value)
    if low < 0 or high < low:
        raise ValueError(f"EmulatorConfig.{name} must be >= 0 (a range must be low-high), got {value!r}")


def parse_duration(value: Any) -> Duration:
    """``9.6``, ``"9.6"``, ``"8-12"``, ``[8, 12]`` -> a number or a ``(low, high)`` tuple."""
    if isinstance(value, (list, tuple)):
        low, high = (float(v) for v in value)
        return (low, high)
    if isinstance(value, str) and "-" in value.strip()[1:]:
        low_text, high_text = value.strip().split("-", 1)
        return (float(low_text), float(high_text))
    return float(value)


def draw_duration(value: Duration, rng: random.Random) -> float:
    """A number as is; a range drawn uniformly from ``rng``."""
    if isinstance(value, tuple):
        return rng.uniform(*value)
    return float(value)


def parse_fault(text: str) -> tuple[str, float]:
    """``"500=0.1"`` -> ``("500", 0.1)`` (the CLI's ``--fault`` syntax)."""
    name, sep, probability = text.partition("=")
    if not sep:
        raise ValueError(f"--fault expects NAME=PROBABILITY, got {text!r}")
    return name.strip(), float(probability)


def _frozen(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, Iterable):
        raise ValueError(f"expected a list of names, got {value!r}")
    return frozenset(str(v) for v in value)


#: Booleans as words (CLI, query strings); any other word is left for ``__post_init__`` to refuse.
_BOOL_WORDS: Final = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}

_COERCE: Final[Mapping[str, Any]] = {
    "api_keys": lambda v: (v,) if isinstance(v, str) else tuple(str(k) for k in v),
    "queue_time": parse_duration,
    "inference_time": parse_duration,
    "faults": lambda v: {str(k): float(p) for k, p in dict(v).items()},
    "fault_endpoints": _frozen,
    "missing_models": _frozen,
    "forbidden_models": _frozen,
    "retired_models": _frozen,
    "catalogue_models": _frozen,
    "rate_limit_headers": lambda v: _BOOL_WORDS.get(v.strip().lower(), v) if isinstance(v, str) else v,
    "history_declared_only": lambda v: _BOOL_WORDS.get(v.strip().lower(), v) if isinstance(v, str) else v,
    "bill_failed_jobs": lambda v: _BOOL_WORDS.get(v.strip().lower(), v) if isinstance(v, str) else v,
    "history_team_rows": lambda v: v if isinstance(v, bool) else int(v),
}
_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(EmulatorConfig))


def coerce_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Check field names and convert JSON-ish values to the dataclass's types.

    ``history_profile`` (not a field) expands to :meth:`EmulatorConfig.history_profile`'s settings,
    ``rate_limit_plan`` to :data:`RATE_LIMIT_PLANS`' numbers; settings given next to them win.
    """
    changes = dict(changes)
    if "history_profile" in changes:
        changes = {**EmulatorConfig.history_profile(str(changes.pop("history_profile"))), **changes}
    if "rate_limit_plan" in changes:
        plan = str(changes.pop("rate_limit_plan"))
        if plan not in RATE_LIMIT_PLANS:
            raise ValueError(f"Unknown rate limit plan {plan!r}; choose one of {', '.join(RATE_LIMIT_PLANS)}")
        changes = {**RATE_LIMIT_PLANS[plan], **changes}
    unknown = sorted(set(changes) - _FIELDS)
    if unknown:
        known = sorted(_FIELDS | {"history_profile", "rate_limit_plan"})
        raise ValueError(f"Unknown emulator setting(s) {unknown}; known: {known}")
    return {name: _COERCE[name](value) if name in _COERCE else value for name, value in changes.items()}


def load_account_profile(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """The emulator settings of an account profile (a JSON file's path, or the parsed document),
    checked (:func:`~airflow_provider_segmind.protocol.contract.account_profile_settings`, then
    :func:`coerce_changes`). ``ValueError`` for anything else, naming the file."""
    if isinstance(source, Mapping):
        return coerce_changes(account_profile_settings(source))
    path = Path(source)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return coerce_changes(account_profile_settings(document))
    except (OSError, ValueError) as err:
        raise ValueError(f"account profile {str(path)!r}: {err}") from None
