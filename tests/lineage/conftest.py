"""Fixtures for the lineage tests: the S3 transfer's real endpoints (moto server, emulator)."""

from __future__ import annotations

from tests.inputs.conftest import media_host  # noqa: F401 (re-used as it is)
from tests.transfers.conftest import emu, moto_endpoint, s3

__all__ = ["emu", "moto_endpoint", "s3"]
