"""The emulator's in-memory world: jobs, credit balances, rate-limit windows, counters, recent requests.

Everything here is touched only from the server's event loop (the threaded runner marshals calls
onto it), so there are no locks. A job is a record of timestamps: its status is computed from the
clock when asked, so thousands of queued jobs cost a dict entry each and no task or timer.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
import weakref
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from airflow_provider_segmind.emulator.config import EmulatorConfig, draw_duration
from airflow_provider_segmind.emulator.faults import FaultInjector
from airflow_provider_segmind.emulator.images import ImageSpec, render_image

#: Expired jobs stay this long (answering 404, but visible to introspection and media) before purge.
PURGE_GRACE_SECONDS: Final = 3600.0
#: How long a job that fails validation "runs" (Segmind's example FAILED body: 0.007 s).
VALIDATION_FAILURE_SECONDS: Final = 0.007

INTERNAL_ERROR: Final = "Internal inference error (emulated)"
CONTENT_BLOCKED: Final = "Content blocked: the prompt or image was flagged by the safety filter (emulated)"
#: Prompt markers that make a job fail deterministically, and the reason each produces.
PROMPT_TRIGGERS: Final[Mapping[str, str]] = {"__fail__": INTERNAL_ERROR, "__unsafe__": CONTENT_BLOCKED}
JOB_FAULT_ERRORS: Final[Mapping[str, str]] = {"failed_job": INTERNAL_ERROR, "content_safety": CONTENT_BLOCKED}


def key_label(api_key: str) -> str:
    """A stable, non-reversible name for an API key (first 12 hex chars of its SHA-256).

    Stats, logs and introspection use it so a raw key never leaves the auth check.
    """
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:12]


#: ``__hold_<seconds>s__`` in a prompt: the job's inference takes at least that long (tests that must
#: catch a job mid-flight whatever the machine's load, e.g. the soak's triggerer restarts).
_HOLD_MARKER: Final = re.compile(r"__hold_(\d+(?:\.\d+)?)s__")


def hold_for_prompt(params: Mapping[str, Any] | None) -> float:
    """The minimum inference time a prompt's ``__hold_<seconds>s__`` marker asks for (0 without one)."""
    prompt = params.get("prompt") if params is not None else None
    match = _HOLD_MARKER.search(prompt) if isinstance(prompt, str) else None
    return float(match.group(1)) if match else 0.0


def failure_for_prompt(params: Mapping[str, Any]) -> str | None:
    """The failure a prompt's ``__fail__``/``__unsafe__`` marker asks for, if any."""
    prompt = params.get("prompt")
    if isinstance(prompt, str):
        for marker, reason in PROMPT_TRIGGERS.items():
            if marker in prompt:
                return reason
    return None


@dataclass
class Job:
    """A v2 request. Status is derived from the timestamps; ``error`` set means it ends FAILED."""

    request_id: str
    model: str
    key_label: str
    params: dict[str, Any]
    seed: int
    submitted_at: float
    queue_time: float
    inference_time: float
    expires_at: float
    cost: float
    remaining_credits: float
    image: ImageSpec | None
    error: str | None = None
    #: The body as the client sent it (``params`` may have been normalised): the history's
    #: ``request_body`` ("the inputs as sent", SDK ``Generations.history``).
    request_body: dict[str, Any] | None = None
    #: Whether the submit charged ``cost``: a job that FAILs is not charged unless the config's
    #: ``bill_failed_jobs`` says so (its ``cost`` is then 0).
    billed: bool = True

    @property
    def started_at(self) -> float:
        return self.submitted_at + self.queue_time

    @property
    def completed_at(self) -> float:
        return self.started_at + self.inference_time

    def status_at(self, now: float) -> str:
        """QUEUED, PROCESSING, COMPLETED, FAILED, or EXPIRED (past its retention: answers 404)."""
        if now >= self.expires_at:
            return "EXPIRED"
        if now < self.started_at:
            return "QUEUED"
        if now < self.completed_at:
            return "PROCESSING"
        return "FAILED" if self.error is not None else "COMPLETED"

    def history_status_at(self, now: float) -> str:
        """The request history's word: PENDING until done, then COMPLETED or FAILED, past the v2
        record's retention too (the history outlives it)."""
        if now < self.completed_at:
            return "PENDING"
        return "FAILED" if self.error is not None else "COMPLETED"

    def is_done(self, now: float) -> bool:
        return now >= self.completed_at

    def metrics(self) -> dict[str, float]:
        return {
            "inference_time": round(self.inference_time, 3),
            "queue_time": round(self.queue_time, 3),
            "total_time": round(self.queue_time + self.inference_time, 3),
        }

    def describe(self, now: float) -> dict[str, Any]:
        """Introspection view (``/_emulator/jobs/{id}``): times as epoch floats, no API key."""
        return {
            "request_id": self.request_id,
            "status": self.status_at(now),
            "model": self.model,
            "key_label": self.key_label,
            "params": self.params,
            "seed": self.seed,
            "error": self.error,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "expires_at": self.expires_at,
            "cost": self.cost,
            "billed": self.billed,
        }


class Ledger:
    """Paid and free credit balances per key label.

    Segmind's credits endpoint reports both, and both are spendable (docs.segmind.com/api-reference,
    ``GET /v1/get-user-credits``). Which one a run draws first is not documented; the emulator spends free credits
    first [inf], so an account with only free credits can run until they are gone.
    """

    def __init__(self, labels: list[str], credits: float, free_credits: float = 0.0) -> None:
        self.balances: dict[str, float] = dict.fromkeys(labels, credits)
        self.free: dict[str, float] = dict.fromkeys(labels, free_credits)

    def balance(self, label: str) -> float:
        return self.balances.get(label, 0.0)

    def free_balance(self, label: str) -> float:
        return self.free.get(label, 0.0)

    def total(self, label: str) -> float:
        """Paid and free credits together."""
        return round(self.balance(label) + self.free_balance(label), 6)

    def can_pay(self, label: str, cost: float) -> bool:
        """Whether ``cost`` is covered (paid and free credits together); nothing is deducted."""
        return self.balance(label) + self.free_balance(label) + 1e-9 >= cost

    def charge(self, label: str, cost: float) -> float | None:
        """Deduct ``cost`` (free credits first); return the new total, or ``None`` (nothing deducted) if too low."""
        paid, free = self.balances.get(label, 0.0), self.free.get(label, 0.0)
        if paid + free + 1e-9 < cost:
            return None
        from_free = min(free, cost)
        self.free[label] = round(free - from_free, 6)
        self.balances[label] = round(paid - (cost - from_free), 6)
        return round(self.balances[label] + self.free[label], 6)

    def refund(self, label: str, cost: float) -> None:
        self.balances[label] = round(self.balances.get(label, 0.0) + cost, 6)


class RateLimiter:
    """A sliding window per key: at most ``limit`` requests in any ``window`` seconds."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = defaultdict(deque)

    def acquire(self, label: str, limit: int, window: float, now: float) -> float | None:
        """Count a request; return ``None`` if allowed, else the epoch time a slot frees up."""
        hits = self._hits[label]
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return hits[len(hits) - limit] + window
        hits.append(now)
        return None

    def peek(self, label: str, limit: int, window: float, now: float) -> tuple[int, float]:
        """Without counting a request: how many are left in the window, and the epoch time the
        oldest counted one leaves it (``now + window`` when none is counted)."""
        hits = self._hits[label]
        while hits and hits[0] <= now - window:
            hits.popleft()
        return max(0, limit - len(hits)), (hits[0] + window if hits else now + window)

    def clear(self) -> None:
        self._hits.clear()


@dataclass
class Stats:
    """Counters served by ``/_emulator/stats``. Attempts count every request; the rest only successes."""

    submit_attempts: int = 0
    submissions: int = 0
    v1_attempts: int = 0
    v1_runs: int = 0
    status_polls: int = 0
    result_fetches: int = 0
    credit_checks: int = 0
    #: Calls to the request-history API (list and by-id), answered or not.
    history_calls: int = 0
    #: Calls to the model catalogue (``GET /inference-model-information/list``), answered or not.
    catalogue_calls: int = 0
    media_fetches: int = 0
    blob_fetches: int = 0
    rate_limited: int = 0
    aborted_connections: int = 0
    credits_billed: float = 0.0
    #: v2 jobs created without a charge because they FAIL (``bill_failed_jobs`` off, the default).
    unbilled_failures: int = 0
    connections: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    responses: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    per_model: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    per_key: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    _seen_transports: weakref.WeakSet[asyncio.BaseTransport] = field(default_factory=weakref.WeakSet)

    def increment(self, counter: str) -> None:
        """Add one to the integer counter named ``counter`` (e.g. ``status_polls``)."""
        setattr(self, counter, getattr(self, counter) + 1)

    def note_connection(self, transport: asyncio.BaseTransport | None) -> None:
        """Count each TCP connection once (keep-alive reuse is what a client's pool should achieve)."""
        if transport is not None and transport not in self._seen_transports:
            self._seen_transports.add(transport)
            self.connections += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "submit_attempts": self.submit_attempts,
            "submissions": self.submissions,
            "v1_attempts": self.v1_attempts,
            "v1_runs": self.v1_runs,
            "status_polls": self.status_polls,
            "result_fetches": self.result_fetches,
            "credit_checks": self.credit_checks,
            "history_calls": self.history_calls,
            "catalogue_calls": self.catalogue_calls,
            "media_fetches": self.media_fetches,
            "blob_fetches": self.blob_fetches,
            "rate_limited": self.rate_limited,
            "aborted_connections": self.aborted_connections,
            "credits_billed": round(self.credits_billed, 6),
            "unbilled_failures": self.unbilled_failures,
            "connections": self.connections,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "responses": dict(self.responses),
            "faults": dict(self.faults),
            "per_model": {model: dict(counts) for model, counts in self.per_model.items()},
            "per_key": {label: dict(counts) for label, counts in self.per_key.items()},
        }


class ImageCache:
    """Rendered images by spec: a bounded LRU, renders in a thread pool, one render per spec at a time."""

    def __init__(self, max_entries: int, threads: int) -> None:
        self.max_entries = max_entries
        self._threads = threads
        self._entries: OrderedDict[ImageSpec, bytes] = OrderedDict()
        self._pending: dict[ImageSpec, asyncio.Future[bytes]] = {}
        self._executor: ThreadPoolExecutor | None = None

    def peek(self, spec: ImageSpec) -> bytes | None:
        return self._entries.get(spec)

    async def get(self, spec: ImageSpec) -> bytes:
        """The image's bytes, rendering it off the event loop if it is not cached."""
        cached = self._entries.get(spec)
        if cached is not None:
            self._entries.move_to_end(spec)
            return cached
        pending = self._pending.get(spec)
        if pending is not None:
            return await asyncio.shield(pending)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._threads, thread_name_prefix="segmind-emulator-render")
        future = asyncio.get_running_loop().run_in_executor(self._executor, render_image, spec)
        self._pending[spec] = future
        try:
            data = await asyncio.shield(future)
        finally:
            self._pending.pop(spec, None)
        self._store(spec, data)
        return data

    def _store(self, spec: ImageSpec, data: bytes) -> None:
        if self.max_entries <= 0:
            return
        self._entries[spec] = data
        self._entries.move_to_end(spec)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def resize(self, max_entries: int) -> None:
        self.max_entries = max_entries
        while len(self._entries) > max(0, max_entries):
            self._entries.popitem(last=False)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class EmulatorState:
    """Everything a running emulator knows. Mutate it only from its event loop."""

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.images = ImageCache(config.media_cache_size, config.render_threads)
        self.faults = FaultInjector(config.seed)
        # Accepted key -> its account's label. An account's label is its first key's label; jobs,
        # balances, rate-limit windows and ``per_key`` stats belong to the account, so every key
        # of one account sees the same jobs and credits (Segmind: keys are made per account in the
        # console, and a new key does not start a new balance).
        self._key_labels: dict[str, str] = {}
        # Every key ever accepted (revoked ones too), so a leaked revoked key is still flagged.
        self._known_keys: set[str] = set()
        # Revoked key -> the account it belonged to (``same_account_as`` may still name it).
        self._revoked: dict[str, str] = {}
        self.reset()

    # ---- lifecycle -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget jobs, counters, windows, scripts and recorded requests; restore every balance.

        Keys added or revoked through :meth:`change_keys` are forgotten too: the configured keys are
        accepted again, one account each.
        """
        self._key_labels = {key: key_label(key) for key in self.config.api_keys}
        self._known_keys = set(self._key_labels)
        self._revoked = {}
        self.jobs: dict[str, Job] = {}
        self._job_order: deque[str] = deque()
        # The request history: every v2 request, oldest first, kept past the v2 record's
        # retention and past the purge of ``jobs`` (up to ``history_size`` requests).
        self.history: OrderedDict[str, Job] = OrderedDict()
        self.ledger = Ledger(list(self._key_labels.values()), self.config.credits, self.config.free_credits)
        self.limiter = RateLimiter()
        self.stats = Stats()
        self.requests: deque[dict[str, Any]] = deque(maxlen=self.config.request_log_size)
        self.faults.clear()
        self.faults.reseed(self.config.seed)
        self.timing_rng = self._timing_rng(self.config.seed)

    def configure(self, **changes: Any) -> EmulatorConfig:
        """Apply config changes now. ``credits`` resets every balance; new keys get the configured credits."""
        self.config = self.config.with_changes(**changes)
        if "api_keys" in changes:
            self._key_labels = {key: key_label(key) for key in self.config.api_keys}
            self._known_keys |= set(self._key_labels)
            for key in self._key_labels:
                self._revoked.pop(key, None)
            for label in self._key_labels.values():
                self.ledger.balances.setdefault(label, self.config.credits)
                self.ledger.free.setdefault(label, self.config.free_credits)
        if "credits" in changes:
            for label in self.ledger.balances:
                self.ledger.balances[label] = self.config.credits
        if "free_credits" in changes:
            for label in self.ledger.balances:
                self.ledger.free[label] = self.config.free_credits
        if "seed" in changes:
            self.faults.reseed(self.config.seed)
            self.timing_rng = self._timing_rng(self.config.seed)
        if "media_cache_size" in changes:
            self.images.resize(self.config.media_cache_size)
        if "request_log_size" in changes:
            self.requests = deque(self.requests, maxlen=self.config.request_log_size)
        return self.config

    @staticmethod
    def _timing_rng(seed: int) -> random.Random:
        return random.Random(f"segmind-emulator:timings:{seed}")

    # ---- keys ------------------------------------------------------------------------------

    def label_for(self, api_key: str) -> str | None:
        """The label of the key's account if the key is accepted (not revoked), else ``None``."""
        return self._key_labels.get(api_key)

    def is_known_key_text(self, text: str) -> bool:
        """Whether ``text`` contains any key ever accepted, revoked ones included (flags leaked keys)."""
        return any(key in text for key in self._known_keys)

    def change_keys(
        self, *, add: str | None = None, same_account_as: str | None = None, revoke: str | None = None
    ) -> None:
        """Add a key (to an existing key's account, or as a new account) and/or revoke one, at run time.

        ``add`` with ``same_account_as``: the new key joins that key's account (a revoked key names
        its account too), so it sees the account's jobs and credits. ``add`` alone: a new account
        with the configured starting credits. ``revoke``: from now on the key answers 401, like a
        key deleted in Segmind's console; its account, jobs and credits stay for its other keys.
        The add happens before the revoke, so one call can rotate. Raises ``ValueError`` naming
        the problem (never the key itself).
        """
        if add is None and revoke is None:
            raise ValueError('Expected "add" and/or "revoke" (API key strings)')
        for name, value in (("add", add), ("same_account_as", same_account_as), ("revoke", revoke)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name!r} must be a non-empty API key string")
        if same_account_as is not None and add is None:
            raise ValueError('"same_account_as" needs "add" (the new key)')
        account: str | None = None
        if same_account_as is not None:
            account = self._account_of(same_account_as)
            if account is None:
                raise ValueError(f'"same_account_as" is not a known key (label {key_label(same_account_as)})')
        if revoke is not None and revoke not in self._key_labels and revoke != add:
            raise ValueError(f'"revoke" is not an accepted key (label {key_label(revoke)})')
        if add is not None:
            existing = self._account_of(add)
            if existing is not None and account is not None and existing != account:
                raise ValueError(f'"add" already belongs to another account (label {key_label(add)})')
            account = account or existing or key_label(add)
            self._key_labels[add] = account
            self._known_keys.add(add)
            self._revoked.pop(add, None)
            self.ledger.balances.setdefault(account, self.config.credits)
        if revoke is not None:
            self._revoked[revoke] = self._key_labels.pop(revoke)

    def _account_of(self, api_key: str) -> str | None:
        return self._key_labels.get(api_key) or self._revoked.get(api_key)

    def keys_snapshot(self) -> dict[str, Any]:
        """Accounts by label: their accepted keys' labels and balance; revoked keys' labels. No key."""
        accounts: dict[str, dict[str, Any]] = {}
        for key, account in self._key_labels.items():
            entry = accounts.setdefault(account, {"key_labels": [], "credits": self.ledger.balance(account)})
            entry["key_labels"].append(key_label(key))
        return {
            "accounts": {label: {**e, "key_labels": sorted(e["key_labels"])} for label, e in sorted(accounts.items())},
            "revoked_key_labels": sorted(key_label(key) for key in self._revoked),
        }

    # ---- jobs ------------------------------------------------------------------------------

    def add_job(self, job: Job) -> None:
        self.jobs[job.request_id] = job
        self._job_order.append(job.request_id)
        self.history[job.request_id] = job
        while len(self.history) > self.config.history_size:
            self.history.popitem(last=False)
        self.purge_expired()

    def any_job(self, request_id: str) -> Job | None:
        """The job whether or not its v2 record is still live (what the history and media know)."""
        return self.jobs.get(request_id) or self.history.get(request_id)

    def new_timings(self, params: Mapping[str, Any] | None = None) -> tuple[float, float]:
        """``(queue_time, inference_time)`` for a new job, drawn from the seeded RNG for ranges
        (at least a ``__hold_<seconds>s__`` prompt marker's time)."""
        rng = self.timing_rng
        queue_time = draw_duration(self.config.queue_time, rng)
        inference_time = draw_duration(self.config.inference_time, rng)
        return queue_time, max(inference_time, hold_for_prompt(params))

    def live_job(self, request_id: str) -> Job | None:
        """The job if it exists and has not passed its retention (what the API may show)."""
        job = self.jobs.get(request_id)
        if job is None or self.clock() >= job.expires_at:
            return None
        return job

    def purge_expired(self) -> None:
        """Drop jobs long past retention, oldest first: amortised O(1) per submit, bounded memory."""
        cutoff = self.clock() - PURGE_GRACE_SECONDS
        order = self._job_order
        while order:
            job = self.jobs.get(order[0])
            if job is not None and job.expires_at > cutoff:
                break
            order.popleft()
            if job is not None:
                del self.jobs[job.request_id]

    def job_counts(self) -> dict[str, int]:
        now = self.clock()
        counts = dict.fromkeys(("QUEUED", "PROCESSING", "COMPLETED", "FAILED", "EXPIRED"), 0)
        for job in self.jobs.values():
            counts[job.status_at(now)] += 1
        return counts

    # ---- introspection ---------------------------------------------------------------------

    def stats_snapshot(self) -> dict[str, Any]:
        snapshot = self.stats.snapshot()
        snapshot["jobs"] = self.job_counts()
        snapshot["credits"] = dict(self.ledger.balances)
        snapshot["free_credits"] = dict(self.ledger.free)
        snapshot["scripted_pending"] = self.faults.pending()
        return snapshot

    def requests_log(self, path_prefix: str = "") -> list[dict[str, Any]]:
        return [entry for entry in self.requests if entry["path"].startswith(path_prefix)]

    def public_config(self) -> dict[str, Any]:
        """The config as JSON-able data, with keys replaced by their labels."""
        config = self.config
        out: dict[str, Any] = {}
        for name in config.__dataclass_fields__:
            value = getattr(config, name)
            if name == "api_keys":
                out["api_key_labels"] = [key_label(k) for k in value]
                continue
            if isinstance(value, frozenset):
                value = sorted(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out
