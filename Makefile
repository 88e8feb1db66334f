# fleetbus — `make run` starts a hub with a small simulated fleet; `make test` proves it works.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install browser run test test-long lint typecheck importlint unit bench bench-quick envtest yamloracle loadgen registry clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Headless Chromium for the dashboard's browser test: found, or installed when root; only
# `make test` needs it.
browser:
	scripts/install-browser.sh

envtest:
	infra/envtest/build.sh

# sigs.k8s.io/yaml as a program: the reference the YAML reader is tested against.
yamloracle:
	infra/yamloracle/build.sh

# bombardier, the HTTP load generator of the read benchmark (P9).
loadgen:
	infra/loadgen/build.sh
# The CNCF distribution registry: the OCI registry the sources tests push charts to.
registry:
	infra/registry/build.sh

run: install
	scripts/run-demo.sh

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

importlint: install
	$(BIN)/lint-imports

# pytest exits 5 when it collects no tests: that is a failure here, never ignored.
test: install browser envtest yamloracle registry lint typecheck importlint
	$(BIN)/python -m pytest -m 'not long' -p no:cacheprovider

test-long: install envtest registry
	$(BIN)/python -m pytest -m long -p no:cacheprovider

bench: install envtest loadgen
	$(BIN)/python -m bench --full

bench-quick: install envtest loadgen
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache
