# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   the example pipeline against the bundled emulator (pictures at the end)
#   make test   the test suite (unit, emulator, Airflow dag.test and real-triggerer runs)
# Also: make lint, make docs (the documentation site, into ./site), make dist (sdist + wheel into
# ./dist, twine-checked), make bench (benchmarks, ~40 min), make soak (fault-injection soak, ~25 min),
# make contract (which assumptions about Segmind's API hold for your key's account; docs/contract.md).
# `make` first checks that $(PYTHON) is 3.11+ with its venv module (.ci/check_python.py prints the fix;
# another interpreter: make test PYTHON=python3.12), then creates .venv, installs uv into it and, with
# uv, about 200 packages from the package index, each pinned by constraints/airflow-3.3.txt.
#
# INSTALL=wheel (make test / make demo): run against the BUILT wheel instead of the editable source:
# `make dist`, a fresh virtualenv (.venv-wheel) with the wheel + its amazon and emulator extras + the
# `test` dependency group, and the tests and demo run from a copy of the repository without its source
# package (build/wheel-tests), so no source tree shadows the installed one (tests/installed_package.py
# checks it).

PYTHON ?= python3
INSTALL ?= editable
# Every Python process these targets start reads and writes compiled bytecode under build/pycache (not
# beside the sources), even where the environment sets PYTHONDONTWRITEBYTECODE: without it each of the
# hundreds of processes a test run starts (pytest workers, Airflow's components and CLI, emulators)
# compiles Airflow's modules again, ~1.7 of the ~2.9 CPU-seconds its import costs on this machine.
export PYTHONDONTWRITEBYTECODE :=
export PYTHONPYCACHEPREFIX ?= $(CURDIR)/build/pycache
ifeq ($(INSTALL),wheel)
VENV ?= .venv-wheel
else
VENV ?= .venv
endif
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
# Test processes (pytest-xdist). Most tests wait on real servers and real time (the emulator's
# inference, polls, Airflow processes), so three processes on a 2-core machine more than halve the
# wall time: tests/xdist_lanes.py gives the suites that start a whole Airflow two lanes, started
# first, and the third process runs the quick files; each file stays in one process (module
# fixtures start once). PYTEST_JOBS=0 runs everything in this process (pdb, -s).
PYTEST_JOBS ?= 3
XDIST = $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS) --no-loadscope-reorder)

# The suites the older-Airflow jobs run (the 3.3 job runs everything, real scheduler included).
# (tests/integration/test_lineage_real_airflow.py starts a whole Airflow: the 3.3 job runs it.)
FLOOR_SUITES := tests/unit/protocol/test_rules.py tests/unit/protocol/test_history.py tests/unit/protocol/test_schedule.py \
	tests/unit/protocol/test_image_input.py tests/unit/hooks/test_segmind.py tests/unit/hooks/test_segmind_history.py \
	tests/unit/triggers tests/unit/sensors tests/unit/operators tests/unit/transfers tests/unit/utils/test_timeouts.py \
	tests/unit/utils/test_contact_sheet.py tests/unit/utils/test_review_body.py tests/unit/utils/test_openlineage.py \
	tests/unit/utils/test_openlineage_dag.py tests/unit/test_get_provider_info.py tests/exactly_once tests/system
LOWEST_SUITES := $(FLOOR_SUITES) tests/unit/emulator
# The spend cap's 200-prompt dag.test (about 3 minutes of mapped tries) runs in the 3.3 job only: the cap's
# arithmetic and its other runs are version-neutral and stay in the floors' suites.
FLOOR_DESELECT := --deselect tests/unit/operators/test_spend.py::test_a_mapped_task_of_200_prompts_bills_at_most_the_cap
# What differs by Airflow version: discovery and the form, DAG parsing, and what runs inside Airflow
# (dag.test runs with retries, clears and stores, triggers, sensors, key rotation, the S3 dag.test).
LINE_SUITES := tests/unit/test_get_provider_info.py tests/system/test_example_dags.py tests/unit/operators/test_segmind_dag_test.py \
	tests/unit/triggers/test_job_watch_key_rotation.py tests/unit/triggers/test_segmind.py tests/unit/sensors/test_segmind.py \
	tests/unit/transfers/test_segmind_to_s3_dag.py tests/unit/utils/test_openlineage_dag.py
# What the FAB provider changes on 3.1: provider discovery, the connection form, DAG parsing (the task
# runtime is the same Airflow 3.1.0 the declared-floors job runs LINE_SUITES' suites on).
FAB_SUITES := tests/unit/test_get_provider_info.py tests/system/test_example_dags.py

.PHONY: venv test test-floor test-3.2 test-lowest print-line-suites print-fab-suites lint demo bench soak clean constraints \
	dist docs wheel-tree tools-constraints contract

# `uv pip install --group NAME` (PEP 735 groups of ./pyproject.toml, pip 25.1's syntax) needs uv 0.7+.
UV_REQ := "uv>=0.7"

# Release and documentation tools (twine, MkDocs Material): their own small venv, no Airflow, pinned
# by constraints/tools.txt (`make tools-constraints` refreshes it).
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# sdist + wheel into dist/ (the wheel is built from the sdist, so a file missing from the sdist fails
# here), then `twine check` (metadata and README rendering as PyPI will show them).
DIST_STAMP := dist/.built
DIST_INPUTS := pyproject.toml MANIFEST.in README.md LICENSE NOTICE CHANGELOG.md \
	$(shell find airflow_provider_segmind -type f -not -path '*/__pycache__/*')

# Before any virtualenv is created: Python 3.11+ with ensurepip, or the one-line fix (.ci/check_python.py).
CHECK_PYTHON = $(PYTHON) .ci/check_python.py $(PYTHON)

$(BIN)/python:
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(UV_REQ)

ifeq ($(INSTALL),wheel)
# A clean virtualenv every time the wheel changes: the wheel (not editable) with its published extras,
# plus the `test` group; the uv of the tools venv installs it.
$(STAMP): $(DIST_STAMP) $(CONSTRAINTS)
	@$(CHECK_PYTHON)
	rm -rf $(VENV)
	$(PYTHON) -m venv --without-pip $(VENV)
	$(TOOLS)/bin/uv pip install --quiet --python $(BIN)/python -c $(CONSTRAINTS) \
		"$$(ls dist/*.whl)[amazon,emulator]" --group test $(EXTRA_PACKAGES)
	touch $@
else
$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c $(CONSTRAINTS) \
		-e ".[amazon,emulator]" --group dev $(EXTRA_PACKAGES)
	rm -f $(VENV)/.installed-*
	touch $@
endif

venv: $(STAMP)

# The repository without the source package (and without its build metadata, *.egg-info, which on
# sys.path would pass for an installed distribution), where tests, example DAGs and demo find every
# other file where they expect it (see INSTALL=wheel above).
WHEEL_TREE := build/wheel-tests
wheel-tree:
	rm -rf $(WHEEL_TREE)
	mkdir -p $(WHEEL_TREE)
	tar -cf - --exclude=./airflow_provider_segmind --exclude='./*.egg-info' --exclude='./.venv*' \
		--exclude=./.git --exclude=./build --exclude=./dist --exclude=./site --exclude=./demo-output \
		--exclude='./.*_cache' --exclude='__pycache__' . | tar -xf - -C $(WHEEL_TREE)

# What `make test` says before it starts: how long the whole suite takes, and which tests skip here.
CHROMIUM := $(firstword $(foreach name,chromium chromium-browser google-chrome,$(shell command -v $(name) 2>/dev/null)))
define TEST_BANNER
	@$(if $(PYTEST_ARGS),,echo "make test: the whole suite, about 10 minutes on 2 cores ($(PYTEST_JOBS) pytest processes, PYTEST_JOBS; two real Airflows at a time).")
	@$(if $(CHROMIUM),,echo "make test: no chromium on the PATH, so the 2 tests that drive Airflow's review screen in a real headless browser (tests/integration/test_review_publish.py) will skip: nothing else shows what a reviewer sees. 'apt install chromium' runs them.")
endef

ifeq ($(INSTALL),wheel)
test: $(STAMP) wheel-tree
	$(TEST_BANNER)
	cd $(WHEEL_TREE) && SEGMIND_TEST_PACKAGE=wheel SEGMIND_TEST_SOURCE=$(CURDIR) \
		SEGMIND_TEST_WHEEL="$$(ls $(CURDIR)/dist/*.whl)" SEGMIND_TEST_SDIST="$$(ls $(CURDIR)/dist/*.tar.gz)" \
		$(CURDIR)/$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)
else
test: $(STAMP)
	$(TEST_BANNER)
	SEGMIND_TEST_PACKAGE=source $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)
endif

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(TOOLS_STAMP): pyproject.toml constraints/tools.txt
	@$(CHECK_PYTHON)
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	test -x $(TOOLS)/bin/uv || $(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check $(UV_REQ)
	$(TOOLS)/bin/uv pip install --quiet --python $(TOOLS)/bin/python -c constraints/tools.txt \
		--group docs --group release
	touch $@

$(DIST_STAMP): $(TOOLS_STAMP) $(DIST_INPUTS)
	rm -rf dist
	$(TOOLS)/bin/uv build --quiet --out-dir dist
	$(TOOLS)/bin/twine check --strict dist/*
	touch $@

dist: $(DIST_STAMP)

# The documentation site (docs/, mkdocs.yml) into ./site; warnings are errors (a broken link or a
# snippet marker that moved fails the build).
docs: $(TOOLS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(TOOLS)/bin/mkdocs build --strict

tools-constraints: $(TOOLS_STAMP)
	$(TOOLS)/bin/uv pip freeze --python $(TOOLS)/bin/python | grep -v -i -E "^(uv|pip|setuptools|wheel)==" > constraints/tools.txt.new
	mv constraints/tools.txt.new constraints/tools.txt

# The lowest supported Airflow line, in its own virtualenv (WITH_FAB=1: with the FAB provider, in
# .venv-floor-fab). Without PYTEST_ARGS: the unit, generation, transfer and discovery suites.
test-floor:
	$(MAKE) test VENV=.venv-floor$(if $(filter 1,$(WITH_FAB)),-fab) AIRFLOW_LINE=3.1 WITH_FAB=$(WITH_FAB) \
		PYTEST_ARGS="$(or $(PYTEST_ARGS),$(FLOOR_SUITES) $(FLOOR_DESELECT))"

# The middle line (latest 3.2.x, constraints/airflow-3.2.txt): what differs by version (hook
# transports, discovery and form, triggers and request stores, dag.test runs).
test-3.2:
	$(MAKE) test VENV=.venv-3.2 AIRFLOW_LINE=3.2 PYTEST_ARGS="$(or $(PYTEST_ARGS),$(LINE_SUITES))"

print-line-suites:
	@echo $(LINE_SUITES)

print-fab-suites:
	@echo $(FAB_SUITES)

# The declared floors: Airflow 3.1.0 with every direct dependency (and the amazon and emulator
# extras' and the test group's) at the minimum pyproject.toml declares, pinned from pyproject itself by
# .ci/floors.py; everything else resolves to the newest release that fits, except the little that
# Airflow 3.1.0 needs held back (constraints/lowest-direct.txt). The venv is checked before testing.
LOWEST := .venv-lowest
$(LOWEST)/.installed: pyproject.toml constraints/lowest-direct.txt .ci/floors.py
	@$(CHECK_PYTHON)
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	test -x $(LOWEST)/bin/uv || $(LOWEST)/bin/python -m pip install --quiet --disable-pip-version-check $(UV_REQ)
	$(PYTHON) .ci/floors.py pins > $(LOWEST)/floors.txt
	$(LOWEST)/bin/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct \
		-c constraints/lowest-direct.txt -c $(LOWEST)/floors.txt -e ".[amazon,emulator]" --group test
	touch $@

test-lowest: $(LOWEST)/.installed
	$(PYTHON) .ci/floors.py check $(LOWEST)/bin/python
	SEGMIND_TEST_PACKAGE=source $(LOWEST)/bin/python -m pytest $(XDIST) $(or $(PYTEST_ARGS),$(LOWEST_SUITES) $(FLOOR_DESELECT))

ifeq ($(INSTALL),wheel)
demo: $(STAMP) wheel-tree
	cd $(WHEEL_TREE) && SEGMIND_DEMO_OUTPUT=$(CURDIR)/demo-output $(CURDIR)/$(BIN)/python demo/run.py
else
demo: $(STAMP)
	$(BIN)/python demo/run.py
endif

# BENCH_ARGS=--quick: every benchmark on small loads (~2 min; CI runs it so none can rot unnoticed:
# it checks that each one runs, not its figures).
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The contract check (docs/contract.md): which of the provider's assumptions about Segmind's live API
# hold for the account of a real key in the segmind connection CONN_ID. Free calls only, unless
# SPEND_UP_TO (USD) allows at most two paid images; PROFILE_OUT writes the JSON profile the emulator
# loads (python -m airflow_provider_segmind.emulator --profile FILE). CONTRACT_ARGS: more flags.
#   make contract CONN_ID=segmind_default SPEND_UP_TO=0.25 PROFILE_OUT=segmind-profile.json
CONN_ID ?= segmind_default
SPEND_UP_TO ?=
PROFILE_OUT ?=
CONTRACT_ARGS ?=
contract: $(STAMP)
	$(BIN)/python -m airflow_provider_segmind.contract --conn-id $(CONN_ID) \
		$(if $(SPEND_UP_TO),--spend-up-to $(SPEND_UP_TO)) $(if $(PROFILE_OUT),--profile-out $(PROFILE_OUT)) $(CONTRACT_ARGS)

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
	@$(CHECK_PYTHON)
	test -x $(CLUSTER_VENV)/bin/python || $(PYTHON) -m venv $(CLUSTER_VENV)
	test -x $(CLUSTER_VENV)/bin/uv || $(CLUSTER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.7"
	$(CLUSTER_VENV)/bin/uv pip install --quiet --python $(CLUSTER_VENV)/bin/python \
		-c constraints/airflow-$(CLUSTER_LINE).txt -c $(CLUSTER_PINS) -e ".[amazon,emulator]" --group dev -r tests/cluster/requirements.txt
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
	rm -rf $(VENV) .venv-floor .venv-floor-fab .venv-3.2 .venv-wheel .venv-cluster* $(TOOLS) $(LOWEST) demo-output dist build site \
		.pytest_cache .mypy_cache .ruff_cache
