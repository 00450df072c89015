# `make demo` and `make test` set everything up themselves (a virtual environment in .venv) and then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RUN_DIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: setup demo test bench lab strip html clean

$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt requirements-reference.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip install -q --no-deps --upgrade --target $(VENV)/alpaca_eval_ref -r requirements-reference.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (instruct-skillmix)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m helpers run --run-dir $(RUN_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_llm.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_stage2.py
	$(BIN)/python benchmarks/bench_local_backend.py
	@if [ -f benchmarks/bench_sft_packing.py ]; then $(BIN)/python benchmarks/bench_sft_packing.py; fi

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

html: $(STAMP)
	$(BIN)/python -m helpers html --run-dir $(RUN_DIR)
	$(BIN)/python -m helpers report --run-dir $(RUN_DIR)

strip: $(STAMP)
	$(BIN)/python -m helpers.notebook_hygiene notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache
