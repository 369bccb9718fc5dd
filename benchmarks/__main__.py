"""``python -m benchmarks [--only N[,N...]] [--quick] [--json PATH]``: run the benchmarks, print one table.

N is one of 1, 1c, 2, 3, 4, 5.

See the package docstring (``benchmarks/__init__.py``) for what each benchmark measures and how.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import PROCESSES, BenchResult, Row, machine_info  # noqa: E402

MODULES = {
    "1": "benchmarks.b1_worker_slot",
    "1c": "benchmarks.b1c_rate_limit",
    "2": "benchmarks.b2_triggerer",
    "3": "benchmarks.b3_poll_economy",
    "4": "benchmarks.b4_s3_streaming",
    "5": "benchmarks.b5_import_parse",
    "6": "benchmarks.b6_ui_page",
    "7": "benchmarks.b7_spend_slack",
}
RESULTS = REPO / "benchmarks" / "results"
COLUMNS = ("bench", "metric", "ours", "baseline", "ratio", "target", "met")
HEADERS = ("#", "metric", "ours", "baseline", "ratio", "target", "met?")


def _isolate_airflow(home: Path) -> None:
    """A throw-away Airflow home for this run, set before anything imports Airflow."""
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    # Benchmarks measure the provider, not log formatting: INFO lines (one per status change per
    # trigger) would dominate the CPU of the triggerer benchmark. Warnings still show.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    # The provider's own warnings (e.g. one per 429 waited out in benchmark 3b) would flood the table;
    # the benchmarks count those events from the emulator's statistics instead.
    os.environ["AIRFLOW__LOGGING__NAMESPACE_LEVELS"] = (
        "airflow_provider_segmind=ERROR airflow.task.hooks.airflow_provider_segmind=ERROR "
        "airflow.task.operators.airflow_provider_segmind=ERROR"
    )
    for name in list(os.environ):
        if name.startswith("AIRFLOW_CONN_"):
            del os.environ[name]


def _selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(MODULES)
    numbers: list[str] = []
    for item in only:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            number = part.lower()
            if number not in MODULES:
                raise SystemExit(f"--only: no benchmark {number}; choose from {list(MODULES)}")
            if number not in numbers:
                numbers.append(number)
    return numbers


def render_table(rows: list[Row]) -> str:
    cells = [HEADERS] + [tuple(str(getattr(row, c)) for c in COLUMNS) for row in rows]
    widths = [max(len(cell[i]) for cell in cells) for i in range(len(COLUMNS))]
    widths[1] = min(widths[1], 72)

    def line(cell: tuple[str, ...]) -> str:
        parts = []
        for i, text in enumerate(cell):
            text = text if len(text) <= widths[i] else text[: widths[i] - 1] + "…"
            parts.append(text.rjust(widths[i]) if i in (2, 3, 4) else text.ljust(widths[i]))
        return "| " + " | ".join(parts) + " |"

    sep = "|-" + "-|-".join("-" * w for w in widths) + "-|"
    return "\n".join([line(cells[0]), sep, *(line(cell) for cell in cells[1:])])


def render_machine(machine: dict[str, Any]) -> str:
    versions = machine["versions"]
    return (
        f"Machine: {machine['cpu_count']} CPU ({machine['cpu_model']}), {machine['memory_gb']} GB RAM, "
        f"Python {machine['python']}, Airflow {versions.get('apache-airflow')} "
        f"(task SDK {versions.get('apache-airflow-task-sdk')}), aiohttp {versions.get('aiohttp')}, "
        f"boto3 {versions.get('boto3')}, moto {versions.get('moto')}, segmind SDK {versions.get('segmind')}"
    )


def _write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    tmp.replace(path)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def render_markdown(
    machine: dict[str, Any], mode: str, total: float, rows: list[Row], results: list[BenchResult], interrupted: bool
) -> str:
    """The table as Markdown (for the README), with the machine, the row notes and the method notes."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        f"{render_machine(machine)}.",
        "",
        f"Mode: {mode}; total {total / 60:.1f} min" + (" (INTERRUPTED)" if interrupted else "") + ".",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---" for _ in HEADERS) + "|",
    ]
    lines += ["| " + " | ".join(cell(str(getattr(row, c))) for c in COLUMNS) + " |" for row in rows]
    notes = [f"- [{row.bench}] {row.note}" for row in rows if row.note]
    notes += [f"- {note}" for result in results for note in result.notes]
    notes += [f"- benchmark {r.number} failed: {r.error}" for r in results if r.error]
    return "\n".join([*lines, "", *notes, ""])


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--only", action="append", metavar="N", help="run only benchmark N (repeatable, or 1,3)")
    parser.add_argument("--quick", action="store_true", help="smaller loads for a smoke check (~2-3 min)")
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the figures (default benchmarks/results/latest.json for a full run of all five, "
        "latest-quick.json / latest-partial.json otherwise)",
    )
    args = parser.parse_args(argv)
    numbers = _selected(args.only)
    full = not args.quick and numbers == list(MODULES)
    if args.json is not None:
        out_path: Path = args.json
    elif full:
        out_path = RESULTS / "latest.json"
    else:
        out_path = RESULTS / ("latest-quick.json" if args.quick else "latest-partial.json")

    signal.signal(signal.SIGTERM, _on_sigterm)
    machine = machine_info()
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    results: list[BenchResult] = []
    interrupted = False
    mode = "quick" if args.quick else "full"
    print(render_machine(machine), flush=True)
    print(f"Mode: {mode}; benchmarks {', '.join(numbers)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="segmind-bench-") as tmp:
        _isolate_airflow(Path(tmp) / "airflow-home")
        try:
            for number in numbers:
                module = importlib.import_module(MODULES[number])
                title = getattr(module, "TITLE", f"benchmark {number}")
                print(f"\n[{number}] {title} ...", flush=True)
                t0 = time.monotonic()
                try:
                    result: BenchResult = module.run(args.quick)
                except KeyboardInterrupt:
                    raise
                except Exception as err:
                    result = BenchResult(number, title, error=f"{type(err).__name__}: {err}")
                    result.rows.append(Row(str(number), title, "ERROR", note=str(err)[:300]))
                    result.figures["traceback"] = traceback.format_exc()
                    print(traceback.format_exc(), file=sys.stderr, flush=True)
                finally:
                    PROCESSES.stop_all()
                result.duration_s = time.monotonic() - t0
                results.append(result)
                print(f"[{number}] done in {result.duration_s:.0f} s", flush=True)
        except KeyboardInterrupt:
            interrupted = True
            print("\nInterrupted: stopping every process this run started ...", file=sys.stderr, flush=True)
        finally:
            PROCESSES.stop_all()

    total = time.monotonic() - started
    rows = [row for result in results for row in result.rows]
    print()
    print(render_machine(machine))
    print(f"Mode: {mode}; total {total / 60:.1f} min" + (" (INTERRUPTED)" if interrupted else ""))
    print()
    print(render_table(rows))
    notes = [(row.bench, row.note) for row in rows if row.note]
    if notes:
        print("\nRow notes:")
        for bench, note in notes:
            print(f"  [{bench}] {note}")
    missed = [row for row in rows if row.met.startswith("NO")]
    if missed:
        print("\nTargets missed:")
        for row in missed:
            print(f"  [{row.bench}] {row.metric}: {row.ours} vs target {row.target} ({row.ratio})")
    for result in results:
        for note in result.notes:
            print(f"\n  - {note}")
        if result.error:
            print(f"\n  ! benchmark {result.number} failed: {result.error}")
    document = {
        "started_at": started_at,
        "mode": mode,
        "benchmarks_run": numbers,
        "interrupted": interrupted,
        "total_s": round(total, 1),
        "machine": machine,
        "rows": [row.as_dict() for row in rows],
        "benchmarks": {
            str(result.number): {
                "title": result.title,
                "duration_s": round(result.duration_s, 1),
                "error": result.error,
                "notes": result.notes,
                "figures": result.figures,
            }
            for result in results
        },
    }
    if interrupted and args.json is None:
        out_path = RESULTS / "latest-interrupted.json"  # never replace a complete run's figures
    _write_json(out_path, document)
    markdown = out_path.with_suffix(".md")
    _write_text(markdown, render_markdown(machine, mode, total, rows, results, interrupted))
    print(f"\nFigures written to {out_path} (table as Markdown: {markdown})")
    return 130 if interrupted else (1 if any(r.error for r in results) else 0)


if __name__ == "__main__":
    sys.exit(main())
