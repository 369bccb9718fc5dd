"""A retry starts from ``execute``, never from an earlier try's trigger event (Airflow 3.1.0).

Airflow 3.1.0 does not clear a task instance's ``next_method``/``next_kwargs`` when a try that
resumed from a deferral ends in UP_FOR_RETRY: the Execution API's ``ti_update_state`` sets only the
state (``_create_ti_state_update_query_and_update_state``: ``query.values(state=updated_state)``), and
``prepare_db_for_next_try`` does not clear them either, so ``ti_run`` hands them to the next try,
whose task runner calls ``resume_execution`` instead of ``execute``. The retry of a deferred Segmind
task thus re-ran ``execute_complete`` with the event of the try before it: a FAILED job's retries
failed with the first job's error and never submitted again (seen on a real 3.1.0 scheduler and
under ``dag.test()``). Upstream: apache/airflow#56704, fixed by apache/airflow#56731 (3.1.1+, which
clears both on every terminal and retry state).

So :class:`~airflow_provider_segmind.triggers.segmind.SegmindJobTrigger` stamps every event with the
number of the try that deferred (``try_number``, a trigger kwarg the operators and the sensor set),
and :class:`FreshRetryResume` checks it when the task resumes: an event of another try is dropped,
logged, and the try runs ``execute``, as every fixed Airflow does. The stamp rides in the event, not
in the deferral's own kwargs, because ``dag.test()`` resumes a task with the event alone. An event
without it (a trigger serialized by an older provider version) resumes as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_segmind.triggers.events import EVENT_TRY_NUMBER, try_number_of

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["FreshRetryResume"]


class FreshRetryResume(BaseOperator):
    """Resume only with an event of this try; another try's event starts the task over (see the module)."""

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        event = (next_kwargs or {}).get("event")
        deferred_try = event.get(EVENT_TRY_NUMBER) if isinstance(event, Mapping) else None
        current = try_number_of(context)
        if isinstance(deferred_try, int) and current is not None and deferred_try != current:
            self.log.warning(
                "This is try %d, but Airflow resumed it in %s with the trigger event of try %d (status %r): this "
                "Airflow keeps a deferred task's next_method across retries (Airflow 3.1.0, apache/airflow#56704). "
                "Dropping that event and running the task from the start.",
                current,
                next_method,
                deferred_try,
                event.get("status") if isinstance(event, Mapping) else None,
            )
            return self.execute(context)
        return super().resume_execution(next_method, next_kwargs, context)
