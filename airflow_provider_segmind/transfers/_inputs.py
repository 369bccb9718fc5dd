"""Output discovery: what the upstream handed over, turned into COMPLETED results and their outputs.

``results`` may be a result dict (a Segmind operator's XCom summary), a request id, JSON text, or
(nested) lists of them (a mapped task's output). Request ids, summaries that list no output URL
and inline (base64) results are resolved through the hook (``get_result``); every distinct output
of a result is listed, then fetched one at a time under the download policy (:func:`fetch_outputs`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_segmind.protocol import SegmindJobStatus, is_request_id, parse_int
from airflow_provider_segmind.transfers._download import Downloader, Fetched, spool_base64
from airflow_provider_segmind.transfers._media_policy import SegmindOutputError, public_url

if TYPE_CHECKING:
    from airflow_provider_segmind.protocol import JobResult

#: Fetches a COMPLETED job's result by request id (the operator's hook).
GetResult = Callable[[str], "JobResult"]

_MAX_INPUT_DEPTH: Final = 3


@dataclass(frozen=True)
class _Output:
    """One output of one result: a URL to download, or the result's inline (base64) image."""

    index: int
    url: str | None = None
    content_type: str | None = None
    size: int | None = None


@dataclass
class _Result:
    """A COMPLETED Segmind result, from an XCom summary or fetched by request id."""

    request_id: str
    model: str | None
    seed: int | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    outputs: list[_Output]
    inline: bool = False
    base64_image: str | None = None
    inline_content_type: str | None = None
    retrievable_until: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _int_or_none(value: Any) -> int | None:
    """``seed`` / ``file_size`` may be numeric strings in Segmind's answers: parsed, not dropped."""
    return parse_int(value)


def _outputs_from(images: Any, urls: Iterable[Any]) -> list[_Output]:
    """Every distinct output URL, ``images`` entries first (they carry type and size)."""
    found: dict[str, _Output] = {}
    for entry in images if isinstance(images, list) else []:
        if isinstance(entry, Mapping) and isinstance(entry.get("url"), str) and entry["url"] not in found:
            content_type = entry.get("content_type")
            found[entry["url"]] = _Output(
                len(found),
                entry["url"],
                content_type.lower() if isinstance(content_type, str) else None,
                _int_or_none(entry.get("file_size")),
            )
    for url in urls:
        if isinstance(url, str) and url.strip() and url not in found:
            found[url] = _Output(len(found), url)
    return list(found.values())


def _summary_urls(summary: Mapping[str, Any]) -> list[Any]:
    """Output URLs of a summary; any string counts (the download policy refuses bad ones loudly)."""
    urls: list[Any] = []
    for name in ("output_urls", "output_url", "output"):
        value = summary.get(name)
        for item in value if isinstance(value, list) else [value]:
            # ``output`` of a raw result may be text (LLMs) or base64: only URL-shaped entries count.
            if isinstance(item, str) and (name != "output" or re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", item)):
                urls.append(item)
    return urls


def _result_from_summary(summary: Mapping[str, Any]) -> _Result:
    request_id = summary.get("request_id")
    if not isinstance(request_id, str) or not is_request_id(request_id):
        raise SegmindOutputError(
            f"A result handed to SegmindToS3Operator has no valid request_id ({request_id!r}); pass the return "
            "value of a Segmind operator, a list of them, or request ids"
        )
    status = summary.get("status")
    if status is not None and str(status).upper() != SegmindJobStatus.COMPLETED.value:
        raise SegmindOutputError(f"Segmind request {request_id} is {status}, not COMPLETED: it has no output to store")
    params = summary.get("params") if isinstance(summary.get("params"), Mapping) else {}
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), Mapping) else {}
    model = summary.get("model")
    return _Result(
        request_id=request_id,
        model=model if isinstance(model, str) else None,
        seed=_int_or_none(summary.get("seed")),
        metrics=dict(metrics or {}),
        params=dict(params or {}),
        outputs=_outputs_from(summary.get("images"), _summary_urls(summary)),
        inline=summary.get("output_inline") is True,
        retrievable_until=until if isinstance(until := summary.get("retrievable_until"), str) else None,
    )


def _result_from_job(job: JobResult, *, model: str | None = None, params: Mapping[str, Any] | None = None) -> _Result:
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
    return _Result(
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


def resolve(item: Mapping[str, Any] | str, get_result: GetResult, log: Any) -> _Result:
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
    result = _result_from_summary(item)
    if not result.outputs and not result.inline:
        log.info("Result %s lists no output URL: fetching it by request id.", result.request_id)
        result = refetch(result, get_result)
    return result


def refetch(result: _Result, get_result: GetResult) -> _Result:
    """Fetch a result by its request id, keeping what the summary knew (model, params, metrics, seed)."""
    fetched = _result_from_job(get_result(result.request_id), model=result.model, params=result.params)
    fetched.metrics = {**fetched.metrics, **result.metrics}
    fetched.seed = result.seed if result.seed is not None else fetched.seed
    fetched.retrievable_until = result.retrievable_until
    if not fetched.outputs and not fetched.inline:
        raise SegmindOutputError(f"Segmind result {result.request_id} has no output URL and no inline image")
    return fetched


def fetch_outputs(
    result: _Result, downloader: Downloader, get_result: GetResult, log: Any
) -> Iterator[tuple[_Output, Fetched]]:
    """Each output of ``result``, downloaded (or decoded) and verified, one at a time; the caller closes each."""
    if result.inline:
        if result.base64_image is None:
            result = refetch(result, get_result)
        if result.base64_image is not None:
            what = f"inline output of Segmind request {result.request_id}"
            yield (
                _Output(0),
                spool_base64(
                    result.base64_image, downloader.policy, declared_type=result.inline_content_type, what=what
                ),
            )
            return
    for output in result.outputs:
        assert output.url is not None
        log.info("Downloading output %d of %s from %s", output.index, result.request_id, public_url(output.url))
        yield output, downloader.fetch(output.url, expected_size=output.size)
