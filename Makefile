# Every target installs the project into .venv first (once, and again when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STUDY ?= studies/mnist_cnn.toml

.PHONY: help venv study test test-slow lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed  ## create .venv and install the project with its dev tools

study: venv  ## run (or resume) the default study $(STUDY)
	$(BIN)/tuning study $(STUDY)

test: venv  ## run the test suite (fast; needs TUNING_MNIST for the real-data slices)
	$(BIN)/pytest

test-slow: venv  ## also run the slow end-to-end tests
	$(BIN)/pytest -m "slow or not slow"

lint: venv  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check tuning tests bench
	$(BIN)/ruff format --check tuning tests bench
	$(BIN)/mypy

bench: venv  ## run the benchmarks in bench/, results in storage/bench/
	$(BIN)/python -m bench

clean:  ## remove .venv and caches (never storage/)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
