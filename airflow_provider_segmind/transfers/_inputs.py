"""Output discovery: what the upstream handed over, turned into COMPLETED results and their outputs.

``results`` may be a result dict (a Segmind operator's XCom summary), a request id, JSON text, or
(nested) lists of them (a mapped task's output). Request ids, summaries that list no output URL
and inline (base64) results are resolved through the hook (``get_result``); every distinct output
of a result is listed, then fetched one at a time under the download policy (:func:`fetch_outputs`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_segmind.exceptions import SegmindOutputError
from airflow_provider_segmind.protocol.urls import is_request_id
from airflow_provider_segmind.protocol.vocabulary import SegmindJobStatus
from airflow_provider_segmind.transfers._download import Downloader, Fetched, spool_base64
from airflow_provider_segmind.utils.media_policy import public_url
from airflow_provider_segmind.utils.results import CompletedResult, ResultOutput, _outputs_from, result_from_summary

if TYPE_CHECKING:
    from airflow_provider_segmind.protocol.responses import JobResult

#: Fetches a COMPLETED job's result by request id (the operator's hook).
GetResult = Callable[[str], "JobResult"]

_MAX_INPUT_DEPTH: Final = 3


def _result_from_job(
    job: JobResult, *, model: str | None = None, params: Mapping[str, Any] | None = None
) -> CompletedResult:
    if job.status is not SegmindJobStatus.COMPLETED:
        raise SegmindOutputError(
            f"Segmind request {job.request_id} is {job.status.value}, not COMPLETED: wait for it (SegmindJobSensor) "
            "before storing its output"
        )
    raw = job.raw
    merged = dict(params or {})
    for name in ("prompt", "negative_prompt", "aspect_ratio", "output_format"):
        if name not in merged and isinstance(raw.get(name), str):
            merged[name] = raw[name]
    raw_model = raw.get("model")
    content_type = raw.get("content_type")
    return CompletedResult(
        request_id=job.request_id,
        model=model or (raw_model if isinstance(raw_model, str) else None),
        seed=job.seed,
        metrics=dict(job.metrics),
        params=merged,
        outputs=[] if job.base64_image else _outputs_from(list(job.images), job.output_urls),
        inline=job.base64_image is not None,
        base64_image=job.base64_image,
        inline_content_type=content_type if isinstance(content_type, str) else None,
    )


def _iter_inputs(value: Any, depth: int = 0) -> Iterator[Mapping[str, Any] | str]:
    """Flatten what ``results`` rendered to: a dict, a request id, or (nested) sequences of them."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                yield from _iter_inputs(json.loads(text), depth + 1)
            except ValueError:
                raise SegmindOutputError(f"results is a string that is not valid JSON: {text[:80]!r}") from None
            return
        yield text
    elif isinstance(value, Mapping):
        yield value
    elif value is None:
        raise SegmindOutputError("results is None: pass a Segmind operator's output (XComArg), a result dict or ids")
    elif isinstance(value, (bytes, bytearray)):
        raise SegmindOutputError("results is bytes: pass result dicts or request ids, not image data")
    elif isinstance(value, Iterable) and depth < _MAX_INPUT_DEPTH:
        for item in value:
            yield from _iter_inputs(item, depth + 1)
    else:
        raise SegmindOutputError(
            f"results has an unsupported item of type {type(value).__name__}: expected a result dict, a request id, "
            "or a list of them (a mapped task's output)"
        )


def resolve(item: Mapping[str, Any] | str, get_result: GetResult, log: Any) -> CompletedResult:
    """A result dict as is (re-fetched only if it holds no output URL); a request id via the hook."""
    if isinstance(item, str):
        if item.startswith(("http://", "https://", "s3://")):
            raise SegmindOutputError(
                f"results contains a URL ({public_url(item)}), not a request id: pass the Segmind operator's "
                "result dict (it carries the request id, prompt and metrics the manifest records)"
            )
        if not is_request_id(item):
            raise SegmindOutputError(f"{item[:80]!r} is not a Segmind request id")
        return _result_from_job(get_result(item))
    result = result_from_summary(item)
    if not result.outputs and not result.inline:
        log.info("Result %s lists no output URL: fetching it by request id.", result.request_id)
        result = refetch(result, get_result)
    return result


def refetch(result: CompletedResult, get_result: GetResult) -> CompletedResult:
    """Fetch a result by its request id, keeping what the summary knew (model, params, metrics, seed)."""
    fetched = _result_from_job(get_result(result.request_id), model=result.model, params=result.params)
    fetched.metrics = {**fetched.metrics, **result.metrics}
    fetched.seed = result.seed if result.seed is not None else fetched.seed
    fetched.retrievable_until = result.retrievable_until
    if not fetched.outputs and not fetched.inline:
        raise SegmindOutputError(f"Segmind result {result.request_id} has no output URL and no inline image")
    return fetched


def fetch_outputs(
    result: CompletedResult, downloader: Downloader, get_result: GetResult, log: Any
) -> Iterator[tuple[ResultOutput, Fetched]]:
    """Each output of ``result``, downloaded (or decoded) and verified, one at a time; the caller closes each."""
    if result.inline:
        if result.base64_image is None:
            result = refetch(result, get_result)
        if result.base64_image is not None:
            what = f"inline output of Segmind request {result.request_id}"
            yield (
                ResultOutput(0),
                spool_base64(
                    result.base64_image, downloader.policy, declared_type=result.inline_content_type, what=what
                ),
            )
            return
    for output in result.outputs:
        assert output.url is not None
        log.info("Downloading output %d of %s from %s", output.index, result.request_id, public_url(output.url))
        yield output, downloader.fetch(output.url, expected_size=output.size)
