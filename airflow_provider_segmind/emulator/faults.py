"""Which fault, if any, hits the next request: scripted steps first, then seeded random draws.

Scripted steps make a test's failure sequence exact ("the next submit gets a 500, then two status
polls are reset"); random faults, drawn from ``random.Random(seed)``, make a chaos run replayable.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_segmind.emulator.config import ENDPOINTS, JOB_FAULTS, EmulatorConfig

#: Faults any endpoint can suffer: gateway errors, a rate limit, a dropped or slow connection.
_COMMON: Final = frozenset({"429", "500", "502", "504", "html502", "reset_before", "slow"})
#: Created, then answered with a gateway error: only where something is created (and billed).
_LATE: Final = frozenset({"late500", "late502", "late503"})
#: Which faults make sense where. ``none`` is a scripted "answer normally" placeholder step.
APPLICABLE: Final[Mapping[str, frozenset[str]]] = {
    "submit": _COMMON | {"bad_json", "reset_after", "none"} | _LATE | JOB_FAULTS,
    "v1": _COMMON | {"bad_json", "reset_after", "none"} | _LATE | JOB_FAULTS,
    "status": _COMMON | {"bad_json", "reset_after", "none"},
    "result": _COMMON | {"bad_json", "reset_after", "none", "stale_result"},
    "credits": _COMMON | {"bad_json", "reset_after", "none", "no_credits_record"},
    "media": _COMMON | {"truncate", "wrong_type", "none"},
    "history": _COMMON | {"bad_json", "reset_after", "none"},
    "models": _COMMON | {"bad_json", "reset_after", "none"},
}


@dataclass(frozen=True)
class Fault:
    """A fault chosen for one request. ``seconds`` overrides the ``slow`` delay for scripted steps."""

    name: str
    scripted: bool = False
    seconds: float | None = None

    @property
    def is_job_fault(self) -> bool:
        return self.name in JOB_FAULTS


@dataclass
class ScriptStep:
    """One scripted fault, consumed by the next ``times`` requests to ``endpoint``."""

    endpoint: str
    fault: str
    times: int = 1
    seconds: float | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ScriptStep:
        """Validate a step given as a dict (from Python or the ``/_emulator/script`` JSON)."""
        unknown = set(raw) - {"endpoint", "fault", "times", "seconds"}
        if unknown:
            raise ValueError(f"Unknown script step key(s) {sorted(unknown)}")
        endpoint, fault = str(raw.get("endpoint", "")), str(raw.get("fault", ""))
        if endpoint not in ENDPOINTS:
            raise ValueError(f"Script step endpoint {endpoint!r} is not one of {sorted(ENDPOINTS)}")
        if fault not in APPLICABLE[endpoint]:
            raise ValueError(
                f"Fault {fault!r} does not apply to {endpoint!r}; use one of {sorted(APPLICABLE[endpoint])}"
            )
        times = int(raw.get("times", 1))
        if times < 1:
            raise ValueError("Script step 'times' must be at least 1")
        seconds = raw.get("seconds")
        return cls(endpoint, fault, times, float(seconds) if seconds is not None else None)


class FaultInjector:
    """Picks faults per request. Not thread-safe: call it from the event loop only."""

    def __init__(self, seed: int) -> None:
        self._scripts: dict[str, deque[ScriptStep]] = {endpoint: deque() for endpoint in ENDPOINTS}
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        # Separate streams, so adding a job fault does not shift every later request fault.
        self._request_rng = random.Random(f"segmind-emulator:requests:{seed}")
        self._job_rng = random.Random(f"segmind-emulator:jobs:{seed}")

    def script(self, steps: Iterable[Mapping[str, Any]]) -> int:
        """Append steps (all validated first, so a bad list changes nothing); return how many."""
        parsed = [ScriptStep.parse(step) for step in steps]
        for step in parsed:
            self._scripts[step.endpoint].append(step)
        return len(parsed)

    def pending(self) -> dict[str, int]:
        """Scripted requests still to be consumed, per endpoint."""
        return {endpoint: sum(s.times for s in queue) for endpoint, queue in self._scripts.items() if queue}

    def clear(self) -> None:
        for queue in self._scripts.values():
            queue.clear()

    def pick(self, endpoint: str, config: EmulatorConfig) -> Fault | None:
        """The fault for this request: the next scripted step, else a random request fault."""
        queue = self._scripts[endpoint]
        if queue:
            step = queue[0]
            step.times -= 1
            if step.times <= 0:
                queue.popleft()
            return None if step.fault == "none" else Fault(step.fault, scripted=True, seconds=step.seconds)
        if endpoint not in config.fault_endpoints or not config.faults:
            return None
        draw = self._request_rng.random()
        threshold = 0.0
        for name, probability in config.faults.items():
            if name in JOB_FAULTS or name not in APPLICABLE[endpoint]:
                continue
            threshold += probability
            if draw < threshold:
                return Fault(name)
        return None

    def pick_job_fault(self, endpoint: str, config: EmulatorConfig) -> str | None:
        """Whether a newly accepted job is doomed by a random job fault (``failed_job``/``content_safety``)."""
        if endpoint not in config.fault_endpoints or not any(name in JOB_FAULTS for name in config.faults):
            return None
        draw = self._job_rng.random()
        threshold = 0.0
        for name in sorted(JOB_FAULTS):
            threshold += config.faults.get(name, 0.0)
            if draw < threshold:
                return name
        return None
