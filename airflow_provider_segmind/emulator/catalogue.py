"""The emulator's model catalogue route (SDK 1.3.0 ``segmind/models.py``: ``Models.list``).

``GET /inference-model-information/list`` on the API host, with the key in ``x-api-key`` (the SDK
sends its client's key). What the real list answers is not documented beyond "Dictionary
containing the models list response"; public clients of the live endpoint read it as an object
whose ``"Inference Segmind Model Information List With Details"`` holds the models, each with
``slug``, ``title``, ``type`` and ``is_depreciated`` (sic), so the emulator answers that shape (the
provider reads others too: :mod:`airflow_provider_segmind.protocol.catalogue`).

Listed: the SD3 Large slugs the emulator models (:data:`~.config.CATALOGUE_KNOWN_MODELS`), the
config's ``catalogue_models`` and its ``retired_models`` (flagged ``is_depreciated``); never its
``missing_models``, and with ``strict_models`` only SD3 Large (and the retired ones).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from airflow_provider_segmind.emulator.config import CATALOGUE_KNOWN_MODELS, EmulatorConfig
from airflow_provider_segmind.emulator.faults import Fault
from airflow_provider_segmind.emulator.gateway import Gateway
from airflow_provider_segmind.protocol.vocabulary import SD3_LARGE_MODEL

#: The key public clients read the list under.
CATALOGUE_LIST_KEY: Final = "Inference Segmind Model Information List With Details"


def catalogue_slugs(config: EmulatorConfig) -> list[tuple[str, bool]]:
    """The slugs the catalogue lists, sorted, each with whether it is retired."""
    runnable = {*CATALOGUE_KNOWN_MODELS, *config.catalogue_models} - config.missing_models - config.retired_models
    if config.strict_models:
        runnable &= {SD3_LARGE_MODEL}
    listed = [(slug, False) for slug in runnable] + [(slug, True) for slug in config.retired_models]
    return sorted(listed)


def _title(slug: str) -> str:
    return " ".join(word.capitalize() for word in slug.replace("_", "-").split("-") if word)


class CatalogueRoutes(Gateway):
    """The handler of the model catalogue."""

    async def catalogue(self, request: web.Request) -> web.StreamResponse:
        """``GET /inference-model-information/list``: every model, with ``is_depreciated`` for retired ones."""
        return await self._serve(request, "models", self._catalogue)

    async def _catalogue(self, request: web.Request, label: str, fault: Fault | None) -> web.StreamResponse:
        models: list[dict[str, Any]] = [
            {
                "slug": slug,
                "title": _title(slug),
                "type": "imageToImage" if "img2img" in slug else "textToImage",
                "is_depreciated": retired,
            }
            for slug, retired in catalogue_slugs(self.state.config)
        ]
        return web.json_response({CATALOGUE_LIST_KEY: models})
