"""Issue 22's matrix, row "504" (see ``matrix.py``): every history profile x every body."""

from __future__ import annotations

from typing import Any

import pytest

from tests.exactly_once.matrix import BODIES, PROFILES, run_cell


@pytest.mark.parametrize("body", BODIES)
@pytest.mark.parametrize("profile", PROFILES)
def test_cell(emulator_factory: Any, monkeypatch: pytest.MonkeyPatch, profile: str, body: str) -> None:
    run_cell(emulator_factory, monkeypatch, "504", profile, body)
