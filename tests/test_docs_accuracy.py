"""What the README and the docs state about the code, checked against the code.

Each check is one claim that went stale before (issue 25): how many example DAGs there are, how
`make` installs, which Airflow shows "Awaiting Input", the trigger's serialized kwargs, the
connection's extras, the version and extras in install lines, the pool every sample uses, and
where the built site is for pages whose samples GitHub cannot show.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
SITE = PYPROJECT["project"]["urls"]["Documentation"]
PAGES = sorted((ROOT / "docs").glob("*.md"))
README = ROOT / "README.md"
USER_TEXTS = [README, *PAGES]
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_the_package_says_the_version_pyproject_declares() -> None:
    """``__version__`` (what Airflow's provider info reports) moves with pyproject's version."""
    import airflow_provider_segmind

    assert airflow_provider_segmind.__version__ == VERSION


def test_the_number_of_example_dags() -> None:
    shipped = len(list((ROOT / "example_dags").glob("example_*.py")))
    claims = [
        (_name(path), word)
        for path in USER_TEXTS
        for word in re.findall(r"\b(\w+) example DAGs\b", _text(path))
        if word.lower() in NUMBERS or word.isdigit()
    ]
    assert claims, "the README and docs/index.md say how many example DAGs there are"
    assert [c for c in claims if NUMBERS.get(c[1].lower(), int(c[1]) if c[1].isdigit() else -1) != shipped] == []


@pytest.mark.parametrize("path", [README, *PAGES, ROOT / "Makefile", ROOT / ".ci" / "run"], ids=_name)
def test_nothing_claims_everything_comes_from_the_repository(path: Path) -> None:
    """`make` installs uv and ~200 pinned packages from the package index; no text may say otherwise."""
    assert not re.search(r"repository's\s+own\s+files", _text(path))


@pytest.mark.parametrize("path", USER_TEXTS, ids=_name)
def test_awaiting_input_is_said_of_airflow_3_3_only(path: Path) -> None:
    """Airflow 3.3 shows a review task as "Awaiting Input"; 3.1 and 3.2 show it deferred."""
    text = " ".join(_text(path).split())
    for match in re.finditer(r"awaiting.input", text, re.IGNORECASE):
        assert "3.3" in text[max(0, match.start() - 120) : match.end() + 120], text[match.start() - 120 : match.end()]


def test_the_trigger_page_lists_every_serialized_kwarg() -> None:
    from airflow_provider_segmind.triggers.segmind import SegmindJobTrigger

    _, kwargs = SegmindJobTrigger(request_id="r").serialize()
    page = _text(ROOT / "docs" / "trigger-sensor.md")
    listed = re.findall(r"^\| `(\w+)` \|", page, re.MULTILINE)
    assert listed == list(kwargs)
    # The one that holds the prompt says so.
    (row,) = (line for line in page.splitlines() if line.startswith("| `summary_params` |"))
    assert "prompt" in row


class _Recording(dict[str, Any]):
    """Connection extras that remember every key the provider asks for."""

    def __init__(self) -> None:
        super().__init__(read_timeout=30)  # not empty: the provider reads ``extra_dejson or {}``
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def test_every_connection_extra_the_code_reads_is_documented() -> None:
    from types import SimpleNamespace

    from airflow_provider_segmind.hooks._settings import SegmindConnectionSettings

    extras = _Recording()
    conn = SimpleNamespace(conn_id="c", password="k", host=None, schema=None, port=None, extra_dejson=extras)
    SegmindConnectionSettings.from_connection(conn)  # type: ignore[arg-type]
    documented = set(re.findall(r"^\| Extra `(\w+)` \|", _text(ROOT / "docs" / "connection.md"), re.MULTILINE))
    assert {"retry_backoff_max", "max_retries"} <= extras.asked  # the recorder sees the retry extras
    assert extras.asked - documented == set()


@pytest.mark.parametrize("path", USER_TEXTS, ids=_name)
def test_every_version_in_an_install_line_is_this_release(path: Path) -> None:
    text = _text(path)
    versions = re.findall(r"airflow-provider-segmind(?:\[[\w,]+\])?==([\w.]+)", text)
    versions += re.findall(r"airflow_provider_segmind-([\d.]+\w*)-py3", text)
    versions += re.findall(r'tag: "[\d.]+-segmind-([\w.]+)"', text)
    assert [v for v in versions if v != VERSION] == []


@pytest.mark.parametrize("path", [README, ROOT / "docs" / "index.md"], ids=_name)
def test_the_install_section_names_every_extra(path: Path) -> None:
    section = _text(path).split("## Install", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"airflow-provider-segmind\[(\w+)\]", section))
    named |= set(re.findall(r"\.whl\[(\w+)\]", section))
    assert named == set(PYPROJECT["project"]["optional-dependencies"])


def _pool_users() -> list[Path]:
    candidates = [*USER_TEXTS, *(ROOT / "example_dags").glob("*.py"), ROOT / "tests" / "test_docs_examples.py"]
    return [path for path in candidates if re.search(r'pool="segmind"|POOL = .*"segmind"', _text(path))]


@pytest.mark.parametrize("path", _pool_users(), ids=_name)
def test_every_sample_in_the_segmind_pool_says_how_to_create_it(path: Path) -> None:
    """Without the pool the scheduler never starts the task: each sample that uses it names the command."""
    assert "airflow pools set segmind" in _text(path)


@pytest.mark.parametrize("path", [p for p in PAGES if re.search(r'^\s*--8<-- "', _text(p), re.MULTILINE)], ids=_name)
def test_pages_with_included_samples_say_where_the_built_site_is(path: Path) -> None:
    """GitHub shows a ``--8<--`` include line where the site shows the code: the page links the site."""
    assert f"]({SITE}{path.stem}/)" in _text(path)


def test_the_readme_links_the_site_and_the_site_url_is_one() -> None:
    mkdocs = _text(ROOT / "mkdocs.yml")
    assert f"site_url: {SITE}\n" in mkdocs
    assert SITE in _text(README)


def test_no_page_points_to_a_readme_connection_table() -> None:
    assert [_name(p) for p in USER_TEXTS if "README's connection table" in " ".join(_text(p).split())] == []


def test_the_versioning_policy_names_every_public_operator_hook_trigger_and_sensor() -> None:
    from tests.test_api_docstrings import public_classes

    policy = _text(ROOT / "docs" / "versioning.md")
    names = {
        cls.__name__ for cls in public_classes() if cls.__name__.endswith(("Operator", "Hook", "Trigger", "Sensor"))
    }
    assert {name for name in names if f"`{name}`" not in policy} == set()
