"""Can this Python build the project's virtualenvs? ``make`` runs it before it creates one.

Without it, the two commands fail late and obscurely on a fresh machine: a Python 3.10 gets as far
as installing packages (``requires-python >=3.11`` refuses the project minutes in), and Debian and
Ubuntu ship ``venv``'s ``ensurepip`` separately (``python3.X-venv``), so ``python3 -m venv`` stops
with "ensurepip is not available". This names the problem and the one-line fix first.

    python .ci/check_python.py NAME   # NAME: how the Makefile called this interpreter (PYTHON)

Only the standard library, and syntax Python 3.6+ parses: it runs on the interpreter it judges.
"""

from __future__ import annotations

import importlib.util
import platform
import sys

MINIMUM = (3, 11)


def problems(name: str, version: tuple[int, int], has_ensurepip: bool) -> list[str]:
    """What stops ``name`` (Python ``version``) from building the virtualenvs, each with its fix."""
    found = []
    if version < MINIMUM:
        found.append(
            f"{name} is Python {version[0]}.{version[1]}; this project needs {MINIMUM[0]}.{MINIMUM[1]} or newer. "
            f"Install one (Debian/Ubuntu: sudo apt install python3.11 python3.11-venv) and name it: "
            f"make PYTHON=python3.11 (or python3.12, ...)"
        )
    elif not has_ensurepip:
        found.append(
            f"{name} (Python {version[0]}.{version[1]}) has no ensurepip, so `{name} -m venv` cannot create the "
            f"virtualenv. Debian/Ubuntu: sudo apt install python{version[0]}.{version[1]}-venv"
        )
    return found


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else sys.executable
    version = (sys.version_info[0], sys.version_info[1])
    found = problems(name, version, importlib.util.find_spec("ensurepip") is not None)
    for problem in found:
        print(f"make: {problem}", file=sys.stderr)
    if not found:
        print(f"make: using {name} (Python {platform.python_version()})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
