"""``make demo``: run the marketing DAG end to end and put the pictures in ./demo-output.

Offline by default: it starts the bundled Segmind emulator and a local S3 endpoint (moto in server
mode) on free loopback ports, points the ``segmind_default`` and ``aws_default`` connections at
them by environment variable, runs ``example_segmind_marketing_assets`` with ``dag.test()`` in a
throw-away AIRFLOW_HOME, copies every image, manifest and the contact sheet into ./demo-output,
prints one line per image, and stops everything it started (also on Ctrl-C).

With ``SEGMIND_API_KEY`` set it calls the real Segmind API (and spends credits); with
``SEGMIND_DEMO_BUCKET`` and AWS credentials set it writes to that real bucket instead of moto.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DAGS = REPO / "example_dags"
DAG_ID = "example_segmind_marketing_assets"
OUTPUT = Path(os.environ.get("SEGMIND_DEMO_OUTPUT", REPO / "demo-output"))
LOCAL_BUCKET = "segmind-demo"


@contextlib.contextmanager
def segmind_connection() -> Iterator[dict[str, Any]]:
    key = os.environ.get("SEGMIND_API_KEY")
    if key:
        print("Segmind: the real API (SEGMIND_API_KEY is set; this spends credits)")
        yield {"conn_type": "segmind", "password": key}
        return
    from airflow_provider_segmind.emulator.config import EmulatorConfig
    from airflow_provider_segmind.emulator.server import SegmindEmulator

    # Segmind-like queueing, but a shorter render than SD3's ~9.6 s so the demo takes a minute.
    config = EmulatorConfig.for_profile("realistic", queue_time=(0.2, 1.0), inference_time=(2.0, 4.0))
    with SegmindEmulator(config) as emulator:
        print(f"Segmind: local emulator on {emulator.base_url} (set SEGMIND_API_KEY for the real API)")
        os.environ["SEGMIND_ALLOW_INSECURE_LOOPBACK"] = "1"
        yield {"conn_type": "segmind", "password": emulator.api_key, "host": emulator.base_url}


@contextlib.contextmanager
def s3_connection() -> Iterator[tuple[dict[str, Any], str]]:
    bucket = os.environ.get("SEGMIND_DEMO_BUCKET")
    if bucket:
        print(f"S3: the real bucket {bucket} (SEGMIND_DEMO_BUCKET is set; default AWS credentials)")
        yield {"conn_type": "aws"}, bucket
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per S3 call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        print(f"S3: local moto server on {endpoint} (set SEGMIND_DEMO_BUCKET for a real bucket)")
        conn = {
            "conn_type": "aws",
            "login": "demo",
            "password": "demo-secret",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        yield conn, LOCAL_BUCKET
    finally:
        server.stop()


def prepare_airflow(home: Path, conns: dict[str, dict[str, Any]], bucket: str) -> None:
    """Environment for a throw-away Airflow: set before Airflow is imported."""
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # Airflow's own notices (dag.test() asset bookkeeping, lazy XCom look-ups) would bury the
            # demo's summary; SEGMIND_DEMO_LOG_LEVEL=INFO shows everything.
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("SEGMIND_DEMO_LOG_LEVEL", "CRITICAL"),
            "SEGMIND_EXAMPLE_BUCKET": bucket,
            "SEGMIND_EXAMPLE_POOL": "segmind",
        }
    )
    for conn_id, conn in conns.items():
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
    print("Airflow: migrating a throw-away metadata DB ...")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "pools", "set", "segmind", "4", "Segmind jobs (rate limit)"],
        check=True,
        capture_output=True,
    )


def run_marketing_dag(prompts: list[dict[str, Any]] | None) -> Any:
    from airflow.sdk import DAG

    path = DAGS / f"{DAG_ID}.py"
    spec = importlib.util.spec_from_file_location(DAG_ID, path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[DAG_ID] = module
    spec.loader.exec_module(module)
    if "sync_bag_to_db" not in inspect.getsource(DAG.test):  # Airflow 3.1: serialize first
        from airflow.dag_processing.bundles.manager import DagBundlesManager
        from airflow.models.dagbag import DagBag, sync_bag_to_db

        DagBundlesManager().sync_bundles_to_db()
        sync_bag_to_db(DagBag(dag_folder=str(DAGS), include_examples=False), "dags-folder", None)
    conf = {"prompts": prompts} if prompts else {}
    return module.dag.test(run_conf=conf)


def copy_outputs(bucket: str, run_id: str) -> list[dict[str, Any]]:
    """Copy this run's objects from S3 into OUTPUT; return the image manifests."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_provider_segmind.utils.s3_keys import encode_component

    s3 = S3Hook(aws_conn_id="aws_default")
    prefix = f"segmind/{encode_component(DAG_ID)}/{encode_component(run_id)}/"
    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    OUTPUT.mkdir(parents=True)
    manifests = []
    for key in s3.list_keys(bucket_name=bucket, prefix=prefix) or []:
        target = OUTPUT / key[len(prefix) :].replace("/", "_")
        target.write_bytes(s3.get_key(key, bucket_name=bucket).get()["Body"].read())
        if key.endswith(".manifest.json"):
            manifests.append(json.loads(target.read_text()))
    return manifests


def main() -> int:
    started = time.monotonic()
    # Ctrl-C and SIGTERM unwind through the context managers, which stop the servers.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    prompts = json.loads(os.environ["SEGMIND_DEMO_PROMPTS"]) if os.environ.get("SEGMIND_DEMO_PROMPTS") else None
    home = Path(tempfile.mkdtemp(prefix="segmind-demo-airflow-"))
    try:
        with segmind_connection() as segmind, s3_connection() as (aws, bucket):
            prepare_airflow(home, {"segmind_default": segmind, "aws_default": aws}, bucket)
            if aws.get("extra"):
                from airflow.providers.amazon.aws.hooks.s3 import S3Hook

                S3Hook(aws_conn_id="aws_default").create_bucket(bucket_name=bucket)
            print(f"Running {DAG_ID} with dag.test() ...")
            dag_run = run_marketing_dag(prompts)
            state = str(getattr(dag_run, "state", "unknown"))
            manifests = copy_outputs(bucket, dag_run.run_id)
    except KeyboardInterrupt:
        print("Interrupted: stopped the emulator and the S3 server.")
        return 130
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print()
    for manifest in manifests:
        print(
            f"  {Path(manifest['key']).name}  {manifest.get('width')}x{manifest.get('height')}  "
            f"seed={manifest.get('seed')}  cost={manifest.get('cost')}  request={manifest.get('request_id')}  "
            f"{(manifest.get('prompt') or '')[:50]}"
        )
    sheet = OUTPUT / "contact-sheet.html"
    print(f"\nRun {state}: {len(manifests)} images in {time.monotonic() - started:.0f} s.")
    print(f"Pictures, manifests and the contact sheet are in {OUTPUT}/")
    if sheet.exists():
        print(f"Open the contact sheet: {sheet}")
    if not (state.endswith("success") and manifests):
        print("The run did not succeed: rerun with SEGMIND_DEMO_LOG_LEVEL=INFO to see Airflow's logs.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
