"""Fixtures for the unit tests: the default emulator (``emu``), moto's S3 server, a recording media host.

They live in ``tests/support`` so suites outside ``tests/unit`` import the same ones. A module that
wants the S3 tests' emulator (near-instant jobs, ``segmind_default`` set by environment) imports
``tests.support.s3_servers.s3_emu``, which overrides ``emu`` there.
"""

from __future__ import annotations

from tests.support.jobs import jobs_emu
from tests.support.media import media_host
from tests.support.s3_servers import moto_endpoint, s3

__all__ = ["jobs_emu", "media_host", "moto_endpoint", "s3"]
