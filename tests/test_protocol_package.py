"""The shape of the ``protocol`` package: each module stands on its own, and the package's names are all there.

The package was one 1,600-line module; it is split into one module per concern. These tests hold
the split's promises: every module imports in a fresh interpreter by itself, imports only the
modules that come before it in the reading order (so each can be read alone, top-down), opens
with a docstring naming its job, and every name in ``protocol.__all__`` exists (likewise for
``airflow_provider_segmind.history``, the request-history rules' old import path).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import airflow_provider_segmind.history as old_history
import airflow_provider_segmind.protocol as protocol

#: The reading order the package docstring gives; a module may import only those before it.
READING_ORDER = (
    "vocabulary",
    "text",
    "urls",
    "image_input",
    "params",
    "answer",
    "retry",
    "errors",
    "responses",
    "polling",
    "learning",
    "rate_budget",
    "history",
    "history_search",
    "catalogue",
    "contract",
)
PACKAGE_DIR = Path(protocol.__file__).parent


def test_reading_order_lists_every_module() -> None:
    on_disk = {path.stem for path in PACKAGE_DIR.glob("*.py")} - {"__init__"}
    assert on_disk == set(READING_ORDER)


@pytest.mark.parametrize("name", READING_ORDER)
def test_module_imports_on_its_own(name: str) -> None:
    """A fresh interpreter imports the module alone (no cycle, no reliance on an earlier import)."""
    module = f"airflow_provider_segmind.protocol.{name}"
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", READING_ORDER)
def test_module_depends_only_on_earlier_modules(name: str) -> None:
    tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text())
    earlier = set(READING_ORDER[: READING_ORDER.index(name)])
    used = {
        node.module.rsplit(".", 1)[1]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("airflow_provider_segmind.protocol.")
    }
    assert used <= earlier, f"{name} imports {sorted(used - earlier)}, which come later in the reading order"


@pytest.mark.parametrize("name", READING_ORDER)
def test_module_docstring_names_its_job(name: str) -> None:
    doc = importlib.import_module(f"airflow_provider_segmind.protocol.{name}").__doc__
    assert doc, f"protocol.{name} has no docstring"
    assert doc.strip().splitlines()[0].endswith((".", ":")), "the first line is one sentence naming the job"


@pytest.mark.parametrize("module", [protocol, old_history], ids=["protocol", "history"])
def test_all_names_exist_and_are_unique(module: ModuleType) -> None:
    names = module.__all__
    assert len(names) == len(set(names))
    assert [name for name in names if not hasattr(module, name)] == []


@pytest.mark.parametrize("module", [protocol, old_history], ids=["protocol", "history"])
def test_names_callers_import_are_reexported(module: ModuleType) -> None:
    """Every name imported from the module anywhere in the project (code, tests, benchmarks, DAGs)."""
    root = PACKAGE_DIR.parents[1]
    wanted: set[str] = set()
    for folder in ("airflow_provider_segmind", "tests", "benchmarks", "example_dags", "demo"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == module.__name__:
                    wanted |= {alias.name for alias in node.names if alias.name != "*"}
    assert wanted, "no caller found: the search is broken"
    assert sorted(name for name in wanted if not hasattr(module, name)) == []
