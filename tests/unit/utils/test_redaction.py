"""Secret masking, written once (``redaction.py``) for the XCom summary and the S3 manifests.

Both callers share the rules (masked names, redacted keys, inline data replaced by a note, bounded
nesting, no NaN) and keep their own bounds: an XCom summary keeps 64 list items and says how many it
dropped, keeps every mapping entry and keeps short ``data:`` URLs; a manifest keeps 100 items
without a note and 200 entries, and drops every ``data:`` URL.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from airflow_provider_segmind.transfers.segmind_to_s3 import _clean
from airflow_provider_segmind.utils.redaction import MANIFEST_LIMITS, XCOM_LIMITS, finite_number, plain
from airflow_provider_segmind.utils.redaction import finite_number as _number
from airflow_provider_segmind.utils.results import fit_summary, summarize_params

KEY = "SG_0123456789abcdef"


def xcom(params: dict[str, Any]) -> dict[str, Any]:
    return summarize_params(params)


def manifest(params: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = _clean(params)
    return cleaned


BOTH = pytest.mark.parametrize("copy", [xcom, manifest], ids=["xcom", "manifest"])


@BOTH
def test_shared_rules(copy: Any) -> None:
    out = copy(
        {
            "prompt": f"a cat, key {KEY}",
            "api_key": KEY,
            "Webhook_Token": "t",
            "cookie": "",  # an empty secret-named value is shown as it is
            "password": None,
            "numbers": [1, 2.5, math.nan, math.inf, -math.inf, True, None, 10**30],
            "huge": "x" * 10_001,
            "limit": "x" * 10_000,
            "deep": {"a": {"b": {"c": {"d": 1}}}},
            "other": b"bytes " + KEY.encode(),
        }
    )
    assert out["prompt"] == "a cat, key ***"
    assert (out["api_key"], out["Webhook_Token"], out["cookie"], out["password"]) == ("***", "***", "", None)
    assert out["numbers"] == [1, 2.5, None, None, None, True, None, 10**30]
    assert out["huge"] == "<omitted: 10,001 characters of inline data>"
    assert out["limit"] == "x" * 10_000
    assert out["deep"] == {"a": {"b": {"c": "<omitted: nested too deep>"}}}
    assert KEY not in out["other"]


def test_the_xcom_summary_keeps_short_data_urls_and_notes_dropped_items() -> None:
    out = xcom({"image": "data:image/png;base64,AAAA", "many": list(range(70)), **{f"k{i}": i for i in range(250)}})
    assert out["image"] == "data:image/png;base64,AAAA"
    assert out["many"] == [*range(64), "<omitted: 6 more items>"]
    assert len(out) == 252  # every entry


def test_a_manifest_drops_data_urls_and_keeps_more_items_without_a_note() -> None:
    out = manifest(
        {"image": "data:image/png;base64,AAAA", "many": list(range(150)), **{f"k{i}": i for i in range(250)}}
    )
    assert out["image"] == "<omitted: 26 characters of inline data>"
    assert out["many"] == list(range(100))
    assert len(out) == 200  # "image", "many" and the first 198 others
    assert out["many"] == plain(list(range(150)), MANIFEST_LIMITS)


def test_an_oversized_summary_clips_its_params_with_the_xcom_rules() -> None:
    summary = {"request_id": "r", "params": {"prompt": "p" * 9_000, "negative_prompt": "n" * 9_000, "x": [0] * 70}}
    summary["params"]["more"] = "m" * 9_000
    summary["params"]["evenmore"] = "e" * 9_000
    summary["params"]["last"] = "l" * 9_000
    fitted = fit_summary(summary)
    assert fitted["truncated"] is True
    assert fitted["params"]["prompt"] == "<omitted: 9,000 characters of inline data>"
    assert fitted["params"]["x"] == [*([0] * 64), "<omitted: 6 more items>"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, 1),
        (2.5, 2.5),
        (10**30, 10**30),
        (True, None),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        ("1", None),
        (None, None),
    ],
)
def test_metrics_keep_finite_numbers_only(value: Any, expected: Any) -> None:
    assert finite_number(value) == expected
    assert _number(value) == expected  # the manifest's metrics
    assert plain(value, XCOM_LIMITS) == (value if isinstance(value, (bool, str)) or value is None else expected)


def test_secret_names_are_airflows_own_on_every_supported_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 24 item 9: the names Airflow's masker hides are hidden here too (3.1.0's shorter list is
    joined with a copy of 3.3.2's), plus the deployment's ``sensitive_var_conn_names``."""
    from airflow.sdk._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    from airflow_provider_segmind.utils.redaction import (
        AIRFLOW_3_3_SENSITIVE_FIELDS,
        SECRET_NAME_PARTS,
        _configured_names,
        is_secret_name,
    )

    # The running Airflow's list is used as it is, and the copy is not behind it (a newer Airflow
    # that adds a name fails here: refresh the copy).
    assert set(DEFAULT_SENSITIVE_FIELDS) <= SECRET_NAME_PARTS
    assert set(DEFAULT_SENSITIVE_FIELDS) <= AIRFLOW_3_3_SENSITIVE_FIELDS
    for name in ("proxy", "HTTPS-Proxy", "dsn", "database_dsn", "private_key", "Bearer", "webhook_url"):
        assert is_secret_name(name), name
        assert xcom({name: "value"})[name] == "***"
        assert manifest({name: "value"})[name] == "***"
    for name in ("prompt", "negative_prompt", "seed", "aspect_ratio", "image", "strength", "output_format", "mode"):
        assert not is_secret_name(name), name
    # A deployment's own sensitive names, as Airflow's masker adds them.
    assert not is_secret_name("brand_watermark")
    monkeypatch.setenv("AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES", "watermark, other_thing")
    _configured_names.cache_clear()
    try:
        assert is_secret_name("brand_watermark")
        assert xcom({"brand_watermark": "w"}) == {"brand_watermark": "***"}
    finally:
        monkeypatch.delenv("AIRFLOW__CORE__SENSITIVE_VAR_CONN_NAMES")
        _configured_names.cache_clear()
    assert not is_secret_name("brand_watermark")
