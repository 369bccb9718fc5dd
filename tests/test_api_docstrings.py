"""Every public parameter has a docstring entry: the API reference (docs/api.md) is generated from them.

mkdocstrings renders each public class's signature (names, types, defaults: they cannot drift) and
its ``:param name:`` entries; a parameter without an entry would show as a bare name. The public
classes are those of the public modules (docs/versioning.md, "The public API") that their
``__all__`` exports. A parameter a class passes on through ``**kwargs`` is documented where it is
declared, on a class of this package up the MRO (the shared operator base is on the API page too);
Airflow's own ``BaseOperator`` arguments are Airflow's to document.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

#: The public modules whose classes docs/api.md renders (docs/versioning.md's public API).
PUBLIC_MODULES = (
    "airflow_provider_segmind.hooks.segmind",
    "airflow_provider_segmind.operators.segmind",
    "airflow_provider_segmind.operators.review",
    "airflow_provider_segmind.sensors.segmind",
    "airflow_provider_segmind.triggers.segmind",
    "airflow_provider_segmind.transfers.segmind_to_s3",
    "airflow_provider_segmind.transfers.publish",
    "airflow_provider_segmind.exceptions",
)
PACKAGE = "airflow_provider_segmind"
API_PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"
_PARAM = re.compile(r":param\s+(?:[^:]*\s)?(\w+):")

#: Public by ``__all__`` but not on the API page, with why.
NOT_RENDERED = {
    # Built by the hook from the connection, never by a DAG; its fields are the connection's
    # extras, documented field by field in docs/connection.md.
    "SegmindConnectionSettings": "docs/connection.md",
}


def public_classes() -> list[type]:
    """The classes each public module exports (``__all__``, else its public names), defined in this package."""
    found: dict[str, type] = {}
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
        for attr in names:
            value = getattr(module, attr)
            if inspect.isclass(value) and value.__module__.startswith(PACKAGE):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[key] for key in sorted(found)]


def _own_classes(cls: type) -> list[type]:
    return [klass for klass in cls.__mro__ if klass.__module__.startswith(PACKAGE)]


def declared_parameters(cls: type) -> set[str]:
    """Keyword parameters of ``cls()``: its ``__init__``'s, and through ``**kwargs`` its package bases'."""
    params: set[str] = set()
    for klass in _own_classes(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        signature = inspect.signature(init)
        params |= {
            name
            for name, p in signature.parameters.items()
            if name != "self" and not name.startswith("_") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return params


def documented_parameters(cls: type) -> set[str]:
    """``:param name:`` entries of the class and ``__init__`` docstrings up its package MRO."""
    documented: set[str] = set()
    for klass in _own_classes(cls):
        for doc in (klass.__dict__.get("__doc__"), getattr(klass.__dict__.get("__init__"), "__doc__", None)):
            documented |= set(_PARAM.findall(doc or ""))
    return documented


@pytest.mark.parametrize(
    "cls", [cls for cls in public_classes() if cls.__name__ not in NOT_RENDERED], ids=lambda cls: cls.__qualname__
)
def test_every_public_parameter_has_a_docstring_entry(cls: type) -> None:
    missing = declared_parameters(cls) - documented_parameters(cls)
    assert not missing, f"{cls.__qualname__}: no ':param NAME:' for {sorted(missing)}"


def test_the_api_page_renders_every_public_class() -> None:
    """Each public class has a ``::: public.module.Name`` block (from a module that exports it)."""
    page = API_PAGE.read_text(encoding="utf-8")
    rendered = set(re.findall(r"^::: ([\w.]+)$", page, re.MULTILINE))
    missing = []
    for cls in public_classes():
        if cls.__name__ in NOT_RENDERED:
            continue
        paths = {
            f"{module}.{name}"
            for module in PUBLIC_MODULES
            for name, value in vars(importlib.import_module(module)).items()
            if value is cls
        }
        if not paths & rendered:
            missing.append(cls.__name__)
    assert missing == []


def test_the_check_sees_a_missing_entry() -> None:
    class Documented:
        """:param kept: yes."""

        def __init__(self, *, kept: int = 1, forgotten: str = "") -> None: ...

    Documented.__module__ = PACKAGE + ".example"
    assert declared_parameters(Documented) - documented_parameters(Documented) == {"forgotten"}
