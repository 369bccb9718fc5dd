"""Provider metadata Airflow's ProvidersManager reads through the ``apache_airflow_provider`` entry point.

Airflow 3.2+ builds the connection form from ``ui-field-behaviour`` and ``conn-fields`` here
without importing the hook (so this module must stay import-light); 3.1 calls the hook's
classmethods instead. Both describe the same form.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from airflow_provider_segmind import __version__

_INTEGRATION = "Segmind"
_PKG = "airflow_provider_segmind"


def _modules(*names: str) -> list[dict[str, Any]]:
    return [{"integration-name": _INTEGRATION, "python-modules": [f"{_PKG}.{name}" for name in names]}]


#: The connection form, written once: provider info (3.2+) and the hook's classmethods (3.1) read it.
UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema", "port", "login"],
    "relabeling": {"password": "API Key", "host": "Base URL"},
    "placeholders": {
        "password": "SG_...",
        "host": "Optional. Defaults to https://api.segmind.com",
        "extra": '{"read_timeout": 60, "max_retries": 4}',
    },
}
#: Connection extras: name -> (label, JSON type, description). Documented in docs/connection.md.
EXTRA_FIELDS: dict[str, tuple[str, str, str]] = {
    "connect_timeout": ("Connect timeout (s)", "number", "Default 10."),
    "read_timeout": ("Read timeout (s)", "number", "Default 60."),
    "run_sync_timeout": ("v1 read timeout (s)", "number", "Default 300."),
    "max_retries": ("Max retries", "integer", "Retries after the first attempt. Default 4."),
    "retry_backoff": ("Retry backoff (s)", "number", "First exponential backoff. Default 1."),
    "proxy": (
        "Proxy URL",
        "string",
        "http://[user:password@]host:port for every API call (worker and triggerer). Empty: HTTP(S)_PROXY/NO_PROXY.",
    ),
    "history_url": (
        "Request history URL",
        "string",
        "Segmind's request-history API, used to find a job whose submit answer was lost or whose record expired. "
        "Empty: https://api.spotprod.segmind.com/inference-request/request-history (the official SDK's).",
    ),
    "history_lookup": (
        "Look up the request history",
        "boolean",
        "Default on. Off: never ask the history, so a lost submit answer or an expired record means a new "
        "(billed) submit.",
    ),
    "history_timezone": (
        "Request history time zone",
        "string",
        "The zone of the history's timestamps that carry none: an IANA name (Asia/Kolkata) or an offset (+05:30). "
        "Empty: each is read both as UTC and as +05:30.",
    ),
    "history_user_id": (
        "Request history user id",
        "string",
        "Team accounts: only this member's requests are searched (the history lists every member's). "
        "Set this or the user email, not both.",
    ),
    "history_user_email": (
        "Request history user email",
        "string",
        "Team accounts: like the user id, by email. Set this or the user id, not both.",
    ),
    "check_model_catalogue": (
        "Check the model catalogue",
        "boolean",
        "Default on (off for a loopback host such as the emulator). Before a submit, refuse a model slug "
        "Segmind's model catalogue does not list, naming close matches; an unreachable catalogue never stops a run. "
        "Off for models private to the account.",
    ),
    "max_spend_per_day": (
        "Max spend per day (USD)",
        "number",
        "Empty: no cap. Before every submit, today's (UTC) spend in Segmind's request history plus the jobs in "
        "flight must leave room for the job, or the task fails without billing (read from the request history).",
    ),
    "requests_per_minute": (
        "Key's requests a minute",
        "integer",
        "The key's rate limit (Free 5, Pro 50). Set: every process sends at most its share, so no call is "
        "answered 429. Empty: no budget (a 429 is waited out).",
    ),
    "rate_limit_worker_slots": (
        "Worker slots sharing the key",
        "integer",
        "With requests_per_minute: the size of the pool the Segmind tasks run in. Default 1.",
    ),
    "rate_limit_triggerers": (
        "Triggerers sharing the key",
        "integer",
        "With requests_per_minute: how many triggerer processes run. Default 1.",
    ),
}

#: Defaults the form shows for extras whose absence does not mean "off" (both forms read it).
EXTRA_DEFAULTS: dict[str, Any] = {"history_lookup": True, "check_model_catalogue": True}


def _conn_fields() -> dict[str, Any]:
    return {
        name: {
            "label": label,
            "description": description,
            "schema": {
                "type": [kind, "null"],
                **({"minimum": 0} if kind in ("number", "integer") else {}),
                **({"default": EXTRA_DEFAULTS[name]} if name in EXTRA_DEFAULTS else {}),
            },
        }
        for name, (label, kind, description) in EXTRA_FIELDS.items()
    }


def _documentation_url() -> str | None:
    """The ``Documentation`` project URL of the installed distribution (pyproject.toml is its one source).

    Airflow 3.2+ reads it from the package metadata itself (and overrides this); 3.1 shows this one.
    """
    try:
        urls: list[str] = metadata.metadata("airflow-provider-segmind").get_all("Project-URL") or []
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return None
    for entry in urls:
        label, _, url = entry.partition(",")
        if label.strip().lower() == "documentation":
            return url.strip()
    return None


#: The ``[segmind]`` settings of the Segmind page (docs/operating.md), as ``airflow config list`` shows them.
_CONFIG: dict[str, Any] = {
    "segmind": {
        "description": "The Segmind page in the Airflow UI (the api-server reads these).",
        "options": {
            "ui_s3_locations": {
                "description": "Where SegmindToS3Operator stores images: s3://bucket/prefix entries, comma "
                "separated. The page lists the manifests under them. Empty: the page asks for it.",
                "version_added": "1.1.0",
                "type": "string",
                "example": "s3://my-bucket/segmind/",
                "default": "",
            },
            "ui_aws_conn_id": {
                "description": "The AWS connection the page reads the manifests and images with.",
                "version_added": "1.1.0",
                "type": "string",
                "example": None,
                "default": "aws_default",
            },
            "ui_refresh_seconds": {
                "description": "Seconds a listing of the manifests is reused before the page lists again.",
                "version_added": "1.1.0",
                "type": "float",
                "example": None,
                "default": "30",
            },
            "ui_record_failures": {
                "description": "Register the listener that records each failed Segmind task's cause for the "
                "page's 'failures by cause'. Off by default: Airflow 3.2+ refuses to load a DAG with a "
                "task set to end_from_trigger=True while any plugin registers a listener.",
                "version_added": "1.1.0",
                "type": "boolean",
                "example": None,
                "default": "False",
            },
        },
    }
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's metadata (the equivalent of an official provider's provider.yaml)."""
    return {
        "package-name": "airflow-provider-segmind",
        "name": "Segmind",
        "description": "`Segmind <https://www.segmind.com/>`__ serverless image generation "
        "(Stable Diffusion 3 Large and any Segmind model): deferrable operators, trigger, sensor, "
        "S3 transfer and a local emulator.",
        "versions": [__version__],
        "documentation-url": _documentation_url(),
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://docs.segmind.com/",
                "tags": ["service"],
            }
        ],
        "hooks": _modules("hooks.segmind"),
        "operators": _modules("operators.segmind", "operators.review", "transfers.publish"),
        "sensors": _modules("sensors.segmind"),
        "triggers": _modules("triggers.segmind"),
        "transfers": [
            {
                "source-integration-name": _INTEGRATION,
                "target-integration-name": "Amazon Simple Storage Service (S3)",
                "python-module": f"{_PKG}.transfers.segmind_to_s3",
            }
        ],
        "extra-links": [f"{_PKG}.operators.segmind.SegmindOutputLink"],
        "config": _CONFIG,
        "connection-types": [
            {
                "hook-class-name": f"{_PKG}.hooks.segmind.SegmindHook",
                "hook-name": "Segmind",
                "connection-type": "segmind",
                "ui-field-behaviour": {key.replace("_", "-"): value for key, value in UI_FIELD_BEHAVIOUR.items()},
                "conn-fields": _conn_fields(),
            }
        ],
    }
