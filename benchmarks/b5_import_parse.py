"""Benchmark 5: what the provider costs a DAG file: import time over ``airflow.sdk``, and parse time.

Import: a fresh interpreter per run imports ``airflow.sdk`` (timed), then the operator modules a DAG
file imports (``operators.segmind``, ``sensors.segmind``, ``transfers.segmind_to_s3``; timed on top),
and lists which heavy libraries ended up in ``sys.modules``. Median of several runs.

Parse: a fresh interpreter per DAG file and run imports Airflow and ``DagBag`` (Airflow's own start,
timed apart), then builds ``DagBag(dag_folder=<file>)`` as the DAG processor would (timed). The same
is done for a one-task DAG without the provider, Airflow's floor for any file. Median of several runs.
"""

from __future__ import annotations

import json
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from benchmarks._common import REPO, BenchResult, Row, child_env, fmt, median, run_python, yes_no

TITLE = "Import and parse cost"
IMPORT_TARGET_MS = 150.0
PARSE_TARGET_S = 0.5
OPERATOR_MODULES = (
    "airflow_provider_segmind.operators.segmind",
    "airflow_provider_segmind.sensors.segmind",
    "airflow_provider_segmind.transfers.segmind_to_s3",
)
#: Libraries a DAG file should not pay for at import time (boto3/aiohttp/PIL/openlineage are the target's
#: list; the OpenLineage client loads only inside the operators' get_openlineage_facets_* methods).
HEAVY = ("boto3", "botocore", "aiohttp", "PIL", "openlineage", "requests", "tenacity", "urllib3", "httpx", "segmind")
FORBIDDEN = ("boto3", "botocore", "aiohttp", "PIL", "openlineage")

IMPORT_PROBE = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import airflow.sdk
    t1 = time.perf_counter()
    before = [m for m in {heavy!r} if m in sys.modules]
    for name in {modules!r}:
        __import__(name)
    t2 = time.perf_counter()
    added = [m for m in {heavy!r} if m in sys.modules and m not in before]
    print(json.dumps({{"sdk_s": t1 - t0, "ours_s": t2 - t1, "heavy": added, "heavy_from_airflow_sdk": before}}))
    """
)

PARSE_PROBE = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import airflow.sdk
    from airflow.dag_processing.dagbag import DagBag
    t1 = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
    t2 = time.perf_counter()
    print(json.dumps({
        "airflow_start_s": t1 - t0,
        "parse_s": t2 - t1,
        "dags": sorted(bag.dag_ids),
        "errors": {str(k): str(v)[-300:] for k, v in bag.import_errors.items()},
    }))
    """
)

TRIVIAL_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    @task
    def hello() -> str:
        return "hello"

    with DAG("bench_trivial", schedule=None, start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False):
        hello()
    """
)


def _probe(code: str, *args: str) -> dict[str, Any]:
    done = run_python(["-c", code, *args], env=child_env(), timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"probe failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _dag_files() -> list[Path]:
    folder = REPO / "example_dags"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.py") if p.is_file() and not p.name.startswith("_"))


def run(quick: bool) -> BenchResult:
    result = BenchResult(5, TITLE)
    repeats = 1 if quick else 5  # --quick (CI): that it runs; each probe is a fresh interpreter (~4 CPU-s)
    import_code = IMPORT_PROBE.format(modules=OPERATOR_MODULES, heavy=HEAVY)
    probes = [_probe(import_code) for _ in range(repeats)]
    sdk_ms = median([p["sdk_s"] for p in probes]) * 1000
    ours_ms = median([p["ours_s"] for p in probes]) * 1000
    heavy = sorted({m for p in probes for m in p["heavy"]})
    from_sdk = sorted({m for p in probes for m in p["heavy_from_airflow_sdk"]})
    forbidden = [m for m in heavy if m in FORBIDDEN]
    result.rows += [
        Row(
            "5",
            f"import of the operator modules over `import airflow.sdk` (median of {repeats})",
            fmt(ours_ms, 0, " ms"),
            fmt(sdk_ms, 0, " ms"),
            f"+{ours_ms / sdk_ms:.0%}",
            f"<= {IMPORT_TARGET_MS:g} ms",
            yes_no(ours_ms <= IMPORT_TARGET_MS),
            note="baseline column = `import airflow.sdk` itself in a fresh interpreter; modules: "
            + ", ".join(m.rsplit(".", 2)[-2] + "." + m.rsplit(".", 1)[-1] for m in OPERATOR_MODULES),
        ),
        Row(
            "5",
            " / ".join(FORBIDDEN) + " imported by those modules",
            ", ".join(forbidden) or "none",
            "",
            "",
            "none",
            yes_no(not forbidden),
            note=f"heavy libraries the provider's modules add: {', '.join(heavy) or 'none'} "
            f"(already loaded by airflow.sdk itself: {', '.join(from_sdk) or 'none'})",
        ),
    ]
    figures: dict[str, Any] = {"import_runs": probes, "import_ms": ours_ms, "airflow_sdk_ms": sdk_ms}

    files = _dag_files()
    parse_repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="segmind-bench-dags-") as tmp:
        trivial = Path(tmp) / "bench_trivial.py"
        trivial.write_text(TRIVIAL_DAG)
        floor_runs = [_probe(PARSE_PROBE, str(trivial)) for _ in range(parse_repeats)]
        floor = median([r["parse_s"] for r in floor_runs])
        start = median([r["airflow_start_s"] for r in floor_runs])
        figures["trivial_dag"] = {"runs": floor_runs, "parse_s": floor, "airflow_start_s": start}
        targets = list(files)
        stand_in = False
        if not targets:
            stand_in = True
            targets = [REPO / "benchmarks" / "dags" / "segmind_bench_deferrable.py"]
            result.notes.append(
                "5: example_dags/ holds no DAG file yet, so the parse row measures the benchmark's own deferrable "
                "DAG (benchmarks/dags/segmind_bench_deferrable.py) as a stand-in; re-run once example DAGs exist."
            )
        parsed: dict[str, Any] = {}
        for path in targets:
            runs = [_probe(PARSE_PROBE, str(path)) for _ in range(parse_repeats)]
            parse_s = median([r["parse_s"] for r in runs])
            errors = runs[-1]["errors"]
            dags = runs[-1]["dags"]
            parsed[str(path.relative_to(REPO))] = {"runs": runs, "parse_s": parse_s}
            name = str(path.relative_to(REPO)) + (" (stand-in)" if stand_in else "")
            result.rows.append(
                Row(
                    "5",
                    f"parse {name} beyond Airflow's start (median of {parse_repeats})",
                    fmt(parse_s, 3, " s"),
                    fmt(floor, 3, " s"),
                    f"+{parse_s - floor:.3f} s",
                    f"< {PARSE_TARGET_S:g} s",
                    yes_no(parse_s < PARSE_TARGET_S and not errors and bool(dags)),
                    note=f"baseline column = a one-task DAG without the provider; DAGs {dags}; "
                    f"import errors: {len(errors)}; Airflow's own start (import + DagBag) {start:.2f} s, not counted",
                )
            )
    figures["dag_files"] = parsed
    figures["example_dags_found"] = [str(p.relative_to(REPO)) for p in files]
    result.figures = figures
    return result
