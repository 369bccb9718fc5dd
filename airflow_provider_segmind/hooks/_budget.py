"""The per-key request budget of this process: every call of both transports waits its turn here.

One budget per key per process (keyed by a hash of the key, never the key itself), shared by the
sync transport (a worker's calls, and any thread's) and the async one (the triggerer's event loop):
at most one request per ``spacing`` seconds, no bursts, so the processes that share a key stay under
its limit with no coordination between them (the split: :mod:`~airflow_provider_segmind.protocol.rate_budget`).

* A new process starts with an empty budget counted from the process's creation: a worker slot runs
  one task process after another, and each one's first request is one spacing after the process
  started, so the slot as a whole never sends faster than its share.
* On the event loop, waiting calls are served by priority, not arrival: a result before a status
  poll, a poll before a credits or history call (``rate_budget.priority``). In the sync transport a
  thread simply reserves the next free turn and sleeps until it.
* A connection without the ``requests_per_minute`` extra has no budget: nothing waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from airflow_provider_segmind.protocol.rate_budget import RateBudget, Role, priority
from airflow_provider_segmind.protocol.vocabulary import Endpoint


def _process_started_monotonic() -> float:
    """This process's creation time on the monotonic clock (now, if it cannot be read)."""
    now_mono, now_wall = time.monotonic(), time.time()
    try:
        import psutil

        created = float(psutil.Process().create_time())
    except Exception:  # no psutil, or no /proc: count from the first call instead
        return now_mono
    return now_mono - max(0.0, now_wall - created)


@dataclass
class _KeyBudget:
    """One key's turns in this process: ``next_at`` is the monotonic time of the next free turn."""

    spacing: float
    next_at: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: Waiting async calls per event loop: (priority, arrival, future), and each loop's dispatcher.
    waiting: dict[asyncio.AbstractEventLoop, list[tuple[int, int, asyncio.Future[None]]]] = field(default_factory=dict)
    dispatchers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = field(default_factory=dict)

    def take_turn(self, now: float) -> float:
        """Reserve the next free turn; returns when it is (``<= now``: at once)."""
        with self.lock:
            turn = max(now, self.next_at)
            self.next_at = turn + self.spacing
            return turn

    def take_if_free(self, now: float) -> float | None:
        """Take the turn if it is free now (``None``); else how long until it is, reserving nothing."""
        with self.lock:
            if now >= self.next_at:
                self.next_at = now + self.spacing
                return None
            return self.next_at - now


_BUDGETS: dict[tuple[str, str], _KeyBudget] = {}
_BUDGETS_LOCK: Final = threading.Lock()
_ARRIVALS = itertools.count()


def _forget_after_fork() -> None:
    """A forked child (a task process) starts with its own empty budgets, not a copy of its parent's."""
    _BUDGETS.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def key_id(api_key: str) -> str:
    """What identifies a key in this process's budgets: a hash, so no table holds the key itself."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def _budget_for(api_key: str, budget: RateBudget, role: Role) -> _KeyBudget:
    spacing = budget.spacing(role)
    with _BUDGETS_LOCK:
        entry = _BUDGETS.get((key_id(api_key), role))
        if entry is None:
            entry = _KeyBudget(spacing=spacing, next_at=_process_started_monotonic() + spacing)
            _BUDGETS[(key_id(api_key), role)] = entry
        elif entry.spacing != spacing:  # the connection's extras changed: the new share from now on
            entry.spacing = spacing
        return entry


def wait_turn(api_key: str, budget: RateBudget | None, endpoint: Endpoint) -> None:
    """Block until this worker process may send one more request with ``api_key`` (sync transport)."""
    if budget is None:
        return
    entry = _budget_for(api_key, budget, "worker")
    delay = entry.take_turn(time.monotonic()) - time.monotonic()
    if delay > 0:
        time.sleep(delay)


async def await_turn(api_key: str, budget: RateBudget | None, endpoint: Endpoint) -> None:
    """Wait until this triggerer process may send one more request with ``api_key`` (async transport).

    Served by :func:`~airflow_provider_segmind.protocol.rate_budget.priority`, then by arrival.
    """
    if budget is None:
        return
    entry = _budget_for(api_key, budget, "triggerer")
    loop = asyncio.get_running_loop()
    queue = entry.waiting.setdefault(loop, [])
    if not queue and entry.take_if_free(time.monotonic()) is None:
        return
    future: asyncio.Future[None] = loop.create_future()
    heapq.heappush(queue, (priority(endpoint), next(_ARRIVALS), future))
    dispatcher = entry.dispatchers.get(loop)
    if dispatcher is None or dispatcher.done():
        entry.dispatchers[loop] = loop.create_task(_dispatch(entry, loop), name="segmind-rate-budget")
    await future  # a cancelled waiter's future is skipped by the dispatcher


async def _dispatch(entry: _KeyBudget, loop: asyncio.AbstractEventLoop) -> None:
    """Hand each free turn to the best waiting call of this loop until none is left."""
    queue = entry.waiting[loop]
    while queue:
        while queue and queue[0][2].done():  # cancelled while waiting: its turn goes to the next
            heapq.heappop(queue)
        if not queue:
            break
        wait = entry.take_if_free(time.monotonic())
        if wait is not None:
            await asyncio.sleep(wait)
            continue
        heapq.heappop(queue)[2].set_result(None)
    entry.dispatchers.pop(loop, None)
    entry.waiting.pop(loop, None)
