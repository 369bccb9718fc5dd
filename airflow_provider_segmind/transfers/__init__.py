"""Transfers of Segmind outputs to storage: :class:`~.segmind_to_s3.SegmindToS3Operator`."""

from __future__ import annotations
