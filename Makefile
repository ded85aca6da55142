# Herald — developer entry points. `make run` and `make test` work on a fresh clone of a machine
# with cargo and python3: PostgreSQL, Redis, RabbitMQ and python3-venv are installed (apt-get, as
# root or through sudo) when missing and started when stopped.

SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv

.PHONY: run test services browser build venv migrate fmt lint deploy-check bench bench-instructions bench-micro chaos fuzz

## Start PostgreSQL, Redis and RabbitMQ if they are stopped, installing any that is missing
## (fails loudly, with the command to run, when it cannot).
services:
	@deploy/local/services.sh start

## Headless Chromium and its WebDriver for the browser tests (tests/it/portal_browser.rs),
## installed from Debian's packages when missing.
browser:
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
		|| deploy/local/services.sh install chromium chromium-driver

build:
	$(CARGO) build --bins

## Python venv: third-party signature verifiers (interop tests), Helm engine and Kubernetes
## schemas (deployment checks).
venv: $(VENV)/.ready
$(VENV)/.ready: tests/interop/requirements.txt tests/deploy/requirements.txt
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: installing python3-venv" >&2; \
		deploy/local/services.sh install python3-venv && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt -r tests/deploy/requirements.txt
	@touch $@

## Lint and render the Helm chart, validate manifests and the compose file (offline).
deploy-check: venv
	$(VENV)/bin/python tests/deploy/validate.py

## Apply database migrations (also done by ingest and ledger at start).
migrate: services build
	target/debug/herald-ingest migrate

## Run ingest, dispatcher and ledger against the local services (Ctrl-C stops all three).
run: services build
	@deploy/local/run.sh

## Everything: unit tests, end-to-end tests against the real services (pipeline, webhooks
## page, telemetry, interop, kill -9 no-loss, the portal and console in headless Chromium),
## then the deployment checks.
test: services venv browser build
	$(CARGO) test --workspace --no-fail-fast
	$(VENV)/bin/python tests/deploy/validate.py

## The fault tests at full size: 20,000 deliveries under repeated SIGKILL, longer outages.
chaos: services build
	CHAOS_SCALE=5 $(CARGO) test -p herald-tests --test chaos -- --nocapture

FUZZ_TEST := $(CARGO) --config 'profile.fuzz.inherits="release"' \
	--config profile.fuzz.overflow-checks=true --config profile.fuzz.debug-assertions=true \
	test --profile fuzz

## Long fuzz run (tests/fuzz/README.md): HERALD_FUZZ_CASES cases per strategy (default 50,000),
## optimised build with overflow checks on; runs every suite, fails if any found a failure.
fuzz:
	@export HERALD_FUZZ_CASES=$${HERALD_FUZZ_CASES:-50000}; status=0; \
	$(FUZZ_TEST) -p herald-core --test fuzz -- --nocapture || status=1; \
	$(FUZZ_TEST) -p herald-outbound --test fuzz -- --nocapture || status=1; \
	$(FUZZ_TEST) -p herald-ingest --lib fuzz -- --nocapture || status=1; \
	exit $$status

## End-to-end benchmarks on this machine (about an hour on 2 cores, half of it ledger-growth's
## 50,000,000 attempt rows, which need ~30 GB of disk; plus the release build); writes
## BENCHMARKS.md.
bench: services
	$(CARGO) build --release --bins -p herald-ingest -p herald-dispatcher -p herald-ledger -p herald-console -p herald-bench
	target/release/bench all --markdown BENCHMARKS.md

## Dispatcher instructions per delivery under callgrind: repeatable to the instruction on a
## noisy machine, for A/B of a change (about 2 min plus the release build; needs valgrind).
bench-instructions: services
	$(CARGO) build --release --bins -p herald-ingest -p herald-dispatcher -p herald-ledger -p herald-bench
	crates/bench/instructions.sh target/release

## Criterion micro-benchmarks (signing, subscription matching, filters).
bench-micro:
	$(CARGO) bench -p herald-bench

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
