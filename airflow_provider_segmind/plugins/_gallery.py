"""The page's data: every generation the transfer stored, read from its S3 manifests, and its sums.

Why the manifests: ``SegmindToS3Operator`` writes one beside each object it stores, with the DAG,
run, task, model, prompt, cost and time (its class docstring lists the fields), so they are the
one record that holds both what was made and where it came from, and the page needs no store of
its own. Reading 10,000 manifests on every page view would be 10,000 GETs, so :class:`ManifestIndex`
keeps each parsed manifest in memory by key and ETag: a refresh (at most every ``ttl`` seconds) is
a listing (1,000 keys per call) plus a GET for each manifest that is new or changed.

Copies the publish step writes (a manifest with ``source.candidate_uri``) are the same generation
as their candidate, so they are left out: counting them would bill an image twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from airflow_provider_segmind.transfers._s3_keys import MANIFEST_SUFFIX

#: Seconds a listing stays fresh: within it, page views read only memory.
DEFAULT_TTL: Final = 30.0
#: Manifests fetched at once on a refresh (each a small GET): botocore's default connection pool
#: (``max_pool_connections``), so no thread waits for, or throws away, a connection.
FETCH_WORKERS: Final = 10


@dataclass(frozen=True, slots=True)
class Generation:
    """One stored output, as the page shows and sums it."""

    bucket: str
    key: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    request_id: str
    model: str
    prompt: str
    cost: float | None
    stored_at: str
    width: int | None
    height: int | None

    @property
    def day(self) -> str:
        """The UTC day it was stored (``YYYY-MM-DD``): the page's day filter and chart."""
        return self.stored_at[:10]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def generation(bucket: str, manifest: Any) -> Generation | None:
    """The generation a manifest describes; ``None`` for a publish copy or a document that is not one."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("key"), str):
        return None
    if isinstance(manifest.get("source"), dict) and manifest["source"].get("candidate_uri"):
        return None
    ids = _mapping(manifest.get("airflow"))
    timestamps = _mapping(manifest.get("timestamps"))
    stored_at = timestamps.get("stored_at")
    dag_id = ids.get("dag_id")
    if not isinstance(dag_id, str) or not isinstance(stored_at, str):
        return None
    map_index = ids.get("map_index")
    metrics = _mapping(manifest.get("metrics"))
    cost = _number(manifest.get("cost"))
    return Generation(
        bucket=bucket,
        key=manifest["key"],
        dag_id=dag_id,
        run_id=str(ids.get("run_id") or ""),
        task_id=str(ids.get("task_id") or ""),
        map_index=map_index if isinstance(map_index, int) else -1,
        request_id=str(manifest.get("request_id") or ""),
        model=str(manifest.get("model") or ""),
        prompt=str(manifest.get("prompt") or ""),
        cost=cost if cost is not None else _number(metrics.get("cost")),
        stored_at=stored_at,
        width=manifest.get("width") if isinstance(manifest.get("width"), int) else None,
        height=manifest.get("height") if isinstance(manifest.get("height"), int) else None,
    )


def parse_locations(value: str) -> list[tuple[str, str]]:
    """``s3://bucket/prefix`` entries (comma or whitespace separated) as ``(bucket, prefix)`` pairs."""
    locations = []
    for entry in value.replace(",", " ").split():
        if not entry.startswith("s3://"):
            raise ValueError(f"[segmind] ui_s3_locations: {entry!r} is not an s3://bucket/prefix URI")
        bucket, _, prefix = entry.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"[segmind] ui_s3_locations: {entry!r} names no bucket")
        locations.append((bucket, prefix))
    return locations


class ManifestIndex:
    """The generations under some S3 locations, refreshed by listing and fetching only what changed.

    :param client: makes a boto3 S3 client (called once per refresh, so a rotated AWS connection is used).
    :param locations: ``(bucket, prefix)`` pairs.
    """

    def __init__(
        self,
        client: Callable[[], Any],
        locations: Sequence[tuple[str, str]],
        *,
        ttl: float = DEFAULT_TTL,
        workers: int = FETCH_WORKERS,
    ) -> None:
        self._client = client
        self.locations = list(locations)
        self.ttl = ttl
        self.workers = workers
        self._lock = threading.Lock()
        #: (bucket, manifest key) -> (ETag, generation or None)
        self._entries: dict[tuple[str, str], tuple[str, Generation | None]] = {}
        self._sorted: list[Generation] = []
        self._by_object: dict[tuple[str, str], Generation] = {}
        self._refreshed_at: float | None = None
        #: What the last refresh did: manifests listed and fetched, for the benchmark and the logs.
        self.last_refresh: dict[str, float] = {}

    def generations(self) -> list[Generation]:
        """Every generation, newest first (refreshed first when the listing is older than ``ttl``)."""
        with self._lock:
            if self._refreshed_at is None or time.monotonic() - self._refreshed_at >= self.ttl:
                self._refresh()
            return self._sorted

    def find(self, bucket: str, key: str) -> Generation | None:
        """The generation stored at ``s3://bucket/key``, if the index knows it (the thumbnails' allow-list)."""
        self.generations()
        return self._by_object.get((bucket, key))

    def _refresh(self) -> None:
        started = time.monotonic()
        client = self._client()
        listed: dict[tuple[str, str], str] = {}
        for bucket, prefix in self.locations:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    if obj["Key"].endswith(MANIFEST_SUFFIX):
                        listed[(bucket, obj["Key"])] = str(obj.get("ETag") or "")
        stale = [where for where, etag in listed.items() if self._entries.get(where, ("",))[0] != etag or not etag]

        def fetch(where: tuple[str, str]) -> tuple[tuple[str, str], Generation | None]:
            bucket, key = where
            try:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                return where, generation(bucket, json.loads(body))
            except (ValueError, KeyError):  # not JSON, or gone between the listing and the read
                return where, None

        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            fetched = dict(pool.map(fetch, stale))
        self._entries = {
            where: (etag, fetched[where] if where in fetched else self._entries[where][1])
            for where, etag in listed.items()
        }
        gens = [gen for _, gen in self._entries.values() if gen is not None]
        gens.sort(key=lambda gen: (gen.stored_at, gen.key), reverse=True)
        self._sorted = gens
        self._by_object = {(gen.bucket, gen.key): gen for gen in gens}
        self._refreshed_at = time.monotonic()
        self.last_refresh = {"listed": len(listed), "fetched": len(stale), "seconds": time.monotonic() - started}


# ----------------------------------------------------------------------------------- queries


def visible(gens: Iterable[Generation], dag_ids: set[str]) -> list[Generation]:
    """Only the generations of DAGs the user may read (the auth manager's answer)."""
    return [gen for gen in gens if gen.dag_id in dag_ids]


def select(gens: Iterable[Generation], *, dag_id: str | None = None, day: str | None = None) -> list[Generation]:
    """The page's filters: one DAG, one UTC day (``YYYY-MM-DD``)."""
    return [gen for gen in gens if (not dag_id or gen.dag_id == dag_id) and (not day or gen.day == day)]


@dataclass(frozen=True, slots=True)
class Total:
    """A chart bar: a day's or a DAG's generations and their cost."""

    label: str
    count: int
    cost: float


def _totals(pairs: Iterable[tuple[str, float | None]]) -> list[Total]:
    counts: dict[str, int] = defaultdict(int)
    costs: dict[str, float] = defaultdict(float)
    for label, cost in pairs:
        counts[label] += 1
        costs[label] += cost or 0.0
    return [Total(label, counts[label], round(costs[label], 6)) for label in counts]


def cost_per_day(gens: Iterable[Generation], days: int = 30) -> list[Total]:
    """Cost and count per UTC day, oldest first, the last ``days`` days that had any generation."""
    totals = sorted(_totals((gen.day, gen.cost) for gen in gens), key=lambda total: total.label)
    return totals[-days:]


def cost_per_dag(gens: Iterable[Generation], limit: int = 20) -> list[Total]:
    """Cost and count per DAG, most expensive first (the first ``limit``)."""
    totals = sorted(_totals((gen.dag_id, gen.cost) for gen in gens), key=lambda total: (-total.cost, total.label))
    return totals[:limit]
