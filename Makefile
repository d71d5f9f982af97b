# The two commands of the README:
#   make jam    set everything up (once) and play the bundled model
#   make test   set everything up (once) and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
JAM_ARGS ?=

.PHONY: jam test setup setup-dev system-deps lint typecheck pytest bench clean

jam: $(VENV)/.runtime
	$(BIN)/livegen jam $(JAM_ARGS)

test: $(VENV)/.dev lint typecheck pytest

system-deps:
	@scripts/system-deps.sh

$(VENV)/bin/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "livegen needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV) || { echo "python venv failed: apt-get install python3-venv"; exit 1; }

# Runtime only: no torch.
$(VENV)/.runtime: pyproject.toml scripts/system-deps.sh | $(VENV)/bin/python
	@scripts/system-deps.sh
	$(BIN)/pip install -qq -e .
	@touch $@

# Runtime + training/export (torch pinned) + evaluation + development tools.
$(VENV)/.dev: pyproject.toml scripts/system-deps.sh | $(VENV)/bin/python
	@scripts/system-deps.sh
	$(BIN)/pip install -qq -e '.[train,eval,dev]'
	@touch $@ $(VENV)/.runtime

setup: $(VENV)/.runtime
setup-dev: $(VENV)/.dev

lint: $(VENV)/.dev
	$(BIN)/ruff check livegen export tests benchmarks
	$(BIN)/ruff format --check livegen export tests benchmarks

typecheck: $(VENV)/.dev
	$(BIN)/mypy

pytest: $(VENV)/.dev
	$(BIN)/python -m pytest

# The benchmark suite (issue 7): figures, not pass/fail. BENCH_ARGS=--quick for a short check.
BENCH_ARGS ?=
bench: $(VENV)/.dev
	$(BIN)/livegen bench --json out/bench.json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
