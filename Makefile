# Quick start targets. Each sets up its own virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup example demo test test-all lint bench clean

$(BIN)/lofihippseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: anything else would pull a different (CUDA) build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(BIN)/lofihippseg

setup: $(BIN)/lofihippseg

example: setup
	$(BIN)/lofihippseg example --out example_output

demo: setup
	$(BIN)/lofihippseg demo --out demo_output

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) example_output demo_output .pytest_cache
