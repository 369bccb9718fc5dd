"""Airflow discovers the provider, its connection type and its form on every supported version.

Run on each Airflow line CI tests (3.1 with the FAB provider, 3.2, 3.3): each test asks a fresh
Airflow process, the way a deployment does, so nothing cached in the test process hides a hook that
Airflow refused. On 3.1 the form comes from ``SegmindHook.get_connection_form_widgets`` (wtforms
field classes, of which Airflow 3.1 accepts only four); on 3.2+ from provider info's ``conn-fields``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from airflow_provider_segmind.get_provider_info import EXTRA_FIELDS
from airflow_provider_segmind.hooks._settings import SegmindConnectionSettings
from airflow_provider_segmind.hooks.segmind import SegmindHook

HOOK_CLASS = "airflow_provider_segmind.hooks.segmind.SegmindHook"


def _release(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _airflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_airflow_providers_hooks_lists_segmind_without_error() -> None:
    """``airflow providers hooks``, the CLI: a refused hook shows as "Error when importing hook!"."""
    done = _airflow("-m", "airflow", "providers", "hooks", "--output", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout[done.stdout.index("[") :])
    (row,) = [row for row in rows if row["connection_type"] == "segmind"]
    assert row["class"] == HOOK_CLASS
    assert row["hook_name"] == "Segmind"
    assert row["package_name"] == "airflow-provider-segmind"
    assert "Error" not in json.dumps(row)
    assert "unsupported class" not in done.stdout + done.stderr


_HOOK_META = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
(meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "segmind"]
print("HOOK_META " + json.dumps(meta.model_dump(mode="json")))
"""


def test_connection_form_has_every_extra_field() -> None:
    """What the UI's connection form is built from (the api-server's ``hook_meta`` answer)."""
    from airflow import __version__ as airflow_version

    if _release(airflow_version) < (3, 2) and importlib.util.find_spec("wtforms") is None:
        # 3.1's ProvidersManager skips every hook's form methods without wtforms (the FAB provider
        # brings it): no provider gets relabelled or extra fields there. CI runs 3.1 with FAB.
        pytest.skip("Airflow 3.1 builds provider connection forms only with wtforms (FAB) installed")
    done = _airflow("-c", _HOOK_META)
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("HOOK_META ")]
    meta: dict[str, Any] = json.loads(line.removeprefix("HOOK_META "))
    assert meta["hook_class_name"] == HOOK_CLASS
    assert meta["standard_fields"]["password"]["title"] == "API Key"
    assert meta["standard_fields"]["host"]["title"] == "Base URL"
    assert set(meta["extra_fields"]) == set(EXTRA_FIELDS)
    for name, (label, kind, description) in EXTRA_FIELDS.items():
        field = meta["extra_fields"][name]
        assert field["schema"]["title"] == label
        assert field["description"] == description
        types = set(field["schema"]["type"])
        # 3.1's form has no decimal field class: those extras are text there, numbers on 3.2+.
        allowed = {
            "integer": {"integer"},
            "boolean": {"boolean"},
            "string": {"string"},
        }.get(kind, {"number", "string"})
        assert "null" in types, name
        assert types - {"null"} <= allowed, (name, types)


def test_form_widgets_use_only_field_classes_airflow_31_accepts() -> None:
    """Airflow 3.1 drops the whole hook for any other class (it refused ``FloatField``)."""
    wtforms = pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    pytest.importorskip("flask_babel")
    accepted = {wtforms.StringField, wtforms.IntegerField, wtforms.PasswordField, wtforms.BooleanField}

    widgets = SegmindHook.get_connection_form_widgets()

    assert set(widgets) == set(EXTRA_FIELDS)
    for name, (_label, kind, _description) in EXTRA_FIELDS.items():
        assert widgets[name].field_class in accepted, name
        expected = {"integer": wtforms.IntegerField, "boolean": wtforms.BooleanField}.get(kind, wtforms.StringField)
        assert widgets[name].field_class is expected, name


def test_form_widgets_check_the_values() -> None:
    """The decimal text fields still refuse what the connection would refuse to parse."""
    wtforms = pytest.importorskip("wtforms")
    pytest.importorskip("flask_appbuilder")
    pytest.importorskip("flask_babel")
    from werkzeug.datastructures import MultiDict

    form_class = type("SegmindForm", (wtforms.Form,), SegmindHook.get_connection_form_widgets())

    def errors(**values: str) -> dict[str, Any]:
        form = form_class(formdata=MultiDict(values))
        form.validate()
        return {name: value for name, value in form.errors.items() if value}

    assert errors(read_timeout="2.5", connect_timeout="10", max_retries="3", retry_backoff="") == {}
    bad = errors(read_timeout="fast", connect_timeout="-1", max_retries="-2", retry_backoff="nan")
    assert set(bad) == {"read_timeout", "connect_timeout", "max_retries", "retry_backoff"}


def test_text_values_from_the_31_form_are_parsed() -> None:
    """Airflow 3.1's form stores decimal extras as strings; the settings read them as numbers."""
    from airflow.sdk import Connection

    extras = {"read_timeout": "2.5", "connect_timeout": "7", "run_sync_timeout": "30", "max_retries": "2"}
    conn = Connection(conn_id="segmind_form", conn_type="segmind", password="SG_x", extra=json.dumps(extras))
    settings = SegmindConnectionSettings.from_connection(conn)
    assert (settings.read_timeout, settings.connect_timeout, settings.run_sync_timeout) == (2.5, 7.0, 30.0)
    assert settings.retry_policy.max_attempts == 3


def test_airflow_providers_get_shows_the_documentation_url() -> None:
    """``airflow providers get --full``: the Documentation project URL (3.2+ reads it from the package
    metadata, 3.1 from provider info; both come from pyproject.toml's [project.urls])."""
    from importlib import metadata

    (expected,) = [
        entry.split(",", 1)[1].strip()
        for entry in metadata.metadata("airflow-provider-segmind").get_all("Project-URL") or []
        if entry.split(",", 1)[0].strip() == "Documentation"
    ]
    done = _airflow("-m", "airflow", "providers", "get", "airflow-provider-segmind", "--full", "--output", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    (info,) = json.loads(done.stdout[done.stdout.index("[") :])
    assert info["package-name"] == "airflow-provider-segmind"
    assert expected.startswith("https://")
    # Airflow 3.2.2 keeps the space that follows "Documentation," in the metadata (3.3 strips it).
    assert info["documentation-url"].strip() == expected
