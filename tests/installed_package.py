"""Pytest plugin (loaded by ``-p tests.installed_package``): prove which copy of the package the tests import.

``make test INSTALL=wheel`` runs the suite against the built wheel installed in a clean virtualenv;
a source tree on ``sys.path`` (``python -m pytest`` and ``pythonpath = ["."]`` both put the rootdir
there) would silently shadow it and test the sources instead. ``SEGMIND_TEST_PACKAGE`` says which copy
is expected, and the session stops before collecting anything when another one is imported:

- ``wheel``: from site-packages, installed by a distribution that is not an editable install;
- ``source``: from the repository's ``airflow_provider_segmind/`` (``make test``, the editable venv);
- unset (a bare ``pytest``): not checked; the header still says which copy was imported.
"""

from __future__ import annotations

import json
import os
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

import airflow_provider_segmind

DISTRIBUTION = "airflow-provider-segmind"
PACKAGE_DIR = Path(airflow_provider_segmind.__file__).resolve().parent


def _editable(dist: metadata.Distribution) -> bool:
    """PEP 660/610: an editable install records ``{"dir_info": {"editable": true}}`` in direct_url.json."""
    text = dist.read_text("direct_url.json")
    return bool(text and json.loads(text).get("dir_info", {}).get("editable"))


def problem(expected: str, rootdir: Path) -> str | None:
    """Why the imported package is not the ``expected`` copy, or None when it is."""
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    if expected == "wheel":
        if not PACKAGE_DIR.is_relative_to(purelib):
            return f"airflow_provider_segmind was imported from {PACKAGE_DIR}, not from site-packages {purelib}"
        dist = metadata.distribution(DISTRIBUTION)
        if _editable(dist):
            return f"{DISTRIBUTION} is an editable install, not the wheel"
        if dist.version != airflow_provider_segmind.__version__:
            return f"installed {DISTRIBUTION} {dist.version}, the package says {airflow_provider_segmind.__version__}"
        return None
    if expected == "source":
        if rootdir / "airflow_provider_segmind" != PACKAGE_DIR:
            return f"airflow_provider_segmind was imported from {PACKAGE_DIR}, not from the source tree {rootdir}"
        return None
    return f"SEGMIND_TEST_PACKAGE must be 'wheel' or 'source', not {expected!r}"


def pytest_report_header(config: pytest.Config) -> str:
    return f"airflow_provider_segmind {airflow_provider_segmind.__version__} imported from {PACKAGE_DIR}"


def pytest_configure(config: pytest.Config) -> None:
    expected = os.environ.get("SEGMIND_TEST_PACKAGE")
    if not expected:
        return
    why = problem(expected, Path(config.rootpath).resolve())
    if why is not None:
        raise pytest.UsageError(f"the tests would not test the {expected}: {why}")
