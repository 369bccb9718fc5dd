# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   the example pipeline against the bundled emulator (pictures at the end)
#   make test   the test suite (unit, emulator, Airflow dag.test and real-triggerer runs)
# Also: make lint, make bench (benchmarks, ~11 min), make soak (fault-injection soak, ~25 min).
# Everything is installed into .venv from this repository's own files.

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_LINE ?= 3.3
# WITH_FAB=1 adds the FAB provider (many deployments install it; it changes how Airflow 3.1 builds
# the connection form), pinned by its own freeze, constraints/airflow-<line>-fab.txt.
WITH_FAB ?=
FLAVOUR := $(AIRFLOW_LINE)$(if $(filter 1,$(WITH_FAB)),-fab)
CONSTRAINTS ?= constraints/airflow-$(FLAVOUR).txt
EXTRA_PACKAGES := $(if $(filter 1,$(WITH_FAB)),apache-airflow-providers-fab)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(FLAVOUR)
PYTEST_ARGS ?=

# The suites the older-Airflow jobs run (the 3.3 job runs everything, real scheduler included).
FLOOR_SUITES := tests/test_protocol.py tests/test_hook.py tests/test_example_dags.py tests/generation \
	tests/transfers tests/test_discovery.py
LOWEST_SUITES := $(FLOOR_SUITES) tests/emulator
# What differs by Airflow version: discovery and the form, DAG parsing, and what runs inside Airflow
# (dag.test runs with retries, clears and stores, triggers, sensors, key rotation, the S3 dag.test).
LINE_SUITES := tests/test_discovery.py tests/test_example_dags.py tests/generation/test_dag_test.py \
	tests/generation/test_key_rotation.py tests/generation/test_trigger.py tests/generation/test_sensor.py \
	tests/transfers/test_segmind_to_s3_dag.py

.PHONY: venv test test-floor test-3.2 test-lowest print-line-suites lint demo bench soak clean constraints

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"

$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c $(CONSTRAINTS) -e ".[dev]" $(EXTRA_PACKAGES)
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The lowest supported Airflow line, in its own virtualenv (WITH_FAB=1: with the FAB provider, in
# .venv-floor-fab). Without PYTEST_ARGS: the unit, generation, transfer and discovery suites.
test-floor:
	$(MAKE) test VENV=.venv-floor$(if $(filter 1,$(WITH_FAB)),-fab) AIRFLOW_LINE=3.1 WITH_FAB=$(WITH_FAB) \
		PYTEST_ARGS="$(or $(PYTEST_ARGS),$(FLOOR_SUITES))"

# The middle line (latest 3.2.x, constraints/airflow-3.2.txt): what differs by version (hook
# transports, discovery and form, triggers and request stores, dag.test runs).
test-3.2:
	$(MAKE) test VENV=.venv-3.2 AIRFLOW_LINE=3.2 PYTEST_ARGS="$(or $(PYTEST_ARGS),$(LINE_SUITES))"

print-line-suites:
	@echo $(LINE_SUITES)

# The declared floors: Airflow 3.1.0 with every direct dependency (and the amazon, emulator and
# test extras') at the minimum pyproject.toml declares, pinned from pyproject itself by
# .ci/floors.py; everything else resolves to the newest release that fits, except the little that
# Airflow 3.1.0 needs held back (constraints/lowest-direct.txt). The venv is checked before testing.
LOWEST := .venv-lowest
$(LOWEST)/.installed: pyproject.toml constraints/lowest-direct.txt .ci/floors.py
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	test -x $(LOWEST)/bin/uv || $(LOWEST)/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(PYTHON) .ci/floors.py pins > $(LOWEST)/floors.txt
	$(LOWEST)/bin/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct \
		-c constraints/lowest-direct.txt -c $(LOWEST)/floors.txt -e ".[amazon,emulator,test]"
	touch $@

test-lowest: $(LOWEST)/.installed
	$(PYTHON) .ci/floors.py check $(LOWEST)/bin/python
	$(LOWEST)/bin/python -m pytest $(or $(PYTEST_ARGS),$(LOWEST_SUITES))

demo: $(STAMP)
	$(BIN)/python demo/run.py

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The long fault-injection soak (the test suite runs its 32-prompt short form): ~8 min per run.
SOAK_ARGS ?= --prompts 200 --runs 3
soak: $(STAMP)
	$(BIN)/python -m tests.soak $(SOAK_ARGS)

constraints: $(STAMP)
	$(BIN)/uv pip freeze --python $(BIN)/python | grep -v -i -E "airflow-provider-segmind|^-e|^(uv|pip|setuptools|wheel)==" > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# The production topology (issue 16, tests/cluster): CeleryExecutor on Postgres + Redis, two workers,
# two triggerers, processes SIGKILLed mid-job. Its own venv: the dev install on Airflow 3.3 plus the
# Celery provider and the wheels that bring the Postgres and Redis servers (tests/cluster/requirements.txt,
# pinned by constraints/cluster-3.3.txt). Not part of `make test` (~15 min short form on 2 cores).
#   make test-cluster        the short form (16 prompts), as a pytest test
#   make test-cluster-full   the full form: 60 prompts, 3 consecutive runs, a summary table each
#                            (CLUSTER_ARGS="--prompts 60 --runs 1 --seed 5" to change it)
#   CLUSTER_LINE=3.1         the same on Airflow 3.1 (.venv-cluster-3.1), where the request record is a Variable
.PHONY: venv-cluster test-cluster test-cluster-full constraints-cluster
CLUSTER_LINE ?= 3.3
CLUSTER_VENV := .venv-cluster$(if $(filter-out 3.3,$(CLUSTER_LINE)),-$(CLUSTER_LINE))
CLUSTER_PINS := constraints/cluster-$(CLUSTER_LINE).txt
CLUSTER_STAMP := $(CLUSTER_VENV)/.installed-cluster
CLUSTER_ARGS ?= --prompts 60 --runs 3
$(CLUSTER_STAMP): pyproject.toml constraints/airflow-$(CLUSTER_LINE).txt $(CLUSTER_PINS) tests/cluster/requirements.txt
	test -x $(CLUSTER_VENV)/bin/python || $(PYTHON) -m venv $(CLUSTER_VENV)
	test -x $(CLUSTER_VENV)/bin/uv || $(CLUSTER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
	$(CLUSTER_VENV)/bin/uv pip install --quiet --python $(CLUSTER_VENV)/bin/python \
		-c constraints/airflow-$(CLUSTER_LINE).txt -c $(CLUSTER_PINS) -e ".[dev]" -r tests/cluster/requirements.txt
	touch $@

venv-cluster: $(CLUSTER_STAMP)

test-cluster: $(CLUSTER_STAMP)
	$(CLUSTER_VENV)/bin/python -m pytest tests/cluster -s -p no:cacheprovider $(PYTEST_ARGS)

test-cluster-full: $(CLUSTER_STAMP)
	$(CLUSTER_VENV)/bin/python -m tests.cluster $(CLUSTER_ARGS)

# Re-pin the cluster's extra packages (what the venv holds beyond constraints/airflow-$(CLUSTER_LINE).txt).
constraints-cluster: $(CLUSTER_STAMP)
	$(CLUSTER_VENV)/bin/python tests/cluster/pins.py $(CLUSTER_VENV)/bin/python constraints/airflow-$(CLUSTER_LINE).txt \
		> $(CLUSTER_PINS).new
	mv $(CLUSTER_PINS).new $(CLUSTER_PINS)

clean:
	rm -rf $(VENV) .venv-floor .venv-floor-fab .venv-3.2 $(LOWEST) demo-output .pytest_cache .mypy_cache .ruff_cache
