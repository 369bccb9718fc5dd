"""Print the pins of what a venv holds beyond its Airflow line's freeze (``make constraints-cluster``).

``python tests/cluster/pins.py VENV_PYTHON constraints/airflow-3.3.txt``. The cluster venv is the dev
install on that line plus tests/cluster/requirements.txt; its extra packages are pinned in their own
file (constraints/cluster-LINE.txt) so the line's freeze stays the one `make constraints` writes.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SKIP = re.compile(r"^(airflow-provider-segmind|uv|pip|setuptools|wheel)==|^-e ", re.I)


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.lower())


def main(python: str, base_file: str) -> None:
    base = {normal(line.split("==")[0]) for line in Path(base_file).read_text().splitlines() if "==" in line}
    freeze = subprocess.run(
        [str(Path(python).parent / "uv"), "pip", "freeze", "--python", python],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    print(f"# The cluster test's packages beyond {base_file} (tests/cluster/requirements.txt,")
    print("# resolved with it; regenerate with make constraints-cluster). Used with -c next to it")
    print("# by make venv-cluster.")
    for line in sorted(freeze, key=str.lower):
        if "==" in line and not SKIP.search(line) and normal(line.split("==")[0]) not in base:
            print(line)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
