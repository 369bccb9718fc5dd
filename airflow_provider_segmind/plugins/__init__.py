"""The Segmind page in the Airflow UI (Airflow 3.1+ plugin): see :mod:`.segmind_page` and docs/operating.md."""
