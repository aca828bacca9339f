# The two commands of the README:
#   make run    train the main experiment (experiments.cifar_amp) into the embedded store
#   make test   lint, type-check, build the docs and run the whole test suite
# and, to look at the runs: make ui (the MLflow UI on 127.0.0.1:5000); the docs: make docs
# Both create .venv and install the project with its pinned ranges the first time.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Offline by default, because these machines cannot download CIFAR-10; real data with
# `make run ARGS="--dataset cifar10"` (or --data-dir DIR). Everything after ARGS= is passed on.
ARGS   ?= --dataset synthetic --epochs 3

.PHONY: run ui docs docs-build test test-tf test-torch lint system-deps clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $@

run: $(STAMP)
	$(BIN)/python -m experiments.cifar_amp $(ARGS)

ui: $(STAMP)
	$(BIN)/mltrack ui

# The documentation site (docs/, mkdocs.yml) on 127.0.0.1:8000, rebuilt as files change.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

docs-build: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Debian packages some integration tests need (PostgreSQL, Chromium); installed only if absent.
system-deps:
	@bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest runs, side by side: TensorFlow and torch cannot be loaded into one process (see
# pyproject.toml). Each runs in worker processes (pytest-xdist): most integration tests wait on
# the servers, trainings and sweeps they start, so more workers than cores overlap those waits.
# Each run's output is printed whole when it ends (--output-sync).
JOBS ?= 3
test: $(STAMP) system-deps lint docs-build
	@$(MAKE) --no-print-directory --output-sync=target -j2 test-tf test-torch

test-tf: $(STAMP)
	$(BIN)/pytest -m "not torch" --numprocesses $(JOBS)

test-torch: $(STAMP)
	$(BIN)/pytest -m torch --numprocesses 2

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
