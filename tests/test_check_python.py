"""``make``'s first step on a fresh machine: the Python it was given can build the virtualenvs.

A Python older than 3.11, or one without ``ensurepip`` (Debian/Ubuntu without ``python3.X-venv``),
is named with its one-line fix before anything is created (``.ci/check_python.py``), instead of
failing minutes later inside pip or ``venv``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "check_python.py"


def _module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_python", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_python_older_than_3_11_is_named_with_the_fix() -> None:
    (problem,) = _module().problems("python3", (3, 10), True)
    assert "python3 is Python 3.10" in problem
    assert "3.11 or newer" in problem
    assert "make PYTHON=python3.11" in problem


def test_a_python_without_ensurepip_gets_the_debian_package_to_install() -> None:
    (problem,) = _module().problems("python3", (3, 12), False)
    assert "sudo apt install python3.12-venv" in problem


def test_this_python_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "python3"], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("make: using python3 (Python 3.")


def test_make_checks_before_it_creates_any_virtualenv(tmp_path: Path) -> None:
    """Every recipe that runs ``-m venv`` runs the check first (``make -n`` prints the recipes)."""
    targets = {
        "venv": {"VENV": str(tmp_path / "v")},
        "test-lowest": {"LOWEST": str(tmp_path / "low")},
        "docs": {"TOOLS": str(tmp_path / "tools")},
    }
    for target, variables in targets.items():
        args = ["make", "-n", "-C", str(ROOT), target, *(f"{k}={v}" for k, v in variables.items())]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
        recipe = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60, env=env).stdout
        lines = recipe.splitlines()
        first_venv = next(i for i, line in enumerate(lines) if " -m venv " in line)
        assert any(".ci/check_python.py" in line for line in lines[:first_venv]), (target, recipe)
