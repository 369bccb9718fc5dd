"""The contract check itself: the calls, in order, through :class:`~airflow_provider_segmind.hooks.segmind.SegmindHook`.

Free calls first (credits, the model catalogue, an unknown request id, a page of the history), then,
only with ``spend_up_to``, at most two paid generations: SD3 Large text-to-image (the provider's
seed model), then SD3 Large image-to-image on its own slug with the first output as ``image``.
The first one's request is followed in the status API and, at the same time, in the request history
(by id, the way the provider looks a request up), which measures how long it takes to land and
what its row looks like; the second one shows what the history keeps of a media input. What each
answer means is :mod:`airflow_provider_segmind.protocol.contract`'s business; this module only asks.

Spending: before each generation, what was spent so far (the credits delta, or the documented price
when the balance has not moved yet) plus the estimate of the next one (the larger of the last
generation's cost and the documented price) must fit in ``spend_up_to``; otherwise the generation
is not made and its findings say "not checked". A submit is sent once, never retried.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from airflow_provider_segmind.exceptions import SegmindError, SegmindRequestNotFoundError
from airflow_provider_segmind.hooks.segmind import SegmindHook
from airflow_provider_segmind.protocol.answer import HttpAnswer, error_text, parse_retry_after
from airflow_provider_segmind.protocol.contract import (
    EMULATOR_TIME_KEYS,
    Finding,
    body_format,
    declared_only,
    decoded_body,
    describe_id,
    dropped_keys,
    history_rows,
    id_form,
    media_handling,
    not_checked,
    profile_document,
    rate_limit_counters,
    render_table,
    row_landed,
    status_polls_count,
    teammate_rows,
    time_format,
    time_key,
    user_of,
)
from airflow_provider_segmind.protocol.errors import classify_error
from airflow_provider_segmind.protocol.history import (
    history_list_url,
    history_query,
    history_record_url,
    timestamp_candidates,
)
from airflow_provider_segmind.protocol.history_search import CLOCK_SKEW_SECONDS
from airflow_provider_segmind.protocol.params import SD3_DOCUMENTED_FIELDS
from airflow_provider_segmind.protocol.responses import parse_credit_balance, parse_result, parse_status, parse_submit
from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.protocol.urls import credits_url, result_url, status_url, submit_url
from airflow_provider_segmind.protocol.vocabulary import DEFAULT_CONN_ID, SD3_LARGE_MODEL, Endpoint

#: The documented price of one SD3 Large text-to-image image: segmind.com/models/stable-diffusion-3-
#: large-txt2img/api shows "~$0.102" per image. The image-to-image page shows no price in the copies
#: we could read, so its estimate is the same (or the first image's real cost, if higher).
SD3_TXT2IMG_PRICE_USD: Final = 0.102
#: SD3 Large image-to-image's own slug (segmind.com/models/stable-diffusion-3-large-img2img/api).
SD3_IMG2IMG_MODEL: Final = "stable-diffusion-3-large-img2img"
MAX_PAID_GENERATIONS: Final = 2
#: How long the check waits for a new request to land in the history (the operators' default
#: ``history_wait`` is 120 s; a history slower than that is worth knowing).
DEFAULT_HISTORY_WAIT: Final = 180.0
DEFAULT_JOB_TIMEOUT: Final = 600.0
#: The SDK's poll interval (``wait(interval=1.0)``).
STATUS_INTERVAL: Final = 1.0
#: Media inputs, by key (the names of issue 23: ``image``, ``input_image``, ``image_url``, masks).
MEDIA_KEYS: Final = ("image", "input_image", "input_image_1", "input_image_2", "image_url", "mask", "mask_image")
#: Rate-limited reads (429) are retried this many times, after the wait the answer asks for (capped).
_READ_RETRIES: Final = 3
_MAX_RATE_WAIT: Final = 65.0
_PROMPT: Final = "a small paper boat on a calm lake, airflow-provider-segmind contract check"


def history_interval(elapsed: float) -> float:
    """How often the history is asked while a new request has not landed: 0.25 s for 4 s, 1 s to
    30 s, 5 s after (fine enough to measure a lag of a few seconds, gentle on a rate limit)."""
    return 0.25 if elapsed < 4 else 1.0 if elapsed < 30 else 5.0


@dataclass
class ContractOptions:
    """What the command line sets."""

    conn_id: str = DEFAULT_CONN_ID
    #: The most the check may spend, in USD (Segmind's credits are dollars); ``None``: nothing.
    spend_up_to: float | None = None
    history_wait: float = DEFAULT_HISTORY_WAIT
    job_timeout: float = DEFAULT_JOB_TIMEOUT
    profile_out: Path | None = None


@dataclass
class Generation:
    """One paid request, as the check followed it."""

    model: str
    body: dict[str, Any]
    sent_at: float
    #: When the submit's answer arrived (the end of the send window a lost submit is searched in).
    answered_at: float | None = None
    request_id: str | None = None
    submit_keys: list[str] = field(default_factory=list)
    submit_status: str | None = None
    urls_absolute: bool | None = None
    error: str | None = None
    statuses: list[str] = field(default_factory=list)
    status_keys: set[str] = field(default_factory=set)
    final: str | None = None
    result_keys: list[str] = field(default_factory=list)
    metrics_keys: list[str] = field(default_factory=list)
    output_url: str | None = None
    images: int = 0
    expiry_keys: set[str] = field(default_factory=set)
    rate_headers: list[Mapping[str, str]] = field(default_factory=list)
    #: The history: the first landed row, seconds until it landed, what answered before.
    row: Mapping[str, Any] | None = None
    landed_after: float | None = None
    before_landing: set[str] = field(default_factory=set)
    #: How the row was found when the by-id lookup with the v2 id never found it (``None``: by id).
    found_via: str | None = None
    cost: float | None = None


@dataclass
class ContractReport:
    """What the check found: the table's rows, the profile document, the exit code."""

    findings: list[Finding]
    profile: dict[str, Any]
    spent_usd: float | None
    generations: int

    @property
    def exit_code(self) -> int:
        """0: every checked assumption holds (or is handled); 1: at least one does not."""
        return 1 if any(f.holds is False for f in self.findings) else 0


def _keys(answer: HttpAnswer) -> dict[str, Any]:
    try:
        body = json.loads(answer.body)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _expiry_keys(body: Mapping[str, Any]) -> set[str]:
    return {key for key in body if any(word in key.lower() for word in ("expir", "ttl", "retention"))}


class ContractCheck:
    """Run the checks for one connection; :meth:`run` returns the :class:`ContractReport`.

    ``clock`` and ``sleep`` are injectable for tests; every call goes through ``hook``.
    """

    def __init__(
        self,
        hook: SegmindHook,
        options: ContractOptions,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        say: Callable[[str], None] = print,
    ) -> None:
        self.hook = hook
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.say = say
        self.settings = hook.get_settings()
        self.base_url = self.settings.base_url
        #: Reads answered 429, per endpoint (evidence that such calls count against the limit).
        self.rate_limited: Counter[Endpoint] = Counter()
        #: The id nobody submitted, asked about to see the 404 (shown as ``{request_id}`` in the table).
        self.unknown_id = str(uuid.uuid4())

    # ------------------------------------------------------------------ I/O helpers

    def _get(self, url: str, endpoint: Endpoint) -> HttpAnswer:
        """A read, retried after a 429 (the wait the answer asks for, at most a minute); counted."""
        answer = self.hook.probe("GET", url, endpoint=endpoint)
        for _ in range(_READ_RETRIES):
            if answer.status != 429:
                return answer
            self.rate_limited[endpoint] += 1
            wait = parse_retry_after(answer.headers, answer.received_at)
            self.sleep(min(_MAX_RATE_WAIT, wait if wait is not None else 5.0))
            answer = self.hook.probe("GET", url, endpoint=endpoint)
        return answer

    def _balance(self) -> float | None:
        try:
            return parse_credit_balance(self._get(credits_url(self.base_url), Endpoint.CREDITS)).total
        except SegmindError:
            return None

    def _redacted(self, text: str) -> str:
        return redact(text, self.settings.secrets)

    # ------------------------------------------------------------------ run

    def run(self) -> ContractReport:
        findings: list[Finding] = []
        balance = self._credits(findings)
        findings.append(self._catalogue())
        unknown_status = self._unknown_id(findings)
        generations: list[Generation] = []
        spent: float | None = None
        why_not = self._why_not_spend(balance)
        if why_not is None:
            assert balance is not None
            generations, spent, why_not = self._spend(balance)
        first = generations[0] if generations else None
        second = generations[1] if len(generations) > 1 else None
        findings.extend(self._v2_findings(first, why_not))
        findings.append(self._expiry(first, unknown_status))
        findings.extend(self._history_findings(first, second, why_not))
        findings.append(self._rate_limit(first, unknown_status))
        findings.append(self._img2img(second, why_not))
        findings.append(self._spend_finding(generations, spent, why_not))
        profile = profile_document(findings, base_url=self.base_url, checked_at=self.clock(), spent_usd=spent)
        return ContractReport(findings, profile, spent, len(generations))

    def table(self, report: ContractReport) -> str:
        return render_table(report.findings, self.settings.secrets)

    # ------------------------------------------------------------------ free checks

    def _credits(self, findings: list[Finding]) -> float | None:
        assumption = 'Credits: GET /v1/get-user-credits answers {"credits": paid, "free-credits": free}'
        provider = "reads both as spendable (min_credits guards compare the total); a 404 'No credits' is 0"
        try:
            answer = self._get(credits_url(self.base_url), Endpoint.CREDITS)
            balance = parse_credit_balance(answer)
        except SegmindError as err:
            findings.append(Finding(assumption, self._redacted(str(err)), provider, holds=False))
            return None
        keys = sorted(_keys(answer))
        shape_ok = {"credits", "free-credits"} <= set(keys)
        answered = f"keys {', '.join(keys) or '(none)'}: {balance.describe()}"
        findings.append(
            Finding(assumption, answered, provider if shape_ok else f"{provider}; other key names are read too")
        )
        return balance.total

    def _catalogue(self) -> Finding:
        assumption = "Model catalogue: GET .../inference-model-information/list lists the slugs (SDK Models.list)"
        state = "on" if self.settings.check_model_catalogue else "off"
        provider = (
            f"refuses an unknown or retired slug before a submit (check_model_catalogue is {state} here); "
            "an unreachable catalogue never stops a run; the Test button shows the count"
        )
        try:
            catalogue = self.hook.get_model_catalogue(refresh=True)
        except SegmindError as err:
            return Finding(assumption, f"could not be read: {self._redacted(str(err))}", provider, holds=None)
        lists = [f"{slug}: {'yes' if catalogue.lists(slug) else 'no'}" for slug in (SD3_LARGE_MODEL, SD3_IMG2IMG_MODEL)]
        return Finding(assumption, f"{catalogue.describe()}; lists {'; '.join(lists)}", provider)

    def _unknown_id(self, findings: list[Finding]) -> list[HttpAnswer]:
        """Two status calls and a result call for an id nobody submitted; the status answers are
        returned (their headers say whether status calls count, when nothing was spent)."""
        assumption = "An unknown (or expired) request id answers 404 on v2 status and result"
        provider = "SegmindRequestNotFoundError: the wait ends, a task retry submits again (history first)"
        unknown = self.unknown_id
        try:
            first = self._get(status_url(self.base_url, unknown), Endpoint.STATUS)
            second = self._get(status_url(self.base_url, unknown), Endpoint.STATUS)
            result = self._get(result_url(self.base_url, unknown), Endpoint.RESULT)
        except SegmindError as err:
            findings.append(Finding(assumption, self._redacted(str(err)), provider, holds=False))
            return []
        said = (error_text(first) or "").replace(unknown, "{request_id}")
        answered = f"status {first.status}, result {result.status}" + (f": {said!r}" if said else "")
        read = classify_error(first, Endpoint.STATUS, request_id=unknown) if first.status >= 400 else None
        holds = isinstance(read, SegmindRequestNotFoundError) and result.status == 404
        findings.append(Finding(assumption, answered, provider, holds=holds))
        return [first, second]

    # ------------------------------------------------------------------ paid checks

    def _why_not_spend(self, balance: float | None) -> str | None:
        cap = self.options.spend_up_to
        if cap is None:
            return "no --spend-up-to, so nothing was spent"
        if cap < SD3_TXT2IMG_PRICE_USD:
            return f"--spend-up-to {cap:g} is below one SD3 Large image (~${SD3_TXT2IMG_PRICE_USD})"
        if balance is None or balance < SD3_TXT2IMG_PRICE_USD:
            return "the balance could not be read or is below one image"
        return None

    def _spend(self, balance: float) -> tuple[list[Generation], float, str | None]:
        cap = self.options.spend_up_to or 0.0
        generations: list[Generation] = []
        spent = 0.0
        first = self._generate(SD3_LARGE_MODEL, self._txt2img_body(), follow_history=True)
        generations.append(first)
        spent = self._spent_after(balance, generations)
        if first.final != "COMPLETED" or not first.output_url:
            return generations, spent, "the first image did not complete, so the second was not made"
        estimate = max(first.cost or 0.0, SD3_TXT2IMG_PRICE_USD)
        if len(generations) >= MAX_PAID_GENERATIONS or spent + estimate > cap:
            return generations, spent, f"a second image (~${estimate:.3f}) would pass --spend-up-to {cap:g}"
        second = self._generate(SD3_IMG2IMG_MODEL, self._img2img_body(first.output_url), follow_history=True)
        generations.append(second)
        return generations, self._spent_after(balance, generations), None

    def _spent_after(self, balance: float, generations: list[Generation]) -> float:
        """What the generations cost so far: the credits delta, or the documented price per image
        while the balance has not moved (billing may land later). Sets each one's ``cost``."""
        now = self._balance()
        delta = max(0.0, balance - now) if now is not None else 0.0
        known = sum(g.cost or 0.0 for g in generations[:-1])
        generations[-1].cost = delta - known if delta - known > 0 else None
        return max(delta, SD3_TXT2IMG_PRICE_USD * sum(1 for g in generations if g.cost is None) + known)

    @staticmethod
    def _txt2img_body() -> dict[str, Any]:
        # The SD3 Large page's fields (protocol.params.SD3_DOCUMENTED_FIELDS) and a seed, which the
        # page does not list: whether the history keeps it tells a history of declared keys only.
        return {
            "prompt": _PROMPT,
            "negative_prompt": "blurry",
            "aspect_ratio": "1:1",
            "mode": "text-to-image",
            "output_format": "jpeg",
            "base64": False,
            "seed": secrets.randbelow(2**31),
        }

    @staticmethod
    def _img2img_body(image_url: str) -> dict[str, Any]:
        # segmind.com/models/stable-diffusion-3-large-img2img/api: mode, image (URL or base64), strength.
        return {
            "prompt": _PROMPT.replace("small paper boat", "small wooden boat"),
            "mode": "image-to-image",
            "image": image_url,
            "strength": 0.6,
            "output_format": "jpeg",
            "base64": False,
        }

    def _generate(self, model: str, body: dict[str, Any], *, follow_history: bool) -> Generation:
        gen = Generation(model, body, sent_at=self.clock())
        try:
            answer = self.hook.probe("POST", submit_url(self.base_url, model), endpoint=Endpoint.SUBMIT, json_body=body)
        except SegmindError as err:  # the job may exist: the check never sends the submit again
            gen.error, gen.final = self._redacted(str(err)), "no answer"
            return gen
        gen.answered_at = self.clock()
        raw = _keys(answer)
        gen.submit_keys = sorted(raw)
        gen.expiry_keys |= _expiry_keys(raw)
        try:
            submitted = parse_submit(answer, self.base_url)
        except SegmindError as err:
            gen.error = self._redacted(str(err))
            gen.final = f"HTTP {answer.status}"
            return gen
        gen.request_id = submitted.request_id
        gen.submit_status = str(raw.get("status"))
        gen.urls_absolute = all(
            isinstance(raw.get(key), str) and str(raw[key]).startswith(("http://", "https://"))
            for key in ("status_url", "response_url")
        )
        # Two status calls back to back, nothing between: their rate-limit headers tell whether
        # status calls count. Then status and history, each on its own schedule.
        self._watch(gen, submitted.status_url, submitted.response_url, follow_history=follow_history)
        return gen

    def _poll_status(self, gen: Generation, url: str) -> None:
        assert gen.request_id is not None
        try:
            answer = self._get(url, Endpoint.STATUS)
        except SegmindError as err:
            gen.error, gen.final = self._redacted(str(err)), "status unreadable"
            return
        if len(gen.rate_headers) < 2:
            gen.rate_headers.append(answer.headers)
        raw = _keys(answer)
        gen.status_keys |= set(raw)
        gen.expiry_keys |= _expiry_keys(raw)
        try:
            status = parse_status(answer, gen.request_id)
        except SegmindError as err:
            gen.error, gen.final = self._redacted(str(err)), f"HTTP {answer.status}"
            return
        if not gen.statuses or gen.statuses[-1] != status.status.value:
            gen.statuses.append(status.status.value)
        if status.status.value == "FAILED":
            gen.final, gen.error = "FAILED", status.error
        elif status.status.value == "COMPLETED":
            gen.final = "COMPLETED"

    def _fetch_result(self, gen: Generation, url: str) -> None:
        assert gen.request_id is not None
        try:
            answer = self._get(url, Endpoint.RESULT)
        except SegmindError as err:
            gen.error, gen.final = self._redacted(str(err)), "result unreadable"
            return
        raw = _keys(answer)
        gen.result_keys = sorted(raw)
        gen.expiry_keys |= _expiry_keys(raw)
        metrics = raw.get("metrics")
        gen.metrics_keys = sorted(metrics) if isinstance(metrics, Mapping) else []
        try:
            result = parse_result(answer, gen.request_id)
        except SegmindError as err:
            gen.error, gen.final = self._redacted(str(err)), "result unreadable"
            return
        gen.output_url = result.output_urls[0] if result.output_urls else None
        gen.images = len(result.images)

    def _poll_history(self, gen: Generation) -> None:
        assert gen.request_id is not None
        try:
            answer = self._get(history_record_url(self.settings.history_url, gen.request_id), Endpoint.HISTORY)
        except SegmindError as err:
            gen.before_landing.add(type(err).__name__)
            return
        if answer.status == 404:
            gen.before_landing.add("absent")
            return
        if not 200 <= answer.status < 300:
            gen.before_landing.add(f"HTTP {answer.status}")
            return
        try:
            rows = history_rows(json.loads(answer.body))
        except ValueError:
            gen.before_landing.add("not JSON")
            return
        landed = [row for row in rows if row_landed(row)]
        if not landed:
            gen.before_landing.add("null")
            return
        gen.row = landed[0]
        gen.landed_after = max(0.0, self.clock() - gen.sent_at)

    def _watch(self, gen: Generation, status_link: str, result_link: str, *, follow_history: bool) -> None:
        self._poll_status(gen, status_link)
        if gen.final is None:
            self._poll_status(gen, status_link)
        history_on = follow_history and self.settings.history_lookup
        job_deadline = gen.sent_at + self.options.job_timeout
        history_deadline = gen.sent_at + self.options.history_wait
        next_status = self.clock() + STATUS_INTERVAL
        next_history = self.clock()
        while True:
            status_done = gen.final is not None or self.clock() > job_deadline
            history_done = not history_on or gen.row is not None or self.clock() > history_deadline
            if status_done and history_done:
                break
            now = self.clock()
            if not status_done and now >= next_status:
                self._poll_status(gen, status_link)
                next_status = self.clock() + STATUS_INTERVAL
            if not history_done and now >= next_history:
                self._poll_history(gen)
                next_history = self.clock() + history_interval(self.clock() - gen.sent_at)
            upcoming = [t for t, done in ((next_status, status_done), (next_history, history_done)) if not done]
            wait = min(upcoming) - self.clock() if upcoming else 0.0
            if wait > 0:
                self.sleep(wait)
        if history_on and gen.row is None:
            self._history_fallback(gen)
        if gen.final is None:
            gen.final = f"not finished after {self.options.job_timeout:g} s"
        elif gen.final == "COMPLETED":
            self._fetch_result(gen, result_link)

    def _history_fallback(self, gen: Generation) -> None:
        """The by-id lookup with the v2 id never found the request: try its 32-hex spelling, then the
        list, so the table can say where the request is (the provider looks it up by the v2 id)."""
        assert gen.request_id is not None
        hex_id = gen.request_id.replace("-", "").lower()
        try:
            answer = self._get(history_record_url(self.settings.history_url, hex_id), Endpoint.HISTORY)
            rows = history_rows(json.loads(answer.body)) if 200 <= answer.status < 300 else []
        except (SegmindError, ValueError):
            rows = []
        landed = [row for row in rows if row_landed(row)]
        if landed:
            gen.row, gen.found_via = landed[0], "the by-id lookup with the id's 32-hex spelling"
            return
        listed = self._list(history_query(model=gen.model, since=gen.sent_at - 86400, until=self.clock())) or []
        mine = [
            row for row in listed if id_form(row.get("request_id", row.get("id")), gen.request_id) and row_landed(row)
        ]
        if mine:
            gen.row, gen.found_via = mine[0], "the list (not the by-id lookup)"

    # ------------------------------------------------------------------ findings of the paid checks

    def _v2_findings(self, gen: Generation | None, why_not: str | None) -> list[Finding]:
        submit_a = "v2 submit answers request_id, status QUEUED and absolute status_url/response_url"
        submit_p = "parse_submit requires request_id, status_url and response_url (as the SDK does); never resends"
        status_a = "v2 status answers QUEUED/PROCESSING, then COMPLETED (FAILED as HTTP 422)"
        status_p = "polls on a schedule learned per model; FAILED ends the task with the reason"
        result_a = "v2 result of an image model: status, metrics, and output as the image URL"
        result_p = "reads output/images[] URLs (or base64); a result still PROCESSING is fetched again"
        if gen is None:
            why = why_not or "nothing was spent"
            return [not_checked(submit_a, why, submit_p), not_checked(status_a, why, status_p),
                    not_checked(result_a, why, result_p)]  # fmt: skip
        if gen.request_id is None:
            return [
                Finding(submit_a, gen.error or "no request id", submit_p, holds=False),
                not_checked(status_a, "the submit failed", status_p),
                not_checked(result_a, "the submit failed", result_p),
            ]
        submit_ok = gen.submit_status == "QUEUED" and bool(gen.urls_absolute)
        answered = (
            f"keys {', '.join(gen.submit_keys)}; status {gen.submit_status}; "
            f"URLs {'absolute' if gen.urls_absolute else 'NOT absolute'}"
        )
        findings = [Finding(submit_a, answered, submit_p, holds=submit_ok)]
        seen = " -> ".join(gen.statuses) or "nothing"
        status_ok = gen.final == "COMPLETED"
        extra = f" ({gen.error})" if gen.error and not status_ok else ""
        findings.append(
            Finding(status_a, f"{seen}{extra}; keys {', '.join(sorted(gen.status_keys))}", status_p, holds=status_ok)
        )
        if gen.final != "COMPLETED":
            findings.append(not_checked(result_a, f"the job ended {gen.final}", result_p))
        else:
            answered = (
                f"keys {', '.join(gen.result_keys)}; output {'a URL' if gen.output_url else 'NOT a URL'}; "
                f"images[] {gen.images}; metrics {', '.join(gen.metrics_keys) or '(none)'}"
            )
            findings.append(Finding(result_a, answered, result_p, holds=bool(gen.output_url)))
        return findings

    def _expiry(self, gen: Generation | None, unknown_status: list[HttpAnswer]) -> Finding:
        assumption = "v2 status and results are kept 1 hour after the submit, then answer 404 (docs)"
        provider = (
            "a 404 after a submit reads as expired: with a request store the job is found in the request "
            "history (of any age) instead of paying again"
        )
        said = (error_text(unknown_status[0]) or "").replace(self.unknown_id, "{request_id}") if unknown_status else ""
        wording = f"the 404 reads {said!r}" if said else "the 404 has no error text"
        named = f"the answers name {', '.join(sorted(gen.expiry_keys))}" if gen and gen.expiry_keys else ""
        if gen is not None and not named:
            named = "no answer names an expiry"
        answered = "; ".join(part for part in ("not waited for (an hour)", wording, named) if part)
        return Finding(assumption, answered, provider)

    def _history_findings(
        self, first: Generation | None, second: Generation | None, why_not: str | None
    ) -> list[Finding]:
        if not self.settings.history_lookup:
            return [
                not_checked(
                    "Request history (SDK Generations.history/get)",
                    "history_lookup is false on this connection",
                    "never asks the history: a lost submit answer fails the task without retries",
                )
            ]
        if first is None or first.request_id is None:
            return self._history_from_list(why_not or "nothing was spent")
        return self._history_from_request(first, second)

    def _history_from_request(self, first: Generation, second: Generation | None) -> list[Finding]:
        out: list[Finding] = []
        lag_a = "History: a new request lands within the operators' history_wait (default 120 s)"
        lag_p = "a lost submit is searched for again until history_wait; longer lags take the safe rule"
        row = first.row
        if row is None:
            waited = f"{self.options.history_wait:g} s"
            before = ", ".join(sorted(first.before_landing)) or "nothing"
            out.append(Finding(lag_a, f"not landed after {waited} (answers: {before})", lag_p, holds=False))
            return out
        if first.found_via is not None:
            waited = f"{self.options.history_wait:g} s"
            answered = f"the by-id lookup with the v2 id did not find it in {waited}; found by {first.found_via}"
            provider = (
                "looks a request up by its v2 id: lost submits would not be found by id (search by body still works)"
            )
            out.append(Finding(lag_a, answered, provider, holds=False))
            out.extend(self._row_findings(row, first))
            out.append(self._teams(first))
            out.append(self._media(second))
            return out
        lag = round(first.landed_after or 0.0, 1)
        if not first.before_landing:
            out.append(Finding(lag_a, f"landed at once ({lag:g} s; history_lag_seconds=0)", lag_p,
                               settings={"history_lag_seconds": 0.0}))  # fmt: skip
        else:
            mode = "null" if "null" in first.before_landing else "absent" if "absent" in first.before_landing else None
            shown = {"null": "listed with empty fields", "absent": "by-id answered 404"}.get(mode or "", "other")
            settings: dict[str, Any] = {"history_lag_seconds": lag}
            if mode is not None:
                settings["history_lag_mode"] = mode
            answered = f"landed after {lag:g} s ({shown} meanwhile; history_lag_seconds={lag:g}"
            answered += f", history_lag_mode={mode})" if mode else ")"
            out.append(Finding(lag_a, answered, lag_p, holds=lag < 120, settings=settings))
        out.extend(self._row_findings(row, first))
        out.append(self._teams(first))
        out.append(self._media(second))
        return out

    def _row_findings(self, row: Mapping[str, Any], gen: Generation) -> list[Finding]:
        assert gen.request_id is not None
        out: list[Finding] = []
        value = row.get("request_body")
        fmt = body_format(value)
        words = {"object": "a JSON object", "json": "a JSON string", "repr": "a Python repr string"}
        out.append(
            Finding(
                "History: request_body holds the inputs as sent (SDK), as a JSON object",
                f"{words.get(fmt or '', 'unreadable')}" + (f" (history_body_format={fmt})" if fmt else ""),
                "reads objects, JSON strings and Python reprs (literals only, 256 KiB at most)",
                holds=fmt is not None,
                settings={"history_body_format": fmt} if fmt else {},
            )
        )
        shown = decoded_body(value) or {}
        only = declared_only(gen.body, shown, SD3_DOCUMENTED_FIELDS)
        dropped = dropped_keys(gen.body, shown, MEDIA_KEYS)
        kept = "every key sent" if not dropped else f"all but {', '.join(dropped)}"
        out.append(
            Finding(
                "History: the row keeps every key sent (SD3 Large's page does not list seed)",
                f"{kept}" + (f" (history_declared_only={str(only).lower()})" if only is not None else ""),
                "a key the row lacks proves nothing: the others must match, and two candidates make it ambiguous",
                settings={"history_declared_only": only} if only is not None else {},
            )
        )
        key = time_key(row)
        tfmt, described = time_format(row.get(key), gen.sent_at) if key else (None, "no creation time")
        zones = self.settings.history_naive_zones
        readings = timestamp_candidates(row.get(key), zones) if key else ()
        end = (gen.answered_at or gen.sent_at) + CLOCK_SKEW_SECONDS
        near = min(readings, key=lambda moment: abs(moment - gen.sent_at)) if readings else None
        in_window = near is not None and gen.sent_at - CLOCK_SKEW_SECONDS <= near <= end
        if near is not None:
            where = "within" if in_window else "OUTSIDE"
            described += (
                f"; {near - gen.sent_at:+.1f} s from the submit, {where} its send window ± {CLOCK_SKEW_SECONDS:g} s"
            )
        zone = self.settings.history_timezone
        advice = {"iso_naive_ist": "+05:30", "iso_naive_utc": "UTC"}.get(tfmt or "")
        out.append(
            Finding(
                "History: the creation time is when Segmind received the request (the search window is the "
                "submit's send window)",
                f"{key or '(no key)'}: {described}"
                + (f" (history_time_key={key}, history_time_format={tfmt})" if key and tfmt else ""),
                "reads ISO 8601 (a naive time in UTC and in +05:30"
                + (f"; history_timezone={zone} here" if zone else "")
                + (f"; set history_timezone={advice} to read it in one zone" if advice and not zone else "")
                + "), HTTP dates, epoch s/ms",
                holds=in_window,
                settings={
                    **({"history_time_key": key} if key in EMULATOR_TIME_KEYS else {}),
                    **({"history_time_format": tfmt} if tfmt else {}),
                },
            )
        )
        listed = row.get("request_id", row.get("id"))
        form = id_form(listed, gen.request_id)
        out.append(
            Finding(
                "History: rows carry the v2 request id",
                f"{describe_id(listed)}" + (f" (history_id_form={form})" if form else ", not the submit's id"),
                "compares ids in one spelling (dashes and case aside); asks v2 with the dashed UUID",
                holds=form is not None,
                settings={"history_id_form": form} if form else {},
            )
        )
        return out

    def _teams(self, gen: Generation) -> Finding:
        assumption = "History: the list shows only this user's requests (SDK: in a team, any member's)"
        user_id, user_email = self.settings.history_user_id, self.settings.history_user_email
        provider = (
            f"searches with history_user_id/history_user_email ({'set' if user_id or user_email else 'not set'} here); "
            "without it a teammate's identical request takes the safe rule"
        )
        assert gen.request_id is not None
        until = self.clock()
        query = history_query(model=gen.model, since=gen.sent_at - 86400, until=until)
        rows = self._list(query)
        if rows is None:
            return Finding(assumption, "the list could not be read", provider, holds=None)
        own = [row for row in rows if id_form(row.get("request_id", row.get("id")), gen.request_id) is not None]
        own_user = user_of(own[0]) if own else None
        others = min(teammate_rows(rows, own_user), 100)
        settings = {"history_team_rows": others}
        if not others:
            named = "rows name no user" if own_user is None else "only this user's rows"
            return Finding(assumption, f"{named} (history_team_rows=0)", provider, settings=settings)
        key = "user_email" if "@" in (own_user or "") else "user_id"
        filtered = self._list({**query, key: own_user or ""})
        left = teammate_rows(filtered or [], own_user) if filtered is not None else None
        works = "the user filter leaves them out" if left == 0 else "the user filter did NOT leave them out"
        answered = (
            f"{others} row(s) of another user next to this request (history_team_rows={others}); {works}; "
            f"set history_{key}={own_user}"
        )
        return Finding(assumption, answered, provider, holds=left == 0, settings=settings)

    def _list(self, query: Mapping[str, str]) -> list[Mapping[str, Any]] | None:
        try:
            answer = self._get(f"{history_list_url(self.settings.history_url)}?{urlencode(query)}", Endpoint.HISTORY)
        except SegmindError:
            return None
        if not 200 <= answer.status < 300:
            return None
        try:
            return history_rows(json.loads(answer.body))
        except ValueError:
            return None

    def _media(self, gen: Generation | None) -> Finding:
        assumption = "History: media inputs (image, input_image, ...) are kept in request_body"
        provider = "a media key the row lacks or replaced proves nothing; the other keys must match"
        if gen is None:
            return not_checked(assumption, "no image-to-image request was made", provider)
        if gen.row is None:
            return not_checked(assumption, "the image-to-image request did not land in the history", provider)
        shown = decoded_body(gen.row.get("request_body")) or {}
        fate = media_handling(gen.body, shown, MEDIA_KEYS)
        words = {"keep": "kept as sent", "absent": "left out", "replaced": "replaced by a placeholder"}
        answered = f"image {words.get(fate or '', 'unclear')}" + (f" (history_strip_media={fate})" if fate else "")
        return Finding(assumption, answered, provider, settings={"history_strip_media": fate} if fate else {})

    def _history_from_list(self, why: str) -> list[Finding]:
        """Without a request of its own: what one page of the history (the last week) shows."""
        assumption = "History rows (from a page of the last 7 days; no request of the check's own)"
        provider = "reads every shape the emulator's history profiles answer in (docs/exactly-once.md)"
        until = self.clock()
        query = history_query(model="", since=until - 6 * 86400, until=until)
        rows = self._list({name: value for name, value in query.items() if name != "model_name"})
        if rows is None:
            return [Finding(assumption, "the history list could not be read", provider, holds=False)]
        landed = [row for row in rows if row_landed(row)]
        if not landed:
            return [not_checked(assumption, f"the history has no rows yet; {why}", provider)]
        row = landed[0]
        fmt = body_format(row.get("request_body"))
        key = time_key(row)
        tfmt, described = time_format(row.get(key), None) if key else (None, "no creation time")
        listed = row.get("request_id", row.get("id"))
        users = {user_of(r) for r in rows} - {None}
        settings: dict[str, Any] = {}
        if fmt:
            settings["history_body_format"] = fmt
        if key in EMULATOR_TIME_KEYS:
            settings["history_time_key"] = key
        if tfmt:
            settings["history_time_format"] = tfmt
        answered = (
            f"{len(rows)} rows; request_body {fmt or 'unreadable'}; {key or '(no time key)'}: {described}; "
            f"ids: {describe_id(listed)}; {len(users)} user(s) named. Not checked ({why}): media, declared keys, "
            "the zone of a naive time, the lag"
        )
        return [Finding(assumption, answered, provider, holds=None, settings=settings)]

    # ------------------------------------------------------------------ rate limit, img2img, spend

    def _rate_limit(self, gen: Generation | None, unknown_status: list[HttpAnswer]) -> Finding:
        assumption = "Rate limit (docs: Free 5, Pro 50 requests/min): do status polls count?"
        provider = (
            "polls on a learned schedule (~6 polls per SD3 image), waits the reset time on a 429; "
            "size the segmind pool for both readings (docs/deploying.md)"
        )
        headers = gen.rate_headers if gen is not None and len(gen.rate_headers) == 2 else None
        source = "two status polls of the check's request"
        if headers is None and len(unknown_status) == 2:
            headers, source = (
                [unknown_status[0].headers, unknown_status[1].headers],
                "two status calls for an unknown id",
            )
        if headers is None:
            return not_checked(assumption, "no two status answers to compare", provider)
        scope, said = status_polls_count(headers[0], headers[1])
        if scope is None and self.rate_limited[Endpoint.STATUS]:
            scope, said = "all", f"yes: a status poll was answered 429 ({self.rate_limited[Endpoint.STATUS]} times)"
        settings: dict[str, Any] = {}
        if scope is not None:
            settings["rate_limit_scope"] = scope
            limit, _ = rate_limit_counters(headers[1])
            if limit is not None:
                settings["rate_limit"] = limit
        answered = f"{said} ({source})" + (f" (rate_limit_scope={scope})" if scope else "")
        return Finding(assumption, answered, provider, holds=None if scope is None else True, settings=settings)

    def _img2img(self, gen: Generation | None, why_not: str | None) -> Finding:
        assumption = f"{SD3_IMG2IMG_MODEL} takes image (URL or base64), strength and mode image-to-image"
        provider = "image-to-image goes to the img2img slug, its parameters checked before billing"
        if gen is None:
            return not_checked(assumption, why_not or "the spending cap allowed one image only", provider)
        if gen.request_id is None:
            return Finding(assumption, f"the submit was refused: {gen.error}", provider, holds=False)
        if gen.final == "COMPLETED":
            return Finding(assumption, "COMPLETED with image = the first image's URL, strength 0.6", provider)
        return Finding(
            assumption, f"the job ended {gen.final}: {gen.error or 'no reason given'}", provider, holds=False
        )

    def _spend_finding(self, generations: list[Generation], spent: float | None, why_not: str | None) -> Finding:
        cap = self.options.spend_up_to
        assumption = f"Spending: at most {MAX_PAID_GENERATIONS} images, within --spend-up-to"
        provider = "the check sends each submit once; nothing else it does is billed"
        if not generations:
            return not_checked(assumption, why_not or "nothing was spent", provider)
        costs = ", ".join(f"{g.model} ${g.cost:.4f}" if g.cost is not None else f"{g.model} (not billed yet)"
                          for g in generations)  # fmt: skip
        answered = f"{len(generations)} image(s), ${spent or 0:.4f} in all ({costs}); cap ${cap:g}"
        if why_not:
            answered += f"; stopped: {why_not}"
        return Finding(assumption, answered, provider, holds=spent is None or cap is None or spent <= cap)
