"""Benchmark 4: a 200 MiB output from an emulator media URL into S3 (moto), memory and throughput.

Three variants, each in a fresh child process (so each has its own RSS high-water mark), against
the same emulator (``GET /_emulator/blob/{n}?content_type=image/jpeg``, its own process) and the
same moto S3 server (``ThreadedMotoServer``, its own process, which holds the objects):

- ours: ``SegmindToS3Operator.execute`` on a result whose output URL is the blob (download policy
  with ``allow_insecure_loopback=True``, ``max_size`` raised to fit, no manifest, no asset alias):
  the download streams into a spool (memory up to ``multipart_threshold``, then a temp file) while
  hashing, and the upload is a multipart upload whose parts are read lazily from the spool.
- baseline: what ``HttpToS3Operator`` does, ``requests.get(url).content`` then
  ``S3Hook.load_bytes(...)`` (the whole body in memory).
- reference: boto3's ``upload_fileobj`` of the same bytes from a local file (no download at all).

Each child first runs its own path once on a 1 MiB object (imports, clients, thread pools), then
measures the big transfer: memory growth = RSS high-water after (``ru_maxrss``) minus RSS just
before; throughput = bytes / wall time of the whole transfer (download + upload for ours).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._common import (
    SD3,
    BenchResult,
    EmulatorProcess,
    MotoProcess,
    Row,
    child_env,
    fmt,
    max_rss_bytes,
    rss_bytes,
    run_json,
    yes_no,
)

TITLE = "S3 streaming"
SIZE = 200 * 1024 * 1024
SMALL = 1024 * 1024
BUCKET = "segmind-bench"
CONN_ID = "aws_bench"
MEMORY_TARGET_MB = 64.0
THROUGHPUT_TARGET = 0.8
VARIANTS = ("ours", "httptos3", "upload_fileobj")
#: Big transfers per variant: memory is judged on the first, throughput is the best of all (a noisy host).
REPEATS = 2
#: Extra single-transfer children for the throughput figure, interleaved (reference first, then ours first).
THROUGHPUT_ROUNDS = (("upload_fileobj", "ours"), ("ours", "upload_fileobj"))


# ----------------------------------------------------------------------------------------------
# Child process: one variant
# ----------------------------------------------------------------------------------------------


class _Sampler(threading.Thread):
    """Samples this process's RSS every few ms (a second opinion beside ``ru_maxrss``)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def reset(self) -> None:
        self.peak = rss_bytes()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


class _TI:
    dag_id = "segmind_bench"
    run_id = "bench"
    task_id = "store"
    map_index = -1
    try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        pass


def _summary(url: str, size: int) -> dict[str, Any]:
    """What a Segmind operator returns for a COMPLETED job whose output is ``url``."""
    return {
        "request_id": f"bench-{size}",
        "model": SD3,
        "status": "COMPLETED",
        "output_url": url,
        "output_urls": [url],
        "images": [{"url": url, "content_type": "image/jpeg", "file_name": None, "file_size": size}],
    }


def _variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    timings: dict[str, float] = {}

    if name == "ours":
        from airflow.sdk.bases.operator import ExecutorSafeguard

        from airflow_provider_segmind.transfers import _download
        from airflow_provider_segmind.transfers.segmind_to_s3 import SegmindToS3Operator

        ExecutorSafeguard.test_mode = True
        fetch = _download.Downloader.fetch

        def timed_fetch(self: Any, url: str, **kwargs: Any) -> Any:  # instrumentation only: time the download
            start = time.perf_counter()
            try:
                return fetch(self, url, **kwargs)
            finally:
                timings["download_s"] = time.perf_counter() - start

        _download.Downloader.fetch = timed_fetch  # type: ignore[method-assign]

        def transfer(url: str, size: int, key: str) -> None:
            op = SegmindToS3Operator(
                task_id="store",
                results=[_summary(url, size)],
                s3_bucket=args.bucket,
                s3_key=key,
                aws_conn_id=CONN_ID,
                allow_insecure_loopback=True,
                max_size=size + 1024,
                write_manifest=False,
                asset_alias=None,
                replace=True,
            )
            from airflow.sdk.execution_time.context import OutletEventAccessors

            # What Airflow's task runner gives execute(): the operator gives its asset event its extra.
            context: Any = {"ti": _TI(), "outlet_events": OutletEventAccessors()}
            op.execute(context)

    elif name == "httptos3":
        import requests

        def transfer(url: str, size: int, key: str) -> None:
            # HttpToS3Operator.execute: HttpHook.run(...) then S3Hook.load_bytes(response.content, ...)
            response = requests.get(url, timeout=300)
            response.raise_for_status()
            S3Hook(aws_conn_id=CONN_ID).load_bytes(response.content, key, args.bucket, replace=True)

    else:

        def transfer(url: str, size: int, key: str) -> None:
            path = args.file if size == args.size else args.small_file
            client = S3Hook(aws_conn_id=CONN_ID).get_conn()
            with open(path, "rb") as handle:
                client.upload_fileobj(handle, args.bucket, key)

    client = S3Hook(aws_conn_id=CONN_ID).get_conn()
    sampler = _Sampler()
    sampler.start()
    transfer(args.small_url, SMALL, f"warmup/{name}.jpeg")
    gc.collect()
    rss0 = rss_bytes()
    hwm0 = max_rss_bytes()
    sampler.reset()
    walls: list[float] = []
    downloads: list[float] = []
    stored: dict[str, Any] = {}
    hwm1, sampled_peak = hwm0, rss0
    for attempt in range(args.repeats):
        key = f"big/{name}-{attempt}.jpeg"
        start = time.perf_counter()
        transfer(args.url, args.size, key)
        walls.append(time.perf_counter() - start)
        if "download_s" in timings:
            downloads.append(timings.pop("download_s"))
        if attempt == 0:
            # Memory is judged on the first transfer only (the later ones reuse what it allocated).
            hwm1 = max_rss_bytes()
            sampled_peak = sampler.peak
        stored = client.head_object(Bucket=args.bucket, Key=key)
        client.delete_object(Bucket=args.bucket, Key=key)
    sampler.stop()
    client.delete_object(Bucket=args.bucket, Key=f"warmup/{name}.jpeg")
    growth_hwm = (hwm1 - rss0) if hwm1 > hwm0 else (sampled_peak - rss0)
    best = min(range(len(walls)), key=lambda i: walls[i])
    figures: dict[str, Any] = {
        "variant": name,
        "bytes": args.size,
        "stored_bytes": stored.get("ContentLength"),
        "content_type": stored.get("ContentType"),
        "wall_s": walls[best],
        "walls_s": walls,
        "throughput_mb_s": args.size / 2**20 / walls[best],
        "rss_before_mb": rss0 / 2**20,
        "growth_mb": max(growth_hwm, sampled_peak - rss0) / 2**20,
        "growth_sampled_mb": (sampled_peak - rss0) / 2**20,
        "hwm_moved": hwm1 > hwm0,
    }
    if downloads:
        figures["download_s"] = downloads[best]
        figures["downloads_s"] = downloads
    return figures


def variant_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--small-url", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--small-file", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args(argv)
    print(json.dumps(_variant(args.variant, args)))
    return 0


# ----------------------------------------------------------------------------------------------
# Orchestrator side
# ----------------------------------------------------------------------------------------------


def _write_pattern(path: Path, size: int) -> None:
    """The emulator blob's bytes (byte i is i % 256), so every variant stores identical content."""
    block = bytes(range(256)) * 4096  # 1 MiB, a multiple of 256
    with path.open("wb") as handle:
        remaining = size
        while remaining > 0:
            handle.write(block[: min(remaining, len(block))])
            remaining -= len(block)


def run(quick: bool) -> BenchResult:
    result = BenchResult(4, TITLE)
    size = SIZE // 8 if quick else SIZE  # quick: CI checks that it runs, not its figures
    runs: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="segmind-bench-s3-") as tmp,
        EmulatorProcess() as emu,
        MotoProcess() as moto,
    ):
        big_file, small_file = Path(tmp) / "big.bin", Path(tmp) / "small.bin"
        _write_pattern(big_file, size)
        _write_pattern(small_file, SMALL)
        conn = json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto.endpoint, "region_name": "us-east-1"},
            }
        )
        env = child_env(
            AIRFLOW_CONN_AWS_BENCH=conn,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=moto.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        # moto's first big object makes its process grow (fresh pages, arena growth): seconds that would
        # land on whichever variant runs first. Pay them here, outside every measurement.
        with big_file.open("rb") as handle:
            s3.upload_fileobj(handle, BUCKET, "warmup/moto.bin")
        s3.delete_object(Bucket=BUCKET, Key="warmup/moto.bin")
        url = f"{emu.base_url}/_emulator/blob/{size}?content_type=image/jpeg"
        small_url = f"{emu.base_url}/_emulator/blob/{SMALL}?content_type=image/jpeg"

        def child(variant: str, repeats: int) -> dict[str, Any]:
            return run_json(
                [
                    "-m",
                    "benchmarks.b4_s3_streaming",
                    "variant",
                    "--variant",
                    variant,
                    "--url",
                    url,
                    "--small-url",
                    small_url,
                    "--bucket",
                    BUCKET,
                    "--file",
                    str(big_file),
                    "--small-file",
                    str(small_file),
                    "--size",
                    str(size),
                    "--repeats",
                    str(repeats),
                ],
                env=env,
                timeout=300,
            )

        for variant in VARIANTS:
            runs[variant] = r = child(variant, REPEATS)
            print(
                f"    {variant:15} {r['wall_s']:.1f} s, {r['throughput_mb_s']:.0f} MiB/s, "
                f"memory growth {r['growth_mb']:.0f} MiB",
                flush=True,
            )
        # Throughput on a shared host drifts over a minute; more transfers of ours and the reference,
        # interleaved in alternating order, keep a slow spell from landing on one side only.
        for order in () if quick else THROUGHPUT_ROUNDS:  # --quick: that it runs, not its figures
            for variant in order:
                extra = child(variant, 1)
                r = runs[variant]
                r["walls_s"] = r["walls_s"] + extra["walls_s"]
                if extra["wall_s"] < r["wall_s"]:
                    r["wall_s"], r["throughput_mb_s"] = extra["wall_s"], extra["throughput_mb_s"]
                    if "download_s" in extra:
                        r["download_s"] = extra["download_s"]
        for variant in ("ours", "upload_fileobj"):
            r = runs[variant]
            print(f"    {variant:15} best of {len(r['walls_s'])}: {r['throughput_mb_s']:.0f} MiB/s", flush=True)
    ours, base, ref = runs["ours"], runs["httptos3"], runs["upload_fileobj"]
    stored_ok = all(r["stored_bytes"] == size for r in runs.values())
    ratio = ours["throughput_mb_s"] / ref["throughput_mb_s"]
    mem_ok = ours["growth_mb"] <= MEMORY_TARGET_MB
    download = ours.get("download_s")
    result.rows += [
        Row(
            "4",
            f"peak memory growth, {size / 2**20:.0f} MiB output -> S3 (moto)",
            fmt(ours["growth_mb"], 0, " MiB"),
            fmt(base["growth_mb"], 0, " MiB"),
            f"{base['growth_mb'] / ours['growth_mb']:.1f}x less" if ours["growth_mb"] > 0 else "",
            f"<= {MEMORY_TARGET_MB:g} MiB",
            yes_no(mem_ok and stored_ok),
            note=f"baseline = HttpToS3Operator's way (requests .content + S3Hook.load_bytes); "
            f"upload_fileobj reference grew {ref['growth_mb']:.0f} MiB; all objects stored whole: {stored_ok}",
        ),
        Row(
            "4",
            "throughput (download + upload) vs boto3 upload_fileobj from a local file",
            fmt(ours["throughput_mb_s"], 0, " MiB/s"),
            fmt(ref["throughput_mb_s"], 0, " MiB/s"),
            f"{ratio:.2f}x",
            f">= {THROUGHPUT_TARGET:g}x upload_fileobj (best of {len(ours['walls_s'])})",
            yes_no(ratio >= THROUGHPUT_TARGET and stored_ok),
            note=f"ours {ours['wall_s']:.1f} s"
            + (f" = download+spool {download:.1f} s + upload {ours['wall_s'] - download:.1f} s" if download else "")
            + f"; HttpToS3-style {base['throughput_mb_s']:.0f} MiB/s; upload_fileobj {ref['wall_s']:.1f} s",
        ),
    ]
    result.figures = {"size": size, "runs": runs}
    if ratio < THROUGHPUT_TARGET and download:
        upload = ours["wall_s"] - download
        result.notes.append(
            f"4: throughput missed {THROUGHPUT_TARGET:g}x ({ratio:.2f}x): the operator downloads the whole output "
            f"into its spool first ({download:.1f} s) and only then uploads ({upload:.1f} s, vs upload_fileobj "
            f"{ref['wall_s']:.1f} s), by design (nothing reaches S3 before the download is verified), so the two "
            "phases add up instead of overlapping."
        )
    result.notes.append(
        "4: each variant runs in a fresh child process after a 1 MiB warm-up of the same path; memory growth = "
        "RSS high-water (ru_maxrss, cross-checked by 5 ms sampling) minus RSS just before the transfer. moto is "
        f"warmed with one {size / 2**20:.0f} MiB upload before any variant runs (its first big object is slow for "
        "whoever comes first). The emulator streams the blob from its own process; moto keeps objects in its own "
        "process. Ours is the operator's execute() (download policy, spool, SHA-256, conditional multipart upload "
        "with CRC32 parts: defaults multipart_threshold=8 MiB, part_size=8 MiB, max_concurrency=8)."
        + (" --quick moves 25 MiB instead of 200 MiB." if quick else "")
    )
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "variant":
        sys.exit(variant_main(sys.argv[2:]))
    sys.exit("usage: python -m benchmarks.b4_s3_streaming variant --variant ours|httptos3|upload_fileobj ...")
