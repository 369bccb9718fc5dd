"""The built wheel and sdist hold what the package needs, with honest metadata.

The rest of the suite proves the installed wheel works when ``make test INSTALL=wheel`` runs it
(tests/installed_package.py makes sure it is the wheel they import); this module checks what a test
of behaviour would only notice by accident: a data file left out (package data is listed by hand in
pyproject.toml), a module outside the packages setuptools finds, a licence file, a project URL,
or a test dependency published as an extra. Given ``SEGMIND_TEST_WHEEL``/``SEGMIND_TEST_SDIST`` (set
by ``make test INSTALL=wheel``), it checks those files; otherwise it builds both from the source tree
with uv (``make venv`` installs it).
"""

from __future__ import annotations

import email
import email.message
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

SOURCE = Path(os.environ.get("SEGMIND_TEST_SOURCE") or Path(__file__).resolve().parents[1])
PACKAGE = "airflow_provider_segmind"
PYPROJECT = tomllib.loads((SOURCE / "pyproject.toml").read_text())


def _package_files() -> set[str]:
    """Every file of the source package (modules, py.typed, any data file), as wheel paths."""
    root = SOURCE / PACKAGE
    return {
        path.relative_to(SOURCE).as_posix()
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist): the ones CI built, or a fresh build of the source tree (wheel from the sdist)."""
    wheel, sdist = os.environ.get("SEGMIND_TEST_WHEEL"), os.environ.get("SEGMIND_TEST_SDIST")
    if wheel and sdist:
        return Path(wheel), Path(sdist)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is needed to build the wheel (make venv installs it)")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [uv, "build", "--quiet", "--out-dir", str(out), str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel_path,) = out.glob("*.whl")
    (sdist_path,) = out.glob("*.tar.gz")
    return wheel_path, sdist_path


def _metadata(wheel: zipfile.ZipFile) -> email.message.Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return email.message_from_bytes(wheel.read(name))


def test_wheel_holds_every_package_file_and_nothing_else(built: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(built[0]) as wheel:
        names = [n for n in wheel.namelist() if not n.endswith("/")]
    packaged = {n for n in names if n.startswith(f"{PACKAGE}/")}
    expected = _package_files()
    assert f"{PACKAGE}/py.typed" in expected  # PEP 561: mypy users get the hints
    assert expected - packaged == set(), "missing from the wheel"
    assert packaged - expected == set(), "in the wheel but not in the source package"
    # The emulator, a subpackage with its own __main__ (python -m ...emulator), ships whole.
    assert {f"{PACKAGE}/emulator/__main__.py", f"{PACKAGE}/emulator/images.py"} <= packaged
    # Nothing else at the top level: no tests, example DAGs or demo installed into site-packages.
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {PACKAGE, f"{PACKAGE}-{PYPROJECT['project']['version']}.dist-info"}


def test_wheel_metadata(built: tuple[Path, Path]) -> None:
    project = PYPROJECT["project"]
    with zipfile.ZipFile(built[0]) as wheel:
        meta = _metadata(wheel)
        info = f"{PACKAGE}-{project['version']}.dist-info"
        licence = wheel.read(f"{info}/licenses/LICENSE").decode()
        notice = wheel.read(f"{info}/licenses/NOTICE").decode()
        entry_points = wheel.read(f"{info}/entry_points.txt").decode()
    source_version = re.search(r'__version__ = "([^"]+)"', (SOURCE / PACKAGE / "__init__.py").read_text())
    assert source_version is not None
    assert meta["Version"] == project["version"] == source_version[1]
    assert meta["License-Expression"] == "Apache-2.0"
    assert "License" not in meta  # the deprecated free-text field is gone
    assert sorted(meta.get_all("License-File") or []) == ["LICENSE", "NOTICE"]
    assert "Apache License" in licence
    assert "Version 2.0, January 2004" in licence
    assert "airflow-provider-segmind" in notice
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL") or [])
    assert set(urls) == {"Documentation", "Changelog", "Issues", "Source"}
    assert all(url.startswith("https://") for url in urls.values())
    # Airflow 3.2 splits every Project-URL on each comma to find "Documentation": one more breaks discovery.
    assert all("," not in url for url in urls.values())
    # Only the user-facing extras are published; test and dev tools are dependency groups.
    assert set(meta.get_all("Provides-Extra") or []) == {"amazon", "emulator", "openlineage"}
    requires = " ".join(meta.get_all("Requires-Dist") or []).lower()
    for tool in ("pytest", "moto", "ruff", "mypy", "segmind==", "twine", "mkdocs"):
        assert tool not in requires, tool
    assert "[apache_airflow_provider]" in entry_points
    assert "airflow_provider_segmind.get_provider_info:get_provider_info" in entry_points


def test_sdist_holds_the_sources_licences_changelog_and_tests(built: tuple[Path, Path]) -> None:
    version = PYPROJECT["project"]["version"]
    prefix = f"airflow_provider_segmind-{version}/"
    with tarfile.open(built[1]) as sdist:
        names = {member.name.removeprefix(prefix) for member in sdist.getmembers() if member.isfile()}
        changelog = sdist.extractfile(prefix + "CHANGELOG.md")
        assert changelog is not None
        changelog_text = changelog.read().decode()
    assert {"LICENSE", "NOTICE", "README.md", "CHANGELOG.md", "pyproject.toml", "mkdocs.yml"} <= names
    assert _package_files() <= names
    assert "example_dags/example_segmind_marketing_assets.py" in names
    assert "tests/test_wheel.py" in names
    assert not any("__pycache__" in name for name in names)
    # Every release has its changelog entry (Keep a Changelog headings).
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog_text, re.MULTILINE)


def test_installed_package_is_this_wheel(built: tuple[Path, Path]) -> None:
    """Under ``make test INSTALL=wheel``: site-packages holds exactly the wheel's files, byte for byte."""
    from importlib import metadata

    if os.environ.get("SEGMIND_TEST_PACKAGE") != "wheel":
        pytest.skip("only when testing the installed wheel (make test INSTALL=wheel)")
    dist = metadata.distribution("airflow-provider-segmind")
    installed = {
        str(file): file for file in dist.files or [] if str(file).startswith(f"{PACKAGE}/") and file.suffix != ".pyc"
    }
    with zipfile.ZipFile(built[0]) as wheel:
        packaged = {n: wheel.read(n) for n in wheel.namelist() if n.startswith(f"{PACKAGE}/") and not n.endswith("/")}
    assert set(installed) == set(packaged)
    for name, content in packaged.items():
        digest = "sha256=" + urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        assert installed[name].hash is not None
        assert f"{installed[name].hash.mode}={installed[name].hash.value}" == digest, name
        assert Path(str(installed[name].locate())).read_bytes() == content, name


def test_a_source_tree_that_would_shadow_the_wheel_stops_the_session(tmp_path: Path) -> None:
    """Run from the repository root, ``python -m pytest`` imports the source package whatever is
    installed: asked to test the wheel there, the session refuses before collecting anything."""
    env = {**os.environ, "SEGMIND_TEST_PACKAGE": "wheel", "SEGMIND_TEST_AIRFLOW_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests/test_wheel.py"],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the tests would not test the wheel" in done.stderr
    assert f"imported from {SOURCE.resolve() / PACKAGE}," in done.stderr
