"""Asset events of the transfer: the outlet a task declares when the DAG is parsed, and its one event per run.

One event per task instance on one asset per destination (not one asset per object), its
``extra`` listing the stored objects' keys and hashes, capped; see ``SegmindToS3Operator``'s
docstring (**Asset events**) for what a DAG author chooses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from os.path import commonprefix
from typing import TYPE_CHECKING, Any, Final

from airflow.sdk import Asset, AssetAlias

from airflow_provider_segmind.exceptions import UnsafeS3KeyError
from airflow_provider_segmind.utils.s3_keys import destination_prefix, parse_location, s3_uri
from airflow_provider_segmind.version_compat import AIRFLOW_V_3_2_PLUS

if TYPE_CHECKING:
    from airflow.sdk import Context

#: The alias this operator emitted on by default up to 0.1.0; no longer a default (every DAG scheduled
#: on it fired on every other DAG's images). Pass ``asset_alias=DEFAULT_ASSET_ALIAS`` to keep
#: consumers scheduled on it firing (one event per task, see ``SegmindToS3Operator``).
DEFAULT_ASSET_ALIAS: Final = "segmind-s3-outputs"
#: ``asset="auto"``: one asset per destination (see ``SegmindToS3Operator``).
AUTO_ASSET: Final = "auto"
#: Scheme of the per-task asset ``asset="auto"`` falls back to when the bucket is templated or mapped.
TASK_ASSET_SCHEME: Final = "segmind-s3"
#: Objects listed in one asset event's ``extra`` (the rest: the manifests under ``extra["prefix"]``).
DEFAULT_MAX_EVENT_OBJECTS: Final = 50


def emit_event(
    context: Context,
    target: Asset | AssetAlias | None,
    outlets: Sequence[Any],
    asset: Asset | str | None,
    bucket: str,
    template: str,
    stored: list[dict[str, Any]],
    *,
    max_objects: int,
    log: Any,
) -> None:
    """One asset event for the whole task: the objects' keys and hashes in ``extra``, capped.

    On an ``Asset`` outlet Airflow emits the event itself when the task succeeds; we only give
    it the ``extra``. Through an alias the event is added here, on one asset per destination.
    """
    if target is None:
        return
    if target not in (outlets or []):
        log.warning("%r is not among this task's outlets: no asset event is emitted.", target)
        return
    events = context.get("outlet_events")
    if events is None:
        # Only a context built by hand has no accessors (Airflow's task runner always sets them):
        # outside Airflow nobody would record the event, and the objects are already stored, so a
        # KeyError here would fail a finished transfer and make a retry upload it all again.
        log.warning("The context has no outlet_events (not run by Airflow): no asset event on %r.", target)
        return
    extra = asset_event_extra(bucket, stored, max_objects=max_objects)
    if isinstance(target, AssetAlias):
        if not stored:
            return
        destination = destination_asset(asset, bucket, template, context)
        if not AIRFLOW_V_3_2_PLUS:
            extra["objects"] = json.dumps(extra["objects"], separators=(",", ":"))
        events[target].add(destination, extra=extra)
    else:
        destination = target
        events[target].extra = extra
    log.info(
        "Asset event on %s: %d object(s)%s.",
        destination.uri,
        len(stored),
        f", the first {max_objects} listed in its extra" if extra["truncated"] else "",
    )


def destination_asset(asset: Asset | str | None, bucket: str, template: str, context: Context) -> Asset:
    """The asset an alias event lands on: ``asset`` if given, else the rendered destination's."""
    if isinstance(asset, Asset):
        return asset
    if isinstance(asset, str) and asset != AUTO_ASSET:
        return Asset(asset)
    return Asset(_destination_uri(bucket, template, context["ti"].dag_id))


def asset_event_extra(
    bucket: str, objects: Sequence[Mapping[str, Any]], *, max_objects: int = DEFAULT_MAX_EVENT_OBJECTS
) -> dict[str, Any]:
    """The ``extra`` of an asset event for stored objects (``{"key", "sha256", "manifest", "request_id"}``).

    JSON-plain and capped: the first ``max_objects`` objects, their count, whether some were left
    out, and the keys' common prefix (whole segments), under which every object and its manifest is.
    """
    listed = [dict(item) for item in objects]
    keys = [str(item["key"]) for item in listed]
    common = commonprefix(keys) if keys else ""  # noqa: RUF071 - cut back to a whole segment below
    return {
        "bucket": bucket,
        "prefix": common[: common.rfind("/") + 1],
        "count": len(listed),
        "truncated": len(listed) > max_objects,
        "objects": listed[:max_objects],
    }


def _event_target(
    asset: Asset | str | None,
    asset_alias: str | None,
    s3_bucket: Any,
    s3_key: Any,
    dag_id: str | None,
    task_id: str,
) -> Asset | AssetAlias | None:
    """The outlet a task's asset event goes to, decided when the DAG is parsed (see the class docstring)."""
    if asset_alias:
        return AssetAlias(asset_alias)
    if asset is None:
        return None
    if isinstance(asset, Asset):
        return asset
    if not isinstance(asset, str) or not asset.strip():
        raise TypeError(
            f"asset must be 'auto', an Asset, a URI string or None, got {asset!r}; for an alias pass asset_alias"
        )
    if asset != AUTO_ASSET:
        return Asset(asset)
    uri = _static_destination(s3_bucket, s3_key, dag_id)
    # A destination known only at run time: one static asset for the task (a dynamic asset per
    # rendered destination would need an alias, whose extras Airflow 3.1 cannot hold as lists).
    return Asset(uri if uri is not None else f"{TASK_ASSET_SCHEME}://{dag_id or '_'}/{task_id}")


def declare_outlet(task: Any, asset: Asset | str | None, asset_alias: str | None, s3_bucket: Any, s3_key: Any) -> Any:
    """The task's event target (:func:`_event_target`, from the unrendered arguments), added to its outlets."""
    dag = task.get_dag()
    target = _event_target(asset, asset_alias, s3_bucket, s3_key, dag.dag_id if dag else None, task.task_id)
    if target is not None and target not in task.outlets:
        task.outlets.append(target)
    return target


def declare_partial_outlet(args: dict[str, Any]) -> None:
    """Put a mapped task's asset outlet into its ``partial()`` arguments (``SegmindToS3Operator.partial``)."""
    dag = args.get("dag")
    target = _event_target(
        args.get("asset", AUTO_ASSET),
        args.get("asset_alias"),
        args.get("s3_bucket"),
        args.get("s3_key"),
        dag.dag_id if dag is not None else None,
        args["task_id"],
    )
    if target is None:
        return
    if isinstance(target, Asset):  # fixed for every mapped instance: their __init__ sees mapped values
        args["asset"] = target
    outlets = list(args.get("outlets") or [])
    if target not in outlets:
        args["outlets"] = [*outlets, target]


def _static_destination(s3_bucket: Any, s3_key: Any, dag_id: str | None) -> str | None:
    """``s3://bucket/<prefix>`` if the unrendered arguments fix it, else ``None`` (templated or mapped).

    Jinja in ``s3_key`` ends the prefix where it starts; Jinja in the bucket (or a non-string such
    as an ``XComArg``) leaves the destination to run time.
    """
    if not all(value is None or isinstance(value, str) for value in (s3_bucket, s3_key)):
        return None
    key = s3_key
    if key is not None:
        marks = [at for at in (key.find(mark) for mark in ("{{", "{%", "{#")) if at >= 0]
        if marks:
            key = key[: min(marks)] + "{run_id}"  # a run-specific placeholder: the prefix stops here
    try:
        bucket, template = parse_location(s3_bucket, key)
    except UnsafeS3KeyError:
        return None
    return _destination_uri(bucket, template, dag_id)


def _destination_uri(bucket: str, template: str, dag_id: str | None) -> str:
    """``s3://bucket/prefix`` without the trailing ``/`` (Airflow strips it from an asset's URI but
    not from its name: with it, ``Asset("s3://b/p/")`` and ``Asset("s3://b/p")`` would clash)."""
    return s3_uri(bucket, destination_prefix(template, dag_id)).rstrip("/")
