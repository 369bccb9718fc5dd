"""The declared floors of pyproject.toml as ``==`` pins, and a check that a venv really has them.

``make test-lowest`` installs the package with these pins as constraints, so every direct
dependency (and those of the ``amazon`` and ``emulator`` extras and of the ``test`` dependency
group) is at the lowest version pyproject.toml claims to support; a floor that cannot even be
installed beside the others fails the install instead of silently resolving higher (uv's
``--resolution lowest-direct`` alone lets another package's requirement lift a direct dependency
above its floor).

    python .ci/floors.py pins           # print name==floor lines (constraints)
    python .ci/floors.py check PYTHON   # compare what PYTHON's environment has installed

Only the standard library: it runs before anything is installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
#: The published extras whose dependencies are the package's own.
EXTRAS = ("amazon", "emulator")
#: The PEP 735 dependency groups the tests install (``dev`` adds lint tools, ``docs``/``release``
#: the site and upload tools: no floors to test there).
GROUPS = ("test",)
_REQ = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)")


def _group(groups: dict[str, list[Any]], name: str) -> list[str]:
    """A dependency group's requirements, its ``{include-group = ...}`` entries expanded (PEP 735)."""
    requirements: list[str] = []
    for item in groups[name]:
        requirements += _group(groups, item["include-group"]) if isinstance(item, dict) else [item]
    return requirements


def floors() -> dict[str, str]:
    """Normalised distribution name -> its declared minimum (``>=X`` or ``==X``)."""
    pyproject = tomllib.loads(PYPROJECT.read_text())
    project = pyproject["project"]
    requirements = list(project["dependencies"])
    for extra in EXTRAS:
        requirements += project["optional-dependencies"][extra]
    for group in GROUPS:
        requirements += _group(pyproject["dependency-groups"], group)
    result: dict[str, str] = {}
    for requirement in requirements:
        match = _REQ.match(requirement)
        if match is None:
            raise SystemExit(f"cannot parse requirement {requirement!r}")
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        for spec in match["spec"].split(","):
            spec = spec.strip()
            if spec.startswith((">=", "==")):
                floor = spec[2:].strip()
                if result.get(name, floor) != floor:
                    raise SystemExit(f"{name} has two different floors: {result[name]} and {floor}")
                result[name] = floor
        if name not in result:
            raise SystemExit(f"{requirement!r} declares no floor (>= or ==): every dependency needs a tested one")
    return result


def _same(installed: str, floor: str) -> bool:
    """``3.9`` and ``3.9.0`` are the same release."""

    def parts(version: str) -> list[str]:
        items = version.split(".")
        while len(items) > 1 and items[-1] == "0":
            items.pop()
        return items

    return parts(installed) == parts(floor)


def check(python: str) -> int:
    """Exit non-zero unless every declared floor is exactly what ``python``'s environment has."""
    code = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    listing = json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)
    installed = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in listing.items()}
    bad = 0
    for name, floor in sorted(floors().items()):
        have = installed.get(name)
        ok = have is not None and _same(have, floor)
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {name:45} declared >= {floor:10} installed {have}")
    if bad:
        print(f"{bad} direct dependencies are not at their declared floor", file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["pins"]:
        for name, floor in sorted(floors().items()):
            print(f"{name}=={floor}")
        return 0
    if argv[:1] == ["check"] and len(argv) == 2:
        return check(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
