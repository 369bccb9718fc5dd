"""Issue 23 item 2: an ``s3://`` URI is resolved in ANY top-level input of ``SegmindRunOperator``, and in lists.

Models name their media inputs differently: ``input_image`` (flux-kontext-pro), ``input_image_1`` /
``input_image_2`` (multi-image kontext), ``image_url`` (image converter), masks. Each one given as
``s3://bucket/key`` (or a list of them) gets the same checks before billing (exists, size, type),
is fingerprinted by object identity, is sent as a presigned URL or base64, and leaves nothing of the
bytes or the signature in XCom, the trigger's kwargs, the request record or the logs.

Real servers only: moto's S3 server and the Segmind emulator on loopback (``tests/support/media.py``).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_segmind.emulator.server import SegmindEmulator
from airflow_provider_segmind.exceptions import SegmindInvalidParametersError
from airflow_provider_segmind.operators._image_input import MEDIA_INPUT_ALLOWED, replace_s3_values, s3_inputs_of
from airflow_provider_segmind.operators._records import STATE_STORE_KEY
from airflow_provider_segmind.operators.segmind import SegmindRunOperator
from tests.support.jobs import FAST_SCHEDULE, DictTaskStateStore, finish_deferred, make_context, use_emulator
from tests.support.media import photo
from tests.support.s3 import S3Env
from tests.support.s3_servers import s3_emu  # noqa: F401 (the fixture "emu" here: near-instant jobs)
from tests.unit.operators.test_image_input import FAST_EXTRA, put, request_of_try
from tests.unit.operators.test_reconcile import DyingStore

RED, BLUE, GREEN = (200, 30, 30), (30, 40, 210), (30, 200, 30)
KONTEXT = "flux-kontext-pro"


def run_op(inputs: dict[str, Any], **kwargs: Any) -> SegmindRunOperator:
    kwargs.setdefault("poll_schedule", FAST_SCHEDULE)
    kwargs.setdefault("deferrable", False)
    kwargs.setdefault("history_wait", 2.0)
    return SegmindRunOperator(task_id="edit", model=kwargs.pop("model", KONTEXT), inputs=inputs, **kwargs)


#: Third-party loggers left out of the haystack: moto's werkzeug access log shows the URL it was
#: fetched with, and botocore's DEBUG log its own signing, by design (neither is the provider's).
THIRD_PARTY_LOGGERS = ("werkzeug", "botocore", "urllib3", "s3transfer", "boto3")


def _haystack(*parts: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything the provider keeps or shows: JSON of the given parts plus the task's log (stdlib
    records and structlog's console lines, as Airflow 3.3 writes the task log)."""
    records = [r.getMessage() for r in caplog.records if not r.name.startswith(THIRD_PARTY_LOGGERS)]
    out = capsys.readouterr()
    lines = [
        line for line in (out.out + out.err).splitlines() if not any(f"[{name}" in line for name in THIRD_PARTY_LOGGERS)
    ]
    return "\n".join([*(json.dumps(part, default=str) for part in parts), *records, *lines])


def test_the_pure_rules_find_and_replace_s3_values_under_any_name() -> None:
    body = {
        "prompt": "x",
        "input_image": "s3://b/one.png",
        "images": ["https://x/y.png", "s3://b/two.png", "  s3://b/three.png"],
        "mask": {"url": "s3://b/nested.png"},  # nested objects are sent as given
        "steps": 4,
    }
    assert s3_inputs_of(body) == [
        ("input_image", "s3://b/one.png"),
        ("images[1]", "s3://b/two.png"),
        ("images[2]", "  s3://b/three.png"),
    ]
    replaced = replace_s3_values(body, lambda field, uri: f"<{field}>")
    assert replaced == {
        "prompt": "x",
        "input_image": "<input_image>",
        "images": ["https://x/y.png", "<images[1]>", "<images[2]>"],
        "mask": {"url": "s3://b/nested.png"},
        "steps": 4,
    }
    assert list(replaced) == list(body)  # key order kept


@pytest.mark.parametrize("transport", ["presigned", "base64"])
def test_input_image_as_s3_is_sent_as_presigned_or_base64_and_kept_out_of_xcom_and_logs(
    emu: SegmindEmulator,
    s3: S3Env,
    transport: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    uri = put(s3, "photos/red.png", photo(RED))
    context = make_context(DictTaskStateStore())
    summary = run_op(
        {"prompt": "make it blue", "input_image": uri, "aspect_ratio": "match_input_image"},
        image_transport=transport,
    ).execute(context)

    assert summary["status"] == "COMPLETED"
    sent = emu.job(summary["request_id"])["params"]  # what the emulator received
    if transport == "presigned":
        assert sent["input_image"].startswith(f"{s3.endpoint}/{s3.bucket}/photos/red.png?")
        assert "X-Amz-Signature=" in sent["input_image"]
    else:
        assert base64.b64decode(sent["input_image"]) == photo(RED)
    assert sent["aspect_ratio"] == "match_input_image"
    assert summary["params"]["input_image"] == uri  # the summary (XCom) names the object
    haystack = _haystack(context["ti"].xcom, summary, context["task_state_store"].values, caplog=caplog, capsys=capsys)
    assert sent["input_image"][:120] not in haystack
    assert base64.b64encode(photo(RED)).decode()[:60] not in haystack
    assert "X-Amz-Signature" not in haystack
    assert "Signature=" not in haystack
    assert f"Input input_image {uri}" in haystack  # the log names the field and the object


def test_a_list_of_s3_uris_is_resolved_item_by_item_deferred_with_nothing_in_the_trigger(
    emu: SegmindEmulator, s3: S3Env, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO)
    red, blue = put(s3, "photos/a.png", photo(RED)), put(s3, "photos/b.jpg", photo(BLUE, "JPEG"), "image/jpeg")
    store = DictTaskStateStore()
    context = make_context(store)
    inputs = {"prompt": "both products on one shelf", "images": [red, blue]}
    with pytest.raises(TaskDeferred) as info:
        run_op(inputs, image_transport="base64", deferrable=True, end_from_trigger=True).execute(context)
    deferred = info.value
    sent = emu.job(deferred.trigger.request_id)["params"]["images"]
    assert [base64.b64decode(item) for item in sent] == [photo(RED), photo(BLUE, "JPEG")]
    summary = finish_deferred(run_op(inputs, image_transport="base64", deferrable=True), context, deferred)

    assert summary["status"] == "COMPLETED"
    assert summary["params"]["images"] == [red, blue]
    haystack = _haystack(
        deferred.trigger.serialize(),
        deferred.kwargs or {},
        context["ti"].xcom,
        summary,
        store.values,
        caplog=caplog,
        capsys=capsys,
    )
    for item in sent:
        assert item[:60] not in haystack
    assert f"Input images[1] {blue}" in haystack
    assert red in json.dumps(deferred.trigger.serialize(), default=str)  # the trigger names the objects


def test_presigned_lists_and_other_names_are_signed_per_object(emu: SegmindEmulator, s3: S3Env) -> None:
    one, two = put(s3, "k/one.png", photo(RED)), put(s3, "k/two.webp", photo(GREEN, "WEBP"), "image/webp")
    mask = put(s3, "k/mask.png", photo((255, 255, 255)))
    inputs = {"prompt": "x", "input_image_1": one, "input_image_2": two, "mask_image": mask, "refs": [one, two]}
    summary = run_op(inputs, image_transport="presigned", model="multi-image-kontext").execute(make_context())
    sent = emu.job(summary["request_id"])["params"]
    for name, key in (("input_image_1", "k/one.png"), ("input_image_2", "k/two.webp"), ("mask_image", "k/mask.png")):
        assert sent[name].startswith(f"{s3.endpoint}/{s3.bucket}/{key}?"), name
    assert sent["refs"] == [sent["input_image_1"], sent["input_image_2"]]  # one signing per object and try


def test_every_bad_s3_input_is_named_before_anything_is_billed(emu: SegmindEmulator, s3: S3Env) -> None:
    good = put(s3, "photos/ok.png", photo(RED))
    put(s3, "photos/notes.txt", b"shoot notes", "text/plain")
    b = s3.bucket
    inputs = {
        "prompt": "x",
        "input_image_1": f"s3://{b}/photos/missing.png",
        "mask": f"s3://{b}/photos/notes.txt",
        "images": [good, f"s3://{b}/photos/"],
        "image_url": "S3://Upper/x.png",
    }
    with pytest.raises(AirflowFailException) as info:
        run_op(inputs, deferrable=True).execute(make_context(DictTaskStateStore()))
    text = str(info.value)
    assert "4 invalid parameters" in text
    for field, phrase in [
        ("input_image_1", "does not exist"),
        ("mask", "Content-Type 'text/plain'"),
        ("images[1]", "that is a prefix"),
        ("image_url", "lower-case 's3://'"),
    ]:
        assert f"{field!r}: " in text, field
        assert phrase in text, (field, text)
    assert MEDIA_INPUT_ALLOWED in text
    cause = info.value.__cause__
    assert isinstance(cause, SegmindInvalidParametersError)
    assert [problem[0] for problem in cause.problems] == ["input_image_1", "mask", "images[1]", "image_url"]
    assert emu.stats()["submit_attempts"] == 0


def test_a_retry_reattaches_by_object_identity_and_a_replaced_list_item_submits_anew(
    emu: SegmindEmulator, s3: S3Env
) -> None:
    red, blue = put(s3, "photos/a.png", photo(RED)), put(s3, "photos/b.png", photo(BLUE))
    store = DictTaskStateStore()

    def attempt(try_number: int) -> str:
        op = run_op({"prompt": "x", "images": [red, blue]}, image_transport="presigned", deferrable=True)
        return request_of_try(op, make_context(store, try_number=try_number, max_tries=3))

    first = attempt(1)
    assert attempt(2) == first  # new signatures, same objects: the recorded request is reused
    assert emu.stats()["submissions"] == 1
    put(s3, "photos/b.png", photo(GREEN))  # one item of the list was replaced: a new input, a new job
    assert attempt(3) != first
    assert emu.stats()["submissions"] == 2


@pytest.mark.parametrize("shape", ["input_image", "list"])
def test_a_lost_submit_is_found_in_the_history_although_every_presigned_url_changed(
    emu: SegmindEmulator, s3: S3Env, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """Try 1's submit is accepted and its worker dies before recording the id; try 2 signs new URLs
    (another expiry) for the same objects, under ``input_image`` or in a list, and still finds try 1's
    request in the request history (``history_search._same`` compares them without signatures)."""
    use_emulator(monkeypatch, emu, extra=FAST_EXTRA)
    red, blue = put(s3, "photos/a.png", photo(RED)), put(s3, "photos/b.png", photo(BLUE))
    inputs: dict[str, Any] = {"prompt": "lost submit " + shape}
    inputs.update({"input_image": red} if shape == "input_image" else {"images": [red, blue]})
    store = DyingStore()
    with pytest.raises(SystemExit):
        run_op(inputs, image_transport="presigned", deferrable=True).execute(
            make_context(store, try_number=1, max_tries=1)
        )
    assert store.get(STATE_STORE_KEY)["phase"] == "submitting"
    (first,) = emu.jobs()
    retry = run_op(inputs, image_transport="presigned", presigned_url_expiry=600, deferrable=True)
    assert request_of_try(retry, make_context(store, try_number=2, max_tries=1)) == first["request_id"]
    assert emu.stats()["submissions"] == 1
    resigned = sorted(retry._image_inputs._wire.values())
    assert all("X-Amz-Expires=600" in url for url in resigned)
    sent = first["params"]["input_image"] if shape == "input_image" else first["params"]["images"]
    assert sent not in (resigned[0], resigned)  # different strings, the same objects
