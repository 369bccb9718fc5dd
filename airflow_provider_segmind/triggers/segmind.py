"""SegmindJobTrigger: wait for a Segmind v2 job in the triggerer and emit its one event.

The trigger is only a polling loop, as in the official dbt Cloud provider: the hook owns all I/O,
:class:`~airflow_provider_segmind.triggers.job_watch.JobWatch` owns the loop (shared with the blocking
:func:`~airflow_provider_segmind.triggers.job_watch.wait_for_job`, so a task that does not defer polls on the
same schedule and ends with the same event), and this module runs it on the triggerer's event loop.
The event's schema and checks live in :mod:`airflow_provider_segmind.triggers.events`, the result summary
in :mod:`airflow_provider_segmind.utils.results`.

No event ever carries the API key: the key lives only in the hook's private settings, and every
error text is passed through :func:`~airflow_provider_segmind.protocol.redact` with the key.

With ``end_from_trigger`` the trigger ends a successful task itself (a ``TaskSuccessEvent`` with
the XComs the resumed task would push), so no second worker process runs for it; every other
outcome still resumes the task on the worker. :func:`ends_from_trigger` is the one rule of when a
task asks for that.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import Any, Final

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_segmind.protocol.rate_budget import budgeted_schedule
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.text import redact
from airflow_provider_segmind.protocol.vocabulary import DEFAULT_CONN_ID
from airflow_provider_segmind.triggers.events import (
    EVENT_SUCCESS,
    EVENT_TRY_NUMBER,
    try_number_of,
)
from airflow_provider_segmind.triggers.job_watch import (
    DEFAULT_MAX_CONSECUTIVE_ERRORS,
    SINGLE_ATTEMPT,
    AsyncCalls,
    JobWatch,
    run_async,
)
from airflow_provider_segmind.utils import metrics
from airflow_provider_segmind.utils.results import (
    XCOM_OUTPUT_URL,
    XCOM_REQUEST_ID,
    completed_summary,
    output_link,
)
from airflow_provider_segmind.utils.timeouts import tag_timeout
from airflow_provider_segmind.version_compat import TaskSuccessEvent

__all__ = ["SegmindJobTrigger", "ends_from_trigger", "task_trigger_kwargs"]

#: The key of a task's return value (``BaseXCom.XCOM_RETURN_KEY``).
XCOM_RETURN_KEY: Final = "return_value"

#: Set once :func:`_import_transport` has finished in this process: later triggers skip the thread hop.
_transport_imported = False


def _import_transport() -> None:
    """Import the hook's modules (sync HTTP stack, aiohttp); cheap once they are loaded."""
    global _transport_imported
    import aiohttp  # noqa: F401

    import airflow_provider_segmind.hooks.segmind
    import airflow_provider_segmind.operators.segmind  # noqa: F401  (the extra link's class, for end_xcoms)

    _transport_imported = True


def _link_xcom_key() -> str:
    """The XCom key of the operators' extra link ("Segmind output")."""
    from airflow_provider_segmind.operators.segmind import SegmindOutputLink

    return str(SegmindOutputLink().xcom_key)


def _openlineage_on() -> bool:
    """Whether the OpenLineage provider is installed and on (not disabled, a transport configured).

    Its own test (``conf.is_disabled``, which its listener plugin uses too); the import is a small
    config module, and only happens here, when a task defers.
    """
    try:
        from airflow.providers.openlineage.conf import is_disabled
    except ImportError:
        return False
    return not is_disabled()


def _listener_name(plugin: Any) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def success_listeners() -> list[str]:
    """The task listeners registered in this process that implement ``on_task_instance_success``.

    Airflow calls that hook only in the worker process that finishes a task (the task runner's
    ``finalize``); for a task its trigger ends no worker runs it, so such a listener would never hear
    of the success. Read from the Task SDK's listener manager (plugins' ``listeners`` and anything
    added with ``get_listener_manager().add_listener``), as the task runner itself calls them.
    """
    try:
        from airflow.providers.common.compat.sdk import get_listener_manager

        manager = get_listener_manager()
        hook = getattr(manager.hook, "on_task_instance_success", None)
        if hook is None:  # a manager without the task-instance spec: any listener counts
            return sorted({_listener_name(plugin) for plugin in manager.pm.get_plugins()})
        return sorted({_listener_name(impl.plugin) for impl in hook.get_hookimpls()})
    except Exception:  # no listener manager in this Airflow: no listener to miss
        return []


def _mapped_dependants(task: Any, context: Any) -> bool:
    """Whether the task is not mapped and a mapped task downstream expands its output (the worker then pushes
    ``_mapped_length``, the return value's length, which the scheduler expands the downstream task by)."""
    ti = context.get("ti") if isinstance(context, Mapping) else None
    is_mapped = getattr(ti, "is_mapped", None)
    if is_mapped is None:
        map_index = getattr(ti, "map_index", None)
        is_mapped = isinstance(map_index, int) and map_index >= 0
    if is_mapped:
        return False
    try:
        return next(iter(task.iter_mapped_dependants()), None) is not None
    except Exception:  # a task outside a DAG (unit tests): nothing downstream
        return False


def _xcom_set_takes(name: str) -> bool:
    """Whether this Airflow's ``XCom.set`` (the configured backend's) takes the keyword ``name``."""
    try:
        from airflow.providers.common.compat.sdk import XCom

        return name in inspect.signature(XCom.set).parameters
    except Exception:
        return False


def ends_from_trigger(
    requested: bool | None,
    *,
    outlets: Any,
    record_in_variable: bool,
    log: Any,
    on_success_callback: Any = None,
    task: Any = None,
    context: Any = None,
) -> bool:
    """Whether a deferring task asks its trigger to end it on success (``end_from_trigger``).

    ``None`` (the default) means on where it changes nothing a user can see: the running Airflow
    has ``TaskSuccessEvent`` (2.10+, all of 3.x), the task has no outlets, and its request record
    is not an Airflow Variable. Outlets: Airflow emits a task's asset events only when the task
    itself finishes on a worker, never for a trigger-ended task (``handle_event_submit`` for
    ``BaseTaskEndEvent`` only sets the state and pushes XComs), so asset scheduling would change.
    ``on_success_callback``: Airflow sends it to the dag processor, which on 3.1 to 3.3 logs "Task
    callback requested but is not a failure callback" and drops it (seen on a real 3.3 scheduler),
    so such a task resumes on a worker, where the callback runs.
    OpenLineage (its provider installed and configured, :func:`_openlineage_on`): its listener emits
    a task's COMPLETE event, with the operator's ``get_openlineage_facets_on_complete``, only from
    the worker that finishes the task (``on_task_instance_success`` in the task runner); for a
    trigger-ended task Airflow 3.1 to 3.3 call no listener, so the run would stay RUNNING in the
    lineage backend with no outputs. Such a task resumes on a worker. The same holds for any other
    task listener that implements ``on_task_instance_success`` (:func:`success_listeners`: a
    plugin's ``listeners``, Airflow's example ``event_listener`` with ``load_examples``, one added at
    run time): such a task resumes on a worker, where the listener hears of the success.
    ``task`` (the deferring operator or sensor) and ``context``: what its XComs need that a trigger
    cannot push exactly. A task that is not mapped but whose output a mapped task downstream expands,
    with ``do_xcom_push=False``, resumes (the worker fails it with ``XComForMappingNotPushed``, as
    for any operator); ``returns_dag_result`` resumes where this Airflow's ``XCom.set`` cannot mark
    a dag result. Everything else a worker pushes the trigger pushes the same way
    (:meth:`SegmindJobTrigger.end_xcoms`): ``multiple_outputs``' keys, ``_mapped_length``, the dag
    result mark, the extra link's XCom straight to the database.
    Variable: the 3.1/3.2 record is deleted by the worker at success; a trigger cannot delete a
    Variable, so it would be left behind (harmless: a clear still generates anew, and the clear's
    try deletes it, but it clutters the Variables list). ``True`` asks for it anyway, except in the
    cases above (logged as a warning; with the default, an info line says why the task resumes);
    ``False`` never.
    """
    if requested is False:
        return False
    why_not = None
    listeners = None
    if TaskSuccessEvent is None:
        why_not = "this Airflow has no TaskSuccessEvent"
    elif outlets:
        why_not = "the task has outlets, whose asset events Airflow emits only when a worker finishes the task"
    elif on_success_callback:
        why_not = (
            "the task has an on_success_callback, which Airflow 3.1 to 3.3 drop for a task a trigger ends (the "
            "dag processor runs only failure callbacks it is sent)"
        )
    elif _openlineage_on():
        why_not = (
            "OpenLineage is on, and its listener reports a task's completion and lineage only from the worker "
            "that finishes it (Airflow calls no listener for a task a trigger ends)"
        )
    elif listeners := success_listeners():
        why_not = (
            f"task listeners are registered ({', '.join(listeners)}), and Airflow calls on_task_instance_success "
            "only in the worker that finishes a task (no listener runs for a task a trigger ends)"
        )
    elif task is not None and not getattr(task, "do_xcom_push", True) and _mapped_dependants(task, context):
        why_not = (
            "a mapped task downstream expands this task's output, which do_xcom_push=False keeps from being "
            "pushed (the worker fails the task with XComForMappingNotPushed, as Airflow does for any operator)"
        )
    elif task is not None and getattr(task, "returns_dag_result", False) and not _xcom_set_takes("dag_result"):
        why_not = "the task returns the dag result, which this Airflow's XCom.set cannot mark from a trigger"
    if why_not is not None:
        if requested:
            log.warning("end_from_trigger=True ignored: %s; the task resumes on a worker.", why_not)
        else:
            log.info("The task resumes on a worker after its Segmind job (end_from_trigger off): %s.", why_not)
        return False
    if requested is None and record_in_variable:
        return False
    if record_in_variable:
        log.info(
            "end_from_trigger=True with the request record in a Variable: the trigger cannot delete it, so it "
            "stays after success (safe to delete; a clear of this task does not reuse its job)."
        )
    return True


def task_trigger_kwargs(task: Any, context: Any) -> dict[str, Any]:
    """The trigger kwargs a deferring task (operator or sensor) takes from itself and its try.

    The try's number (``try_number``, stamped on the events) and how a worker would push the task's
    return value, for a trigger that ends the task: ``multiple_outputs`` (each key of the summary as
    its own XCom too), ``push_mapped_length`` (the return value's length for a mapped task
    downstream) and ``dag_result`` (``returns_dag_result``).
    """
    return {
        "try_number": try_number_of(context),
        "multiple_outputs": bool(getattr(task, "multiple_outputs", False)),
        "push_mapped_length": _mapped_dependants(task, context),
        "dag_result": bool(getattr(task, "returns_dag_result", False)),
    }


class SegmindJobTrigger(BaseTrigger):
    """Poll a Segmind v2 request until it ends; emit exactly one event (its schema: :mod:`.events`).

    Serialized kwargs are plain values only (they are stored in the metadata database and shown
    by ``repr`` and the REST API): the connection id, the request id, the model, the poll schedule
    as floats, the absolute deadline and the submit time, both epoch seconds. Never the key: the
    trigger resolves the connection itself, asynchronously, in the triggerer.

    Kwargs are a persisted schema. Every argument added after the first release has a default, and
    unknown arguments (written by a newer provider) are ignored, so a triggerer running any version
    can load them. Rebuilding from :meth:`serialize` yields an equal trigger that keeps the original
    deadline, which is how a triggerer restart resumes the same job.

    Polling shares one aiohttp session per event loop between all Segmind triggers (the hook's
    :meth:`~airflow_provider_segmind.hooks.segmind.SegmindHook.shared_session`), released on every
    path, cancellation included. The trigger only reads (GET), so two triggerers running it at once
    (HA) is harmless.

    :param request_id: the v2 request to watch.
    :param conn_id: the ``segmind`` connection.
    :param model: the model slug, for the schedule's defaults and the result summary.
    :param deadline: absolute time (epoch seconds) after which a still-running job ends in a
        ``timeout`` event. ``None``: wait until the request ends or expires (1 hour retention).
    :param submitted_at: when the job was submitted (epoch seconds), if known: the schedule's
        first wait counts from it, and the summary says until when the result can be fetched.
    :param poll_schedule: :meth:`PollSchedule.to_dict` output; ``None`` means
        ``PollSchedule.for_model(model)``.
    :param max_consecutive_errors: transient errors in a row (429, 5xx, connection) tolerated
        before giving up with an ``error`` event.
    :param end_from_trigger: on ``success``, end the task here with a ``TaskSuccessEvent`` carrying
        the XComs a resumed task would push, instead of resuming it on a worker. Default ``False``
        (triggers serialized by older versions resume as they always did).
    :param summary_params: the operator's parameters as its summary shows them
        (:func:`~airflow_provider_segmind.utils.results.summarize_params` output, no secret): the return
        value is then the operator's (:func:`~airflow_provider_segmind.utils.results.completed_summary`)
        and the request id, output URL and extra link XComs are pushed too. ``None``: the event's
        summary as it is, alone (what the sensor returns).
    :param filled_seed: the seed the operator filled in, for the summary; also put in the event that
        resumes the task (``filled_seed``), so a resume that drops the defer's kwargs
        (``dag.test()``) still knows it.
    :param push_return_value: the task's ``do_xcom_push``.
    :param deadline_cause: which bound set ``deadline`` (``"execution_timeout"``, ``"job_timeout"``,
        the sensor's ``"timeout"``; :mod:`~airflow_provider_segmind.utils.timeouts`), copied into a
        ``timeout`` event as ``deadline_cause`` so the task's error names it. ``None``: not said
        (triggers serialized by older versions).
    :param try_number: the number of the try that deferred, stamped on every event this trigger yields
        (``try_number``), so a task resumed in another try can tell (:mod:`airflow_provider_segmind.utils.deferral`:
        Airflow 3.1.0 hands a retry the try before's event).
    :param multiple_outputs: the task's ``multiple_outputs``: ending the task, each key of the return
        value is pushed as its own XCom too, as a worker does.
    :param push_mapped_length: a mapped task downstream expands this (unmapped) task's output: the return
        value is pushed with its length (``_mapped_length``), as a worker does.
    :param dag_result: the task's ``returns_dag_result``: its XComs are pushed marked as the dag result.
    """

    def __init__(
        self,
        *,
        request_id: str,
        conn_id: str = DEFAULT_CONN_ID,
        model: str = "",
        deadline: float | None = None,
        submitted_at: float | None = None,
        poll_schedule: Mapping[str, float] | None = None,
        max_consecutive_errors: int = DEFAULT_MAX_CONSECUTIVE_ERRORS,
        end_from_trigger: bool = False,
        summary_params: Mapping[str, Any] | None = None,
        filled_seed: int | None = None,
        push_return_value: bool = True,
        deadline_cause: str | None = None,
        try_number: int | None = None,
        multiple_outputs: bool = False,
        push_mapped_length: bool = False,
        dag_result: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.request_id = request_id
        self.conn_id = conn_id
        self.model = model or ""
        self.deadline = float(deadline) if deadline is not None else None
        self.submitted_at = float(submitted_at) if submitted_at is not None else None
        self.schedule = (
            PollSchedule.from_dict(poll_schedule) if poll_schedule is not None else PollSchedule.for_model(self.model)
        )
        self.max_consecutive_errors = int(max_consecutive_errors)
        self.end_from_trigger = bool(end_from_trigger)
        self.summary_params = dict(summary_params) if summary_params is not None else None
        self.filled_seed = int(filled_seed) if filled_seed is not None else None
        self.push_return_value = bool(push_return_value)
        self.deadline_cause = str(deadline_cause) if deadline_cause else None
        self.try_number = int(try_number) if try_number is not None else None
        self.multiple_outputs = bool(multiple_outputs)
        self.push_mapped_length = bool(push_mapped_length)
        self.dag_result = bool(dag_result)
        # Kwargs from a newer provider version: ignored (logged when the trigger runs).
        self._unknown_kwargs = sorted(unknown)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "request_id": self.request_id,
                "conn_id": self.conn_id,
                "model": self.model,
                "deadline": self.deadline,
                "submitted_at": self.submitted_at,
                "poll_schedule": self.schedule.to_dict(),
                "max_consecutive_errors": self.max_consecutive_errors,
                "end_from_trigger": self.end_from_trigger,
                "summary_params": self.summary_params,
                "filled_seed": self.filled_seed,
                "push_return_value": self.push_return_value,
                "deadline_cause": self.deadline_cause,
                "try_number": self.try_number,
                "multiple_outputs": self.multiple_outputs,
                "push_mapped_length": self.push_mapped_length,
                "dag_result": self.dag_result,
            },
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SegmindJobTrigger):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        classpath, kwargs = self.serialize()
        return hash((classpath, json.dumps(kwargs, sort_keys=True)))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll, then yield one event. The HTTP session is released before the event is yielded.

        With ``end_from_trigger``, a ``success`` ends the task here (``TaskSuccessEvent``); any
        other outcome resumes it on the worker, where errors, retries and the record are handled.
        """
        event = tag_timeout(await self._watch(), self.deadline_cause)
        if (
            self.end_from_trigger
            and TaskSuccessEvent is not None
            and event.get("status") == EVENT_SUCCESS
            and await self._push_xcoms(self.end_xcoms(event))
        ):
            self.log.info("Segmind job %s COMPLETED: ending the task from the trigger.", self.request_id)
            yield TaskSuccessEvent()
            return
        if self.filled_seed is not None:
            # Also in the defer's kwargs, which dag.test() (3.1 to 3.3) drops when it resumes the task.
            event = {**event, "filled_seed": self.filled_seed}
        if self.try_number is not None:
            event[EVENT_TRY_NUMBER] = self.try_number  # the try this event belongs to (deferral.py)
        yield TriggerEvent(event)  # type: ignore[no-untyped-call]

    async def _push_xcoms(self, xcoms: Mapping[str, Any]) -> bool:
        """Push the task's XComs through the Task SDK, as a worker does; ``False``: resume on the worker.

        Not through ``TaskSuccessEvent(xcoms=...)``: Airflow 3.1 to 3.3 store those with
        ``XComModel.set`` (``json.dumps`` into a JSON column: ``_push_xcoms_if_necessary`` in
        ``airflow/models/trigger.py``, from apache/airflow#40084), while the Task SDK reads XComs as
        values it serialized itself (apache/airflow#46719, #47961), so every value reaches downstream
        tasks as JSON text, a summary as a string instead of a dict (seen on a real 3.3 scheduler,
        ``tests/integration``). The Task SDK's ``XCom.set`` (trigger code may call it since 3.1's
        ``SetXCom`` in the triggerer, apache/airflow#53514) encodes like a worker's push and honours a
        custom XCom backend; each key goes the way the task runner sends it (:meth:`_push_one`);
        ``XCom`` is imported from ``airflow.providers.common.compat.sdk`` (which exports it from
        1.23.0, the declared floor), not from the Task SDK's private ``execution_time`` package.
        Anything that stops it (no task instance, as in a bare event loop; an Execution API error, such
        as a return value too long to map) resumes the task on the worker instead, which is always
        correct (the worker pushes them all again, or fails as Airflow fails any such task).
        """
        ti = self.task_instance
        if ti is None:
            return False
        try:
            from airflow.providers.common.compat.sdk import XCom

            for key, value in xcoms.items():
                await asyncio.to_thread(self._push_one, XCom, ti, key, value)
        except Exception as err:
            self.log.warning(
                "Could not push the XComs of Segmind request %s from the trigger (%s); the task resumes on a "
                "worker instead.",
                self.request_id,
                redact(str(err)),
            )
            return False
        return True

    def _push_one(self, xcom: Any, ti: Any, key: str, value: Any) -> None:
        """One XCom, sent as the task runner sends it (``task_runner._xcom_push``/``_xcom_push_to_db``).

        The extra link's XCom goes straight to the database (``_set_xcom_in_db``), bypassing a custom
        XCom backend, as a worker's ``finalize`` writes it: the UI reads links from the database
        as they are. Every other key goes through the backend's ``XCom.set``, marked as the dag result
        when the task returns it; the return value carries ``_mapped_length`` when a mapped task
        downstream expands it.
        """
        where = {
            "dag_id": ti.dag_id,
            "task_id": ti.task_id,
            "run_id": ti.run_id,
            "map_index": ti.map_index if ti.map_index is not None else -1,
        }
        if key == _link_xcom_key():
            to_db = getattr(xcom, "_set_xcom_in_db", None)
            if to_db is None:
                raise RuntimeError("this Airflow's XCom has no _set_xcom_in_db for the extra link's XCom")
            to_db(key, value, **where)
            return
        extra: dict[str, Any] = {}
        if self.dag_result:
            extra["dag_result"] = True
        if key == XCOM_RETURN_KEY and self.push_mapped_length:
            extra["_mapped_length"] = len(value)
        xcom.set(key, value, **where, **extra)

    def end_xcoms(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The XComs a task resumed with this ``success`` event pushes, in the worker's order (JSON-safe, no secret).

        The operator's: ``segmind_request_id`` (also pushed before deferring) and ``segmind_output_url``
        when there is one (``execute_complete``), each key of the return value with
        ``multiple_outputs``, the return value (its summary), and the extra link's XCom (Airflow writes
        it when a task process ends; none runs here). The sensor's: the return value (and its keys
        with ``multiple_outputs``) only. With ``do_xcom_push=False`` neither the return value nor its
        keys.
        """
        result = event["result"]
        xcoms: dict[str, Any] = {}
        if self.summary_params is None:
            summary = dict(result)
        else:
            summary = completed_summary(result, self.summary_params, self.filled_seed)
            xcoms[XCOM_REQUEST_ID] = event["request_id"]
            url = summary.get("output_url")
            if url:
                xcoms[XCOM_OUTPUT_URL] = url
        if self.push_return_value:
            if self.multiple_outputs:
                xcoms.update((str(key), value) for key, value in summary.items())
            xcoms[XCOM_RETURN_KEY] = summary
        if self.summary_params is not None:
            xcoms[_link_xcom_key()] = output_link(summary.get("output_url"))
        return xcoms

    async def _watch(self) -> dict[str, Any]:
        # The first trigger in a triggerer process would otherwise import requests, tenacity and
        # aiohttp (~1 s on a busy host) inside the event loop, stalling every other trigger. Once
        # an import has completed, the hop to a thread (~0.2 ms of CPU per trigger) buys nothing.
        # (The flag is set only after the imports finish, so a trigger that starts while another
        # one's import is still running in a thread hops too, instead of waiting on the import
        # lock inside the loop.)
        if not _transport_imported:
            await asyncio.to_thread(_import_transport)
        from airflow_provider_segmind.hooks.segmind import SegmindHook

        if self._unknown_kwargs:
            self.log.warning("Ignoring trigger kwargs from a newer provider version: %s", self._unknown_kwargs)
        # This trigger's own asyncio task: the tags stay with its metrics only.
        metrics.bind_task(getattr(self, "task_instance", None), self.model)
        hook = SegmindHook(self.conn_id, retry_policy=SINGLE_ATTEMPT)
        watch = JobWatch(
            self.request_id,
            conn_id=self.conn_id,
            model=self.model,
            schedule=self.schedule,
            deadline=self.deadline,
            submitted_at=self.submitted_at,
            max_consecutive_errors=self.max_consecutive_errors,
            log=self.log,
        )
        try:
            settings = await hook.aget_settings()
            watch.secrets.append(settings.api_key)
            if settings.rate_budget is not None:  # each poll spends a turn: the first one where it sees COMPLETED
                watch.tracker.schedule = budgeted_schedule(watch.tracker.schedule)
            async with hook.shared_session() as session:
                return await run_async(watch.steps(), AsyncCalls(hook, self.request_id, session=session))
        except asyncio.CancelledError:
            self.log.info(
                "Stopped watching Segmind request %s (trigger cancelled); the job itself keeps running "
                "and its result stays retrievable for 1 hour after submission.",
                self.request_id,
            )
            raise
        except Exception as err:
            # Setting the watch up failed (e.g. the connection is missing or has no key).
            return watch.gave_up(err)

    async def on_kill(self) -> None:
        """Airflow 3.3+: the user killed the task. Segmind has no cancel endpoint: only say so.

        The job runs to its end and is billed; its result stays retrievable by request id for
        1 hour after submission. Nothing remote is attempted.
        """
        self.log.warning(
            "Task killed while Segmind request %s (model %s) may still be running: Segmind has no cancel "
            "endpoint, so it will finish and be billed; its result stays retrievable by request id for "
            "1 hour after submission.",
            self.request_id,
            self.model or "?",
        )
