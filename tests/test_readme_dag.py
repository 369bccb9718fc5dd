"""The README's "Use it in your DAG" steps, run as a new user would: its own code, taken from README.md.

The DAG is the README's ``python`` block, byte for byte, written into the DAGs folder; the pool is
created by the README's own ``airflow pools set`` line; the connection is the README's environment
variable with the emulator's key and URL in place of a real key (the only substitution: no network,
no Segmind account). S3 is moto's server on loopback through ``aws_default``, as the README's DAG
names it. ``dag.test()`` runs it with the real task runner, deferral and trigger included, and the
test checks what the README promises: images and manifests under ``segmind/<dag>/<run>/store/``,
and their ``s3://`` URIs printed by ``where_are_my_images``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_segmind.emulator import SegmindEmulator
from tests.support.s3 import S3Env
from tests.support.s3_servers import moto_endpoint, s3, s3_emu  # noqa: F401 (fixtures: emulator, moto's S3 server, a bucket)
from tests.unit.transfers.test_segmind_to_s3_dag import _BROKEN, _serialize_if_needed

README = Path(__file__).resolve().parents[1] / "README.md"
DAG_ID = "my_first_segmind_images"


def readme_section(title: str) -> str:
    """The text of the README's ``## title`` section (up to the next ``## ``)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"README.md has no '## {title}' section"
    return match.group(1)


def code_blocks(section: str, language: str) -> list[str]:
    """The fenced ``language`` blocks of a README section, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def readme_dag_source() -> str:
    (source,) = code_blocks(readme_section("Use it in your DAG"), "python")
    return source


def readme_command(prefix: str) -> list[str]:
    """The README's shell command starting with ``prefix``, as argv (its ``# comment`` dropped)."""
    for block in code_blocks(readme_section("Use it in your DAG"), "bash"):
        for line in block.splitlines():
            if line.startswith(prefix):
                return shlex.split(line, comments=True)
    raise AssertionError(f"README.md's 'Use it in your DAG' has no command starting with {prefix!r}")


def test_the_readme_connection_is_the_segmind_type_with_only_a_key() -> None:
    (line,) = (
        line for line in readme_section("Use it in your DAG").splitlines() if "AIRFLOW_CONN_SEGMIND_DEFAULT=" in line
    )
    conn = json.loads(shlex.split(line)[1].split("=", 1)[1])
    assert conn == {"conn_type": "segmind", "password": "SG_..."}


def test_every_readme_pool_is_the_one_the_readme_creates() -> None:
    """The DAG's pool is the one the README's ``airflow pools set`` creates (a missing pool never runs)."""
    pool = readme_command("airflow pools set")[3]
    assert re.findall(r'pool="([^"]+)"', readme_dag_source()) == [pool]


def _task_states(run_id: str) -> dict[tuple[str, int], str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
        TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id
    )
    with create_session() as session:
        return {(task_id, index): str(state) for task_id, index, state in session.execute(query)}


def _xcom(run_id: str, task_id: str) -> dict[int, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    query = select(XComModel.map_index, XComModel.value).where(
        XComModel.dag_id == DAG_ID,
        XComModel.run_id == run_id,
        XComModel.task_id == task_id,
        XComModel.key == "return_value",
    )
    with create_session() as session:
        return {
            index: json.loads(value) if isinstance(value, str) else value for index, value in session.execute(query)
        }


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.usefixtures("airflow_db")
def test_the_readme_dag_generates_into_s3_and_prints_where(
    emu: SegmindEmulator,
    s3: S3Env,  # noqa: F811
    dags_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Step 1: the README's connection, pointed at the emulator (its key and Base URL: the extras table's host).
    monkeypatch.setenv(
        "AIRFLOW_CONN_SEGMIND_DEFAULT",
        json.dumps({"conn_type": "segmind", "password": emu.api_key, "host": emu.base_url}),
    )
    # Step 2: the README's pool command, run as written against this session's Airflow.
    done = subprocess.run(
        [sys.executable, "-m", "airflow", *readme_command("airflow pools set")[1:]],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Step 4: the README's DAG, byte for byte, with the bucket it reads from the environment.
    monkeypatch.setenv("SEGMIND_BUCKET", s3.bucket)
    monkeypatch.setenv("SEGMIND_ALLOW_INSECURE_LOOPBACK", "1")
    path = dags_folder / f"{DAG_ID}.py"
    path.write_text(readme_dag_source(), encoding="utf-8")
    request.addfinalizer(lambda: path.unlink(missing_ok=True))  # other tests parse the shared DAGs folder
    capfd.readouterr()
    dag = _load_dag_by_id(path)
    _serialize_if_needed(dag, path)

    run = dag.test()

    assert run.state == "success"
    states = _task_states(run.run_id)
    assert states == {
        ("generate", 0): "success",
        ("generate", 1): "success",
        ("store", 0): "success",
        ("store", 1): "success",
        ("where_are_my_images", -1): "success",
    }
    keys = s3.keys()
    images = sorted(key for key in keys if not key.endswith(".manifest.json"))
    assert len(images) == 2
    for index, key in enumerate(images):
        assert key.startswith(f"segmind/{DAG_ID}/{run.run_id}/store/{index}/")
        assert key + ".manifest.json" in keys
    stored = _xcom(run.run_id, "store")
    uris = sorted(uri for index in (0, 1) for uri in stored[index])
    assert uris == [f"s3://{s3.bucket}/{key}" for key in images]
    # What the README says the last task's log shows: every image's URI.
    printed = capfd.readouterr()
    for uri in uris:
        assert f"image: {uri}" in printed.out + printed.err
    assert emu.stats()["submissions"] == 2


def _load_dag_by_id(path: Path) -> Any:
    """The README's file builds its DAG by calling the ``@dag`` function; call it once more for the object."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, DAG_ID)()
