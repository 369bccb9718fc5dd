"""The short form of the fault-injection soak, part of the normal test suite.

Same pipeline, same fault mix and the same audit as the long form (``python -m tests.soak``, run by
``make soak``), over fewer prompts: every injected fault kind still occurs at least once (restarts,
give-ups, lost events, crashes on resume, expiries, S3 outages, FAILED and blocked prompts), and
the request history answers in every shape at once (the ``all`` history profile; the long form
rotates through them). See :mod:`tests.soak.harness` for what is injected and what is checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.soak.harness import SoakSettings, audit, default_bound, format_report, run_soak

SHORT_PROMPTS = 32
#: The short form's budget (the whole run: servers, ``dag.test()`` in a child process, the audit):
#: the long form's rule. It was 240 s; with ``make test`` running suites side by side a 173 s run
#: took 241 s.
SHORT_BOUND_SECONDS = default_bound(SHORT_PROMPTS)


@pytest.mark.timeout(SHORT_BOUND_SECONDS + 120)
@pytest.mark.usefixtures("airflow_db")
def test_soak_short_form(dags_folder: Path, tmp_path: Path) -> None:
    seed = int(os.environ.get("SEGMIND_SOAK_SEED", "7"))
    # Every request-history shape at once (emulator/config.py HISTORY_PROFILES["all"]); the long form
    # rotates through the profiles one by one.
    settings = SoakSettings(
        prompts=SHORT_PROMPTS, seed=seed, bound_seconds=SHORT_BOUND_SECONDS, history_profiles=("all",)
    )
    run = run_soak(settings, workdir=tmp_path / "soak", dags_folder=dags_folder, env=dict(os.environ))
    result = audit(run)
    report = format_report(run, result)
    print(report)
    assert not result.violations, report
