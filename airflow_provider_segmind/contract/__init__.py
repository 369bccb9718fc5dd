"""The contract check: which of the provider's assumptions about Segmind's live API hold for your account.

``python -m airflow_provider_segmind.contract`` (or ``make contract``), with a real key in a
``segmind`` connection, sends the cheapest calls that answer each assumption the provider makes
(credits, the model catalogue, the v2 submit/status/result shapes, the 404 of an unknown id, the
request history's row shape and lag, whether status polls count against the rate limit, the
image-to-image slug), prints a table (assumption / what the account answered / what the provider
does about it) and, with ``--profile-out FILE``, writes a JSON profile the emulator loads
(``python -m airflow_provider_segmind.emulator --profile FILE``), so a team's tests run against
what its account really does. It spends nothing without ``--spend-up-to USD``, and at most two
images with it. See ``docs/contract.md``.

The calls are made in :mod:`.check` through :class:`~airflow_provider_segmind.hooks.segmind.SegmindHook`;
what an answer means is :mod:`airflow_provider_segmind.protocol.contract`.
"""

from __future__ import annotations

from airflow_provider_segmind.contract.check import (
    MAX_PAID_GENERATIONS,
    SD3_IMG2IMG_MODEL,
    SD3_TXT2IMG_PRICE_USD,
    ContractCheck,
    ContractOptions,
    ContractReport,
)
from airflow_provider_segmind.contract.cli import main

__all__ = [
    "MAX_PAID_GENERATIONS",
    "SD3_IMG2IMG_MODEL",
    "SD3_TXT2IMG_PRICE_USD",
    "ContractCheck",
    "ContractOptions",
    "ContractReport",
    "main",
]
