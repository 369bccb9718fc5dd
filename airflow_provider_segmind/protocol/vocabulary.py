"""The API's vocabulary: the names every other protocol module and both transports agree on.

The default host, the key header, the SD3 Large slugs, the headers worth reading, the states of a
v2 job and the calls an answer can belong to. No logic beyond "is this state terminal".
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

DEFAULT_BASE_URL: Final = "https://api.segmind.com"
#: The Airflow connection the hook, operators, sensor, trigger and transfer use unless told otherwise.
DEFAULT_CONN_ID: Final = "segmind_default"
API_KEY_HEADER: Final = "x-api-key"
SD3_LARGE_MODEL: Final = "stable-diffusion-3-large-txt2img"
#: SD3 Large image-to-image has its own slug (https://segmind.com/models/stable-diffusion-3-large-img2img/api).
SD3_LARGE_IMG2IMG_MODEL: Final = "stable-diffusion-3-large-img2img"
#: Segmind's reset header for 429s (a UTC timestamp); ``Retry-After`` is honoured too if sent.
RATE_LIMIT_RESET_HEADER: Final = "x-rate-limit-reset-at-utc"
#: Response headers of a v1 call worth keeping: they carry cost, credits, seed and timings.
V1_INTERESTING_HEADERS: Final = (
    "content-type",
    "x-request-id",
    "x-remaining-credits",
    "x-cost",
    "x-generation-time",
    "x-seed-value",
)


class SegmindJobStatus(StrEnum):
    """The states of a v2 job. COMPLETED and FAILED are terminal; the others are not."""

    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: Final = frozenset({SegmindJobStatus.COMPLETED, SegmindJobStatus.FAILED})


class Endpoint(StrEnum):
    """Which call an answer belongs to: the same status code means different things per call."""

    RUN_SYNC = "v1 inference"
    SUBMIT = "v2 submit"
    STATUS = "v2 status"
    RESULT = "v2 result"
    CREDITS = "credits"
    #: Segmind's request-history API (see :mod:`.history`).
    HISTORY = "request history"
    #: Segmind's model catalogue (see :mod:`.catalogue`).
    CATALOGUE = "model catalogue"
