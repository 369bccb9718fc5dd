"""The review example DAG's generation under ``dag.test()``: each mapped instance is named by its prompt.

Issue 24 item 9: the grid shows ``map_index_template`` as each mapped instance's name. The review
task waits for a person, which ``dag.test()`` cannot give it, so the candidates, the review and the
publish step are marked successful without running (``mark_success_pattern``); the ``variants`` and
``generate`` tasks run for real, through the task runner, against the emulator. The whole example
with a real review is tests/integration/test_review_publish.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_provider_segmind.emulator.server import SegmindEmulator
from tests.system.test_example_marketing_dag import _load, _map_index_labels, _task_states
from tests.unit.transfers.test_segmind_to_s3_dag import _BROKEN, _serialize_if_needed

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_segmind_review_and_publish.py"
DAG_ID = "example_segmind_review_and_publish"


@pytest.mark.skipif(_BROKEN is not None, reason=_BROKEN or "")
@pytest.mark.usefixtures("airflow_db")
def test_each_generated_variant_is_named_by_its_prompt_and_variant(
    emu: SegmindEmulator, dags_folder: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    monkeypatch.setenv("SEGMIND_EXAMPLE_BUCKET", "segmind-review-example")
    path = dags_folder / EXAMPLE.name
    shutil.copy(EXAMPLE, path)
    request.addfinalizer(lambda: path.unlink(missing_ok=True))  # other tests parse the shared DAGs folder
    dag = _load(path)
    _serialize_if_needed(dag, dags_folder)
    prompts = ["a teal kettle on a marble counter", "a red scarf on a wooden hanger"]

    run = dag.test(run_conf={"prompts": prompts, "variants": 2}, mark_success_pattern="store_candidates|review|publish")

    states = _task_states(DAG_ID, run.run_id)
    assert sorted(index for task, index in states if task == "generate") == [0, 1, 2, 3]
    assert {states[("generate", index)] for index in range(4)} == {"success"}
    assert emu.stats()["submissions"] == 4
    labels = _map_index_labels(DAG_ID, run.run_id)
    assert [labels[("generate", index)] for index in range(4)] == [
        f"{prompts[0]}, variant 1",
        f"{prompts[0]}, variant 2",
        f"{prompts[1]}, variant 1",
        f"{prompts[1]}, variant 2",
    ]
