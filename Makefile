# Two entry points, both idempotent (the environment is re-used once built):
#   make reproduce   set up, then run the whole study on the embedded default
#   make test        set up, then run the test suite (unit tests + the smoke DAG)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opdpipe-installed
CONFIG ?= configs/default.yaml
CORES ?= all
# Values reach recipes through the environment and are quoted there ("$$CONFIG"): nothing read from a
# config file, nor given on the command line, is ever pasted into a shell command. Paths and URIs
# come from `opdpipe where`, which validates the config first (a study name is a safe word).
export CONFIG TASK VARIANT SEED
SMK := $(VENV)/bin/snakemake --cores $(CORES) --configfile "$$CONFIG" --rerun-incomplete
WHERE := $(PY) -m opdpipe.cli where "$$CONFIG"

.PHONY: setup test reproduce variant mlflow-ui dry-run lint

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

reproduce: setup
	$(SMK)

# Re-run one variant (train + evaluate) and refresh tracking and the report, nothing else:
#   make variant TASK=math VARIANT=forward_kl-opd_plus SEED=0
variant: setup
	target="$$($(WHERE) run --task "$$TASK" --variant "$$VARIANT" --seed "$$SEED")" && $(SMK) --forcerun "$$target"

dry-run: setup
	$(SMK) -n

lint: setup
	$(VENV)/bin/snakemake --lint --configfile "$$CONFIG"

# The MLflow UI on http://127.0.0.1:5000 over the study's tracking store
mlflow-ui: setup
	uri="$$($(WHERE) tracking-uri)" && $(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri "$$uri"
