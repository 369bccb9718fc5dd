"""The operators' parameters: the request body validated after templating, the filled seed, argument coercion.

One place for what turns an operator's (templated) arguments into the body that is sent: the
model's validation (:func:`~airflow_provider_segmind.protocol.validate_params`, errors a retry
cannot fix raised as ``AirflowFailException``), the random ``seed`` ``fill_seed`` adds, and the
conversions of constructor arguments (timeouts, poll schedules, templated numbers).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_segmind.exceptions import SegmindError, SegmindInvalidParametersError
from airflow_provider_segmind.operators._records import _fingerprint
from airflow_provider_segmind.protocol.params import SD3_SEED_MAX, SEED_RANDOM, model_takes_seed, validate_params
from airflow_provider_segmind.protocol.schedule import PollSchedule
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL
from airflow_provider_segmind.utils.results import with_filled_seed

if TYPE_CHECKING:
    from airflow_provider_segmind.hooks.segmind import SegmindHook


def validated(
    model: Any, build_params: Callable[[], dict[str, Any]], *, strict: bool, warn: Callable[[str], None]
) -> tuple[str, dict[str, Any]]:
    """Model and body, validated after templating and before any request.

    A bad parameter cannot be fixed by a retry: raise ``AirflowFailException`` (from the typed
    error, message kept) so Airflow does not spend the task's retries on it.
    """
    try:
        if not isinstance(model, str) or not model.strip():
            raise SegmindInvalidParametersError(
                f"Invalid parameter 'model': got {model!r}. Allowed: a Segmind model slug such as {SD3_LARGE_MODEL!r}.",
                field="model",
                allowed="a model slug",
            )
        return model.strip(), validate_params(model.strip(), build_params(), strict=strict, warn=warn)
    except SegmindInvalidParametersError as err:
        raise AirflowFailException(str(err)) from err


def refuse_unlisted_model(hook: SegmindHook, model: str) -> None:
    """Before a new (billed) submit: refuse a slug Segmind's model catalogue does not list or lists as
    retired (:meth:`~airflow_provider_segmind.hooks.segmind.SegmindHook.check_model`: the connection's
    ``check_model_catalogue``; an unreachable catalogue never stops the run). No retries: a retry
    cannot fix a slug."""
    try:
        hook.check_model(model)
    except SegmindError as err:
        raise AirflowFailException(str(err)) from err


def summary_params(model: Any, build_params: Callable[[], dict[str, Any]], *, strict: bool) -> dict[str, Any]:
    """The validated body for a result summary (warnings were logged at submit); ``{}`` if invalid."""
    try:
        return validate_params(model.strip(), build_params(), strict=strict, warn=_quiet)
    except (SegmindInvalidParametersError, AttributeError):
        return {}


def fills_seed(model: str, params: Mapping[str, Any], *, fill_seed: bool | None) -> bool:
    """Whether the provider fills the body's ``seed``: none given (or ``-1``, Segmind's "random",
    docs.segmind.com/api-reference: the SD3 Large page's ``seed`` default), and the model takes
    one (``fill_seed=None``) or the operator says so."""
    if params.get("seed") is not None and params.get("seed") != SEED_RANDOM:
        return False
    return bool(fill_seed if fill_seed is not None else model_takes_seed(model))


def recorded_seed(model: str, params: Mapping[str, Any], record: Mapping[str, Any] | None) -> int | None:
    """The seed an earlier try filled, to rebuild its body and re-attach to its request; else ``None``.

    Only a record of this clear generation counts (the caller checks ``_cleared_since`` where a
    clear matters: a job from before a clear is adopted only while it runs), and only when the
    rest of the body is the same (the fingerprint with that seed matches).
    """
    recorded = record.get("filled_seed") if record is not None else None
    if (
        isinstance(recorded, int)
        and not isinstance(recorded, bool)
        and 0 <= recorded <= SD3_SEED_MAX
        and record is not None
        and record.get("fingerprint") == _fingerprint(model, {**params, "seed": recorded})
    ):
        return recorded
    return None


def fresh_seed() -> int:
    """A new random seed for a new submit (never a recorded one: a seed belongs to one generation
    of a task, so a clear, or a resubmit after a FAILED job, makes a new image, issue 22)."""
    return secrets.randbelow(SD3_SEED_MAX + 1)


#: Moved to :mod:`airflow_provider_segmind.utils.results` (the trigger uses it too); the old name stays for importers.
_with_seed = with_filled_seed


def _quiet(message: str) -> None:
    """A ``warn`` callback for re-validations whose warning was already logged once."""


def _seconds(value: float | timedelta | None, default: float) -> float:
    if value is None:
        return default
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds <= 0:
        raise ValueError(f"job_timeout must be positive, got {value!r}")
    return seconds


def _schedule_dict(schedule: PollSchedule | Mapping[str, float] | None) -> dict[str, float] | None:
    if schedule is None:
        return None
    if isinstance(schedule, PollSchedule):
        return schedule.to_dict()
    return PollSchedule.from_dict(schedule).to_dict()  # validates early, at DAG parse time


def _optional_number(value: Any, kind: type[int] | type[float]) -> Any:
    """Templated numbers arrive as strings ("42"); convert them, leave anything else to validation."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text in ("", "None", "none", "null"):
        return None
    try:
        return kind(text)
    except ValueError:
        return value
