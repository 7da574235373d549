# pleura — two commands that work on a fresh clone:
#   make live   set up the runtime (no torch) and run `pleura live` on the default bundle + demo clip
#   make test   set up everything (torch from this machine's disk) and run lint + the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip

.PHONY: live test setup-runtime setup-dev lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

setup-runtime: $(BIN)/python
	$(PIP) install -q -e .

setup-dev: $(BIN)/python
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e '.[train,test]'

live: setup-runtime
	$(BIN)/pleura live $(ARGS)

lint:
	$(BIN)/ruff check stream engines train ui benchmarks scripts tests

test: setup-dev
	$(BIN)/ruff check stream engines train ui benchmarks scripts tests
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
