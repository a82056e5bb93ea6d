# The README's two commands: `make run` (install + the whole pipeline) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install lint retrain clean-outputs

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

test: install
	bash scripts/run_tests.sh

# scripts/retrain.sh exits 0 promoted, 3 champion kept, 1 failed; make turns any failure into 2, so
# CI (.github/workflows/retrain.yml) calls the script itself.
retrain: install
	bash scripts/retrain.sh

# The workflows: valid against GitHub's schema, and no medium or high finding of zizmor (offline).
lint: install
	$(BIN)/ruff check src tests bench serving
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --min-severity medium .github/workflows
