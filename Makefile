# Self-documenting: `make` or `make help` lists the targets and what they do.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-project
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install up down test test-fast lint format bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv if missing and install the pinned requirements and this package

up: $(STAMP) ## Install, bring the system up (Prefect, MLflow, dashboard) and replay the demo stream through it
	$(BIN)/mlops demo --dir $(DEMO_DIR) --replay

down: ## Stop the demo project's services (worker before server)
	@test -f $(DEMO_DIR)/mlops.yaml && test -x $(BIN)/mlops && $(BIN)/mlops down --config $(DEMO_DIR)/mlops.yaml || true

test: $(STAMP) ## Install, then run the whole test suite (slow end-to-end tests included)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## Lint (ruff), check formatting (ruff format) and types (mypy on mlops_core and mlops_cli)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## Format the code (ruff format) and apply ruff's safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) ## Run the benchmarks in bench/ (minutes; each prints key=value figures last)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean: down ## Stop the demo's services; remove the demo project, caches and the virtual environment
	rm -rf $(DEMO_DIR) .pytest_cache .ruff_cache test-artifacts $(VENV)
