"""Fixtures for the operator, trigger and sensor tests (helpers live in ``helpers.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.generation.helpers import use_emulator


@pytest.fixture
def emu(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fast emulator (queue 0.05 s, inference 0.2 s), reachable as connection ``segmind_default``."""
    use_emulator(monkeypatch, emulator)
    return emulator
