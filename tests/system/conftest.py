"""Fixtures for the example-DAG tests: moto's S3 server, the S3 tests' emulator, a recording media host."""

from __future__ import annotations

from tests.support.media import media_host
from tests.support.s3_servers import moto_endpoint, s3, s3_emu

__all__ = ["media_host", "moto_endpoint", "s3", "s3_emu"]
