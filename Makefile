# Developer entry points for resilient-cache.  `make` alone lists the targets.
#
# `make test` / `make demo` bootstrap everything they need on a fresh Debian/Ubuntu
# machine (a .venv with the project installed editable, plus system servers via
# scripts/install-deps.sh); a second run only re-checks and is fast.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed

# Interpreter used to create the venv: python3.11 if present, else python3 (override: make PYTHON=...).
ifndef PYTHON
PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
endif

# Project-local tools (e.g. a Go-installed toxiproxy-server) live in .tools/bin.
export PATH := $(CURDIR)/.tools/bin:$(PATH)
# CI (e.g. CI=true) is passed through to pytest unchanged: it is inherited from the environment.

.PHONY: help venv deps test lint typecheck format demo bench clean

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  make %-10s %s\n", $$1, $$2}'

venv: $(STAMP) ## Create .venv and install the project with its dev extras

# (Re)install only when pyproject.toml is newer than the stamp.
$(STAMP): pyproject.toml
	@if [[ -z "$(PYTHON)" ]]; then \
		echo "error: no python3.11 or python3 on PATH; install Python >= 3.11" >&2; exit 1; fi
	@if ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		echo "error: Python >= 3.11 is required, but $(PYTHON) is $$("$(PYTHON)" -V 2>&1 || echo unusable)" >&2; \
		exit 1; fi
	@if [[ ! -x "$(PY)" ]]; then \
		echo ">> creating $(VENV) with $(PYTHON) ($$("$(PYTHON)" -V 2>&1))"; \
		"$(PYTHON)" -m venv "$(VENV)"; fi
	@if ! "$(PY)" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo "error: $(VENV) uses $$("$(PY)" -V 2>&1); Python >= 3.11 is required (run 'make clean')" >&2; \
		exit 1; fi
	@echo ">> installing the project into $(VENV): pip install -e '.[dev]'"
	"$(PY)" -m pip install --quiet -e '.[dev]'
	@touch "$@"

deps: ## Install missing system servers (redis-server) via scripts/install-deps.sh
	@scripts/install-deps.sh

lint: $(STAMP) ## ruff check + ruff format --check
	$(BIN)/ruff check src tests examples grafana scripts
	$(BIN)/ruff format --check src tests examples grafana scripts

typecheck: $(STAMP) ## mypy (configured in pyproject.toml)
	$(BIN)/mypy

format: $(STAMP) ## ruff format + ruff check --fix
	$(BIN)/ruff format src tests examples grafana scripts
	$(BIN)/ruff check --fix src tests examples grafana scripts

test: $(STAMP) deps ## lint, typecheck, then the whole pytest suite
	$(BIN)/ruff check src tests examples grafana scripts
	$(BIN)/ruff format --check src tests examples grafana scripts
	$(BIN)/mypy
	$(BIN)/pytest

demo: $(STAMP) deps ## Fail-open under real faults, live, with a report (about a minute)
	$(BIN)/resilient-cache demo $(DEMO_ARGS)

bench: $(STAMP) deps ## Benchmarks: adapter, stack and peers vs raw redis-py, as ratios (~3 min)
	"$(PY)" -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m resilient_cache.bench --docs docs $(BENCH_ARGS)

clean: ## Remove .venv, caches and .tools
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf
