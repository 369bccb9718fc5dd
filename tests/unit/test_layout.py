"""The package's layout rules: the protocol's reading order, one home per name, private means "this folder".

The protocol was one 1,600-line module; it is split into one module per concern. These tests hold
the split's promises: every protocol module imports in a fresh interpreter by itself, imports only
the modules that come before it in the reading order (so each can be read alone, top-down), and
opens with a docstring naming its job. For the whole package (issue 26): every module opens with
such a docstring; every name is imported from the module that defines it (no re-export modules;
the package facades ``emulator`` and ``contract`` and the documented ``asset_event_extra`` path
aside); a module whose name starts with ``_`` is imported only from its own folder; the layout
table of docs/development.md lists exactly the package's modules; and ``tests/unit`` mirrors the package.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    "schedule",
    "learning",
    "rate_budget",
    "history",
    "history_search",
    "spend",
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


ROOT = PACKAGE_DIR.parents[1]
PACKAGE = ROOT / "airflow_provider_segmind"
#: Where code that imports the package lives.
CALLERS = ("airflow_provider_segmind", "tests", "benchmarks", "example_dags", "demo")
#: Names deliberately importable from a module that does not define them: the two package facades
#: (``SegmindEmulator``/``EmulatorConfig``, the contract check's entry points) and the documented public
#: path of ``asset_event_extra`` (docs/s3-transfer.md), defined in the transfer's private ``_assets``.
FACADES = {
    "airflow_provider_segmind.emulator": None,
    "airflow_provider_segmind.contract": None,
    "airflow_provider_segmind.transfers.segmind_to_s3": {"asset_event_extra"},
}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _package_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _defined(tree: ast.Module) -> set[str]:
    """Top-level names a module defines (and names bound in a top-level ``try`` import: a version gate)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Try):
            names |= {
                alias.asname or alias.name
                for sub in ast.walk(node)
                if isinstance(sub, ast.ImportFrom)
                for alias in sub.names
            }
    return names


def _imports(folders: tuple[str, ...] = CALLERS) -> list[tuple[Path, str, str]]:
    """Every ``from airflow_provider_segmind... import name`` in the project: (file, module, name)."""
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.level == 0
                    and (node.module or "").startswith("airflow_provider_segmind")
                ):
                    found += [(path, str(node.module), alias.name) for alias in node.names]
    return found


@pytest.mark.parametrize("module", sorted(_package_modules()))
def test_every_module_opens_with_a_docstring(module: str) -> None:
    """Every module with code says what it does and why (the protocol's also in one first sentence, above)."""
    path = _package_modules()[module]
    if not path.read_text().strip():
        return  # an empty package marker
    assert ast.get_docstring(ast.parse(path.read_text())), f"{module} has no docstring"


def test_every_name_is_imported_from_its_home() -> None:
    """One import path per name: no module re-exports another's names (nothing was published before 1.0)."""
    modules = _package_modules()
    defined = {name: _defined(ast.parse(path.read_text())) for name, path in modules.items()}
    wrong = []
    for path, module, name in _imports():
        if module not in modules or f"{module}.{name}" in modules or name in defined[module]:
            continue
        allowed = FACADES.get(module, set())
        if allowed is None or name in allowed:
            continue
        wrong.append(f"{path.relative_to(ROOT)}: {name} from {module}")
    assert wrong == []


def test_private_modules_are_imported_only_from_their_own_folder() -> None:
    """``hooks/_aio.py`` is the hooks' business: what two folders share has a public home in ``utils/``."""
    wrong = []
    for path, module, name in _imports(("airflow_provider_segmind",)):
        target = f"{module}.{name}".split(".") if f"{module}.{name}" in _package_modules() else module.split(".")
        private = next((i for i, part in enumerate(target) if part.startswith("_")), None)
        if private is None:
            continue
        folder = ".".join(target[:private])
        if _module_name(path).rpartition(".")[0] != folder:
            wrong.append(f"{path.relative_to(ROOT)} imports {'.'.join(target)}")
    assert wrong == []


def test_the_protocol_and_the_emulator_import_no_airflow_side_module() -> None:
    """The pure layers import only themselves and ``exceptions`` (the emulator also the protocol)."""
    allowed = {
        "protocol": ("airflow_provider_segmind.protocol", "airflow_provider_segmind.exceptions"),
        "emulator": (
            "airflow_provider_segmind.emulator",
            "airflow_provider_segmind.protocol",
            "airflow_provider_segmind.exceptions",
        ),
    }
    for folder, prefixes in allowed.items():
        for path, module, _name in _imports((f"airflow_provider_segmind/{folder}",)):
            assert module.startswith(prefixes), f"{path.relative_to(ROOT)} imports {module}"


#: The repository (the tests run from it, or from its copy without the source package under INSTALL=wheel).
REPO = Path(__file__).resolve().parents[2]
DEVELOPMENT_DOC = REPO / "docs" / "development.md"


def _layout_table() -> dict[str, set[str]]:
    """The modules docs/development.md lists, by folder (``./`` is the package root)."""
    text = DEVELOPMENT_DOC.read_text()
    table = text.split("<!-- layout:start -->", 1)[1].split("<!-- layout:end -->", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in table.strip().splitlines()[2:]:
        folder, modules = (cell.strip() for cell in line.strip("|").split("|")[:2])
        rows[folder.strip("`")] = set(re.findall(r"`([A-Za-z_0-9]+\.py)`", modules))
    return rows


def _tree() -> dict[str, set[str]]:
    tree: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "__pycache__" in path.parts or (path.name == "__init__.py" and path.parent != PACKAGE):
            continue
        folder = "./" if path.parent == PACKAGE else f"{path.parent.relative_to(PACKAGE).as_posix()}/"
        tree.setdefault(folder, set()).add(path.name)
    return tree


def test_the_layout_table_in_the_development_docs_matches_the_tree() -> None:
    assert _layout_table() == _tree()


def test_unit_tests_mirror_the_package() -> None:
    """``tests/unit/<folder>/test_<module>[_<aspect>].py`` names the module it tests (``_`` modules without it)."""
    unit = REPO / "tests" / "unit"
    shared = {"protocol/test_rules.py", "test_layout.py"}  # the rules several protocol modules share; this file
    tree = _tree()
    stray = []
    for path in sorted(unit.rglob("test_*.py")):
        relative = path.relative_to(unit).as_posix()
        folder = "./" if path.parent == unit else f"{path.parent.relative_to(unit).as_posix()}/"
        stems = {name.removesuffix(".py").lstrip("_") for name in tree.get(folder, set())}
        stem = path.stem.removeprefix("test_")
        if relative in shared or any(stem == s or stem.startswith(f"{s}_") for s in stems):
            continue
        stray.append(relative)
    assert stray == []
