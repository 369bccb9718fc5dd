"""What a templated number in ``SegmindRunOperator(inputs=...)`` becomes in the request body.

Airflow renders Jinja to text unless the DAG sets ``render_template_as_native_obj=True``; the
operator passes ``inputs`` through as rendered (it does not guess types for models it does not
know), so the emulator's job records exactly what Segmind would have been sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.operators.test_segmind_dag_test import _BROKEN, run_dag, write_dag, xcoms

pytestmark = pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        (False, {"steps": "4", "guidance": "3.5", "seed": "7"}),
        (True, {"steps": 4, "guidance": 3.5, "seed": 7}),
    ],
    ids=["strings-by-default", "numbers-with-native-rendering"],
)
def test_templated_numbers_arrive_as_rendered(
    airflow_db: Path, dags_folder: Path, emu: Any, native: bool, expected: dict[str, Any]
) -> None:
    dag_id = f"segmind_templated_inputs_{'native' if native else 'text'}"
    path = write_dag(
        dags_folder,
        dag_id,
        f"""
        with DAG(
            "{dag_id}",
            schedule=None,
            start_date=START,
            catchup=False,
            params={{"steps": 4, "guidance": 3.5, "seed": 7, "place": "dunes"}},
            render_template_as_native_obj={native},
        ) as dag:
            SegmindRunOperator(
                task_id="run",
                model="flux-schnell",
                deferrable=False,
                poll_schedule=FAST,
                inputs={{
                    "prompt": "a kite over the {{{{ params.place }}}}",
                    "steps": "{{{{ params.steps }}}}",
                    "guidance": "{{{{ params.guidance }}}}",
                    "seed": "{{{{ params.seed }}}}",
                }},
            )
        """,
    )
    run = run_dag(path, dag_id)
    assert run.state == "success"

    (summary,) = [value for task, _, key, value in xcoms(run.run_id) if task == "run" and key == "return_value"]
    sent = emu.job(summary["request_id"])["params"]
    assert sent == {"prompt": "a kite over the dunes", **expected}
