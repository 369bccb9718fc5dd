"""``python -m airflow_provider_segmind.contract``: see :mod:`airflow_provider_segmind.contract.cli`."""

from __future__ import annotations

import sys

from airflow_provider_segmind.contract.cli import main

if __name__ == "__main__":
    sys.exit(main())
