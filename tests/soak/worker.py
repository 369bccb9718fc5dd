"""The soak's child process: ``dag.test()`` of the soak DAG with :class:`~tests.soak.chaos.Chaos` installed.

``python -m tests.soak.worker CONFIG.json``. The harness starts it with the Airflow environment
(AIRFLOW_HOME, a migrated database, connections by environment variable) and its stdout/stderr going
to a log file, which is how every task and trigger log line of the run is captured for the key scan.
It writes the run's outcome (task instances, XComs, task state store rows, the ``segmind_claim_*``
request claims) as JSON to ``result_file`` and exits 0 if ``dag.test()`` returned, whatever the
run's state.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any


def _load_dag(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.dag


def _decode(raw: Any) -> Any:
    if isinstance(raw, (bytes, str)):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _collect(dag_id: str, run_id: str) -> dict[str, Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_segmind.operators._claims import CLAIM_PREFIX

    with create_session() as session:
        tis = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state, TaskInstance.try_number).where(
                TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id
            )
        ).all()
        xcoms = session.execute(
            select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run_id
            )
        ).all()
        store: list[Any] = []
        try:
            from airflow.models.task_state_store import TaskStateStoreModel
        except ImportError:  # Airflow < 3.3
            pass
        else:
            store = session.execute(
                select(
                    TaskStateStoreModel.task_id,
                    TaskStateStoreModel.map_index,
                    TaskStateStoreModel.key,
                    TaskStateStoreModel.value,
                ).where(TaskStateStoreModel.dag_id == dag_id, TaskStateStoreModel.run_id == run_id)
            ).all()
        # The request claims (operators/_claims.py): Airflow Variables, read back for the ownership audit.
        from airflow.models.variable import Variable

        claims = [
            {"key": variable.key, "value": _decode(variable.val), "description": variable.description}
            for variable in session.scalars(select(Variable).where(Variable.key.startswith(CLAIM_PREFIX)))
        ]
    return {
        "claims": claims,
        "task_instances": [
            {"task_id": t, "map_index": m, "state": str(s.value if hasattr(s, "value") else s), "try_number": n}
            for t, m, s, n in tis
        ],
        "xcoms": [{"task_id": t, "map_index": m, "key": k, "value": _decode(v)} for t, m, k, v in xcoms],
        "task_state_store": [{"task_id": t, "map_index": m, "key": k, "value": _decode(v)} for t, m, k, v in store],
    }


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    from tests.soak.chaos import Chaos

    chaos = Chaos(
        emulator_url=config["emulator_url"],
        plan={int(k): v for k, v in config["plan"].items()},
        record_file=Path(config["chaos_file"]),
        seed=int(config["seed"]),
        max_consecutive_errors=int(config["max_consecutive_errors"]),
        history_segments=config.get("history_segments") or (),
    )
    dag = _load_dag(Path(config["dag_file"]))
    started = time.monotonic()
    with chaos.installed():
        run = dag.test(run_conf=config["run_conf"])
    seconds = time.monotonic() - started
    result = {"dag_id": dag.dag_id, "run_id": run.run_id, "state": str(run.state), "dag_test_seconds": seconds}
    result.update(_collect(dag.dag_id, run.run_id))
    Path(config["result_file"]).write_text(json.dumps(result, default=str))
    print(f"[soak worker] dag.test() finished in {seconds:.1f} s: run {run.run_id} is {run.state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
