"""Apache Airflow provider for Segmind's serverless image-generation API."""

from __future__ import annotations

__version__ = "1.1.0"

__all__ = ["__version__"]
