"""Pytest plugin (loaded by ``-p tests.airflow_env``): a throw-away Airflow home for the test session.

It must run before anything imports Airflow, because Airflow reads its configuration at import
time; a conftest is too late for modules collected earlier. Nothing here touches the developer's
own ``~/airflow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = Path(os.environ.get("SEGMIND_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="segmind-airflow-home-"))
_DAGS = _HOME / "dags"
_DAGS.mkdir(parents=True, exist_ok=True)

os.environ["AIRFLOW_HOME"] = str(_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_HOME / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
# One Fernet setting for this process and every Airflow process it starts: none. Left unset, Airflow
# 3.3 read an empty key here (its airflow.cfg did not exist yet at import) while the first `airflow`
# CLI wrote a generated key into the file, so a Variable written by a process that read the file came
# back here still encrypted. Not a key either: Airflow 3.1.0's get_fernet() sets an attribute on
# cryptography's MultiFernet, which current cryptography refuses ("no attribute 'is_encrypted'").
os.environ["AIRFLOW__CORE__FERNET_KEY"] = ""
# No connection is defined by default: each test sets the ones it needs (monkeypatch.setenv).
os.environ.pop("AIRFLOW_CONN_SEGMIND_DEFAULT", None)


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's AIRFLOW_HOME."""
    return _HOME


@pytest.fixture(scope="session")
def dags_folder() -> Path:
    """The session's DAGS_FOLDER; ``dag.test()`` needs the DAG's file to live here."""
    return _DAGS


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated metadata database (SQLite), created once per session (``airflow db migrate``, ~5 s)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=300,
    )
    return _HOME / "airflow.db"
