"""A local, faithful emulator of Segmind's API, so DAGs, tests, demos and benchmarks run with no key and no network.

It is a real HTTP server (aiohttp) that speaks Segmind's protocol (docs.segmind.com/api-reference): ``POST /v1/{slug}``
(image bytes), the v2 queue (``POST /v2/{slug}``, ``GET /v2/requests/{id}/status``, ``GET
/v2/requests/{id}``), ``GET /v1/get-user-credits``, and public media URLs (``/media/{id}.jpeg``) that
serve real JPEG/PNG images showing their prompt. It does not import Airflow; rendering needs Pillow
(``pip install 'airflow-provider-segmind[emulator]'``).

In-process (tests)::

    from airflow_provider_segmind.emulator import EmulatorConfig, SegmindEmulator

    with SegmindEmulator(EmulatorConfig.for_profile("fast")) as emu:
        emu.base_url            # "http://127.0.0.1:41234" (a free port)
        emu.api_key             # "SG_0123456789abcdef", the emulator's default key
        emu.script([{"endpoint": "status", "fault": "500", "times": 2}])
        emu.configure(credits=0)  # from now on, submits answer 406
        emu.stats()["submissions"]

From a shell (demo, benchmarks, other processes)::

    python -m airflow_provider_segmind.emulator --port 8787 --profile fast --fault 500=0.05
    # Airflow connection: host http://127.0.0.1:8787, password SG_0123456789abcdef

Inside your own event loop: ``app = create_app(config)``, state at ``get_state(app)``.

Behaviour worth knowing:

- Jobs are timestamps: QUEUED for ``queue_time``, PROCESSING for ``inference_time``, then COMPLETED
  (or FAILED); results answer 404 after ``result_ttl``. No task per job.
- A prompt containing ``__fail__`` FAILs ("Internal inference error (emulated)"), ``__unsafe__``
  FAILs with a content-safety reason. On v2, invalid SD3 parameters are accepted and the job FAILs
  with the validation message (``v2_validation="submit"`` answers 400 instead); v1 answers 400.
  (Segmind's error docs: 400 is a malformed body or a missing field; 422 is "the inference itself
  ran and failed. NOT a malformed request body", a FAILED job.)
- Faults, random (``faults={"500": 0.1}``, seeded) or scripted (``script([...])``, taking precedence):
  ``429 500 502 504 html502 bad_json reset_before reset_after slow`` on API calls, ``truncate
  wrong_type`` on media, ``failed_job content_safety`` on jobs. ``reset_after``, ``504`` and ``slow``
  on a submit create and bill the job first, as an upstream that accepted it would.
- ``/_emulator/...`` (no auth): ``stats``, ``jobs[/{id}]``, ``requests?path_prefix=``, ``script``,
  ``expire/{id}``, ``reset``, ``config``, ``health``, and ``blob/{nbytes}`` for download benchmarks.
- Stats and logs name keys by :func:`key_label` (a SHA-256 prefix), never by the key itself.
- The request history's rows take every shape the real one may have (``history_*`` settings;
  bundles in ``HISTORY_PROFILES``, e.g. ``configure(history_profile="all")``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_segmind.emulator.config import (
    DEFAULT_API_KEY,
    HISTORY_PROFILES,
    OWN_USER_EMAIL,
    OWN_USER_ID,
    PROFILES,
    TEAMMATE_USER_EMAIL,
    TEAMMATE_USER_ID,
    EmulatorConfig,
)
from airflow_provider_segmind.emulator.state import EmulatorState, key_label

if TYPE_CHECKING:
    from airflow_provider_segmind.emulator.app import STATE_KEY, create_app, get_state
    from airflow_provider_segmind.emulator.server import SegmindEmulator

#: Names that need aiohttp, imported on first use so configs and key labels stay cheap to import.
_LAZY = {
    "STATE_KEY": "airflow_provider_segmind.emulator.app",
    "create_app": "airflow_provider_segmind.emulator.app",
    "get_state": "airflow_provider_segmind.emulator.app",
    "SegmindEmulator": "airflow_provider_segmind.emulator.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_API_KEY",
    "HISTORY_PROFILES",
    "OWN_USER_EMAIL",
    "OWN_USER_ID",
    "PROFILES",
    "STATE_KEY",
    "TEAMMATE_USER_EMAIL",
    "TEAMMATE_USER_ID",
    "EmulatorConfig",
    "EmulatorState",
    "SegmindEmulator",
    "create_app",
    "get_state",
    "key_label",
]
