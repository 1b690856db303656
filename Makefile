# Enclave Operator — every set-up step is a target; `make demo` and `make test` do all of it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR ?= $(CURDIR)/.run
export ENCLAVE_RUN_DIR := $(RUN_DIR)

.PHONY: help venv tools crds generate docs lint test test-unit test-integration test-e2e demo up down status add-user bench clean

help:
	@echo "make demo   - build and start the local plane + MinIO, install CRDs, run the operator, apply the example"
	@echo "make demo CHART=1 - the same, with the operator installed by the Helm chart"
	@echo "make down   - stop every process the demo started (the next make demo resumes; make clean starts over)"
	@echo "make add-user USERS=\"erin frank\" - add people to the demo's identity backends and MinIO"
	@echo "make test   - install everything and run unit, integration and e2e tests"
	@echo "make test-unit - the fast inner loop (no servers)"
	@echo "make crds   - regenerate crds/ and the chart's crds/ from the typed API"
	@echo "make generate - make crds, plus the chart's webhooks, values schema and the docs' API reference"
	@echo "make docs   - build the docs site into build/site (mkdocs --strict)"

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==25.3
	$(PY) -m pip install -q -c constraints.txt -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

tools:
	bash hack/install-debian-packages.sh
	bash hack/localplane/build.sh
	bash hack/kwok/build.sh
	bash hack/minio/build.sh
	bash hack/restic/build.sh
	bash hack/helm/build.sh
	bash hack/argolua/build.sh
	bash hack/kstatus/build.sh

crds: venv
	$(PY) -m enclave_operator.api.crdgen --out crds --out charts/enclave-operator/crds

generate: crds
	$(PY) hack/chartgen.py
	$(PY) hack/docgen.py

docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: venv
	$(VENV)/bin/ruff check operator tests hack bench

test-unit: venv
	$(PY) -m pytest tests/unit -q

test-integration: venv tools
	$(PY) -m pytest tests/integration tests/contract -q

test-e2e: venv tools
	$(PY) -m pytest tests/e2e -q

test: venv tools lint
	ENCLAVE_NO_SKIP=1 $(PY) -m pytest tests/unit tests/contract tests/integration tests/e2e -q --durations=15

demo: venv tools
	$(PY) hack/demo.py up $(if $(filter 1,$(CHART)),--chart)

up: venv tools
	$(PY) hack/localenv up --controllers

down:
	@$(PYTHON) hack/localenv down

status:
	@$(PYTHON) hack/localenv status

add-user: venv  ## make add-user USERS="erin frank": people for one's own manifests (FreeIPA, LDAP, MinIO)
	$(PY) hack/localenv add-user $(USERS)

bench: venv tools
	$(PY) bench/projects_bench.py

clean: down
	rm -rf $(RUN_DIR)
