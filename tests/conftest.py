"""Shared fixtures: real Segmind emulators on loopback, started and stopped per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_segmind.emulator import EmulatorConfig, SegmindEmulator

EmulatorFactory = Callable[..., SegmindEmulator]


@pytest.fixture(autouse=True)
def _fresh_learned_runtimes() -> Iterator[None]:
    """Every test starts like a freshly started triggerer: no runtimes learned from earlier tests' jobs."""
    from airflow_provider_segmind.protocol.learning import LEARNED_RUNTIMES

    LEARNED_RUNTIMES.clear()
    yield
    LEARNED_RUNTIMES.clear()


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
