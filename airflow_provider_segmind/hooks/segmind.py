"""SegmindHook: the one place this provider talks to Segmind.

Two transports share one set of rules (:mod:`airflow_provider_segmind.protocol`):

- sync, on workers: ``requests`` with a pooled session, retried by ``tenacity`` (this module);
- async, in the triggerer: ``aiohttp``, retried by ``tenacity``'s asyncio flavour, with the
  connection resolved through common-compat's ``get_async_connection`` (a synchronous
  ``get_connection`` inside the triggerer's event loop raises on Airflow 3); the hook's base class
  :class:`~airflow_provider_segmind.hooks._aio.SegmindAsyncCalls`.

Each call is: build the URL, send, wrap the answer in :class:`~..protocol.HttpAnswer`, parse.
Parsing raises the typed errors of :mod:`~airflow_provider_segmind.exceptions`, and
:class:`~..protocol.RetryPolicy` decides
from the error alone whether another attempt is useful and safe, so a submit (billed, with no
idempotency key) is never sent twice unless the server certainly did not accept the first.

The API key is read from the connection's password into a private settings object and only ever
placed into request headers: it is not logged, not in errors, not in ``repr``.

The rest of the hook lives next to this module: what a connection means and its form
(``_settings``), how failures are named and retried (``_transport``), the async calls (``_aio``)
and what is cached, with its key, lifetime and invalidation (``_cache``). Every name that used to
be defined here is still importable from here.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import requests
import tenacity

from airflow_provider_segmind.exceptions import (
    SegmindAuthenticationError,
    SegmindError,
    SegmindForbiddenError,
    SegmindInvalidParametersError,
    SegmindInvalidResponseError,
    SegmindTransportError,
)
from airflow_provider_segmind.get_provider_info import UI_FIELD_BEHAVIOUR
from airflow_provider_segmind.hooks import _budget
from airflow_provider_segmind.hooks._aio import SegmindAsyncCalls

# Names defined in this module before it was split, still importable from here (``X as X``).
from airflow_provider_segmind.hooks._cache import (
    _CATALOGUE_CACHE,
    CATALOGUE_MISS_REFRESH_SECONDS,
    catalogue_key,
)
from airflow_provider_segmind.hooks._settings import (
    SegmindConnectionSettings,
    connection_form_widgets,
)
from airflow_provider_segmind.hooks._transport import (
    USER_AGENT,
    connection_test_failure,
    requests_error,
    retrying_kwargs,
)
from airflow_provider_segmind.protocol.answer import HttpAnswer, lower_headers
from airflow_provider_segmind.protocol.catalogue import (
    MAX_CATALOGUE_ANSWER_BYTES,
    ModelCatalogue,
    catalogue_answer_too_large,
    parse_model_catalogue,
)
from airflow_provider_segmind.protocol.history import (
    MAX_HISTORY_ANSWER_BYTES,
    HistoryRecord,
    history_answer_too_large,
    history_list_url,
    history_record_url,
    parse_history_page,
    parse_history_record,
)
from airflow_provider_segmind.protocol.history_search import HistorySearch
from airflow_provider_segmind.protocol.params import validate_params
from airflow_provider_segmind.protocol.responses import (
    CreditBalance,
    JobResult,
    JobStatusResponse,
    SubmitResponse,
    SyncRunResponse,
    parse_credit_balance,
    parse_result,
    parse_run_sync,
    parse_status,
    parse_submit,
)
from airflow_provider_segmind.protocol.retry import RetryPolicy
from airflow_provider_segmind.protocol.text import redact, sentences
from airflow_provider_segmind.protocol.urls import (
    auth_headers,
    credits_url,
    result_url,
    run_sync_url,
    same_origin,
    status_url,
    submit_url,
)
from airflow_provider_segmind.protocol.vocabulary import DEFAULT_CONN_ID, Endpoint
from airflow_provider_segmind.utils import metrics

__all__ = ["SegmindHook"]

T = TypeVar("T")


#: Answers read up to a cap (their size is the server's to choose), with the error past it.
_CAPPED: Final[Mapping[Endpoint, tuple[int, Callable[[int, str, int], SegmindError]]]] = {
    Endpoint.HISTORY: (MAX_HISTORY_ANSWER_BYTES, history_answer_too_large),
    Endpoint.CATALOGUE: (MAX_CATALOGUE_ANSWER_BYTES, catalogue_answer_too_large),
}
#: The catalogue is a convenience: its read waits at most this long (or the connection's read timeout, if shorter).
CATALOGUE_READ_TIMEOUT: Final = 10.0


def _read_capped(
    response: requests.Response,
    url: str,
    limit: int,
    too_large: Callable[[int, str, int], SegmindError] = history_answer_too_large,
) -> bytes:
    """A streamed answer's body, decoded; ``too_large`` past ``limit`` bytes (the rest is not read,
    and the connection is closed instead of going back to the pool)."""
    with response:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(chunk_size=64 * 1024):
            size += len(chunk)
            if size > limit:
                raise too_large(response.status_code, url, limit)
            chunks.append(chunk)
        return b"".join(chunks)


#: The shortest read timeout of a search's first history page, whatever time is left: a search
#: with no time left (``history_wait=0``) still looks once.
FIRST_LOOKUP_MIN_TIMEOUT = 2.0


def _short_reason(err: SegmindError) -> str:
    """Why a call failed, in a few words (no retry advice: the catalogue is read once, never retried)."""
    if isinstance(err, SegmindTransportError):
        return err.summary
    if err.status_code is not None and not 200 <= err.status_code < 300:
        return f"HTTP {err.status_code}"
    return "no model slug in its answer" if isinstance(err, SegmindInvalidResponseError) else type(err).__name__


class SegmindHook(SegmindAsyncCalls):
    """Talk to Segmind's serverless API: v1 (blocking) and v2 (queued) inference, status, results, credits.

    :param segmind_conn_id: the ``segmind`` connection: password = API key, host = optional base
        URL (default ``https://api.segmind.com``), extras ``connect_timeout``, ``read_timeout``,
        ``run_sync_timeout`` (seconds), ``max_retries`` (retries after the first attempt, default 4)
        and ``retry_backoff`` (first backoff in seconds, default 1), ``proxy`` (a forward proxy URL,
        ``http://[user:password@]host:port``, for every API call on workers and in the triggerer;
        without it both honour ``HTTP(S)_PROXY``/``NO_PROXY``, and ``NO_PROXY`` applies to it too),
        ``history_url`` (Segmind's request-history API; default the SDK's, or the loopback base
        URL's own), ``history_lookup`` (default true; false turns history lookups off),
        ``history_timezone`` (the zone of the history's naive timestamps; default: UTC or +05:30) and
        ``history_user_id`` or ``history_user_email`` (a team member whose requests a search lists),
        ``max_spend_per_day`` (USD: the spend cap, :meth:`read_spend_ledger`, docs/operating.md).
    :param retry_policy: overrides the policy built from the connection's extras.
    """

    conn_name_attr = "segmind_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "segmind"
    hook_name = "Segmind"

    def __init__(
        self,
        segmind_conn_id: str = default_conn_name,
        *,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.segmind_conn_id = segmind_conn_id
        self._retry_policy = retry_policy
        self._settings: SegmindConnectionSettings | None = None
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(segmind_conn_id={self.segmind_conn_id!r})"

    # ---------------------------------------------------------------- connection form

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form on Airflow 3.1 (3.2+ reads the same from provider info)."""
        return copy.deepcopy(UI_FIELD_BEHAVIOUR)

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Typed extra fields on Airflow 3.1's form (see :func:`~._settings.connection_form_widgets`)."""
        return connection_form_widgets()

    # ---------------------------------------------------------------- settings

    def get_settings(self) -> SegmindConnectionSettings:
        """Resolve the connection once (sync path); cached for the hook's life."""
        if self._settings is None:
            conn = self.get_connection(self.segmind_conn_id)
            self._settings = SegmindConnectionSettings.from_connection(conn, retry_policy=self._retry_policy)
        return self._settings

    def reload_settings(self) -> SegmindConnectionSettings:
        """Read the connection again (sync path), e.g. after a 401/403: its key may have been rotated.

        The pooled session holds no key (keys go per request), so it is kept.
        """
        self._settings = None
        return self.get_settings()

    @property
    def base_url(self) -> str:
        return self.get_settings().base_url

    def get_conn(self) -> requests.Session:
        """The pooled ``requests`` session (keep-alive across a task's calls)."""
        if self._session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            # Redirects would re-send the key elsewhere; the API never redirects.
            session.max_redirects = 0
            self._session = session
        return self._session

    def close(self) -> None:
        """Close pooled connections; the hook can be used again afterwards."""
        if self._session is not None:
            self._session.close()
            self._session = None

    # ---------------------------------------------------------------- sync transport

    def _call(
        self,
        method: str,
        url: str,
        parse: Callable[[HttpAnswer], T],
        *,
        endpoint: Endpoint,
        json_body: Mapping[str, Any] | None = None,
        idempotent: bool = True,
        read_timeout: float | None = None,
        trust_5xx: bool = True,
        single_attempt: bool = False,
    ) -> T:
        settings = self.get_settings()
        session = self.get_conn()
        headers = auth_headers(settings.api_key, json_body=json_body is not None)
        timeout = (settings.connect_timeout, read_timeout or settings.read_timeout)
        # The same rule as the triggerer's (requests would apply the environment by itself too).
        proxy = settings.proxy_for(url)
        proxies = {"http": proxy, "https": proxy} if proxy else None
        # A history answer is read up to a cap (its rows hold request bodies, whose size nothing
        # bounds), and so is the model catalogue; other answers are small and read whole.
        limit, too_large = _CAPPED.get(endpoint, (None, history_answer_too_large))

        def attempt() -> T:
            _budget.wait_turn(settings.api_key, settings.rate_budget, endpoint)  # every attempt spends a request
            try:
                response = session.request(
                    method,
                    url,
                    headers=headers,
                    json=json_body,
                    timeout=timeout,
                    allow_redirects=False,
                    proxies=proxies,
                    stream=limit is not None,
                )
                content = response.content if limit is None else _read_capped(response, url, limit, too_large)
            except requests.RequestException as err:
                raise requests_error(err, url, settings.secrets) from None
            answer = HttpAnswer(response.status_code, lower_headers(response.headers.items()), content, url)
            metrics.answer_seen(endpoint.value, answer.status)
            return parse(answer)

        if single_attempt:  # the caller's own loop retries, within its own time bound
            return attempt()
        retrying = tenacity.Retrying(
            **retrying_kwargs(
                settings.retry_policy, idempotent=idempotent, what=endpoint.value, log=self.log, trust_5xx=trust_5xx
            )
        )
        return retrying(attempt)

    def run_sync(
        self, model: str, params: Mapping[str, Any], *, validate: bool = True, strict: bool = False
    ) -> SyncRunResponse:
        """Run a v1 (blocking) inference; returns the image bytes, content type and cost/credit headers.

        The call is billed, so it is retried only when the server certainly did not accept it.
        ``strict`` refuses parameters the model is not known to take (default: warn and send them).
        """
        body = validate_params(model, params, strict=strict, warn=self.log.warning) if validate else dict(params)
        settings = self.get_settings()
        return self._call(
            "POST",
            run_sync_url(settings.base_url, model),
            parse_run_sync,
            endpoint=Endpoint.RUN_SYNC,
            json_body=body,
            idempotent=False,
            read_timeout=settings.run_sync_timeout,
        )

    def submit(
        self,
        model: str,
        params: Mapping[str, Any],
        *,
        validate: bool = True,
        strict: bool = False,
        trust_5xx: bool = True,
    ) -> SubmitResponse:
        """Submit a v2 (queued) job and return its request id; validates parameters first.

        Billed and without an idempotency key: never retried after the request may have arrived.
        ``strict`` refuses parameters the model is not known to take (default: warn and send them).
        ``trust_5xx=False`` also raises a 500/502/503 instead of resending (it may be a "late" 5xx,
        sent after the job was queued): for a caller that then searches the request history
        (:func:`~airflow_provider_segmind.protocol.submit_certainly_refused`).
        """
        body = validate_params(model, params, strict=strict, warn=self.log.warning) if validate else dict(params)
        base_url = self.get_settings().base_url
        return self._call(
            "POST",
            submit_url(base_url, model),
            lambda answer: parse_submit(answer, base_url),
            endpoint=Endpoint.SUBMIT,
            json_body=body,
            idempotent=False,
            trust_5xx=trust_5xx,
        )

    def _job_url(self, build: Callable[[str, str], str], request_id: str, advertised: str | None) -> str:
        base_url = self.get_settings().base_url
        if advertised and same_origin(advertised, base_url):
            return advertised
        return build(base_url, request_id)

    def get_status(self, request_id: str, *, url: str | None = None) -> JobStatusResponse:
        """The job's status. FAILED is returned as a status (with the server's reason), not raised."""
        return self._call(
            "GET",
            self._job_url(status_url, request_id, url),
            lambda answer: parse_status(answer, request_id),
            endpoint=Endpoint.STATUS,
        )

    def get_result(self, request_id: str, *, url: str | None = None) -> JobResult:
        """The job's result; raises :class:`SegmindJobFailedError` for a FAILED job."""
        return self._call(
            "GET",
            self._job_url(result_url, request_id, url),
            lambda answer: parse_result(answer, request_id),
            endpoint=Endpoint.RESULT,
        )

    def get_credit_balance(self) -> CreditBalance:
        """The account's paid and free credits (both spendable). Free: it bills nothing and runs no model."""
        return self._call(
            "GET", credits_url(self.get_settings().base_url), parse_credit_balance, endpoint=Endpoint.CREDITS
        )

    def get_credits(self) -> float:
        """Spendable credits: paid plus free (see :meth:`get_credit_balance`)."""
        return self.get_credit_balance().total

    # ---------------------------------------------------------------- request history (sync)

    @property
    def history_enabled(self) -> bool:
        """Whether history lookups are on (the ``history_lookup`` extra, default true).

        In the triggerer, call :meth:`ahistory_enabled` (or resolve the settings first).
        """
        return (self._settings or self.get_settings()).history_lookup

    def get_history_record(self, request_id: str) -> HistoryRecord | None:
        """One of this account's requests from Segmind's request history, of any age; ``None`` when
        the history does not know it (404: unknown, another account's [sdk ``Generations.get``], or
        not landed yet) or when ``history_lookup`` is off (then nothing is sent).

        A GET, retried like a status poll. Errors of the history host (down, 404 for the whole
        endpoint, garbage) raise the usual typed errors: the caller decides what "unknown" means.
        """
        settings = self.get_settings()
        if not settings.history_lookup:
            return None
        return self._call(
            "GET",
            history_record_url(settings.history_url, request_id),
            functools.partial(parse_history_record, request_id=request_id, naive_zones=settings.history_naive_zones),
            endpoint=Endpoint.HISTORY,
        )

    def find_submitted(
        self, model: str, body: Mapping[str, Any], *, since: float, until: float | None = None
    ) -> HistoryRecord | None:
        """The newest request of ``model`` whose recorded ``request_body`` matches ``body``, created
        within ``since``..``until`` (epoch seconds; ``until`` default now): see :meth:`search_submitted`,
        which the operators use, since they must not guess between several."""
        found = self.search_submitted(model, body, since=since, until=time.time() if until is None else until)
        return found[0] if found else None

    def search_submitted(
        self, model: str, body: Mapping[str, Any], *, since: float, until: float, deadline: float | None = None
    ) -> list[HistoryRecord]:
        """Every request that may be the submit of ``body`` to ``model`` sent between ``since`` and
        ``until`` (the attempt's send window, epoch seconds), newest first: a submit whose answer was lost.

        Reads at most :data:`~airflow_provider_segmind.protocol.history_search.MAX_SEARCH_PAGES`
        pages of 100, newest first (:class:`~airflow_provider_segmind.protocol.history_search.HistorySearch`
        holds the rules). Empty: none (yet), or ``history_lookup`` off. A record that has not landed
        yet has no body and is not a candidate: the caller asks again within its bound.

        ``deadline`` (epoch seconds): the whole search fits before it. Each page is then read once,
        with a read timeout no longer than the time left, and no retry of its own: the caller's
        loop is the retry, so ``history_wait`` bounds the search (issue 22).
        """
        settings = self.get_settings()
        if not settings.history_lookup:
            return []
        search = HistorySearch(
            model,
            body,
            since,
            until,
            user_id=settings.history_user_id,
            user_email=settings.history_user_email,
        )
        parse_page = functools.partial(parse_history_page, naive_zones=settings.history_naive_zones)
        while True:
            first = search.page == 0
            url = f"{history_list_url(settings.history_url)}?{urlencode(search.query())}"
            if deadline is None:
                records, more = self._call("GET", url, parse_page, endpoint=Endpoint.HISTORY)
            else:
                left = deadline - time.time()
                if left <= 0 and not first:
                    return search.candidates()
                # The first page is always read (history_wait=0 still looks once), at least briefly.
                floor = min(settings.read_timeout, FIRST_LOOKUP_MIN_TIMEOUT) if first else 0.1
                records, more = self._call(
                    "GET",
                    url,
                    parse_page,
                    endpoint=Endpoint.HISTORY,
                    read_timeout=max(floor, min(settings.read_timeout, left)),
                    single_attempt=True,
                )
            if not search.take(records, more):
                return search.candidates()

    def read_spend_ledger(self, *, fresh: bool = False) -> list[HistoryRecord]:
        """Today's (UTC) requests of the account from Segmind's request history, each once, with what
        it was charged: the spend cap's ledger (``hooks/_spend.py``; cached a few seconds per process,
        ``fresh`` reads it again). Reads even with ``history_lookup`` off: the cap asks for it."""
        from airflow_provider_segmind.hooks._spend import read_ledger

        return read_ledger(self, fresh=fresh)

    def spend_ledger_key(self) -> str:
        """Which account's ledger this hook reads (history URL, user filter, a hash of the key, never
        the key): what the operators' own not-yet-listed submits are remembered under."""
        from airflow_provider_segmind.hooks._spend import ledger_key

        return ledger_key(self)

    # ---------------------------------------------------------------- model catalogue (sync)

    def get_model_catalogue(self, *, refresh: bool = False) -> ModelCatalogue:
        """Segmind's model catalogue (SDK 1.3.0 ``segmind/models.py``, ``Models.list``): the slugs it
        lists, each with whether it is retired. Free: a GET on the catalogue host, with the key.

        Cached in this process (key, lifetime and invalidation: :mod:`~airflow_provider_segmind.hooks._cache`,
        item 6), a failed read too; ``refresh`` reads it again. One attempt, a read timeout of at
        most :data:`CATALOGUE_READ_TIMEOUT`: the catalogue is never worth waiting for. Errors are the
        usual typed errors.
        """
        settings = self.get_settings()
        key = catalogue_key(settings)
        cached = None if refresh else _CATALOGUE_CACHE.lookup(key)
        if cached is not None:
            value, _age = cached
            if isinstance(value, SegmindError):
                raise copy.copy(value)
            return value
        try:
            catalogue = self._call(
                "GET",
                settings.catalogue_url,
                parse_model_catalogue,
                endpoint=Endpoint.CATALOGUE,
                read_timeout=min(settings.read_timeout, CATALOGUE_READ_TIMEOUT),
                single_attempt=True,
            )
        except SegmindError as err:
            _CATALOGUE_CACHE.put(key, err)
            raise
        _CATALOGUE_CACHE.put(key, catalogue)
        return catalogue

    def check_model(self, model: str) -> None:
        """Refuse ``model`` before anything is billed when Segmind's model catalogue does not list it
        (:class:`SegmindModelNotFoundError`) or lists it as retired (:class:`SegmindModelRetiredError`),
        naming close matches.

        Only with the connection's ``check_model_catalogue`` on (the default, except for a loopback
        host). Never blocks a run otherwise: an unreachable or unreadable catalogue is logged and the
        run goes on. A slug missing from a list read more than a minute ago reads it again once.
        """
        settings = self.get_settings()
        if not settings.check_model_catalogue:
            return
        try:
            cached = _CATALOGUE_CACHE.lookup(catalogue_key(settings))
            catalogue = self.get_model_catalogue()
            refusal = catalogue.refusal(model)
            if refusal is not None and cached is not None and cached[1] > CATALOGUE_MISS_REFRESH_SECONDS:
                catalogue = self.get_model_catalogue(refresh=True)
                refusal = catalogue.refusal(model)
        except SegmindError as err:
            self.log.warning(
                "Segmind's model catalogue could not be read (%s), so the model %r was not checked against it; "
                "the run goes on.",
                _short_reason(err),
                model,
            )
            return
        if refusal is not None:
            raise refusal
        self.log.debug("Segmind's model catalogue lists %r (%s).", model, catalogue.describe())

    # ---------------------------------------------------------------- answers as they came (contract check)

    def probe(
        self, method: str, url: str, *, endpoint: Endpoint, json_body: Mapping[str, Any] | None = None
    ) -> HttpAnswer:
        """One call, one attempt, and the answer as it came: any status, headers and body, unparsed.

        For the contract check (:mod:`airflow_provider_segmind.contract`), which reads shapes and
        headers the typed methods leave out, then hands the answer to the same parsers they use. The
        URL must be on the origin of the connection's base URL, history URL or catalogue URL: the key
        goes nowhere else. A POST is billed like :meth:`submit`, and is never sent twice.
        """
        settings = self.get_settings()
        if not any(same_origin(url, own) for own in (settings.base_url, settings.history_url, settings.catalogue_url)):
            raise ValueError(f"{url!r} is not on the connection's API, history or catalogue host")
        return self._call(
            method, url, lambda answer: answer, endpoint=endpoint, json_body=json_body, single_attempt=True
        )

    def test_connection(self) -> tuple[bool, str]:
        """The UI's Test button: one credits call (free), so it tells a bad key from a bad host, then
        one read of the model catalogue (free), whose size the answer adds (or why it could not).

        One attempt and no retry loop: the button should answer in about a round trip, and a person
        is there to press it again. The message names the URL it reached and both balances, and
        leaves out what does not apply to a test (retry advice, Airflow's temporary connection id).
        """
        try:
            conn = self.get_connection(self.segmind_conn_id)
        except Exception as err:
            return False, redact(f"Could not read the connection: {err}")
        host = (conn.host or "").strip()
        assumed = ""
        if host and "://" not in host:
            scheme = conn.schema or "https"
            assumed = f" (the host has no scheme, so {scheme}:// was used)"
        try:
            settings = SegmindConnectionSettings.from_connection(conn, retry_policy=RetryPolicy(max_attempts=1))
        except SegmindInvalidParametersError as err:
            # Drop "The Segmind connection '<temporary id>' is misconfigured: " for the form.
            return False, sentences(f"Invalid connection: {str(err).split(': ', 1)[-1]}")
        except SegmindAuthenticationError:
            return False, "No API key: put the Segmind API key in the API Key (password) field."
        # The Test button's two free calls skip the rate budget: a person waits on them.
        self._settings = settings = dataclasses.replace(settings, rate_budget=None)
        url = credits_url(settings.base_url)
        try:
            balance = self.get_credit_balance()
            catalogue = self._catalogue_note()
        except SegmindInvalidResponseError as err:
            return False, sentences(
                f"{settings.base_url}{assumed} answered HTTP {err.status_code}, but not like Segmind's API",
                "A proxy page or a wrong host is the usual cause: check the Host field",
            )
        except SegmindTransportError as err:
            return False, sentences(f"Could not reach {settings.base_url}{assumed}: {err.summary}")
        except (SegmindAuthenticationError, SegmindForbiddenError) as err:
            return False, str(err)  # already says what to fix in the form
        except SegmindError as err:
            return False, connection_test_failure(err, f"{settings.base_url}{assumed}")
        except Exception as err:
            return False, redact(f"Calling {url} failed: {type(err).__name__}: {err}", [settings.api_key])
        finally:
            self.close()
        return True, sentences(
            f"Connected to {settings.base_url}{assumed}; the key works", balance.describe(), catalogue
        )

    def _catalogue_note(self) -> str:
        """What the connection test says of the model catalogue: how many models, or why it could not say."""
        try:
            return f"Segmind's model catalogue: {self.get_model_catalogue(refresh=True).describe()}"
        except SegmindError as err:
            return f"Segmind's model catalogue could not be read ({_short_reason(err)}); runs are not affected"
        except Exception as err:  # the Test button must answer about the key, whatever the catalogue does
            return f"Segmind's model catalogue could not be read ({type(err).__name__}); runs are not affected"
