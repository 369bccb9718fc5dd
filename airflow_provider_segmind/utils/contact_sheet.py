"""The marketing DAG's last step: a batch manifest and an HTML contact sheet for a human reviewer.

Kept out of the DAG file so parsing stays cheap: S3 and Pillow are only imported when it runs. The
sheet is one self-contained HTML file (thumbnails inlined as data URIs), so it opens from S3, a
browser download or the demo's output folder alike.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime
from typing import Any, Final

import jinja2

from airflow_provider_segmind.utils.s3_keys import encode_component, manifest_key

THUMBNAIL_EDGE: Final = 320


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def thumbnail_jpeg(data: bytes, edge: int = THUMBNAIL_EDGE) -> bytes | None:
    """A JPEG thumbnail at most ``edge`` pixels wide and high; ``None`` without Pillow.

    Also the Segmind page's thumbnails (``plugins._app``), so both show an image the same way.
    """
    try:
        from PIL import Image
    except ImportError:
        return None
    with Image.open(io.BytesIO(data)) as image:
        image.thumbnail((edge, edge))
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=80)
    return out.getvalue()


def _thumbnail(data: bytes) -> str | None:
    """A JPEG thumbnail as a data URI; ``None`` without Pillow (the sheet then links the images)."""
    jpeg = thumbnail_jpeg(data)
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


#: The sheet's page. Autoescaped: prompts, ids and URIs are user or API text, and a prompt such as
#: ``<script>`` must show as text, not run (Jinja2 comes with Airflow: apache-airflow-core requires it).
_PAGE: Final = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
).from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ dag_id }} {{ run_id }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; background: #f6f6f8; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 1rem; }
figure { background: white; margin: 0; padding: .75rem; border-radius: 8px; box-shadow: 0 1px 3px #0002; }
img { max-width: 100%; border-radius: 4px; }
th { text-align: left; vertical-align: top; padding-right: .5rem; color: #555; font-weight: 600; }
td, figure > a { word-break: break-word; overflow-wrap: anywhere; }
table { font-size: .85rem; }
</style></head><body>
<h1>{{ dag_id }}</h1>
<p>Run <code>{{ run_id }}</code>: {{ cards | length }} images, {{ total }} credits.</p>
<main>
{% for card in cards -%}
<figure>
{%- if card.thumb %}<img src="{{ card.thumb }}" alt="{{ card.prompt }}">
{%- else %}<a href="{{ card.uri }}">{{ card.uri }}</a>{% endif -%}
<figcaption><table>
{%- for label, value in card.rows %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>{% endfor -%}
</table></figcaption></figure>
{% endfor -%}
</main></body></html>
"""
)


def _card(entry: dict[str, Any], thumb: str | None) -> dict[str, Any]:
    """What one image's card shows: the thumbnail (or a link to the object) and its non-empty rows."""
    metrics = entry.get("metrics") or {}
    rows = [
        ("Prompt", entry.get("prompt")),
        ("Negative", entry.get("negative_prompt")),
        ("Seed", entry.get("seed")),
        ("Size", f"{entry.get('width')}x{entry.get('height')}" if entry.get("width") else None),
        ("Cost", entry.get("cost", metrics.get("cost"))),
        ("Request", entry.get("request_id")),
        ("Object", entry.get("uri")),
    ]
    return {
        "thumb": thumb,
        "prompt": entry.get("prompt") or "",
        "uri": entry["uri"],
        "rows": [(label, str(value)) for label, value in rows if value not in (None, "")],
    }


def render_html(entries: list[dict[str, Any]], thumbs: list[str | None], *, dag_id: str, run_id: str) -> str:
    """The whole sheet as one HTML page: a card per image, the run's image count and total cost."""
    total = sum(float(e.get("cost") or (e.get("metrics") or {}).get("cost") or 0) for e in entries)
    cards = [_card(entry, thumb) for entry, thumb in zip(entries, thumbs, strict=True)]
    return _PAGE.render(dag_id=dag_id, run_id=run_id, cards=cards, total=f"{total:g}")


def write_contact_sheet(
    uris: list[str],
    *,
    bucket: str,
    dag_id: str,
    run_id: str,
    aws_conn_id: str = "aws_default",
    asset_event: Any = None,
) -> dict[str, Any]:
    """Read each object's manifest and bytes, write ``batch-manifest.json`` and ``contact-sheet.html``.

    :param asset_event: an outlet event accessor (``outlet_events[asset]``) to give the batch's
        objects as ``extra``, in the same shape as ``SegmindToS3Operator``'s events, plus the
        batch manifest's and contact sheet's URIs: one event for the whole batch.
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    s3 = S3Hook(aws_conn_id=aws_conn_id)
    entries: list[dict[str, Any]] = []
    thumbs: list[str | None] = []
    for uri in uris:
        obj_bucket, key = _split(uri)
        manifest = json.loads(s3.read_key(manifest_key(key), bucket_name=obj_bucket))
        entries.append({**manifest, "uri": uri})
        body = s3.get_key(key, bucket_name=obj_bucket).get()["Body"].read()
        thumbs.append(_thumbnail(body))
    prefix = f"segmind/{encode_component(dag_id)}/{encode_component(run_id)}"
    batch = {
        "dag_id": dag_id,
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "images": len(entries),
        "total_cost": sum(float(e.get("cost") or 0) for e in entries),
        "objects": entries,
    }
    batch_key = f"{prefix}/batch-manifest.json"
    sheet_key = f"{prefix}/contact-sheet.html"
    s3.load_string(json.dumps(batch, indent=2, default=str), batch_key, bucket_name=bucket, replace=True)
    s3.load_bytes(
        render_html(entries, thumbs, dag_id=dag_id, run_id=run_id).encode(),
        sheet_key,
        bucket_name=bucket,
        replace=True,
    )
    written = {"batch_manifest": f"s3://{bucket}/{batch_key}", "contact_sheet": f"s3://{bucket}/{sheet_key}"}
    if asset_event is not None:
        from airflow_provider_segmind.transfers.segmind_to_s3 import asset_event_extra

        objects = [
            {"key": e["key"], "sha256": e["sha256"], "manifest": manifest_key(e["key"]), "request_id": e["request_id"]}
            for e in entries
        ]
        asset_event.extra = {**asset_event_extra(bucket, objects), **written}
    return written
