"""The spend cap's arithmetic, as pure functions: today's spend from Segmind's ledger, in-flight estimates, room.

Why Segmind's ledger: the request history lists every request of the account with what it was
charged (``credits_deduction``, USD; SDK 1.3.0 ``segmind/generations.py``, ``Generations.history``),
whoever sent it: another worker, a triggerer, another DAG run, another Airflow. It is the only
record every process sees without a store of the provider's own, so it is what the cap counts.
The SDK lists one row per output, every row carrying the request's full charge, and advises
counting each request id once: the rows are merged per request id (any spelling,
:func:`~airflow_provider_segmind.protocol.history.request_id_key`) before they are summed.

What the ledger cannot show yet is estimated: a request whose row has not landed (``None``
fields, or no row at all for a moment after the submit) costs nothing in the ledger but will be
charged. So the spend a submit must fit under is::

    spent (charged requests of today) + in flight (listed but not charged yet, at their estimate)
    + this process's own submits the ledger does not list yet (at their estimate)
    + the job's own estimate  <=  max_spend_per_day

The estimate of a job is the operator's ``max_cost`` when given, else the highest charge the
ledger shows for its model today, else unknown (then only a positive room is required). The
slack, what another process's submit can add between its submit and its row landing, is the
history's lag (docs/operating.md, "The spend cap").

"Today" is the UTC day. Nothing here does I/O or reads a clock: the hook reads the ledger
(``hooks/_spend.py``) and the operator decides (``operators/_spend.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from airflow_provider_segmind.protocol.history import MAX_PER_PAGE, HistoryRecord, request_id_key
from airflow_provider_segmind.protocol.text import sentences
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus

#: Pages of 100 rows one ledger read may take (one row per output): 10,000 rows a day. Past it
#: the cap cannot know the day's spend, and refuses rather than guess low.
MAX_LEDGER_PAGES: Final = 100
#: Seconds a ledger read is reused by the same process (a mapped task in ``dag.test()``, a
#: worker running several tasks): "cached briefly", the process's own submits cover the rest.
LEDGER_CACHE_SECONDS: Final = 10.0
_DAY: Final = 86400.0


def day_bounds(now: float) -> tuple[float, float]:
    """The UTC day around ``now``: its start and end, epoch seconds."""
    start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp(), start.timestamp() + _DAY


def ledger_query(now: float, page: int, *, user_id: str | None = None, user_email: str | None = None) -> dict[str, str]:
    """The request-history list query of a ledger read: every model, the days around today.

    The history's dates have no stated zone (Segmind is in India, +05:30), so the query spans the
    UTC days before and after today and :func:`today_records` keeps the rows of today's UTC day.
    No ``model_name``: the cap counts every model.
    """
    day = datetime.fromtimestamp(now, UTC).date()
    query = {
        "from_date": (day - timedelta(days=1)).isoformat(),
        "to_date": (day + timedelta(days=1)).isoformat(),
        "page": str(page),
        "per_page": str(MAX_PER_PAGE),
        "sort_by": "model_created",
        "sort_order": "desc",
    }
    if user_id:
        query["user_id"] = user_id
    elif user_email:
        query["user_email"] = user_email
    return query


def today_records(records: Iterable[HistoryRecord], now: float) -> list[HistoryRecord]:
    """The requests of today's UTC day, merged per request id (each counted once, as the SDK advises).

    A naive timestamp may mean several instants (UTC or +05:30): a request counts when any of them
    is today, and a request without a readable time counts too. Both err towards counting.
    """
    start, end = day_bounds(now)
    merged: dict[str, HistoryRecord] = {}
    for record in records:
        times = record.created_candidates or ((record.created_at,) if record.created_at is not None else ())
        if times and not any(start <= moment < end for moment in times):
            continue
        key = request_id_key(record.request_id)
        seen = merged.get(key)
        if seen is None or (seen.credits is None and record.credits is not None):
            merged[key] = record
    return list(merged.values())


def _charge(record: HistoryRecord) -> float | None:
    value = record.credits
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def model_price(records: Iterable[HistoryRecord], model: str) -> float | None:
    """The highest charge the ledger shows for ``model`` (``None``: none seen)."""
    charges = [c for r in records if r.model_name == model and (c := _charge(r)) is not None and c > 0]
    return max(charges) if charges else None


@dataclass(frozen=True)
class SpendTally:
    """Today's spend as a submit sees it (USD)."""

    #: Charged requests of today (a final status and a charge).
    spent: float
    #: Requests the ledger lists without a final charge, at their charge so far or the estimate.
    in_flight: float
    #: This process's own submits the ledger does not list yet, at their estimates.
    own_unlisted: float
    #: How many requests of today the ledger listed.
    requests: int

    @property
    def total(self) -> float:
        return self.spent + self.in_flight + self.own_unlisted


def tally(
    today: Iterable[HistoryRecord],
    own: Mapping[str, float],
    estimate_of: Mapping[str, float],
    default_estimate: float = 0.0,
) -> SpendTally:
    """Today's spend: charged requests, listed-but-uncharged ones, and own submits not listed yet.

    ``own``: this process's submits of today, request id -> estimate. ``estimate_of``: a model's
    estimate for a listed request without a charge (else ``default_estimate``).
    """
    spent = in_flight = 0.0
    listed: set[str] = set()
    count = 0
    for record in today:
        count += 1
        key = request_id_key(record.request_id)
        listed.add(key)
        charge = _charge(record)
        final = record.status in (SegmindJobStatus.COMPLETED, SegmindJobStatus.FAILED)
        if charge is not None and final:
            spent += charge
            continue
        guess = own.get(record.request_id, estimate_of.get(record.model_name or "", default_estimate))
        in_flight += max(charge or 0.0, guess)
    own_unlisted = sum(value for rid, value in own.items() if request_id_key(rid) not in listed)
    return SpendTally(spent=spent, in_flight=in_flight, own_unlisted=own_unlisted, requests=count)


def room_left(spend: SpendTally, cap: float) -> float:
    """What the cap still allows today (USD; negative when already over)."""
    return cap - spend.total


def _usd(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") + " USD" if value else "0 USD"


def refusal(spend: SpendTally, cap: float, estimate: float | None, model: str) -> str | None:
    """Why a submit of ``model`` (estimated at ``estimate``; ``None`` = unknown) must not be sent; ``None``: it fits.

    A job of unknown price needs a positive room; a known one needs room for its estimate.
    """
    room = room_left(spend, cap)
    fits = room > 1e-9 if estimate is None else estimate <= room + 1e-9
    if fits:
        return None
    what = "a job of unknown price" if estimate is None else f"a job estimated at {_usd(estimate)}"
    return sentences(
        f"Segmind spend cap: today's (UTC) spend is {_usd(spend.total)} of the max_spend_per_day cap "
        f"{_usd(cap)} ({_usd(spend.spent)} charged in Segmind's request history, {_usd(spend.in_flight)} in "
        f"flight, {_usd(spend.own_unlisted)} submitted by this process and not listed yet), which leaves "
        f"{_usd(max(room, 0.0))}: no room for {what} of {model}. Nothing was submitted, nothing billed",
        "Raise max_spend_per_day on the connection, or run the task again after midnight UTC "
        "(clearing it then submits anew)",
    )


def over_max_cost(price: float | None, max_cost: float | None, model: str) -> str | None:
    """Why a job of ``model`` is refused by the operator's ``max_cost`` (``None``: it is not)."""
    if price is None or max_cost is None or price <= max_cost + 1e-9:
        return None
    return sentences(
        f"Segmind max_cost: {model} was charged up to {_usd(price)} per request today (Segmind's request "
        f"history), above this task's max_cost={_usd(max_cost)}. Nothing was submitted, nothing billed",
        "Raise max_cost, or choose a cheaper model or smaller outputs",
    )
