# Herald — developer entry points. `make run` and `make test` work on a fresh clone of a machine
# with cargo, python3 and the PostgreSQL/Redis/RabbitMQ packages (started here when stopped).

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

.PHONY: run test services build venv migrate fmt lint clean-test-residue

## Start PostgreSQL, Redis and RabbitMQ if they are stopped (fails loudly if one is missing).
services:
	@deploy/local/services.sh start

build:
	$(CARGO) build --bins

## Python venv with the third-party signature verifiers used by the interop tests.
venv: $(VENV)/.ready
$(VENV)/.ready: tests/interop/requirements.txt
	@$(PYTHON) -m venv $(VENV) || { apt-get install -y python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
	@touch $@

## Apply database migrations (also done by ingest and ledger at start).
migrate: services build
	target/debug/herald-ingest migrate

## Run ingest, dispatcher and ledger against the local services (Ctrl-C stops all three).
run: services build
	@deploy/local/run.sh

## Everything: unit tests, end-to-end tests against the real services, interop, no-loss.
test: services venv build
	$(CARGO) test --workspace --no-fail-fast

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
