# Two commands set everything up: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv with the project and its dependencies when it is missing or stale.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ssconv-installed
PIP_ARGS ?=

.PHONY: demo test lint format bench docs clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check $(PIP_ARGS) -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ssconv demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks examples scripts

bench: $(STAMP)
	$(BIN)/python benchmarks/layer_speed.py

# The API reference (pdoc) into docs/api/ (gitignored); fails on pdoc's warnings and on
# docstring cross-references that name nothing. Not part of `test` (about 20-30 s):
# tests/test_api_docs.py runs the same build.
docs: $(STAMP)
	OMP_NUM_THREADS=1 SSCONV_NO_FUSED=1 $(BIN)/python scripts/api_docs.py -o docs/api

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache docs/api
