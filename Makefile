# Every target installs the project into .venv first, through the lock constraints.txt (once, and
# again when pyproject.toml or the lock changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STUDY ?= studies/mnist_cnn.toml
CLASSES ?= alpha,beta,gamma
# With an NVIDIA driver (nvidia-smi works), the `cuda` extra brings CUDA and cuDNN from PyPI.
EXTRAS ?= dev$(shell nvidia-smi >/dev/null 2>&1 && echo ,cuda)
# The exact tested tree, every extra (make venv), and the lowest versions the ranges allow.
LOCK := constraints.txt
LOWEST := constraints-lowest.txt
# One universal resolution (every platform and Python the project allows, with markers) written
# in pip's own requirements format; pins already in the output file are kept while they still fit.
# UPGRADE='--upgrade-package NAME' (or --upgrade) moves pins on purpose.
COMPILE := $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --quiet \
	--custom-compile-command 'make lock' $(UPGRADE)

.PHONY: help venv lock lock-check test-lowest study export example transfer dashboard test \
	faults test-slow lint bench device-check clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 14

$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# A .venv from when the project used tensorflow-cpu: it shares tensorflow's files, so both
	@# go before tensorflow is installed again.
	if $(BIN)/pip show --quiet tensorflow-cpu 2>/dev/null; then \
		$(BIN)/pip uninstall --quiet --yes tensorflow-cpu tensorflow; fi
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $@

venv: $(VENV)/.installed  ## create .venv and install the project with its dev tools (the lock's versions)

# uv at the lock's version alone, so `make lock` runs while pyproject.toml and the lock disagree.
$(VENV)/.installed-uv: $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) uv
	touch $@

# $(call compile-locks,DIR): both locks into DIR, each starting from the pins already there.
define compile-locks
	$(COMPILE) --all-extras -o $(1)/$(LOCK)
	$(COMPILE) --resolution lowest-direct -o $(1)/$(LOWEST)
endef

lock: $(VENV)/.installed-uv  ## pin the whole tree again after pyproject.toml changed (constraints*.txt)
	$(call compile-locks,.)

LOCK_CHECK := $(or $(TMPDIR),/tmp)/tuning-lock-check
lock-check: $(VENV)/.installed-uv  ## fail when constraints*.txt no longer match pyproject.toml
	rm -rf $(LOCK_CHECK) && mkdir -p $(LOCK_CHECK) && cp $(LOCK) $(LOWEST) $(LOCK_CHECK)/
	$(call compile-locks,$(LOCK_CHECK))
	@diff -u $(LOCK) $(LOCK_CHECK)/$(LOCK) && diff -u $(LOWEST) $(LOCK_CHECK)/$(LOWEST) || { \
		echo "The locks no longer match pyproject.toml: run make lock and commit constraints*.txt."; \
		exit 1; }

# The suite also runs the pipeline under JAX (tests/test_backends.py), so tests add the jax extra.
$(VENV)/.installed-jax: $(VENV)/.installed
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[$(EXTRAS),jax]'
	touch $@

# The lowest versions pyproject.toml allows, in a second venv: the smoke study and its export run
# there as a user runs them, so the lower bounds are tested, not hoped.
LOWEST_VENV := .venv-lowest
$(LOWEST_VENV)/.installed: pyproject.toml $(LOWEST)
	$(PYTHON) -m venv --clear $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install --quiet --upgrade pip
	$(LOWEST_VENV)/bin/pip install --quiet -c $(LOWEST) -e .
	touch $@

test-lowest: $(LOWEST_VENV)/.installed  ## the smoke study and export under the lowest allowed versions
	tmp=$$(mktemp -d) && export TUNING_STORAGE="sqlite:///$$tmp/studies.db" \
		TUNING_ARTIFACTS="$$tmp/artifacts" && \
	$(LOWEST_VENV)/bin/tuning study studies/smoke.toml --no-progress && \
	$(LOWEST_VENV)/bin/tuning export studies/smoke.toml --out "$$tmp/models/smoke" && \
	rm -rf "$$tmp"

study: venv  ## run (or resume) the default study $(STUDY)
	$(BIN)/tuning study $(STUDY)

export: venv  ## retrain the best trial of $(STUDY) on all images, test it, write storage/models/
	$(BIN)/tuning export $(STUDY)

transfer: venv  ## transfer the export of $(STUDY) to CLASSES (alpha,beta,gamma) of $TUNING_GREEK
	$(BIN)/tuning transfer storage/models/$(basename $(notdir $(STUDY)))/model.keras --classes $(CLASSES)

example: venv  ## render the shapes data, then study and export studies/custom_example.toml
	$(BIN)/python -m examples.make_shapes --out storage/data/shapes.npz --png-dir storage/data/shapes-png
	$(BIN)/tuning study studies/custom_example.toml
	$(BIN)/tuning export studies/custom_example.toml

dashboard: venv  ## optuna-dashboard on storage/ at http://127.0.0.1:8080 (Ctrl-C stops it)
	$(BIN)/tuning dashboard

worker: venv  ## join $(STUDY) as one more worker (THREADS=n: CPU threads for it)
	$(BIN)/tuning worker $(STUDY) $(if $(THREADS),--threads $(THREADS))

workers: venv  ## run WORKERS workers (default 2) here: cores split; GPUs in turn, or all share one
	@n=$${WORKERS:-2}; t=$$(( $$(nproc) / n )); t=$$(( t > 0 ? t : 1 )); \
	g=$$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); \
	echo "$$n workers x $$t threads on $(STUDY)$$( (( g > 1 )) && echo ", GPUs 0-$$((g - 1)) in turn")"; \
	for i in $$(seq 0 $$((n - 1))); do \
		if (( g > 1 )); then export CUDA_VISIBLE_DEVICES=$$(( i % g )); fi; \
		$(BIN)/tuning worker $(STUDY) --threads $$t --no-progress & \
	done; wait

test: $(VENV)/.installed-jax  ## run the test suite (fast; needs TUNING_MNIST for the real-data slices)
	$(BIN)/pytest

faults: $(VENV)/.installed-jax  ## the fault suite alone, its long forms too (needs TUNING_TEST_POSTGRES, root for the full disk)
	$(BIN)/pytest -m faults -n0 -s

test-slow: $(VENV)/.installed-jax  ## also run the slow end-to-end tests
	$(BIN)/pytest -m "slow or not slow"

lint: venv  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check tuning tests bench examples tools
	$(BIN)/ruff format --check tuning tests bench examples tools
	$(BIN)/mypy

bench: venv  ## run the benchmarks in bench/, results in storage/bench/
	$(BIN)/python -m bench

# The wheels (pinned by constraints.txt) and data a lent GPU machine without TensorFlow or a
# package index needs, in storage/device/; prints the command to run there (tools/device_check.sh run).
device-check: venv  ## prepare storage/device/ for the check on a lent GPU (tools/device_check.sh)
	bash tools/device_check.sh prepare

clean:  ## remove .venv and caches (never storage/)
	rm -rf $(VENV) $(LOWEST_VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
