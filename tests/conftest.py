"""Shared fixtures: real Segmind emulators on loopback, started and stopped per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_segmind.emulator.config import EmulatorConfig
from airflow_provider_segmind.emulator.server import SegmindEmulator

EmulatorFactory = Callable[..., SegmindEmulator]


@pytest.fixture(autouse=True)
def _fresh_learned_runtimes() -> Iterator[None]:
    """Every test starts like a freshly started triggerer: no runtimes learned from earlier tests' jobs."""
    from airflow_provider_segmind.protocol.learning import LEARNED_RUNTIMES

    LEARNED_RUNTIMES.clear()
    yield
    LEARNED_RUNTIMES.clear()


class SharedClaims:
    """The request claims as every "worker" of one test sees them (``operators/_claims.py``).

    Inside a task that Airflow runs (``dag.test()``, a real worker) the claims are Airflow
    Variables, as in production; a unit test that calls ``execute`` directly has no Task SDK to
    reach them through, so its claims live in this dict, shared by every operator of the test the
    way Variables are shared by every worker. ``settle`` is short for the dict (a write takes no
    time) and the production one for real Variables.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    @staticmethod
    def _real() -> Any:
        import airflow.sdk.execution_time.task_runner as runner

        if hasattr(runner, "SUPERVISOR_COMMS"):
            from airflow_provider_segmind.operators._claims import VariableClaims

            return VariableClaims()
        return None

    @property
    def settle(self) -> float:
        """Real Variables settle as in production; the dict needs no time."""
        real = self._real()
        return float(real.settle) if real is not None else 0.05

    def get(self, name: str) -> str | None:
        real = self._real()
        return real.get(name) if real is not None else self.values.get(name)

    def set(self, name: str, value: str, description: str) -> None:
        real = self._real()
        if real is not None:
            real.set(name, value, description)
        else:
            self.values[name] = value

    def delete(self, name: str) -> None:
        real = self._real()
        if real is not None:
            real.delete(name)
        else:
            self.values.pop(name, None)

    def keys(self, prefix: str) -> list[str] | None:
        real = self._real()
        return real.keys(prefix) if real is not None else [k for k in self.values if k.startswith(prefix)]


@pytest.fixture(autouse=True)
def claims(monkeypatch: pytest.MonkeyPatch) -> SharedClaims:
    """Every test's request claims (see :class:`SharedClaims`); a test may read or plant claims in it."""
    from airflow_provider_segmind.operators import _claims

    shared = SharedClaims()
    monkeypatch.setattr(_claims, "BACKEND", lambda: shared)
    monkeypatch.setattr(_claims, "_last_sweep", 0.0)
    return shared


@pytest.fixture
def emulator_factory() -> Iterator[EmulatorFactory]:
    """Start emulators with config overrides on the ``fast`` profile; all are stopped at teardown.

    ``emulator_factory(credits=0.1, rate_limit=2)``; pass ``profile="realistic"`` for another base,
    and ``clock=`` to drive job times by hand.
    """
    started: list[SegmindEmulator] = []

    def make(*, profile: str = "fast", clock: Callable[[], float] | None = None, **overrides: Any) -> SegmindEmulator:
        config = EmulatorConfig.for_profile(profile, **overrides)
        emulator = SegmindEmulator(config, clock=clock) if clock is not None else SegmindEmulator(config)
        started.append(emulator.start())
        return emulator

    yield make
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(emulator_factory: EmulatorFactory) -> SegmindEmulator:
    """A running emulator with the ``fast`` profile (queue 0.05 s, inference 0.2 s) and its default key."""
    return emulator_factory()
