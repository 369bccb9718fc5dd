"""OpenLineage metadata of the Segmind operators: their datasets and the provider's custom facets.

Only the operators' ``get_openlineage_facets_on_complete`` methods import this module, and only
the OpenLineage provider's listener calls them, so the OpenLineage client it imports at the top is
never loaded where the ``openlineage`` extra is absent or OpenLineage is off (the pattern of the
official providers: lazy imports inside the methods). The facets follow the official providers'
custom facets (an ``attrs`` class per facet, subclassing the client's ``RunFacet``/``JobFacet``/
``DatasetFacet``, with a ``_get_schema`` URL); their JSON schemas are in ``docs/schemas/``.

Dataset names follow the OpenLineage naming spec (namespace ``scheme://authority``, name the
path): an S3 object is ``s3://<bucket>`` + its key; a URL is ``<scheme>://<host>[:port]`` + its
path without the leading ``/``, never its query string, fragment or user info (pre-signed URLs
carry credentials there). A Segmind output is named by its URL, so the generating task's output
and the transfer's input are the same dataset; an inline (base64) output has no URL and is named
``segmind`` + ``requests/<request id>/outputs/<index>`` by both. See docs/lineage.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from airflow.providers.common.compat.openlineage.facet import Dataset, DatasetFacet, RunFacet
from airflow.providers.openlineage.extractors import OperatorLineage
from attrs import define
from openlineage.client.generated.base import JobFacet

from airflow_provider_segmind.utils.redaction import finite_number
from airflow_provider_segmind.utils.results import result_from_summary

__all__ = [
    "INLINE_NAMESPACE",
    "SegmindJobFacet",
    "SegmindOutputDatasetFacet",
    "SegmindRunFacet",
    "generation_lineage",
    "image_dataset",
    "image_input",
    "output_dataset",
    "transfer_lineage",
]

#: Where the facets' JSON schemas are published (the documentation site serves ``docs/schemas/``).
SCHEMA_BASE: Final = "https://segmind.github.io/airflow-provider-segmind/schemas/"
#: The facet key of every custom facet (one per kind: run, job, dataset), named after the provider.
FACET_KEY: Final = "segmind"
#: The namespace of an output that has no URL (returned inline, base64).
INLINE_NAMESPACE: Final = "segmind"


@define
class SegmindRunFacet(RunFacet):
    """What one run of a Segmind operator generated: the request, the model, the seed and what it cost.

    ``seedFilled``: the operator chose the seed (``fill_seed``), so the image can be reproduced
    from this facet alone. ``cost``: Segmind's ``metrics.cost`` (USD), when the API reports it.
    """

    requestId: str
    model: str
    seed: int | None = None
    seedFilled: bool = False
    cost: float | None = None

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_BASE + "SegmindRunFacet.json#/$defs/SegmindRunFacet"


@define
class SegmindJobFacet(JobFacet):
    """The Segmind model a task runs (the job's definition; a templated model may differ per run)."""

    model: str

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_BASE + "SegmindJobFacet.json#/$defs/SegmindJobFacet"


@define
class SegmindOutputDatasetFacet(DatasetFacet):
    """Which Segmind output an S3 object holds: the request, the output's index and its dataset.

    OpenLineage links a run's inputs to all its outputs; a transfer of many requests' outputs
    needs this facet to say which input each object came from (``sourceNamespace``/``sourceName``
    name that input dataset). ``sha256``: the stored bytes' digest, as in the object's metadata;
    ``manifestKey``: the key of the JSON manifest beside it (``None`` with ``write_manifest=False``),
    which the transfer writes too and which describes the object in full.
    """

    requestId: str
    outputIndex: int
    sourceNamespace: str
    sourceName: str
    sha256: str | None = None
    manifestKey: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return SCHEMA_BASE + "SegmindOutputDatasetFacet.json#/$defs/SegmindOutputDatasetFacet"


def _url_dataset(url: str) -> Dataset | None:
    """``scheme://host[:port]`` + the path (no query, fragment or user info); ``None`` if not a URL."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not host or scheme not in ("http", "https", "s3"):
        return None
    if scheme == "s3":  # the naming spec's S3 entry: namespace s3://<bucket>, name the object key
        key, bucket = parts.path.lstrip("/"), parts.netloc.rpartition("@")[2]  # the bucket as written
        return Dataset(namespace=f"s3://{bucket}", name=key) if key else None
    if ":" in host:
        host = f"[{host}]"
    authority = f"{host}:{port}" if port is not None else host
    return Dataset(namespace=f"{scheme}://{authority}", name=parts.path.lstrip("/") or "/")


def image_dataset(image: Any) -> Dataset | None:
    """The input dataset of an image-to-image ``image``: an ``s3://`` or ``http(s)://`` URL; else none.

    Base64 data (or anything that is not such a URL) names no dataset.
    """
    return _url_dataset(image) if isinstance(image, str) else None


def image_input(operator: Any) -> Any:
    """The ``image`` a generation operator sends: ``SegmindTextToImageOperator.image`` or ``inputs["image"]``."""
    image = getattr(operator, "image", None)
    inputs = getattr(operator, "inputs", None)
    if image is None and isinstance(inputs, Mapping):
        image = inputs.get("image")
    return image


def output_dataset(url: str | None, request_id: str, index: int) -> Dataset:
    """The dataset of one Segmind output: its URL, or ``segmind`` + ``requests/<id>/outputs/<index>`` inline."""
    by_url = _url_dataset(url) if url else None
    if by_url is not None:
        return by_url
    return Dataset(namespace=INLINE_NAMESPACE, name=f"requests/{request_id}/outputs/{index}")


def generation_lineage(*, model: str, image: Any, summary: Mapping[str, Any] | None) -> OperatorLineage[Dataset, Any]:
    """A Segmind generation task's lineage: image input, outputs, and the run and job facets.

    ``summary`` is the task's return value (``None`` when the task did not succeed: then only the
    input and the job facet, which is what a FAIL event can say).
    """
    image_input = image_dataset(image)
    inputs = [image_input] if image_input is not None else []
    job_model = summary.get("model") if summary and isinstance(summary.get("model"), str) else model
    job_facets = {FACET_KEY: SegmindJobFacet(model=str(job_model))}
    if not summary or not isinstance(summary.get("request_id"), str):
        return OperatorLineage(inputs=inputs, job_facets=job_facets)
    request_id = summary["request_id"]
    # The transfer's own reading of a summary, so both operators number the outputs alike.
    result = result_from_summary({**summary, "status": "COMPLETED"})
    outputs = [output_dataset(output.url, request_id, output.index) for output in result.outputs]
    if not outputs and result.inline:
        outputs = [output_dataset(None, request_id, 0)]
    metrics = summary.get("metrics") if isinstance(summary.get("metrics"), Mapping) else {}
    run_facet = SegmindRunFacet(
        requestId=request_id,
        model=str(job_model),
        seed=result.seed,
        seedFilled=summary.get("seed_filled") is True,
        cost=finite_number(metrics.get("cost")) if metrics else None,
    )
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={FACET_KEY: run_facet}, job_facets=job_facets)


def transfer_lineage(stored: Iterable[Mapping[str, Any]]) -> OperatorLineage[Dataset, Any]:
    """``SegmindToS3Operator``'s lineage: one output per S3 object, one input per Segmind output read.

    ``stored``: the operator's ``stored_outputs`` (``bucket``, ``key``, ``request_id``, ``index``,
    ``source_url``, ``sha256``, ``manifest`` of each object stored or found). Each output carries a
    :class:`SegmindOutputDatasetFacet` naming the input it holds.
    """
    inputs: dict[tuple[str, str], Dataset] = {}
    outputs: list[Dataset] = []
    for item in stored:
        source = output_dataset(item["source_url"], item["request_id"], item["index"])
        inputs.setdefault((source.namespace, source.name), source)
        facet = SegmindOutputDatasetFacet(
            requestId=item["request_id"],
            outputIndex=item["index"],
            sourceNamespace=source.namespace,
            sourceName=source.name,
            sha256=item["sha256"],
            manifestKey=item.get("manifest"),
        )
        outputs.append(Dataset(namespace=f"s3://{item['bucket']}", name=item["key"], facets={FACET_KEY: facet}))
    return OperatorLineage(inputs=list(inputs.values()), outputs=outputs)
