"""The Segmind plugin: a page in the Airflow UI (Airflow 3.1+) and the listener that feeds its failures.

Registered through the ``airflow.plugins`` entry point (pyproject.toml), so installing the provider
is enough. The
page is a FastAPI app (``plugins._app``) the api-server mounts at ``/segmind`` and an external view
that puts it in the UI's navigation (under "Browse"), shown in the UI's frame. What it reads and
who sees what: docs/operating.md.
"""

from __future__ import annotations

from typing import Any, Final

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_segmind.plugins._failures import failure_listener

#: Where the api-server mounts the page (the external view's link points here).
URL_PREFIX: Final = "/segmind"


class LazyApp:
    """An ASGI app that builds the page's FastAPI app at its first request.

    Why: every Airflow process loads the plugins (the task runner does, for the listener), and only
    the api-server serves the page, so FastAPI, Jinja2 and the page's code load only there.
    """

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            from airflow_provider_segmind.plugins._app import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


def _failure_listeners() -> list[Any]:
    """The failure listener, only with ``[segmind] ui_record_failures = True``.

    Why opt-in: while any plugin registers a listener, Airflow 3.2+ refuses to load a DAG with a task
    whose ``end_from_trigger`` is true ("Listeners are not supported with end_from_trigger=True for
    deferrable operators", ``airflow/dag_processing/dagbag.py``, ``DagBag.bag_dag``), so a listener
    registered by merely installing the provider would break such DAGs everywhere.
    """
    from airflow.configuration import conf

    return [failure_listener] if conf.getboolean("segmind", "ui_record_failures", fallback=False) else []


class SegmindPlugin(AirflowPlugin):
    """The Segmind page and its failure listener."""

    name = "segmind"
    fastapi_apps: list[Any] = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Segmind"}]
    external_views: list[Any] = [
        {
            "name": "Segmind",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "segmind",
        }
    ]
    listeners: list[Any] = _failure_listeners()
