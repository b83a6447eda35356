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
# destroy). Scenarios for vendor-only components decide for themselves whether they can run.
MOLECULE_SCENARIOS ?= common

.PHONY: help venv engine image lab lab-up lab-converge lab-summary lab-down lab-token \
        lint test test-app test-repo test-molecule test-stack

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt
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

test-app: ## the app's tests against a real primary and two real standbys on loopback
	app/run-tests.sh

test-repo: venv ## repository-level tests (role specs, templates, rules, dashboards)
	pytest -q tests

test-molecule: venv engine ## every Molecule scenario of MOLECULE_SCENARIOS
	for s in $(MOLECULE_SCENARIOS); do molecule test -s $$s; done

test: lint test-app test-repo test-molecule ## everything: lint, app, repository, Molecule
