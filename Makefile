# followup: the two commands a newcomer needs are `make demo` and `make test`.
# Each sets up what is missing (venv, PostgreSQL, Kafka) before it runs.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
PYTEST_ARGS ?=
FUZZ_SECONDS ?= 300

.PHONY: setup infra-up infra-down infra-status test unit integration lint schemas demo lab bench clean \
	ops-tools ops-check ops-generate browser-tools fhir-r4 fuzz faults

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

infra-up:
	bash deploy/local/infra.sh up

infra-down:
	bash deploy/local/infra.sh down

infra-status:
	bash deploy/local/infra.sh status

# Prometheus/promtool (Debian package, unpacked), kustomize (go install), CRD schemas (npm)
# into .cache/ops; idempotent. See deploy/ops-tools.sh.
ops-tools:
	bash deploy/ops-tools.sh install >/dev/null

# Debian's chromium + chromium-driver for the call-report page's browser test; idempotent.
# See deploy/browser-tools.sh.
browser-tools:
	bash deploy/browser-tools.sh install >/dev/null

# The hospital's FHIR R4 server (HAPI FHIR's libraries, deploy/local/fhir-r4/) built once into
# .cache/fhir-r4-server; the demo's rebooking and the FHIR tests run it. Idempotent.
fhir-r4: setup
	$(PY) -m standins.fhir_r4_server build >/dev/null

# Regenerates dashboards JSON, the PrometheusRule and the Kubernetes base from code.
ops-generate: setup
	$(PY) -m deploy.generate

# The deployment checks alone (they also run in `make test`): generated files current,
# promtool check/test on the alert rules, every overlay rendered and validated offline.
ops-check: setup ops-tools
	$(PY) -m deploy.generate --check
	.cache/ops/bin/promtool check rules deploy/prometheus/rules/*.yml
	.cache/ops/bin/promtool test rules deploy/prometheus/tests/*.yml
	$(PY) -m pytest tests/unit/ops tests/integration/ops -q $(PYTEST_ARGS) \
		--deselect tests/integration/ops/test_prometheus_scrape.py \
		--deselect tests/integration/ops/test_consumer_metrics.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

schemas: setup
	$(PY) -m schemas.generate

unit: setup
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

integration: setup infra-up ops-tools browser-tools fhir-r4
	$(PY) -m pytest tests/integration -q $(PYTEST_ARGS)

test: setup infra-up ops-tools browser-tools fhir-r4 lint
	$(PY) -m pytest tests -q -ra $(PYTEST_ARGS)

# The codec's coverage-guided fuzz target (atheris) for FUZZ_SECONDS, every contract; prints
# inputs tried and crash kinds (a few seconds of it run inside `make test`).
fuzz: setup
	$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

demo: setup infra-up fhir-r4
	$(PY) -m demo

# Every fault kind (kill -9, second replicas, broker and PostgreSQL restarts on servers of the
# suite's own, providers refusing or slow), one run each, with the invariants' figures.
# FAULTS="kill9 sms_refuse" picks kinds; see tests/faults/inject.py.
faults: setup infra-up
	$(PY) -m tests.faults $(FAULTS)

# Figures to .cache/bench/<suite>.json and .png; BENCH_ARGS="--big" for the issue's full
# sizes, BENCH_ARGS="scheduler notifier" for some suites only.
BENCH_ARGS ?=

# The outcome lab: one seeded clinic under the status quo, followup's default policy and any
# LAB_ARGS (e.g. --policy FILE), compared; report in .cache/lab/. See demo/lab/.
LAB_ARGS ?=
lab: setup infra-up
	$(PY) -m demo.lab $(LAB_ARGS)

bench: setup infra-up
	$(PY) -m bench $(BENCH_ARGS)

clean: infra-down
	rm -rf .cache $(VENV)
