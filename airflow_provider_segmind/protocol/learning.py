"""What completed jobs of a model took, and where that places the next job's polls.

Segmind hosts hundreds of models, from 2 s images to minutes-long videos; one fixed schedule either
wastes status calls on long jobs or notices their completion tens of seconds late. The result of a
completed job carries ``queue_time`` and ``inference_time`` (``metrics``: docs.segmind.com, async inference,
status and result; the status answer of a COMPLETED job carries at least ``inference_time``), so the
watchers of one process remember them per model and place the next job's polls where completion is
likely: :func:`place` is the rule, :class:`RuntimeBook` the memory.

The cache rule, in one place (the only cache of this module):

- **Key**: the model slug. Nothing else (no key, no account, no parameters) is stored.
- **Value**: the last :data:`SAMPLES_PER_MODEL` ``(queue_time, inference_time)`` pairs of that
  model's successful jobs, as Segmind reported them. Values that are not finite, negative, or longer
  than the result retention (1 hour) are dropped.
- **Lifetime**: the process (:data:`LEARNED_RUNTIMES`). In a triggerer that is its one event loop,
  so all triggers of that loop share it; a non-deferrable task process learns only from itself. A
  triggerer restart starts empty, i.e. from the seed (``PollSchedule.expected_runtime``) or the
  model's default schedule (:meth:`PollSchedule.for_model`).
- **Invalidation**: none needed; old runs age out of the window (a model that got faster or slower
  is followed within :data:`SAMPLES_PER_MODEL` jobs), and nothing depends on it for correctness: a
  wrong estimate only costs status calls or detection latency, because past the learned range the
  schedule keeps polling (backing off), exactly as an unknown model's would.
- **Bound**: at most :data:`MAX_MODELS` models, least recently used dropped first, each holding at
  most :data:`SAMPLES_PER_MODEL` pairs (about 2 KB): well under a megabyte in all.

Benchmark 3c (``benchmarks/b3_poll_economy.py``) is what this cache earns its place with: per
runtime profile, status calls per job and p95 detection latency with and without it.

Written by hand (an ``OrderedDict`` LRU of ``deque`` windows): ``functools.lru_cache`` memoizes a
function's results, not an appendable per-key window, and the rule is a few lines.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any, Final

from airflow_provider_segmind.protocol.schedule import RESULT_RETENTION_SECONDS, PollSchedule, runtime_hint

#: Completed jobs remembered per model (a window: the oldest run drops out first).
SAMPLES_PER_MODEL: Final = 32
#: Models remembered per process (least recently used dropped first).
MAX_MODELS: Final = 256
#: Completed jobs of a model needed before what they took replaces the seed or the default: fewer
#: runs say too little about how short the next one can be.
MIN_SAMPLES: Final = 4
#: Detection latency target as a fraction of a job's runtime is 5%; polls are spaced 4% of the time
#: since submit so the round trips and the result fetch fit in the rest.
LEARNED_INTERVAL_FRACTION: Final = 0.04
#: The first poll after processing starts is placed a little before the estimated shortest run.
_LOW_MARGIN: Final = 0.95
#: Polls slow down a little after the estimated longest run.
_HIGH_MARGIN: Final = 1.1


def _usable(value: Any) -> float | None:
    """A duration Segmind reported, if it is one (finite, >= 0, within the result retention)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number <= RESULT_RETENTION_SECONDS else None


def estimated_range(samples: Sequence[float]) -> tuple[float, float]:
    """``(low, high)``: where runtimes of this kind fall, from ``samples`` (at least two).

    The sample minimum overestimates the shortest possible run (the next job is shorter than all
    ``n`` seen with probability ``1/(n+1)``), so each end is pushed out by the sample's spread over
    ``n - 1`` (the unbiased estimate of a uniform distribution's ends). A few runs therefore give a
    wide, safe range, many runs a tight one; one odd run only widens it (more calls, never a miss).
    """
    low, high = min(samples), max(samples)
    pad = (high - low) / max(1, len(samples) - 1)
    return max(0.0, low - pad), high + pad


def place(
    base: PollSchedule,
    *,
    inference: Sequence[float] = (),
    queue: Sequence[float] = (),
) -> PollSchedule:
    """``base`` with its polls placed around what completed jobs took, or around its seed.

    - At least :data:`MIN_SAMPLES` inference times: no poll before the estimated shortest inference
      after processing starts (``min_runtime``), polls every ``interval`` or 4% of the time since
      submit, whichever is longer, and back-off past the estimated longest queue plus inference
      (``slow_after``).
      At least :data:`MIN_SAMPLES` queue times also move the first poll to the estimated shortest
      queue (``initial_delay``, never earlier than ``base``'s).
    - Else, a seed (``base.expected_runtime`` > 0) stands for the typical inference:
      :func:`~airflow_provider_segmind.protocol.schedule.runtime_hint`, the rule
      :meth:`PollSchedule.for_model` applies to a known model's typical runtime.
    - Else ``base`` unchanged: a model nobody has seen or seeded keeps today's schedule.

    Pure: the same samples give the same schedule.
    """
    changes: dict[str, float] = {}
    if len(inference) >= MIN_SAMPLES:
        low, high = estimated_range(inference)
        # ``slow_after`` also ends the QUEUED polls' patience (counted from submit), so a learned
        # long queue adds to it: a job in a queue as long as the last ones is on time, not late.
        longest_queue = estimated_range(queue)[1] if len(queue) >= MIN_SAMPLES else 0.0
        changes = {"min_runtime": low * _LOW_MARGIN, "slow_after": (longest_queue + high) * _HIGH_MARGIN}
        changes = {name: round(value, 3) for name, value in changes.items()}
    elif base.expected_runtime > 0:
        changes = runtime_hint(base.expected_runtime)
    if not changes:
        return base
    changes["interval_fraction"] = max(base.interval_fraction, LEARNED_INTERVAL_FRACTION)
    if len(queue) >= MIN_SAMPLES:
        changes["initial_delay"] = max(base.initial_delay, round(estimated_range(queue)[0] * _LOW_MARGIN, 3))
    return dataclasses.replace(base, **changes)


class RuntimeBook:
    """Per-model windows of ``(queue_time, inference_time)`` from completed jobs (see the module rule).

    Thread-safe (a lock around each call), so the blocking wait in worker threads can share it
    with nothing to fear; in the triggerer only the event loop's thread touches it.
    """

    def __init__(self, *, max_models: int = MAX_MODELS, samples_per_model: int = SAMPLES_PER_MODEL) -> None:
        if max_models < 1 or samples_per_model < 1:
            raise ValueError("RuntimeBook needs room for at least one model and one sample")
        self.max_models = max_models
        self.samples_per_model = samples_per_model
        self._models: OrderedDict[str, tuple[deque[float], deque[float]]] = OrderedDict()
        self._lock = threading.Lock()

    def observe(self, model: str, *metrics: Mapping[str, Any] | None) -> None:
        """Remember what a successful job of ``model`` took (``metrics``: status and/or result metrics).

        Later mappings win (the result's metrics over the status answer's). A job without a usable
        ``inference_time`` teaches nothing; a missing ``queue_time`` leaves the queue window alone.
        """
        if not model:
            return
        merged: dict[str, Any] = {}
        for source in metrics:
            merged.update(source or {})
        inference = _usable(merged.get("inference_time"))
        if inference is None:
            return
        queue = _usable(merged.get("queue_time"))
        with self._lock:
            windows = self._models.get(model)
            if windows is None:
                windows = (deque(maxlen=self.samples_per_model), deque(maxlen=self.samples_per_model))
                self._models[model] = windows
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
            else:
                self._models.move_to_end(model)
            windows[1].append(inference)
            if queue is not None:
                windows[0].append(queue)

    def samples(self, model: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(queue_times, inference_times)`` remembered for ``model``, oldest first (empty if none)."""
        with self._lock:
            windows = self._models.get(model)
            if windows is None:
                return (), ()
            self._models.move_to_end(model)
            return tuple(windows[0]), tuple(windows[1])

    def schedule_for(self, model: str, base: PollSchedule) -> PollSchedule:
        """The schedule a new watch of ``model`` uses: :func:`place` on what this book holds."""
        queue, inference = self.samples(model) if model else ((), ())
        return place(base, inference=inference, queue=queue)

    def models(self) -> list[str]:
        """Remembered models, least recently used first."""
        with self._lock:
            return list(self._models)

    def clear(self) -> None:
        """Forget everything (what a triggerer restart does)."""
        with self._lock:
            self._models.clear()


#: The process's book: every watch of this process reads and feeds it.
LEARNED_RUNTIMES: Final = RuntimeBook()
