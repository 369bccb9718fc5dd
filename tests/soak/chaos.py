"""Fault injection inside the soak's worker process, around ``dag.test()``'s inline triggerer.

``dag.test()`` runs a deferred task's trigger in-process: it rebuilds the trigger from the kwargs the
task serialized (``classpath`` + serde-encoded ``serialize()`` output, as the real triggerer does
from the metadata database), runs it to its first event, stores the event in ``next_kwargs`` and
resumes the task. :class:`Chaos` wraps that one step (``airflow.sdk.definitions.dag.
_run_inline_trigger``) and, at the first deferral of each planned map index of the generation task
(try 1, unless that try failed before it could defer), does one of:

- ``restart``: a triggerer restart mid-job. The trigger runs for a while, is cancelled (as a
  stopping triggerer cancels its triggers), and a NEW trigger is built from ``serialize()`` through
  a serde + JSON round trip (what the database holds) and run to the end.
- ``expire``: the job's retention is ended (``/_emulator/expire``) while the trigger watches it.
- ``give_up``: a scripted run of status-call faults (500/502) as long as the task's
  ``max_consecutive_errors``: the real trigger gives up with an ``error`` event, the try fails and
  Airflow retries the task.
- ``lost_event``: the trigger runs to its real event, which is then lost: the task resumes with no
  event (``execute_complete`` must fail loudly) and Airflow retries it.
- ``crash_on_resume``: the trigger's event is delivered, ``execute_complete`` completes, and then
  the worker "dies" (an exception) before the task can succeed; Airflow retries it.
- ``die_after_submit`` (applied at the submit, not at a deferral): Segmind accepts the submit and the
  worker "dies" (an exception) before the request id is recorded; only the "attempt" record written
  before the submit is left. The retry must find the request in the request history (issue 13).

Besides the faults, :meth:`Chaos.use_history_profile` switches the emulator's request history to
the profile of the prompt's segment (``tests.soak.harness.history_segments``) before every try of
the generate task starts or resumes, so each try reads the history in its own prompt's shape.

Production code has no hook for any of this: only Airflow's test runner and the operator class are
wrapped, in this process only. Everything done is appended to a JSON-lines record file for the
harness, with each trigger's serialized kwargs and ``repr`` (scanned for the API key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

#: Faults scripted for ``give_up``. Not ``reset_before``: aiohttp silently re-sends a GET once when the
#: server drops a reused keep-alive connection, so one reset can eat two scripted steps. Not ``429``: a
#: 429 with a wait hint is congestion, which the trigger waits out without counting it as an error.
GIVE_UP_FAULTS = ("500", "502")
#: The generation task inside the soak DAG's mapped task group.
GENERATE = "render.generate"


class SimulatedWorkerCrashError(RuntimeError):
    """Raised after ``execute_complete`` for ``crash_on_resume``: the worker died before reporting success."""


class EmulatorAdmin:
    """The emulator's ``/_emulator`` controls over HTTP (the emulator lives in the harness process)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        url = f"{self.base_url}{path}"
        if not url.startswith("http://127.0.0.1:"):
            raise ValueError(f"the soak only talks to a loopback emulator, not {url}")
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - checked above
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - checked above
            return json.loads(answer.read())

    def job(self, request_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/_emulator/jobs/{request_id}"))

    def expire(self, request_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/_emulator/expire/{request_id}", {}))

    def script(self, steps: list[dict[str, Any]]) -> None:
        self._call("POST", "/_emulator/script", steps)

    def pending_script(self) -> dict[str, int]:
        return dict(self._call("GET", "/_emulator/stats").get("scripted_pending") or {})

    def configure(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/_emulator/config", dict(changes)))


def rebuild(trigger: BaseTrigger) -> tuple[BaseTrigger, str]:
    """A new trigger from ``trigger.serialize()`` through serde and JSON, as a triggerer loads it."""
    from airflow.sdk.module_loading import import_string
    from airflow.sdk.serde import deserialize, serialize

    classpath, kwargs = trigger.serialize()
    stored = json.dumps(serialize(kwargs))
    rebuilt = import_string(classpath)(**deserialize(json.loads(stored)))
    return rebuilt, stored


class _Restarting(BaseTrigger):
    """Runs ``inner`` for ``after`` seconds, cancels it, rebuilds it from its kwargs, runs that."""

    def __init__(self, inner: BaseTrigger, after: float, chaos: Chaos, note: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner, self.after, self.chaos, self.note = inner, after, chaos, note

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return self.inner.serialize()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_provider_segmind.hooks._cache import _SHARED_SESSIONS

        first = self.inner.run()
        early: TriggerEvent | None = None
        try:
            async with asyncio.timeout(self.after):
                early = await anext(first)
        except TimeoutError:
            pass
        finally:
            await first.aclose()
        self.note["sessions_open_after_cancel"] = _SHARED_SESSIONS.open_sessions()
        if early is not None:  # the job ended before the planned restart point
            self.note["restarted"] = False
            yield early
            return
        request_id = getattr(self.inner, "request_id", "")
        job = await asyncio.to_thread(self.chaos.admin.job, request_id)
        rebuilt, stored = rebuild(self.inner)
        self.note.update(
            restarted=True,
            job_status_at_restart=job.get("status"),
            rebuilt_equal=rebuilt == self.inner,
            deadline_kept=getattr(rebuilt, "deadline", None) == getattr(self.inner, "deadline", None),
            rebuilt_kwargs=stored,
            rebuilt_repr=repr(rebuilt),
        )
        async for event in rebuilt.run():
            yield event
            return


class _Expiring(BaseTrigger):
    """Runs ``inner`` while the job's retention is ended ``after`` seconds in."""

    def __init__(self, inner: BaseTrigger, after: float, chaos: Chaos, note: dict[str, Any]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.inner, self.after, self.chaos, self.note = inner, after, chaos, note

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return self.inner.serialize()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        request_id = getattr(self.inner, "request_id", "")

        async def expire_later() -> None:
            await asyncio.sleep(self.after)
            job = await asyncio.to_thread(self.chaos.admin.job, request_id)
            self.note["job_status_when_expired"] = job.get("status")
            await asyncio.to_thread(self.chaos.admin.expire, request_id)

        expiry = asyncio.create_task(expire_later())
        inner = self.inner.run()
        try:
            event = await anext(inner)
        finally:
            await inner.aclose()
            # Before yielding: dag.test() takes the first event and never resumes this generator.
            await expiry
        yield event


class Chaos:
    """Installs the wrappers described in the module docstring for one ``dag.test()`` run.

    :param plan: ``{map_index: action}`` for task ``generate``'s first try.
    """

    def __init__(
        self,
        *,
        emulator_url: str,
        plan: Mapping[int, str],
        record_file: Path,
        seed: int,
        max_consecutive_errors: int,
        history_segments: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.admin = EmulatorAdmin(emulator_url)
        self.history_segments = [dict(segment) for segment in history_segments]
        #: The profile the emulator answers in now (the harness starts it in the first segment's).
        self.history_profile: str | None = self.history_segments[0]["profile"] if self.history_segments else None
        self.plan = dict(plan)
        self.record_file = record_file
        self.rng = random.Random(f"soak-chaos:{seed}")
        self.max_consecutive_errors = max_consecutive_errors
        self._crash_pending: set[int] = set()
        self._applied: set[int] = set()
        self._died: set[int] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- records

    def record(self, entry: Mapping[str, Any]) -> None:
        with self._lock, self.record_file.open("a", encoding="utf-8") as out:
            out.write(json.dumps(entry, default=str) + "\n")

    # ---------------------------------------------------------------- install

    @contextlib.contextmanager
    def installed(self) -> Iterator[Chaos]:
        from airflow.sdk.definitions import dag as dag_module

        from airflow_provider_segmind.operators.segmind import SegmindTextToImageOperator, _SegmindJobOperator

        original_inline = dag_module._run_inline_trigger
        original_execute = _SegmindJobOperator.execute
        original_complete = SegmindTextToImageOperator.execute_complete
        original_record = _SegmindJobOperator._record_request
        chaos = self

        def run_inline_trigger(trigger: BaseTrigger, ti: Any) -> TriggerEvent | None:
            return chaos.inline_trigger(original_inline, trigger, ti)

        def execute(operator: Any, context: Any) -> Any:
            chaos.use_history_profile(context["ti"])
            return original_execute(operator, context)

        def execute_complete(operator: Any, context: Any, event: Any = None, **kwargs: Any) -> Any:
            chaos.use_history_profile(context["ti"])  # an expired request is looked up in the history
            result = original_complete(operator, context, event, **kwargs)
            ti = context["ti"]
            if chaos.take_crash(ti.task_id, ti.map_index):
                chaos.record({"kind": "crash_on_resume", "map_index": ti.map_index, "try_number": ti.try_number})
                raise SimulatedWorkerCrashError(
                    f"soak: the worker died after execute_complete of {ti.task_id}[{ti.map_index}] "
                    f"(request {operator.request_id}) and before the task could succeed (simulated)"
                )
            return result

        def record_request(operator: Any, context: Any, store: Any, request_id: str, *args: Any, **kwargs: Any) -> None:
            ti = context["ti"]
            if chaos.take_death(ti.task_id, ti.map_index):
                chaos.record(
                    {
                        "kind": "die_after_submit",
                        "map_index": ti.map_index,
                        "try_number": ti.try_number,
                        "request_id": request_id,
                    }
                )
                raise SimulatedWorkerCrashError(
                    f"soak: the worker died after Segmind accepted request {request_id} for "
                    f"{ti.task_id}[{ti.map_index}] and before its id was recorded (simulated)"
                )
            original_record(operator, context, store, request_id, *args, **kwargs)

        dag_module._run_inline_trigger = run_inline_trigger
        _SegmindJobOperator.execute = execute  # type: ignore[method-assign]
        SegmindTextToImageOperator.execute_complete = execute_complete  # type: ignore[method-assign]
        _SegmindJobOperator._record_request = record_request  # type: ignore[method-assign]
        try:
            yield self
        finally:
            dag_module._run_inline_trigger = original_inline
            _SegmindJobOperator.execute = original_execute  # type: ignore[method-assign]
            SegmindTextToImageOperator.execute_complete = original_complete  # type: ignore[method-assign]
            _SegmindJobOperator._record_request = original_record  # type: ignore[method-assign]

    def use_history_profile(self, ti: Any) -> None:
        """Switch the emulator's request history to the profile of ``ti``'s prompt, if it is not already.

        ``dag.test()`` runs one task instance at a time (its trigger inline), so the profile holds for
        every history answer this try reads. Recorded as ``history_profile`` entries.
        """
        if ti.task_id != GENERATE or len(self.history_segments) < 2:
            return
        segment = next(
            (s for s in self.history_segments if s["start"] <= ti.map_index < s["stop"]), self.history_segments[-1]
        )
        with self._lock:
            if segment["profile"] == self.history_profile:
                return
            previous, self.history_profile = self.history_profile, segment["profile"]
        self.admin.configure(segment["changes"])
        self.record(
            {
                "kind": "history_profile",
                "map_index": ti.map_index,
                "try_number": ti.try_number,
                "profile": segment["profile"],
                "previous": previous,
            }
        )

    def take_death(self, task_id: str, map_index: int) -> bool:
        """Whether this (first) request record write of a ``die_after_submit`` prompt is where its worker dies."""
        with self._lock:
            if task_id == GENERATE and self.plan.get(map_index) == "die_after_submit" and map_index not in self._died:
                self._died.add(map_index)
                return True
            return False

    def take_crash(self, task_id: str, map_index: int) -> bool:
        with self._lock:
            if task_id == GENERATE and map_index in self._crash_pending:
                self._crash_pending.discard(map_index)
                return True
            return False

    # ---------------------------------------------------------------- the inline triggerer

    def _remaining(self, request_id: str) -> float:
        """Seconds until the job would complete (may be negative: it already has)."""
        try:
            return float(self.admin.job(request_id)["completed_at"]) - time.time()
        except Exception:
            return 0.0

    def inline_trigger(self, original: Any, trigger: BaseTrigger, ti: Any) -> TriggerEvent | None:
        from airflow.sdk.serde import serialize

        classpath, kwargs = trigger.serialize()
        request_id = str(kwargs.get("request_id", ""))
        action = None
        if ti.task_id == GENERATE and ti.map_index not in self._applied:
            # The first deferral of this map index (try 1, or a later try if try 1 failed before it
            # could defer, e.g. on a reset submit).
            self._applied.add(ti.map_index)
            action = self.plan.get(ti.map_index)
            if action == "die_after_submit":  # applied at the submit, not at a deferral
                action = None
        note: dict[str, Any] = {
            "kind": "trigger",
            "task_id": ti.task_id,
            "map_index": ti.map_index,
            "try_number": ti.try_number,
            "request_id": request_id,
            "classpath": classpath,
            "kwargs": json.dumps(serialize(kwargs)),
            "repr": repr(trigger),
            "action": action,
        }
        started = time.monotonic()
        event: TriggerEvent | None
        if action == "restart":
            remaining = self._remaining(request_id)
            note["restart_after"] = after = self.rng.uniform(0.08, max(0.12, remaining - 0.03))
            event = original(_Restarting(trigger, after, self, note), ti)
        elif action == "expire":
            remaining = self._remaining(request_id)
            note["expire_after"] = after = self.rng.uniform(0.05, max(0.1, remaining + 0.2))
            event = original(_Expiring(trigger, after, self, note), ti)
        elif action == "give_up":
            steps = [
                {"endpoint": "status", "fault": self.rng.choice(GIVE_UP_FAULTS)}
                for _ in range(self.max_consecutive_errors)
            ]
            note["scripted"] = [step["fault"] for step in steps]
            self.admin.script(steps)
            event = original(trigger, ti)
            note["script_left"] = self.admin.pending_script()
        else:
            event = original(trigger, ti)
        payload = dict(event.payload) if event is not None else None
        note["seconds"] = round(time.monotonic() - started, 3)
        note["event"] = payload
        note["event_json"] = json.dumps(payload, default=str)
        if action == "lost_event":
            note["delivered"] = None
            self.record(note)
            return None
        if action == "crash_on_resume":
            with self._lock:
                self._crash_pending.add(ti.map_index)
        self.record(note)
        return event
