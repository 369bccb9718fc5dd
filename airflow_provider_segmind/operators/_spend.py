"""The operators' spend check before every new submit: ``max_spend_per_day`` (connection) and ``max_cost`` (task).

The arithmetic is :mod:`airflow_provider_segmind.protocol.spend` and the ledger read
``hooks/_spend.py``; this module decides for one submit and keeps the one piece of state the
ledger cannot give: the submits *this process* sent that the ledger does not list yet (its rows
land shortly after a submit), so the tasks of one process (a mapped task under ``dag.test()``, a
worker running several tasks) never overspend through the ledger's lag or the read's cache.
Submits of other processes are seen through the ledger, within its lag: the cap's known slack
(docs/operating.md, "The spend cap").

A refusal fails the task with ``AirflowFailException`` (no retry: the day's spend only grows), and
nothing is submitted or billed; the ``segmind.job.failed.spend_cap`` metric counts it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_segmind.exceptions import SegmindError
from airflow_provider_segmind.protocol.spend import day_bounds, model_price, over_max_cost, refusal, tally
from airflow_provider_segmind.protocol.text import sentences
from airflow_provider_segmind.utils import metrics

if TYPE_CHECKING:
    from airflow_provider_segmind.hooks.segmind import SegmindHook

#: Own submits are kept this long: by then their rows have landed (the history's lag is seconds).
OWN_SUBMIT_SECONDS: Final = 3600.0

_lock = threading.Lock()
#: ledger key -> request id -> (submitted at, estimate USD)
_OWN: dict[str, dict[str, tuple[float, float]]] = {}


def own_submits(key: str, now: float) -> dict[str, float]:
    """This process's submits of today on the account ``key``, request id -> estimate (older ones dropped)."""
    start, _end = day_bounds(now)
    with _lock:
        mine = _OWN.get(key, {})
        for rid in [rid for rid, (at, _e) in mine.items() if now - at > OWN_SUBMIT_SECONDS]:
            del mine[rid]
        return {rid: estimate for rid, (at, estimate) in mine.items() if at >= start}


def note_submitted(hook: SegmindHook, request_id: str, estimate: float | None) -> None:
    """Remember a submit of this process until the ledger lists it (only when a cap or max_cost is in force)."""
    with _lock:
        _OWN.setdefault(hook.spend_ledger_key(), {})[request_id] = (time.time(), estimate or 0.0)


def forget_own_submits() -> None:
    """Forget every remembered submit (tests)."""
    with _lock:
        _OWN.clear()


def check_spend(hook: SegmindHook, model: str, max_cost: float | None, log: Any) -> float | None:
    """Refuse a submit of ``model`` the cap or ``max_cost`` does not allow; return the job's estimate.

    Nothing to check (no ``max_spend_per_day``, no ``max_cost``): ``None`` without a call. Otherwise
    the ledger is read (cached briefly): a history that cannot be read fails the try (a retry may
    read it), without submitting; an over-cap spend or a model priced above ``max_cost`` fails the
    task without retries. The estimate is ``max_cost``, else the model's highest charge today.
    """
    cap = hook.get_settings().max_spend_per_day
    if cap is None and max_cost is None:
        return None
    try:
        today = hook.read_spend_ledger()
    except SegmindError as err:
        if cap is None:  # max_cost alone: its check needs the price, which the ledger could not tell
            log.warning("Segmind max_cost: the request history could not be read (%s); not checked.", err)
            return max_cost
        raise AirflowException(
            sentences(
                f"Segmind spend cap: Segmind's request history, where today's spend is read, could not be read "
                f"({err}). Nothing was submitted, nothing billed",
                "A retry reads it again; check the connection's history_url",
            )
        ) from err
    price = model_price(today, model)
    refused = over_max_cost(price, max_cost, model)
    if refused is not None:
        metrics.failed("spend_cap")
        raise AirflowFailException(refused)
    estimate = max_cost if max_cost is not None else price
    if cap is None:
        return estimate
    # A listed request without its charge yet: its model's highest charge today (this model: its
    # estimate), else the highest of any model: the cap errs towards counting.
    estimates = {m: p for m in {r.model_name for r in today if r.model_name} if (p := model_price(today, m))}
    if estimate is not None:
        estimates[model] = estimate
    now = time.time()
    spend = tally(today, own_submits(hook.spend_ledger_key(), now), estimates, max(estimates.values(), default=0.0))
    metrics.emit(metrics.SPEND_TODAY, spend.total)
    refused = refusal(spend, cap, estimate, model)
    if refused is not None:
        metrics.failed("spend_cap")
        raise AirflowFailException(refused)
    log.info(
        "Segmind spend cap: %.4f of %.4f USD spent or in flight today (UTC); this job is estimated at %s.",
        spend.total,
        cap,
        f"{estimate:.4f} USD" if estimate is not None else "an unknown price (set max_cost to reserve one)",
    )
    return estimate
