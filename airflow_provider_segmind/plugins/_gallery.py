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

from airflow_provider_segmind.utils.s3_keys import MANIFEST_SUFFIX

#: Seconds a listing stays fresh: within it, page views read only memory.
DEFAULT_TTL: Final = 30.0
#: Manifests fetched at once on a refresh (each a small GET): botocore's default connection pool
#: (``max_pool_connections``), so no thread waits for, or throws away, a connection.
FETCH_WORKERS: Final = 10
#: A refresh under way publishes what it has read every this many manifests.
PUBLISH_EVERY: Final = 500


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
    """The generations under some S3 locations, refreshed in the background, fetching only what changed.

    Why in the background: the first listing of a large bucket is one GET per manifest (10,000 take
    a minute on a busy machine, see benchmark 6), and a page view must not wait for that. A view
    starts a refresh when the listing is older than ``ttl``; for the very first one it waits at most
    ``wait`` seconds, then shows what has been read so far (the refresh publishes its progress every
    :data:`PUBLISH_EVERY` manifests) and :attr:`progress` says how far it got. Later refreshes list
    again and fetch only new or changed manifests (by ETag), while views answer from the snapshot.

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
        self._started_at: float | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        #: What the refresh under way (or the last one) did: manifests listed and fetched, seconds, error.
        self.progress: dict[str, Any] = {"listed": 0, "fetched": 0, "to_fetch": 0, "running": False}
        #: The last finished refresh's figures (for the benchmark and the logs).
        self.last_refresh: dict[str, Any] = {}

    def generations(self, wait: float = 0.0) -> list[Generation]:
        """Every generation read so far, newest first; starts a refresh when due.

        Until a first refresh has ended, waits for it up to ``wait`` seconds; after that, never.
        """
        with self._lock:
            due = self._started_at is None or (self._thread is None and time.monotonic() - self._started_at >= self.ttl)
            if due:
                self._started_at = time.monotonic()
                self._done.clear()
                self._thread = threading.Thread(target=self._refresh, name="segmind-page-index", daemon=True)
                self._thread.start()
        if wait > 0 and not self.last_refresh:  # only before the first refresh ends: later, the snapshot answers
            self._done.wait(wait)
        return self._sorted

    def wait(self, timeout: float) -> bool:
        """Wait for the refresh under way; whether it finished (tests and the benchmark)."""
        return self._done.wait(timeout)

    def find(self, bucket: str, key: str) -> Generation | None:
        """The generation stored at ``s3://bucket/key``, if the index knows it (the thumbnails' allow-list)."""
        self.generations()
        return self._by_object.get((bucket, key))

    def _publish(self, entries: dict[tuple[str, str], tuple[str, Generation | None]]) -> None:
        gens = [gen for _, gen in entries.values() if gen is not None]
        gens.sort(key=lambda gen: (gen.stored_at, gen.key), reverse=True)
        by_object = {(gen.bucket, gen.key): gen for gen in gens}
        self._sorted, self._by_object = gens, by_object  # readers see the old or the new, never a mix

    def _refresh(self) -> None:
        started = time.monotonic()
        try:
            self.progress = {"listed": 0, "fetched": 0, "to_fetch": 0, "running": True}
            client = self._client()
            listed: dict[tuple[str, str], str] = {}
            for bucket, prefix in self.locations:
                for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                    for obj in page.get("Contents", ()):
                        if obj["Key"].endswith(MANIFEST_SUFFIX):
                            listed[(bucket, obj["Key"])] = str(obj.get("ETag") or "")
                    self.progress = {**self.progress, "listed": len(listed)}
            old = self._entries
            stale = [where for where, etag in listed.items() if old.get(where, ("",))[0] != etag or not etag]
            self.progress = {**self.progress, "to_fetch": len(stale)}
            # Kept: what is still listed and unchanged; the rest arrives as it is fetched.
            entries = {where: old[where] for where in listed if where in old and where not in set(stale)}

            def fetch(where: tuple[str, str]) -> tuple[tuple[str, str], Generation | None, bool]:
                bucket, key = where
                try:
                    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                except Exception:  # gone, denied or transient: not kept, so the next refresh reads it again
                    return where, None, False
                try:
                    return where, generation(bucket, json.loads(body)), True
                except ValueError:  # not JSON: kept (by its ETag) as "not a generation"
                    return where, None, True

            with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
                for count, (where, gen, read) in enumerate(pool.map(fetch, stale), start=1):
                    if read:
                        entries[where] = (listed[where], gen)
                    if count % PUBLISH_EVERY == 0:
                        self.progress = {**self.progress, "fetched": count}
                        self._publish(entries)
            self._entries = entries
            self._publish(entries)
            self.last_refresh = {"listed": len(listed), "fetched": len(stale), "seconds": time.monotonic() - started}
            self.progress = {**self.progress, "fetched": len(stale), "running": False}
        except Exception as err:  # the page shows it; the next view after ttl tries again
            self.progress = {**self.progress, "running": False, "error": f"{type(err).__name__}: {err}"[:300]}
        finally:
            with self._lock:
                self._thread = None
                self._started_at = time.monotonic()
            self._done.set()


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
