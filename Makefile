# The table of contents of what can be done with this project.
#   make lab       bring up the local lab (systemd containers) and deploy the whole stack
#   make test      lint, app tests, Molecule scenarios, then the stack tests against the lab
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_FORCE_COLOR ?= 0
export PY_COLORS ?= 0
LAB_INV     := inventory/lab
LAB_VAULT   := --vault-password-file $(LAB_INV)/vault-password.txt
PLAYBOOK    := ansible-playbook -i $(LAB_INV) $(LAB_VAULT)
# Molecule scenarios run by `make test`, in order (each: create, converge, idempotence, verify,
# destroy). The vendor-only scenarios (grafana, elk) are run by a pytest gate that probes the
# vendor's repository first and reports SKIPPED with the reason when it is unreachable.
MOLECULE_SCENARIOS ?= common
MOLECULE_VENDOR_GATES := tests/monitoring/test_molecule_grafana.py tests/elk/test_molecule_elk.py
LAB_PROMETHEUS := https://172.30.99.41:9090

.PHONY: help venv engine image lab lab-converge lab-summary lab-down lab-token \
        lint test test-deps test-app test-repo test-molecule test-stack chaos bench bench-app

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
	scripts/host-deps.sh venv
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed ## create the controller virtualenv from pinned requirements

engine: ## install (Debian/Ubuntu) and start the Docker engine when it is missing
	scripts/docker-engine.sh

image: engine ## build the lab host image (only when its recipe changed)
	lab/image/build.sh

lab: venv engine ## create the lab's containers and deploy the whole stack on them
	$(PLAYBOOK) lab/up.yml
	$(PLAYBOOK) site.yml
	$(PLAYBOOK) lab/summary.yml

lab-converge: venv ## run site.yml again on the existing lab
	$(PLAYBOOK) site.yml

lab-summary: venv ## print where everything answers
	$(PLAYBOOK) lab/summary.yml

lab-token: venv ## print the lab's API tokens (from its vault)
	@ansible-vault view $(LAB_VAULT) $(LAB_INV)/group_vars/all/vault.yml | grep -A2 -- '- name:'

lab-down: venv ## remove every container, volume and network of the lab (nothing else)
	$(PLAYBOOK) lab/down.yml

lint: venv ## yamllint, ansible-lint (production profile), ruff
	yamllint --strict .
	ANSIBLE_VAULT_PASSWORD_FILE=$(LAB_INV)/vault-password.txt ansible-lint --offline
	ruff check .

test-deps: ## install the machine packages the tests use (PostgreSQL binaries, promtool, ruby)
	scripts/host-deps.sh test

test-app: test-deps ## the app's tests against a real primary and two real standbys on loopback
	app/run-tests.sh

test-repo: venv test-deps ## repository-level tests (role specs, templates, rules, dashboards, checker)
	pytest -q -rs tests -m "not lab" $(addprefix --ignore=,$(MOLECULE_VENDOR_GATES))

test-molecule: venv engine ## every Molecule scenario (vendor-only ones behind their gates)
	for s in $(MOLECULE_SCENARIOS); do molecule test -s $$s; done
	pytest -q -rs $(MOLECULE_VENDOR_GATES)

test-stack: venv engine ## the whole stack on the lab over SSH: converge, idempotence, check mode, testinfra, e2e, faults
	scripts/stack-converge.sh
	scripts/stack-check-mode.sh
	molecule verify -s stack
	pytest -q -rs --durations=12 tests/stack -m lab
	KV_PROMETHEUS_URL=$(LAB_PROMETHEUS) pytest -q -rs tests/monitoring/test_dashboards.py

test: lint test-app test-repo test-molecule test-stack ## everything, in that order

chaos: venv ## the fault suite against the lab, each fault held for a minute
	KV_CHAOS_SECONDS=$${KV_CHAOS_SECONDS:-60} pytest -q -rs tests/stack -m chaos

bench: venv ## wrk against the lab: balancer vs one instance vs a bare view (JSON + PNG)
	$(PLAYBOOK) bench/benchmark.yml

bench-app: ## the app alone on loopback vs a minimal Django project: req/s, p50/p99, CPU/request
	scripts/host-deps.sh bench
	app/bench.sh
