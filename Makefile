# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   the example pipeline against the bundled emulator (pictures at the end)
#   make test   the test suite (unit, emulator, Airflow dag.test and real-triggerer runs)
# Also: make lint, make bench (benchmarks, ~11 min), make soak (fault-injection soak, ~25 min).
# Everything is installed into .venv from this repository's own files.

PYTHON ?= python3
VENV ?= .venv
AIRFLOW_LINE ?= 3.3
CONSTRAINTS ?= constraints/airflow-$(AIRFLOW_LINE).txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(AIRFLOW_LINE)
PYTEST_ARGS ?=

.PHONY: venv test test-floor lint demo bench soak clean constraints

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"

$(STAMP): $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c $(CONSTRAINTS) -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The lowest supported Airflow, in its own virtualenv.
test-floor:
	$(MAKE) test VENV=.venv-floor AIRFLOW_LINE=3.1 PYTEST_ARGS="$(PYTEST_ARGS)"

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

clean:
	rm -rf $(VENV) .venv-floor demo-output .pytest_cache .mypy_cache .ruff_cache
