"""An auth manager for the Segmind page's tests: Airflow's SimpleAuthManager, with one-DAG users.

SimpleAuthManager lets every role read every DAG, so it cannot show the page hiding a DAG. Here a
user named ``only__<dag_id>`` may read that one DAG (and nothing else of DAGs); every other user is
SimpleAuthManager's. The page only asks the configured auth manager, as it would FAB's or Keycloak's.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

ONLY: str = "only__"


class OneDagAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if user.username.startswith(ONLY):
            return method == "GET" and details is not None and details.id == user.username[len(ONLY) :]
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
