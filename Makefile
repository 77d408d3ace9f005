# Quick start targets. Each sets up its own virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup example demo test test-all lint bench clean model model-smoke model-plan model-status

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

# The default model's recipe (release/recipe.toml) as a resumable campaign under runs/model:
# run it again to continue where it stopped. MODEL_ARGS: e.g. --scale 4 --device cuda.
MODEL_ARGS ?=
# the campaign's CPU threads: every core (the recipe's timings are of both threads of a 2-core machine)
MODEL_THREADS ?= $(shell nproc 2>/dev/null || echo 2)
model: setup
	OMP_NUM_THREADS=$(MODEL_THREADS) $(BIN)/python -m lofihippseg.recipe run --out runs/model --threads $(MODEL_THREADS) $(MODEL_ARGS)

# Every stage of the recipe at toy scale, from scratch (minutes); the last line is the bundle.
model-smoke: setup
	rm -rf runs/model-smoke
	OMP_NUM_THREADS=1 $(BIN)/python -m lofihippseg.recipe run --profile smoke --out runs/model-smoke

# The campaign's cost from measured timings (its own, else the smoke run's), and where it stands.
model-plan: setup
	$(BIN)/python -m lofihippseg.recipe plan --out runs/model --threads $(MODEL_THREADS) --timings runs/model-smoke $(MODEL_ARGS)

model-status: setup
	$(BIN)/python -m lofihippseg.recipe status --out runs/model $(MODEL_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) example_output demo_output .pytest_cache
