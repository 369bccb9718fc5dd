"""Print the pins of what a venv holds beyond constraints/airflow-3.3.txt (``make constraints-cluster``).

The cluster venv is the 3.3 dev install plus tests/cluster/requirements.txt; its extra packages are
pinned in their own file so the main freeze stays the one `make constraints` writes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BASE = Path(__file__).resolve().parents[2] / "constraints" / "airflow-3.3.txt"
SKIP = re.compile(r"^(airflow-provider-segmind|uv|pip|setuptools|wheel)==|^-e ", re.I)


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower())


def main(python: str) -> None:
    base = {normal(line.split("==")[0]) for line in BASE.read_text().splitlines() if "==" in line}
    freeze = subprocess.run(
        [str(Path(python).parent / "uv"), "pip", "freeze", "--python", python],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    print("# The cluster test's packages beyond constraints/airflow-3.3.txt (tests/cluster/requirements.txt,")
    print("# resolved with it; regenerate with make constraints-cluster). Used with -c next to airflow-3.3.txt")
    print("# by make venv-cluster.")
    for line in sorted(freeze, key=str.lower):
        if "==" in line and not SKIP.search(line) and normal(line.split("==")[0]) not in base:
            print(line)


if __name__ == "__main__":
    main(sys.argv[1])
