# vatic - developer entry points. Everything installs itself on first use (fresh machine) and is idempotent.
#
#   make demo    install, start the local stack, run the end-to-end demo, stop the stack
#   make test    install, start what the tests need, run every test (both environments), stop it again
#   make lint    ruff + the layer contracts (lint-imports) + mypy
#   make setup   only install (two Python environments, jars, redis-server)
#
# Two Python environments, as production uses two images (see pyproject.toml for why they cannot be one):
#   .venv/pipeline  PyFlink job, gateway, CLI, Feast, Kafka clients
#   .venv/server    MLServer and its runtimes

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
UV_VERSION := 0.13.8
CACHE := .cache
TOOLS := $(CACHE)/tools
UV := $(TOOLS)/bin/uv
PIPE := .venv/pipeline
SERVER := .venv/server
VATIC := $(PIPE)/bin/vatic
PYTEST_ARGS ?=

export UV_CACHE_DIR := $(CURDIR)/$(CACHE)/uv
export UV_PYTHON_DOWNLOADS := never
export UV_LINK_MODE := copy

.PHONY: help setup envs system-deps actionlint artifacts usecases test test-pipeline test-server lint fmt demo stack-up stack-down clean bench bench-quick bench-soak bench-gpu

help:
	@sed -n '2,7p' Makefile | sed 's/^# \{0,1\}//'

# --- installation ----------------------------------------------------------------------------------------

setup: system-deps envs artifacts usecases actionlint

$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "setup: $(PYTHON) not found: install CPython 3.11 (or run make PYTHON=python3.12)"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

envs: $(PIPE)/.synced $(SERVER)/.synced

# Re-synced only when the lock or the project metadata change; `uv sync --locked` refuses a stale uv.lock.
$(PIPE)/.synced: uv.lock pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(PIPE) $(UV) sync -q --locked --extra pipeline -p $(PYTHON)
	@touch $@

$(SERVER)/.synced: uv.lock pyproject.toml | $(UV)
	UV_PROJECT_ENVIRONMENT=$(SERVER) $(UV) sync -q --locked --extra server -p $(PYTHON)
	@touch $@

# Debian packages the local stack runs: redis-server (Feast's online store), Java 17 and Maven (Kafka broker,
# Flink, schema registry), openssl (the secured broker's certificates), shellcheck (actionlint runs it on the
# generated workflows' scripts); docker-compose (optional, no engine
# needed) lets the tests run `docker-compose config` on docker-compose.yml. Installed only when absent.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  command -v apt-get >/dev/null || { echo "setup: missing$$missing and no apt-get: install them by hand"; exit 1; }; \
	  echo "setup: installing$$missing (Debian)"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	if ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1 && command -v apt-get >/dev/null; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq docker-compose; } >/dev/null 2>&1 \
	    || echo "setup: docker-compose not installed (optional: \`docker-compose config\` checks docker-compose.yml)"; \
	fi

# actionlint (GitHub Actions workflows, with shellcheck on their scripts) checks the deploy workflows that
# `vatic workflow` / `vatic init` generate; built from the Go module proxy into .cache/go/bin.
ACTIONLINT_VERSION := v1.7.12
ACTIONLINT := $(CACHE)/go/bin/actionlint
export VATIC_ACTIONLINT := $(CURDIR)/$(ACTIONLINT)

actionlint: $(ACTIONLINT)

$(ACTIONLINT):
	@command -v go >/dev/null || { echo "setup: go not found: install Go 1.22+ (actionlint is built from the Go module proxy)"; exit 1; }
	GOBIN=$(CURDIR)/$(CACHE)/go/bin GOPATH=$(CURDIR)/$(CACHE)/go GOMODCACHE=$(CURDIR)/$(CACHE)/go/mod \
	  GOCACHE=$(CURDIR)/$(CACHE)/go/build GOFLAGS=-modcacherw go install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

artifacts: envs
	@$(VATIC) stack fetch

# The demo use cases: synthetic data, Feast apply + materialize, trained models in the local model registry.
# Idempotent: a second run checks fingerprints and returns in about a second.
usecases: envs
	@$(VATIC) usecases prepare

# --- tests -----------------------------------------------------------------------------------------------

# The stack is started before and stopped after the tests, even when they fail (trap on EXIT).
test: setup lint
	@trap '$(VATIC) stack down >/dev/null || true' EXIT; \
	$(VATIC) stack up; \
	$(MAKE) --no-print-directory test-pipeline test-server

# Tests of code that runs inside MLServer or needs the server env's libraries (comet_ml, mlflow, tritonclient) run there.
# tritonclient's protos and MLServer's share the package `inference` in protobuf's default pool: a process can import
# only one of them, so the Triton client tests run in a pytest process of their own.
SERVER_TESTS := tests/serving/runtimes tests/connectors/registry/test_registry_comet.py \
	tests/connectors/registry/test_registry_mlflow.py tests/connectors/registry/test_registry_comet_mlflow_config.py
TRITON_TESTS := tests/serving/gateway/test_triton_clients.py

test-pipeline:
	$(PIPE)/bin/pytest tests --ignore=tests/serving/runtimes --ignore=tests/serving/gateway/test_triton_clients.py \
	  --ignore=tests/k8s $(PYTEST_ARGS)

test-server:
	$(SERVER)/bin/pytest $(SERVER_TESTS) $(PYTEST_ARGS)
	$(SERVER)/bin/pytest $(TRITON_TESTS) $(PYTEST_ARGS)

# The fault oracle: every reliability case (tests/reliability/cases.py) x 10,000 seeded events on a private stack
# (its own Kafka, Redis, schema registry and model server on free ports under a temp folder; the default stack
# is never touched); prints a table with each case's recovery time and bound and
# `reliability: <held>/<total> cases held, <lost> events lost`, and exits non-zero when a case fails. A 3-case
# subset runs in `make test` (tests/reliability/test_reliability.py); CI runs the whole suite after `make test`.
# RELIABILITY_ARGS="model-killed poison --keep", "--seed 1234 dlq-unavailable" (replay), "--runs 3".
# Then the same oracle on the secured broker (`--secure`: SASL_SSL with SCRAM, a private CA, ACLs; the job runs as
# vatic-job with exactly its case's grants) for the cases that touch Kafka and the job, plus one data case:
# RELIABILITY_SECURE_ARGS (default $(RELIABILITY_SECURE_CASES); "" runs every case secured). Both runs always
# run; the target fails when either failed. Wall time on 2 cores: about 17 min plain + 5-7 min secured (the five
# secured cases, stack start included, measured 298 s, and 391 s on a busy machine); see
# docs/decisions/0012-reliability-on-the-secured-broker.md. `make test-reliability-secure` runs only the latter.
# Last, the job under `streaming.guarantee: at_least_once` (`--guarantee at_least_once`) for a case without a
# fault (`duplicates`: the same input twice) and one with (`job-killed`) (RELIABILITY_ALO_ARGS, default
# $(RELIABILITY_ALO_CASES)): 0 lost and 0 misrouted as always, 0 duplicates without a fault, duplicates after it
# reported, keys and vatic-attempt headers checked; about 2.5 min on 2 cores; docs/decisions/0015-at-least-once.md.
# `make test-reliability-alo` runs only that part (RELIABILITY_ALO_ARGS="kafka-clean" for a broker restart too).
.PHONY: test-reliability test-reliability-secure test-reliability-alo
RELIABILITY_ARGS ?=
RELIABILITY_SECURE_CASES := kafka-clean kafka-hard job-killed dlq-unavailable malformed-avro
RELIABILITY_SECURE_ARGS ?= $(RELIABILITY_SECURE_CASES)
RELIABILITY_ALO_CASES := duplicates job-killed
RELIABILITY_ALO_ARGS ?= $(RELIABILITY_ALO_CASES)
test-reliability: setup
	rc=0; \
	$(PIPE)/bin/python -m tests.reliability $(RELIABILITY_ARGS) || rc=1; \
	$(PIPE)/bin/python -m tests.reliability --secure $(RELIABILITY_SECURE_ARGS) || rc=1; \
	$(PIPE)/bin/python -m tests.reliability --guarantee at_least_once $(RELIABILITY_ALO_ARGS) || rc=1; \
	exit $$rc

test-reliability-secure: setup
	$(PIPE)/bin/python -m tests.reliability --secure $(RELIABILITY_SECURE_ARGS)

test-reliability-alo: setup
	$(PIPE)/bin/python -m tests.reliability --guarantee at_least_once $(RELIABILITY_ALO_ARGS)

# Every rendered manifest applied to a real Kubernetes API server with server-side dry run (tests/k8s): Debian's
# etcd-server and kubectl (kubernetes-client), kube-apiserver built from the Go module proxy (tests/k8s/apiserver:
# k8s.io/kubernetes at one release; about 6 minutes and 2 GB of module and build cache the first time, seconds
# after). Not in `make test` or CI: the first build alone would take a tenth of CI's time
# (docs/decisions/0023-scale-out.md).
KUBE_APISERVER := $(CACHE)/k8s/kube-apiserver
export VATIC_KUBE_APISERVER := $(CURDIR)/$(KUBE_APISERVER)

$(KUBE_APISERVER): tests/k8s/apiserver/go.mod tests/k8s/apiserver/go.sum
	@command -v go >/dev/null || { echo "test-k8s: go not found: install Go 1.24+ (kube-apiserver is built from the Go module proxy)"; exit 1; }
	cd tests/k8s/apiserver && GOPATH=$(CURDIR)/$(CACHE)/go GOMODCACHE=$(CURDIR)/$(CACHE)/go/mod \
	  GOCACHE=$(CURDIR)/$(CACHE)/go/build GOFLAGS=-modcacherw go build -o $(CURDIR)/$(KUBE_APISERVER) k8s.io/kubernetes/cmd/kube-apiserver

.PHONY: test-k8s
test-k8s: envs $(KUBE_APISERVER)
	@missing=""; command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v kubectl >/dev/null || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "test-k8s: installing$$missing (Debian)"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(PIPE)/bin/pytest tests/k8s $(PYTEST_ARGS)

# mypy and lint-imports (the layer contracts in pyproject.toml) cannot follow setuptools' package-dir mapping
# (streaming/ -> vatic.streaming): give them a link tree.
lint: envs
	@mkdir -p $(CACHE)/typecheck/vatic
	@for p in cli connectors examples schemas serving streaming; do ln -sfn ../../../$$p $(CACHE)/typecheck/vatic/$$p; done
	$(PIPE)/bin/ruff check .
	$(PIPE)/bin/ruff format --check .
	PYTHONPATH=$(CACHE)/typecheck $(PIPE)/bin/lint-imports
	$(PIPE)/bin/mypy -p vatic.cli -p vatic.connectors -p vatic.examples -p vatic.schemas -p vatic.serving -p vatic.streaming

fmt: envs
	$(PIPE)/bin/ruff format .
	$(PIPE)/bin/ruff check --fix .

# --- benchmarks ----------------------------------------------------------------------------------------------

# Side by side with the baselines on this machine; writes bench/results/{summary.json,report.md,*.png}.
# Not part of `make test`. BENCH_ARGS="--only rest,features" runs a subset.
BENCH_ARGS ?=

bench: setup
	$(PIPE)/bin/python -m bench.run $(BENCH_ARGS)

bench-quick: setup
	$(PIPE)/bin/python -m bench.run --quick $(BENCH_ARGS)

# vatic's job at half its max for SOAK_MINUTES (default 30): RSS and lag trends, loss; merges into summary.json.
# Not part of `make test` or `make bench`. SOAK_ARGS="--rate 500 --interval 5" sets the rate and sampling.
SOAK_MINUTES ?= 30
SOAK_ARGS ?=

bench-soak: setup
	$(PIPE)/bin/python -m bench.soak --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

# The product model server on CUDA vs CPU (same service, V2 REST) and GPU utilisation; one skip line without a
# GPU. Guarded to 8 minutes of wall clock. Not part of `make bench`'s default run.
bench-gpu: setup
	timeout 480 $(PIPE)/bin/python -m bench.gpu --service $(GPU_ARGS)

# --- demo and stack --------------------------------------------------------------------------------------

demo: setup
	@trap '$(VATIC) stack down >/dev/null || true' EXIT; \
	$(VATIC) stack up; \
	$(VATIC) demo

stack-up: setup
	$(VATIC) stack up

stack-down:
	$(VATIC) stack down

clean:
	-$(VATIC) stack down
	rm -rf .venv .vatic $(CACHE)/typecheck
