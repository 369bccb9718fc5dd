"""Fixtures for the review-and-publish tests: the transfer tests' real moto S3 server and emulator."""

from __future__ import annotations

from tests.transfers.conftest import emu, moto_endpoint, s3

__all__ = ["emu", "moto_endpoint", "s3"]
