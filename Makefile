# The README's two commands: `make run` (install + the whole pipeline) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install browser lint retrain mlflow dashboard clean-outputs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch/torchvision come from the pinned lock; pip finds them on this machine's disk.
$(STAMP): $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

run: install
	bash scripts/run_pipeline.sh

test: install browser
	bash scripts/run_tests.sh

# Debian's Chromium, which the browser tests (tests/ui) drive with Playwright
browser:
	bash scripts/install_browser.sh

# The pages of a finished run, on loopback (docs/pages.md): MLflow on the ctcid experiment's runs
# and the registered model (http://127.0.0.1:5000), the Optuna studies (http://127.0.0.1:8080)
mlflow: install
	$(BIN)/ctcid ui

dashboard: install
	$(BIN)/ctcid dashboard

# scripts/retrain.sh exits 0 promoted, 3 champion kept, 1 failed; make turns any failure into 2, so
# CI (.github/workflows/retrain.yml) calls the script itself.
retrain: install
	bash scripts/retrain.sh

# The workflows: valid against GitHub's schema, and no medium or high finding of zizmor (offline).
lint: install
	$(BIN)/ruff check src tests bench serving
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --min-severity medium .github/workflows
