# One task runner for people, CI and hooks.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
export HDP_HOME ?= $(CURDIR)/var
export AIRFLOW_HOME ?= $(HDP_HOME)/airflow
export GX_ANALYTICS_ENABLED := false
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags

.PHONY: help venv demo test test-fast lint bench lock clean

help:
	@echo "make demo    - set up, generate data, run the DAGs, approve a request, release, query"
	@echo "make test    - the full test suite (what CI runs)"
	@echo "make bench [NAME=x] - benchmarks under bench/"

$(BIN)/hdp: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

venv: $(BIN)/hdp

demo: venv
	$(BIN)/hdp demo

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

bench: venv
	$(BIN)/python bench/run.py $(NAME)

# Re-resolve the lock from pyproject (needs the package registry).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet --upgrade pip==25.3
	.lockenv/bin/pip install --quiet -e '.[dev]'
	.lockenv/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf var
