# Every target installs the project into .venv first (once, and again when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STUDY ?= studies/mnist_cnn.toml
CLASSES ?= alpha,beta,gamma

.PHONY: help venv study export transfer dashboard test test-slow lint bench clean

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

export: venv  ## retrain the best trial of $(STUDY) on all images, test it, write storage/models/
	$(BIN)/tuning export $(STUDY)

transfer: venv  ## transfer the export of $(STUDY) to CLASSES (alpha,beta,gamma) of $TUNING_GREEK
	$(BIN)/tuning transfer storage/models/$(basename $(notdir $(STUDY)))/model.keras --classes $(CLASSES)

dashboard: venv  ## optuna-dashboard on storage/ at http://127.0.0.1:8080 (Ctrl-C stops it)
	$(BIN)/tuning dashboard

worker: venv  ## join $(STUDY) as one more worker (THREADS=n: TensorFlow threads for it)
	$(BIN)/tuning worker $(STUDY) $(if $(THREADS),--threads $(THREADS))

workers: venv  ## run WORKERS workers (default 2) on this machine, cores split between them
	@n=$${WORKERS:-2}; t=$$(( $$(nproc) / n )); t=$$(( t > 0 ? t : 1 )); \
	echo "$$n workers x $$t threads on $(STUDY)"; \
	for i in $$(seq $$n); do $(BIN)/tuning worker $(STUDY) --threads $$t --no-progress & done; wait

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
