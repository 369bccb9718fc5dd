"""Every place the provider depends on which Airflow it runs on, in one module.

As the official providers do (``providers/*/version_compat.py``): the version flags and the imports
whose home differs between supported Airflow lines are here, and the modules that need them import
them from here. Feature tests that read the running task (``context["task_state_store"]``, Airflow
3.3+: ``operators/_records.py``) stay with their code: they ask the task, not the version.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Final

__all__ = ["AIRFLOW_V_3_2_PLUS", "TaskSuccessEvent", "airflow_sensitive_fields"]


def _airflow_core_version() -> tuple[int, int] | None:
    """``apache-airflow-core``'s major and minor version; ``None`` if it cannot be read."""
    try:
        major, minor = (int(part) for part in version("apache-airflow-core").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return None
    return major, minor


#: Airflow 3.2+. An unreadable version counts as the newest line.
#: Airflow 3.1 hashes an asset alias event's extra (``frozenset(extra.items())``): no list values;
#: 3.2 and later compare the extra as JSON instead (``TaskInstance.register_asset_changes_in_db``).
AIRFLOW_V_3_2_PLUS: Final = (_airflow_core_version() or (3, 2)) >= (3, 2)

try:  # Airflow 2.10+ and every 3.x: a trigger may end its task without a worker resume.
    from airflow.triggers.base import TaskSuccessEvent
except ImportError:  # pragma: no cover - no supported Airflow lacks it; kept so the trigger's rule can say "off"
    TaskSuccessEvent = None  # type: ignore[assignment,misc]


def airflow_sensitive_fields() -> frozenset[str]:
    """The running Airflow's ``DEFAULT_SENSITIVE_FIELDS``; empty if it cannot be imported."""
    try:
        from airflow.sdk._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS
    except ImportError:  # pragma: no cover - present on every supported Airflow (3.1.0+)
        return frozenset()
    return frozenset(str(name).lower() for name in DEFAULT_SENSITIVE_FIELDS)
