# Set-up and checks. Every target creates .venv and installs what it needs, pinning
# torch to the local CPU wheel through constraints.txt.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALL := $(BIN)/python -m pip install -q -c constraints.txt

.PHONY: demo test lint docs ci

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

demo: $(BIN)/python  ## the main job: LS and MARIGOLD side by side
	$(INSTALL) -e .
	$(BIN)/bilevel-mtl demo

test: $(BIN)/python  ## the test suite
	$(INSTALL) -e ".[test,bench]"
	$(BIN)/python -m pytest -n 2 -q

lint: $(BIN)/python  ## ruff and mypy (strict on the package, the benchmark harness and the docs check)
	$(INSTALL) -e ".[dev]"
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: $(BIN)/python  ## the documentation: warnings are errors, examples run, formulas typeset offline
	$(INSTALL) -e ".[docs,test]"  # a docs page runs doctest examples that import pytest
	PYTHON=$(BIN)/python scripts/build_docs.sh
	scripts/install_chromium.sh
	$(BIN)/python scripts/check_docs_math.py

ci: lint test docs
