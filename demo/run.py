"""``make demo``: generate the example prompts with SegmindHook and save the pictures locally.

Without ``SEGMIND_API_KEY`` it starts the bundled emulator on a free loopback port (no key, no
network); with the key set it calls the real Segmind API. Either way it submits every prompt as a
v2 job, polls with the hook, downloads each image (without sending the key) into
``demo-output/`` and prints one line per image.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "example_dags" / "prompts" / "marketing_prompts.json"
OUTPUT = Path(os.environ.get("SEGMIND_DEMO_OUTPUT", REPO / "demo-output"))


@contextlib.contextmanager
def segmind_endpoint() -> Iterator[str]:
    """Yield the connection JSON: the real API when a key is set, else a freshly started emulator."""
    key = os.environ.get("SEGMIND_API_KEY")
    if key:
        yield json.dumps({"conn_type": "segmind", "password": key})
        return
    from airflow_provider_segmind.emulator import EmulatorConfig, SegmindEmulator

    # Near-real queueing but a shorter render than SD3's ~9.6 s, so the demo takes seconds.
    config = EmulatorConfig.for_profile("realistic", queue_time=0.3, inference_time=(1.5, 2.5))
    with SegmindEmulator(config) as emulator:
        print(f"Segmind emulator on {emulator.base_url} (set SEGMIND_API_KEY to use the real API)")
        yield json.dumps({"conn_type": "segmind", "password": emulator.api_key, "host": emulator.base_url})


def main() -> int:
    prompts = json.loads(PROMPTS.read_text())
    OUTPUT.mkdir(parents=True, exist_ok=True)
    with segmind_endpoint() as conn_json:
        os.environ["AIRFLOW_CONN_SEGMIND_DEFAULT"] = conn_json
        from airflow_provider_segmind.hooks.segmind import SegmindHook
        from airflow_provider_segmind.protocol import SD3_LARGE_MODEL

        hook = SegmindHook()
        print(f"Credits before: {hook.get_credits():g}")
        jobs = [(spec, hook.submit(SD3_LARGE_MODEL, spec)) for spec in prompts]
        pending = {sub.request_id: (spec, sub) for spec, sub in jobs}
        while pending:
            time.sleep(1.0)
            for request_id, (spec, _sub) in list(pending.items()):
                status = hook.get_status(request_id)
                if not status.status.is_terminal:
                    continue
                del pending[request_id]
                if status.error:
                    print(f"FAILED  {request_id}  {status.error}")
                    continue
                result = hook.get_result(request_id)
                url = result.output_urls[0]
                target = OUTPUT / f"{request_id}.{url.rsplit('.', 1)[-1]}"
                with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - URL from the API
                    target.write_bytes(response.read())
                cost = result.metrics.get("cost", "?")
                print(f"OK  {target.name}  seed={result.seed}  cost={cost}  {spec['prompt'][:60]}")
        print(f"Credits after: {hook.get_credits():g}")
    print(f"Pictures are in {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
