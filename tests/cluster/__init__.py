"""Production topology test (issue 16): CeleryExecutor, Postgres, Redis, two triggerers, processes SIGKILLed.

:mod:`tests.cluster.servers` starts Postgres and Redis from PyPI wheels, :mod:`tests.cluster.topology`
the Airflow components (api-server, scheduler, dag-processor, two Celery workers, two triggerers),
and :mod:`tests.cluster.scenario` runs the marketing pipeline through triggerer, worker and scheduler
kills and audits the outcome (billing, S3, the API key in logs, Postgres and Redis).

Short form (16 prompts): ``make test-cluster``. Full form (60 prompts, 3 runs):
``make test-cluster CLUSTER_ARGS="--prompts 60 --runs 3"``. Needs ``.venv-cluster`` (the Makefile
builds it); skipped in the normal suite, where its servers are not installed.
"""
