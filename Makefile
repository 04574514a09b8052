# Two entry points, both idempotent (the environment is re-used once built):
#   make reproduce   set up, then run the whole study on the embedded default
#   make test        set up, then run the test suite (unit tests + the smoke DAG)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opdpipe-installed
CONFIG ?= configs/default.yaml
CORES ?= all

.PHONY: setup test reproduce

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

reproduce: setup
	@echo "The workflow is not there yet: set-up is complete ($(VENV))."
