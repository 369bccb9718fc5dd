"""How one key's request limit is shared between the processes that use it: pure rules, no clock.

Segmind limits requests per key (docs.segmind.com/api-reference/rate-limits: Free 5, Pro 50 a
minute), and every call spends the same budget when polls count, so a deployment is sized by one
number, the key's limit ``R``. Workers and triggerers share nothing but the key, so each process
keeps its own budget (``hooks/_budget.py``) and the split below makes their sum stay under ``R``
with no coordination at all:

* each process sends at most one request per ``spacing`` seconds (no bursts), so in any window
  of 60 s it sends at most ``per_minute`` requests (a whole number);
* the worker slots (one process at a time each: a fresh task process starts with an empty budget,
  so a slot's successive task processes together still keep one spacing) and the triggerers get
  whole numbers that add up to at most ``R``;
* an image costs one submit (a worker) and at least two triggerer requests (a status that sees
  COMPLETED, the result), so the split is the one that lets the most images through. A slot's
  next task process counts its first turn from its own start (``hooks/_budget.py``), and it starts
  a *turnaround* after the previous task's submit (the task defers, the scheduler frees the slot
  and queues the next task, the executor starts its process), so a slot submits once per
  ``spacing + turnaround``, not once per spacing: the split maximises
  ``min(slots / (worker spacing + turnaround), triggerers * triggerer / 2 per window)``. The
  turnaround only chooses among splits that keep the sum under ``R``; a wrong guess costs
  images per minute, never a 429.

A small guard stretches every spacing so that network jitter cannot squeeze ``per_minute + 1``
requests into the server's 60 s window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Final, Literal

from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import Endpoint

#: Seconds added to each process's window before it is divided into spacings (jitter between the
#: send time and the server's clock must stay under it): a 60th of the window, at least this.
MIN_WINDOW_GUARD_S: Final = 0.2
#: The window Segmind's limits are quoted in.
WINDOW_S: Final = 60.0
#: Requests a finished image costs the triggerer at the least (a status that sees COMPLETED, the result).
TRIGGERER_REQUESTS_PER_IMAGE: Final = 2
#: Seconds from a task's submit to the start of the next task process in its pool slot, by default
#: (the ``rate_limit_task_turnaround`` extra): the task defers, the scheduler frees the slot and
#: queues the next task, the executor starts it. Benchmark 1c's real Airflow (LocalExecutor, 2
#: cores) measured 3-9 s; Celery adds the broker's hop.
TASK_TURNAROUND_S: Final = 5.0

Role = Literal["worker", "triggerer"]

#: Who goes first when several calls of one process wait for the budget (lower first): a submit,
#: then a result (its job is done: fetching it ends a task), then a status poll, then the rest
#: (credits, history, catalogue), which nothing waits on.
_PRIORITY: Final = {
    Endpoint.SUBMIT: 0,
    Endpoint.RUN_SYNC: 0,
    Endpoint.RESULT: 1,
    Endpoint.STATUS: 2,
}
LOWEST_PRIORITY: Final = 3


def priority(endpoint: Endpoint) -> int:
    """The order in which one process's waiting calls get the budget (lower first)."""
    return _PRIORITY.get(endpoint, LOWEST_PRIORITY)


@dataclass(frozen=True)
class RateBudget:
    """A key's limit and the processes that share it, from the connection's extras.

    ``requests_per_minute``: the key's limit ``R`` (the plan's number). ``worker_slots``: how many
    task processes may call Segmind with this key at once (the size of the Airflow pool the
    Segmind tasks run in). ``triggerers``: how many triggerer processes run this key's triggers.
    ``window_s``: the window the limit is counted in (60 s for Segmind's plans; shorter only for an
    emulator whose clock is sped up, as the tests' are). ``task_turnaround_s``: seconds from a
    task's submit to the start of the next task process in its slot (:data:`TASK_TURNAROUND_S`);
    it only picks the split, never the total.
    """

    requests_per_minute: int
    worker_slots: int = 1
    triggerers: int = 1
    window_s: float = WINDOW_S
    task_turnaround_s: float = TASK_TURNAROUND_S

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"the rate-limit window must be positive, got {self.window_s!r}")
        if not self.task_turnaround_s >= 0:
            raise ValueError(f"the task turnaround must be zero or more seconds, got {self.task_turnaround_s!r}")
        if self.requests_per_minute < 1 or self.worker_slots < 1 or self.triggerers < 1:
            raise ValueError(
                "requests_per_minute, rate_limit_worker_slots and rate_limit_triggerers must be at least 1, got "
                f"{self.requests_per_minute}, {self.worker_slots}, {self.triggerers}"
            )
        if self.worker_slots + TRIGGERER_REQUESTS_PER_IMAGE * self.triggerers > self.requests_per_minute:
            raise ValueError(
                f"a limit of {self.requests_per_minute} requests a minute cannot be shared by "
                f"{self.worker_slots} worker slot(s) and {self.triggerers} triggerer(s) (each process needs at "
                "least one request a minute, and the triggerers two per image): make the Segmind tasks' pool "
                f"at most {max(1, self.requests_per_minute - TRIGGERER_REQUESTS_PER_IMAGE * self.triggerers)} slots"
            )

    def split(self) -> tuple[int, int]:
        """Whole requests a minute for each worker slot and for each triggerer: the split that lets
        the most images through (ties: the larger triggerer share, so polls keep up with submits)."""
        return self._best_split

    @cached_property
    def _best_split(self) -> tuple[int, int]:
        # Searched once per budget (the fields are frozen): every budgeted request asks for its spacing.
        best: tuple[float, int, int] | None = None
        for worker in range(1, self.requests_per_minute // self.worker_slots + 1):
            left = self.requests_per_minute - worker * self.worker_slots
            triggerer = left // self.triggerers
            if triggerer < TRIGGERER_REQUESTS_PER_IMAGE:
                break
            images = self._images_per_window(worker, triggerer)
            if best is None or images > best[0]:
                best = (images, worker, triggerer)
        assert best is not None  # __post_init__ leaves room for one request per slot and two per triggerer
        return best[1], best[2]

    def _images_per_window(self, worker: int, triggerer: int) -> float:
        """Images a window lets through at this split: the slots' submits (one per spacing plus the
        turnaround each) or the triggerers' two calls per image, whichever is fewer."""
        slot_period = self._spacing(worker) + self.task_turnaround_s
        submits = self.worker_slots * min(float(worker), self.window_s / slot_period)
        return min(submits, triggerer * self.triggerers / TRIGGERER_REQUESTS_PER_IMAGE)

    def per_minute(self, role: Role) -> int:
        """The requests a minute one process of ``role`` may send."""
        worker, triggerer = self.split()
        return worker if role == "worker" else triggerer

    def spacing(self, role: Role) -> float:
        """Seconds between two requests of one process of ``role`` (the guard included)."""
        return self._spacing(self.per_minute(role))

    def _spacing(self, per_minute: int) -> float:
        guard = max(self.window_s / 60.0, MIN_WINDOW_GUARD_S)
        return (self.window_s + guard) / per_minute

    def images_per_minute(self) -> float:
        """The most images a window lets through at this split, the turnaround counted."""
        return self._images_per_window(*self.split())


def budgeted_schedule(schedule: PollSchedule) -> PollSchedule:
    """The poll schedule of a watch whose key has a budget: its first status call where it sees COMPLETED.

    Under a budget each status call is a turn a submit or a result could have used, and an image
    costs at least one submit, one status and one result. So the first call waits until the model's
    slow end (``slow_after``, 1.5x the typical or learned runtime, past which the job counts as
    late), not ``initial_delay``: the QUEUED and early PROCESSING answers it skips carry nothing the
    result needs. The price is latency (a few seconds for SD3 Large), not images per minute; the
    rest of the schedule (a late job, errors, 429s) is unchanged.
    """
    return replace(schedule, initial_delay=max(schedule.initial_delay, schedule.slow_after))
