"""Run one DAG file with ``dag.test()`` in this process: ``python -m tests.support.run_dag PATH``.

The lineage test starts it as a child process so the OpenLineage provider's listener plugin loads
with the file transport the test configured in the environment (Airflow loads plugins once per
process, and the plugin reads its configuration when it is imported). Prints the run's state.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.unit.transfers.test_segmind_to_s3_dag import _load_dag, _serialize_if_needed


def main(path: str) -> int:
    dag = _load_dag(Path(path))
    _serialize_if_needed(dag, Path(path))
    run = dag.test()
    print(f"RUN {run.run_id} {run.state}")
    return 0 if run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
